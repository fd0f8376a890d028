//! The int8 format's arithmetic (`docs/FORMAT.md`, "Int8 models"), written
//! once: the quantizer in the trainer and `infer`'s integer kernels both call
//! these functions, so a file means the same numbers to both.
//!
//! - **Activations** are `u8` with a per-tensor scale and zero point:
//!   `real = scale · (q − zero_point)` ([`ActQuant`]). The input image is its own
//!   quantization (`x / 255`: scale 1/255, zero point 0).
//! - **Weights** are `i8`, symmetric, one scale per output channel:
//!   `real = weight_scale[c] · q`, `q ∈ [−127, 127]`. Biases are `i32` in units
//!   of `input_scale · weight_scale[c]`.
//! - **Requantization** of an `i32` accumulator to an output tensor multiplies it
//!   by `M = input_scale · weight_scale[c] / output_scale`, represented as a
//!   31-bit fixed-point [`Multiplier`] and a power-of-two shift, and rounds
//!   *once*, half up: TensorFlow Lite's `MultiplyByQuantizedMultiplier` as
//!   built with `TFLITE_SINGLE_ROUNDING` (CMSIS-NN's
//!   `CMSIS_NN_USE_SINGLE_ROUNDING`). It is integer-only, so every platform
//!   and every kernel computes the same bits.
//! - The multipliers are derived from the `f32` scales in `f64`
//!   ([`Multiplier::from_real`], as TFLite's `QuantizeMultiplier`): IEEE
//!   arithmetic without fused operations, also bit-identical everywhere.

/// Metadata key whose presence marks an int8 model; its value is a JSON
/// object `{"scheme": SCHEME, "activations": [[scale, zero_point], …]}`.
pub const KEY_QUANTIZATION: &str = "quantization";

/// The `scheme` of [`KEY_QUANTIZATION`] this crate describes.
pub const SCHEME: &str = "int8/1";

/// Input channels per group of the int8 weight layout
/// (`[ky, kx, ⌈ci/4⌉, co, 4]`, see FORMAT.md): four consecutive input
/// channels of one output channel are adjacent, as 4-way integer dot products
/// (x86 VNNI `vpdpbusd`, Arm `sdot`) read them.
pub const GROUP: usize = 4;

/// Number of weight groups for `channels` input channels: `⌈channels / 4⌉`.
pub const fn groups(channels: usize) -> usize {
    channels.div_ceil(GROUP)
}

/// Largest magnitude of a quantized weight (symmetric: `−127 ..= 127`).
pub const WEIGHT_MAX: i32 = 127;

/// Left shift applied to both inputs of an integer `add` before rescaling
/// (TFLite's `left_shift = 20` for 8-bit adds): keeps 20 fractional bits.
pub const ADD_LEFT_SHIFT: u32 = 20;

/// Quantization of an activation tensor: `real = scale · (q − zero_point)`,
/// `q` a `u8`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    /// Positive and finite.
    pub scale: f32,
    /// The `u8` that stands for real 0.
    pub zero_point: u8,
}

impl ActQuant {
    /// The input image's quantization: `x / 255`.
    pub const INPUT: ActQuant = ActQuant {
        scale: 1.0 / 255.0,
        zero_point: 0,
    };

    /// The quantization covering `[lo, hi]`, widened to contain 0 so that 0
    /// (padding, relu) is exact: `scale = (hi − lo) / 255`, zero point
    /// `round(−lo / scale)`. An empty or non-finite range gives scale 1.
    pub fn from_range(lo: f32, hi: f32) -> ActQuant {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = (hi - lo) / 255.0;
        if !(scale.is_finite() && scale > 0.0) {
            return ActQuant {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let zp = round_half_away(f64::from(-lo) / f64::from(scale)).clamp(0, 255);
        ActQuant {
            scale,
            zero_point: zp as u8,
        }
    }

    /// Whether the scale is usable (positive, finite, normal).
    pub fn is_valid(self) -> bool {
        self.scale.is_normal() && self.scale > 0.0
    }

    /// The nearest `u8` to `x` (saturating).
    pub fn quantize(self, x: f32) -> u8 {
        let q = round_half_away(f64::from(x) / f64::from(self.scale)) + i64::from(self.zero_point);
        q.clamp(0, 255) as u8
    }

    /// The real value `q` stands for.
    pub fn dequantize(self, q: u8) -> f32 {
        self.scale * (i32::from(q) - i32::from(self.zero_point)) as f32
    }
}

/// The scale of one output channel's weights: `max |w| / 127` (1 for an
/// all-zero channel, so that the scale stays positive).
pub fn weight_scale(max_abs: f32) -> f32 {
    let s = max_abs / WEIGHT_MAX as f32;
    if s.is_normal() && s > 0.0 {
        s
    } else {
        1.0
    }
}

/// `w / scale` rounded half away from zero, clamped to `[−127, 127]`.
pub fn quantize_weight(w: f32, scale: f32) -> i8 {
    let q = round_half_away(f64::from(w) / f64::from(scale));
    q.clamp(-i64::from(WEIGHT_MAX), i64::from(WEIGHT_MAX)) as i8
}

/// `b / (input_scale · weight_scale)` rounded half away from zero, saturated
/// to `i32`.
pub fn quantize_bias(b: f32, input_scale: f32, weight_scale: f32) -> i32 {
    let q = round_half_away(f64::from(b) / (f64::from(input_scale) * f64::from(weight_scale)));
    q.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Rounds half away from zero (`core` has no `f64::round`); saturates at the
/// `i64` range, NaN gives 0.
#[inline]
pub fn round_half_away(x: f64) -> i64 {
    // `as` saturates and maps NaN to 0; adding ±0.5 and truncating is exact
    // for |x| < 2^52, and above that x is already an integer.
    if x.abs() >= 4_503_599_627_370_496.0 {
        x as i64
    } else if x >= 0.0 {
        (x + 0.5) as i64
    } else {
        (x - 0.5) as i64
    }
}

/// A real multiplier `M ≥ 0` as `mult · 2^(shift − 31)`, `mult` a Q31 value
/// in `[2^30, 2^31)` (or 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Multiplier {
    /// Q31 mantissa.
    pub mult: i32,
    /// Power-of-two exponent, `−31 ..= 30`.
    pub shift: i32,
}

impl Multiplier {
    /// TFLite's `QuantizeMultiplier`: `M = frac · 2^shift` with `frac ∈ [0.5, 1)`,
    /// `mult = round(frac · 2^31)` (a carry to `2^31` halves it and bumps the
    /// shift). Multipliers below `2^−31` become 0. `None` when `M` is negative,
    /// not finite, or `≥ 2^30` (no sane scales give that).
    #[inline]
    pub fn from_real(m: f64) -> Option<Multiplier> {
        if !(m.is_finite() && m >= 0.0) {
            return None;
        }
        if m == 0.0 {
            return Some(Multiplier::default());
        }
        // frexp from the bits: m = frac · 2^exp, frac ∈ [0.5, 1). Below
        // 2^-1000 (subnormals included) the multiplier is 0 anyway.
        if m < f64::from_bits(0x0170_0000_0000_0000) {
            return Some(Multiplier::default());
        }
        let bits = m.to_bits();
        let mut exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
        // The same mantissa with the exponent of 0.5: exact.
        let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
        let mut q = round_half_away(frac * 2_147_483_648.0);
        if q == 1 << 31 {
            q /= 2;
            exp += 1;
        }
        if exp < -31 {
            return Some(Multiplier::default());
        }
        if exp > 30 {
            return None;
        }
        Some(Multiplier {
            mult: q as i32,
            shift: exp,
        })
    }

    /// The multiplier of a conv/dense output channel:
    /// `input_scale · weight_scale / output_scale`, in `f64`.
    #[inline]
    pub fn for_conv(input_scale: f32, weight_scale: f32, output_scale: f32) -> Option<Multiplier> {
        Multiplier::from_real(
            f64::from(input_scale) * f64::from(weight_scale) / f64::from(output_scale),
        )
    }

    /// `round(x · M)`, rounding once, half up (towards +∞), saturated to `i32`:
    /// `(x · mult + 2^(30 − shift)) >> (31 − shift)` in 64 bits.
    #[inline(always)]
    pub fn apply(self, x: i32) -> i32 {
        let total = 31 - self.shift; // 1 ..= 62
        let round = 1i64 << (total - 1);
        let r = (i64::from(x) * i64::from(self.mult) + round) >> total;
        r.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    }
}

/// The requantized output of a conv/dense accumulator: `zero_point + M·acc`,
/// clamped to `[lo, 255]` (`lo` is the zero point when a relu is fused, else 0).
#[inline(always)]
pub fn requantize(acc: i32, m: Multiplier, zero_point: u8, lo: u8) -> u8 {
    let y = m.apply(acc).saturating_add(i32::from(zero_point));
    y.clamp(i32::from(lo), 255) as u8
}

/// The three multipliers of an integer `add` (TFLite's 8-bit add): both
/// inputs are shifted left by [`ADD_LEFT_SHIFT`] and scaled to a common
/// `2 · max(scale_a, scale_b)`, summed, then scaled to the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AddMultipliers {
    /// `scale_a / (2 · max)`.
    pub a: Multiplier,
    /// `scale_b / (2 · max)`.
    pub b: Multiplier,
    /// `2 · max / (2^20 · scale_out)`.
    pub out: Multiplier,
}

impl AddMultipliers {
    /// The multipliers for inputs `a`, `b` and output `out`; `None` when a
    /// multiplier is out of range.
    pub fn new(a: ActQuant, b: ActQuant, out: ActQuant) -> Option<AddMultipliers> {
        let (sa, sb, so) = (f64::from(a.scale), f64::from(b.scale), f64::from(out.scale));
        let twice_max = 2.0 * sa.max(sb);
        Some(AddMultipliers {
            a: Multiplier::from_real(sa / twice_max)?,
            b: Multiplier::from_real(sb / twice_max)?,
            out: Multiplier::from_real(twice_max / (f64::from(1u32 << ADD_LEFT_SHIFT) * so))?,
        })
    }
}

/// One element of an integer add: `qa` (quantized as `a`) plus `qb` (as `b`),
/// quantized as `out`: `add_output(add_term(qa, za, m.a) + add_term(qb, zb,
/// m.b), zo, m.out)`.
#[inline(always)]
pub fn add(qa: u8, za: u8, qb: u8, zb: u8, zo: u8, m: &AddMultipliers) -> u8 {
    add_output(add_term(qa, za, m.a) + add_term(qb, zb, m.b), zo, m.out)
}

/// One input's share of an add: its offset `q − z`, shifted left by
/// [`ADD_LEFT_SHIFT`] and rescaled by `m` (at most `255 · 2^19` in
/// magnitude, as `m ≤ 1/2`).
#[inline(always)]
pub fn add_term(q: u8, z: u8, m: Multiplier) -> i32 {
    m.apply((i32::from(q) - i32::from(z)) << ADD_LEFT_SHIFT)
}

/// The output of an add from the sum of its two [`add_term`]s.
#[inline(always)]
pub fn add_output(sum: i32, zo: u8, m: Multiplier) -> u8 {
    let y = m.apply(sum).saturating_add(i32::from(zo));
    y.clamp(0, 255) as u8
}

/// `sum / count` rounded half away from zero (TFLite's integer average
/// pooling); `count > 0`.
#[inline(always)]
pub fn rounded_div(sum: i32, count: i32) -> i32 {
    if sum >= 0 {
        (sum + count / 2) / count
    } else {
        (sum - count / 2) / count
    }
}

/// The int8 `gelu`: a table of the 256 outputs, `table[q] =
/// output.quantize(gelu(input.dequantize(q)))` (TFLite's approach for
/// non-linear activations), built by the reader from the two quantizations
/// in the file; [`crate::gelu::gelu`] is plain `f32` arithmetic, so every
/// platform builds the same table.
pub fn gelu_table(input: ActQuant, output: ActQuant) -> [u8; 256] {
    let mut table = [0u8; 256];
    for (q, t) in table.iter_mut().enumerate() {
        *t = output.quantize(crate::gelu::gelu(input.dequantize(q as u8)));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact value of `x · M` with `M = mult · 2^(shift−31)`, rounded half
    /// up, from a 128-bit product.
    fn exact(x: i32, m: Multiplier) -> i64 {
        let p = i128::from(x) * i128::from(m.mult);
        let total = 31 - m.shift;
        // floor((p + 2^(total−1)) / 2^total)
        ((p + (1i128 << (total - 1))) >> total) as i64
    }

    #[test]
    fn gelu_table_is_gelu_on_the_grid() {
        let input = ActQuant::from_range(-6.0, 4.0);
        let output = ActQuant::from_range(-0.17, 4.0);
        let table = gelu_table(input, output);
        for q in 0..=255u8 {
            let x = input.dequantize(q);
            // Within half a step of the real GELU (plus its 3e-7 error).
            let real = x as f64 * 0.5 * libm::erfc(-(x as f64) / core::f64::consts::SQRT_2);
            let got = output.dequantize(table[q as usize]) as f64;
            assert!(
                (got - real).abs() <= 0.5 * output.scale as f64 + 1e-5,
                "q {q}: {got} vs {real}"
            );
        }
        // gelu(0) = 0: the zero point maps to the zero point.
        assert_eq!(table[input.zero_point as usize], output.zero_point);
    }

    #[test]
    fn multipliers_by_hand() {
        // 0.5 = 0.5 · 2^0: mult 2^30, shift 0.
        assert_eq!(
            Multiplier::from_real(0.5),
            Some(Multiplier {
                mult: 1 << 30,
                shift: 0
            })
        );
        // 1.0 = 0.5 · 2^1.
        assert_eq!(
            Multiplier::from_real(1.0),
            Some(Multiplier {
                mult: 1 << 30,
                shift: 1
            })
        );
        // 0.75 · 2^-3 = 0.09375.
        assert_eq!(
            Multiplier::from_real(0.09375),
            Some(Multiplier {
                mult: 3 << 29,
                shift: -3
            })
        );
        assert_eq!(Multiplier::from_real(0.0), Some(Multiplier::default()));
        assert_eq!(Multiplier::from_real(1e-12), Some(Multiplier::default()));
        assert_eq!(Multiplier::from_real(-1.0), None);
        assert_eq!(Multiplier::from_real(f64::NAN), None);
        assert_eq!(Multiplier::from_real(f64::INFINITY), None);
        assert_eq!(Multiplier::from_real(2f64.powi(31)), None);
        // Just below 1: frac rounds up to 2^31, carried into the shift.
        let m = Multiplier::from_real(1.0 - 1e-12).unwrap();
        assert_eq!(
            m,
            Multiplier {
                mult: 1 << 30,
                shift: 1
            }
        );
    }

    #[test]
    fn requantization_by_hand() {
        let half = Multiplier::from_real(0.5).unwrap();
        // Half up: 3 · 0.5 = 1.5 → 2; −3 · 0.5 = −1.5 → −1; 5 · 0.5 = 2.5 → 3.
        assert_eq!(half.apply(3), 2);
        assert_eq!(half.apply(-3), -1);
        assert_eq!(half.apply(5), 3);
        assert_eq!(half.apply(-5), -2);
        // 0.1 is not exact in Q31 (a little under): 15 · 0.1 gives 1, not 2.
        let tenth = Multiplier::from_real(0.1).unwrap();
        assert_eq!(tenth.apply(1000), 100);
        assert_eq!(tenth.apply(14), 1);
        assert_eq!(tenth.apply(15), 1);
        let eighth = Multiplier::from_real(0.125).unwrap();
        assert_eq!(eighth.apply(12), 2);
        assert_eq!(eighth.apply(-12), -1);
        assert_eq!(eighth.apply(11), 1);
        // Zero point and clamps: 128 + 100 saturates at 255; the fused relu's
        // lower bound is the zero point.
        assert_eq!(requantize(1000, tenth, 128, 0), 228);
        assert_eq!(requantize(2000, tenth, 128, 0), 255);
        assert_eq!(requantize(-2000, tenth, 128, 0), 0);
        assert_eq!(requantize(-2000, tenth, 128, 128), 128);
        // Saturation of the i32 result itself.
        let big = Multiplier::from_real(2f64.powi(29)).unwrap();
        assert_eq!(big.apply(i32::MAX), i32::MAX);
        assert_eq!(big.apply(i32::MIN), i32::MIN);
        assert_eq!(requantize(i32::MAX, big, 255, 0), 255);
    }

    #[test]
    fn activations_by_hand() {
        let q = ActQuant::from_range(0.0, 2.55);
        assert_eq!(q.zero_point, 0);
        assert!((q.scale - 0.01).abs() < 1e-9);
        assert_eq!(q.quantize(1.0), 100);
        assert_eq!(q.quantize(-1.0), 0);
        assert_eq!(q.quantize(9.0), 255);
        let q = ActQuant::from_range(-1.0, 1.55);
        assert_eq!(q.zero_point, 100);
        assert_eq!(q.quantize(0.0), 100);
        assert_eq!(q.dequantize(100), 0.0);
        // The range always holds 0.
        assert_eq!(ActQuant::from_range(2.0, 3.0).zero_point, 0);
        assert_eq!(ActQuant::from_range(-3.0, -2.0).zero_point, 255);
        assert_eq!(ActQuant::from_range(0.0, 0.0).scale, 1.0);
        assert_eq!(ActQuant::from_range(f32::NAN, 1.0).scale, 1.0 / 255.0);
        assert!(ActQuant::INPUT.is_valid());
        assert_eq!(weight_scale(127.0), 1.0);
        assert_eq!(weight_scale(0.0), 1.0);
        assert_eq!(quantize_weight(-300.0, 1.0), -127);
        assert_eq!(quantize_weight(2.5, 1.0), 3);
        assert_eq!(quantize_weight(-2.5, 1.0), -3);
        assert_eq!(quantize_bias(1.0, 0.5, 0.25), 8);
        assert_eq!(quantize_bias(1e30, 1e-10, 1e-10), i32::MAX);
        assert_eq!(rounded_div(5, 2), 3);
        assert_eq!(rounded_div(-5, 2), -3);
        assert_eq!(rounded_div(4, 3), 1);
        assert_eq!(groups(3), 1);
        assert_eq!(groups(64), 16);
        assert_eq!(groups(65), 17);
    }

    #[test]
    fn add_by_hand() {
        // Same scales in and out: plain addition of the offsets.
        let q = ActQuant {
            scale: 0.1,
            zero_point: 10,
        };
        let m = AddMultipliers::new(q, q, q).unwrap();
        assert_eq!(add(20, 10, 30, 10, 10, &m), 40);
        assert_eq!(add(0, 10, 0, 10, 10, &m), 0);
        assert_eq!(add(255, 10, 255, 10, 10, &m), 255);
        // Output at twice the scale: (1.0 + 2.0) / 0.2 = 15.
        let out = ActQuant {
            scale: 0.2,
            zero_point: 0,
        };
        let m = AddMultipliers::new(q, q, out).unwrap();
        assert_eq!(add(20, 10, 30, 10, 0, &m), 15);
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// `apply` is the exactly rounded product with the multiplier, which
        /// is within 2^-30 (relative) of the real it stands for.
        #[test]
        fn apply_is_exactly_rounded(mantissa in 0.0f64..1.0, exp in -36i32..29, x in any::<i32>()) {
            let real = mantissa * 2f64.powi(exp);
            let m = Multiplier::from_real(real).unwrap();
            if m.mult != 0 {
                prop_assert!((1 << 30..=i32::MAX).contains(&m.mult));
                let back = f64::from(m.mult) * 2f64.powi(m.shift - 31);
                prop_assert!((back - real).abs() <= real * 2f64.powi(-30));
            } else {
                prop_assert!(real < 2f64.powi(-31));
            }
            let want = exact(x, m).clamp(i64::from(i32::MIN), i64::from(i32::MAX));
            prop_assert_eq!(i64::from(m.apply(x)), want);
        }

        /// Requantized outputs are the rounded real values, saturated to the
        /// `u8` range above the lower bound.
        #[test]
        fn requantize_saturates(acc in -(1i32 << 24)..(1 << 24), scale in 1e-6f64..0.5, zp in any::<u8>(), relu in any::<bool>()) {
            let m = Multiplier::from_real(scale).unwrap();
            let lo = if relu { zp } else { 0 };
            let y = requantize(acc, m, zp, lo);
            let ideal = (exact(acc, m) + i64::from(zp)).clamp(i64::from(lo), 255);
            prop_assert_eq!(i64::from(y), ideal);
        }

        /// Quantized weights stay in ±127 and round to nearest.
        #[test]
        fn weights_saturate_at_127(w in -1e3f32..1e3, max_abs in 1e-3f32..1e2) {
            let s = weight_scale(max_abs);
            let q = quantize_weight(w, s);
            prop_assert!((-127..=127).contains(&q));
            if w.abs() <= max_abs {
                prop_assert!((f64::from(q) * f64::from(s) - f64::from(w)).abs() <= f64::from(s) * 0.5 + 1e-6);
            } else {
                prop_assert_eq!(q.unsigned_abs(), 127);
                prop_assert_eq!(q.signum(), w.signum() as i8);
            }
        }

        /// An add with equal scales is exact addition of the offsets
        /// (saturated); with any scales it is within one step of the real sum.
        #[test]
        fn add_is_within_one_step(qa in any::<u8>(), qb in any::<u8>(), za in any::<u8>(), zb in any::<u8>(), zo in any::<u8>(),
                                  sa in 1e-3f32..1.0, sb in 1e-3f32..1.0, so in 1e-3f32..2.0) {
            let (a, b, o) = (ActQuant { scale: sa, zero_point: za }, ActQuant { scale: sb, zero_point: zb }, ActQuant { scale: so, zero_point: zo });
            let m = AddMultipliers::new(a, b, o).unwrap();
            let y = add(qa, za, qb, zb, zo, &m);
            let real = f64::from(a.dequantize(qa)) + f64::from(b.dequantize(qb));
            let ideal = (real / f64::from(so) + f64::from(zo)).clamp(0.0, 255.0);
            prop_assert!((f64::from(y) - ideal).abs() <= 1.0, "{} vs {}", y, ideal);
            let same = AddMultipliers::new(a, a, a).unwrap();
            let sum = (i32::from(qa) - i32::from(za)) + (i32::from(qb) - i32::from(za)) + i32::from(za);
            prop_assert_eq!(i32::from(add(qa, za, qb, za, za, &same)), sum.clamp(0, 255));
        }
    }
}
