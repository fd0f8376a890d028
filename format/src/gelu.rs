//! GELU, `gelu(x) = x · Φ(x)` with `Φ` the standard normal distribution
//! function (Hendrycks & Gimpel 2016; PyTorch's `nn.GELU()`, the exact form,
//! not the `tanh` approximation), computed here once so that the trainer, its
//! int8 reference and `infer` (f32, and the int8 look-up table of
//! [`crate::quant::gelu_table`]) give the same `f32` for the same input on
//! every platform: plain `f32` additions, multiplications, one division and
//! bit operations, no `libm`, no fused multiply-add (Rust never contracts), and
//! no branch, so that loops over it vectorise.
//!
//! `Φ(x) = ½ · erfc(−x/√2)`. With `z = |x|/√2`, `erfc(z)` is Abramowitz &
//! Stegun's formula 7.1.26, `erfc(z) ≈ t·(a₁ + t·(a₂ + t·(a₃ + t·(a₄ + t·a₅))))
//! · e^{−z²}`, `t = 1/(1 + p·z)` (absolute error below 1.5·10⁻⁷ for `z ≥ 0`),
//! and `Φ(x) = 1 − erfc(z)/2` for `x ≥ 0`, `erfc(z)/2` below: the small tail is
//! computed directly, never as a difference, so `gelu` of a very negative `x`
//! keeps its relative precision. `e^{−z²}` is [`exp_nonpositive`].
//!
//! The tests compare against `libm`'s `erf` in `f64`: `Φ` is within 3·10⁻⁷ of
//! it everywhere.

const SQRT_HALF: f32 = core::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Abramowitz & Stegun 7.1.26.
const P: f32 = 0.327_591_1;
const A1: f32 = 0.254_829_6;
const A2: f32 = -0.284_496_74;
const A3: f32 = 1.421_413_8;
const A4: f32 = -1.453_152;
const A5: f32 = 1.061_405_4;

/// `gelu(x) = x · Φ(x)`.
#[inline]
pub fn gelu(x: f32) -> f32 {
    x * cdf(x)
}

/// `gelu'(x) = Φ(x) + x·φ(x)`, `φ` the standard normal density: one
/// exponential serves both, as `φ(x) = e^{−z²}/√(2π)` with `z = |x|/√2`.
#[inline]
pub fn grad(x: f32) -> f32 {
    let (cdf, e) = cdf_and_exp(x);
    cdf + x * (INV_SQRT_2PI * e)
}

/// `Φ(x)`, the standard normal distribution function.
#[inline]
pub fn cdf(x: f32) -> f32 {
    cdf_and_exp(x).0
}

/// `(Φ(x), e^{−x²/2})`.
#[inline(always)]
fn cdf_and_exp(x: f32) -> (f32, f32) {
    let z = x.abs() * SQRT_HALF;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let e = exp_nonpositive(-(z * z));
    let half_tail = 0.5 * poly * e;
    let cdf = if x >= 0.0 { 1.0 - half_tail } else { half_tail };
    (cdf, e)
}

/// `e^x` for `x ≤ 0` (relative error below 2·10⁻⁷; inputs below −87 give
/// `e^{−87}`, about 1.6·10⁻³⁸, rather than a subnormal or 0; NaN stays NaN).
///
/// `x = n·ln 2 + r` with `n` the nearest integer to `x/ln 2` (rounded by
/// adding and subtracting 1.5·2²³, which leaves no fraction bits) and
/// `|r| ≤ ln 2 / 2`, `ln 2` split in two so that `n·ln 2` is exact enough;
/// `e^r` is its Taylor polynomial of degree 7 (remainder below 3·10⁻⁹) and
/// `2^n` is built from its exponent bits.
#[inline]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // 0x3f31_7200: 8 low bits zero
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    let x = x.clamp(-87.0, 0.0);
    let k = x * LOG2E + ROUND;
    let n = k - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // n ∈ [−126, 0] sits in k's low mantissa bits (k = 1.5·2^23 + n, whose
    // bits are 0x4b40_0000 + n): 2^n is the normal float with biased
    // exponent n + 127. Integer arithmetic only, so the loop vectorises.
    let biased = k.to_bits().wrapping_sub(0x4b40_0000 - 127);
    p * f32::from_bits(biased << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdf64(x: f64) -> f64 {
        0.5 * libm::erfc(-x / core::f64::consts::SQRT_2)
    }

    #[test]
    fn cdf_matches_libm_within_3e7() {
        let mut worst = 0.0f64;
        for i in -12_000..=12_000 {
            let x = i as f32 / 1000.0;
            let err = (cdf(x) as f64 - cdf64(x as f64)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 3e-7, "worst |Φ − Φ_libm| = {worst:e}");
        // The tail is computed, not cancelled: relative error below 2 % even
        // where Φ is 1e-19 (a difference 1 − (1 − Φ) would return 0 there).
        for x in [-4.0f32, -6.0, -9.0] {
            let rel = (cdf(x) as f64 / cdf64(x as f64) - 1.0).abs();
            assert!(rel < 2e-2, "Φ({x}) relative error {rel:e}");
        }
    }

    #[test]
    fn exp_matches_libm() {
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let rel = (exp_nonpositive(x) as f64 / libm::exp(x as f64) - 1.0).abs();
            assert!(rel < 2e-7, "exp({x}) relative error {rel:e}");
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e30) > 0.0 && exp_nonpositive(-1e30) < 1e-37);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn grad_matches_the_derivative() {
        // d/dx x·Φ(x) = Φ(x) + x·φ(x), in f64 from libm.
        for i in -8_000..=8_000 {
            let x = i as f32 / 1000.0;
            let xd = x as f64;
            let phi = libm::exp(-0.5 * xd * xd) / libm::sqrt(2.0 * core::f64::consts::PI);
            let want = cdf64(xd) + xd * phi;
            assert!((grad(x) as f64 - want).abs() < 1e-6, "gelu'({x})");
        }
    }

    #[test]
    fn gelu_values_and_symmetry() {
        assert_eq!(gelu(0.0), 0.0);
        // gelu(x) − gelu(−x) = x (Φ(x) + Φ(−x) = 1).
        for i in 1..200 {
            let x = i as f32 / 20.0;
            assert!((gelu(x) - gelu(-x) - x).abs() < 1e-6 * x.max(1.0), "{x}");
        }
        // PyTorch's torch.nn.functional.gelu(torch.tensor([1., -1., 3.])).
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_25).abs() < 1e-6);
        assert!((gelu(3.0) - 2.995_95).abs() < 1e-5);
        // gelu'(0) = ½, gelu'(x) → 1 above and 0 below.
        assert!((grad(0.0) - 0.5).abs() < 1e-7);
        assert!((grad(8.0) - 1.0).abs() < 1e-6 && grad(-8.0).abs() < 1e-6);
        assert!(gelu(f32::NAN).is_nan());
    }
}
