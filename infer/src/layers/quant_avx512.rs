//! Int8 arithmetic 16 lanes at a time with AVX-512, shared by the VNNI
//! convolution (`conv_i8_vnni.rs`) and the integer `add`: the requantization
//! `model_format::quant::Multiplier::apply` for multipliers below 1/4, and
//! the add's loop with its terms.
//!
//! For a multiplier `M = mult · 2^(shift−31)` with `shift ≤ −2` (so `total =
//! 31 − shift ≥ 33`), as any sane scales give, only the high half of the
//! 64-bit product counts:
//!
//! ```text
//! (acc·mult + 2^(total−1)) >> total = (hi + 2^(total−33)) >> (total−32),   hi = ⌊acc·mult / 2^32⌋
//! ```
//!
//! because the low half adds less than 1 to an integer that is then divided
//! by a power of two. For `|acc| < 2^30` the result is within ±2^29, so
//! `apply`'s saturation to `i32` never acts. With the zero point, the clamp
//! and the narrowing to bytes, 16 outputs take 12 instructions, where 64-bit
//! lanes (two halves of 8) take 19.

use core::arch::x86_64::*;
use model_format::quant::{AddMultipliers, Multiplier};

/// The largest shift [`Narrow`] takes: multipliers below 1/4.
const NARROW_MAX_SHIFT: i32 = -2;

/// Whether every lane of `shift` that `mask` selects is at most
/// [`NARROW_MAX_SHIFT`]: [`Narrow`] applies.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn narrow_applies(mask: __mmask16, shift: __m512i) -> bool {
    _mm512_mask_cmpgt_epi32_mask(mask, shift, _mm512_set1_epi32(NARROW_MAX_SHIFT)) == 0
}

/// 16 multipliers below 1/4, ready for [`Narrow::apply`].
#[derive(Clone, Copy)]
pub(crate) struct Narrow {
    /// `mult` for the even lanes, and moved down for the odd ones.
    mult: __m512i,
    mult_odd: __m512i,
    /// `2^(total−33)` and `total − 32`.
    round: __m512i,
    shift: __m512i,
}

impl Narrow {
    /// From 16 Q31 mantissas and their shifts (each `≤ −2`:
    /// [`narrow_applies`]).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn new(mult: __m512i, shift: __m512i) -> Narrow {
        let one = _mm512_set1_epi32(1);
        let shift = _mm512_sub_epi32(_mm512_set1_epi32(-1), shift);
        Narrow {
            mult,
            mult_odd: _mm512_srli_epi64::<32>(mult),
            round: _mm512_sllv_epi32(one, _mm512_sub_epi32(shift, one)),
            shift,
        }
    }

    /// One multiplier for all lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn splat(m: Multiplier) -> Narrow {
        Narrow::new(_mm512_set1_epi32(m.mult), _mm512_set1_epi32(m.shift))
    }

    /// `Multiplier::apply` of each lane (`|acc| < 2^30`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn apply(self, acc: __m512i) -> __m512i {
        // 64-bit products of the even lanes and of the odd ones; their high
        // halves, back in their lanes.
        let even = _mm512_mul_epi32(acc, self.mult);
        let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(acc), self.mult_odd);
        let hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(even), odd);
        _mm512_srav_epi32(_mm512_add_epi32(hi, self.round), self.shift)
    }
}

/// `Multiplier::for_conv(s_x, weight_scale[j], s_y)` of each output channel
/// `j < mult.len()` (the same length as `shift`, at most `weight_scale.len() / 4`),
/// 8 at a time, bits for bits: a block's multipliers are derived on every
/// image, and one at a time they took 3–4 % of an int8 model's time (model 1,
/// `fast`, ResNet-8). A multiplier that `Multiplier::from_real` refuses gets
/// its `Default` (0, 0), as the scalar caller does.
///
/// `from_real`'s steps, in 8 lanes of `f64`: `m = s_x·w / s_y` (the same two
/// IEEE operations); `m = frac · 2^exp` read from the bits; `q = ⌊frac·2^31 +
/// 0.5⌋` (`frac·2^31 < 2^31` is exact, and so is the truncation), where `q =
/// 2^31` overflows `i32` and becomes `2^30` with `exp + 1`; then 0 outside
/// `m ∈ [2^−1000, f64::MAX]` (NaN, negative, zero, tiny, infinite) and
/// outside `exp ∈ [−31, 30]`.
#[target_feature(enable = "avx512f,avx512vl")]
pub(crate) fn conv_multipliers(
    sx: f32,
    sy: f32,
    weight_scale: &[u8],
    mult: &mut [i32],
    shift: &mut [i32],
) {
    let n = mult.len().min(shift.len()).min(weight_scale.len() / 4);
    let sx = _mm512_set1_pd(f64::from(sx));
    let sy = _mm512_set1_pd(f64::from(sy));
    let tiny = _mm512_set1_pd(f64::from_bits(0x0170_0000_0000_0000));
    let huge = _mm512_set1_pd(f64::MAX);
    for j in (0..n).step_by(8) {
        let lanes: __mmask8 = if n - j >= 8 { 0xFF } else { (1 << (n - j)) - 1 };
        // SAFETY: the lanes of `lanes` are channels `j..n`, whose 4 bytes each
        // lie in `weight_scale` (`n ≤ len / 4`); the others are not read.
        let w = unsafe { _mm256_maskz_loadu_ps(lanes, weight_scale.as_ptr().add(4 * j).cast()) };
        let m = _mm512_div_pd(_mm512_mul_pd(sx, _mm512_cvtps_pd(w)), sy);
        let bits = _mm512_castpd_si512(m);
        let exp = _mm512_sub_epi64(
            _mm512_and_si512(_mm512_srli_epi64::<52>(bits), _mm512_set1_epi64(0x7ff)),
            _mm512_set1_epi64(1022),
        );
        let frac = _mm512_castsi512_pd(_mm512_or_si512(
            _mm512_and_si512(bits, _mm512_set1_epi64(0x000F_FFFF_FFFF_FFFF)),
            _mm512_set1_epi64(1022 << 52),
        ));
        let x = _mm512_add_pd(
            _mm512_mul_pd(frac, _mm512_set1_pd(2_147_483_648.0)),
            _mm512_set1_pd(0.5),
        );
        let q = _mm512_cvttpd_epi32(x);
        let exp = _mm512_cvtepi64_epi32(exp);
        let carry = _mm256_cmpeq_epi32_mask(q, _mm256_set1_epi32(i32::MIN));
        let q = _mm256_mask_mov_epi32(q, carry, _mm256_set1_epi32(1 << 30));
        let exp = _mm256_mask_add_epi32(exp, carry, exp, _mm256_set1_epi32(1));
        let ok = lanes
            & _mm512_cmp_pd_mask::<_CMP_GE_OQ>(m, tiny)
            & _mm512_cmp_pd_mask::<_CMP_LE_OQ>(m, huge)
            & _mm256_cmpge_epi32_mask(exp, _mm256_set1_epi32(-31))
            & _mm256_cmple_epi32_mask(exp, _mm256_set1_epi32(30));
        let mut out = [[0i32; 8]; 2];
        // SAFETY: two arrays of 8 `i32`, as the stores write.
        unsafe {
            _mm256_storeu_si256(out[0].as_mut_ptr().cast(), _mm256_maskz_mov_epi32(ok, q));
            _mm256_storeu_si256(out[1].as_mut_ptr().cast(), _mm256_maskz_mov_epi32(ok, exp));
        }
        let k = (n - j).min(8);
        mult[j..j + k].copy_from_slice(&out[0][..k]);
        shift[j..j + k].copy_from_slice(&out[1][..k]);
    }
}

/// `model_format::quant::add_term` of 16 bytes in 32-bit lanes, for a
/// multiplier `m = mult · 2^(shift−31)` of at most 1/2 (so `shift ≤ 0`) and
/// at least about 2^−21 (`shift ≥ −20`). With `d = q − z`, `t = 31 − shift`
/// and `s = t − 20`:
///
/// ```text
/// (d·2^20·mult + 2^(t−1)) >> t = (d·mult + 2^(s−1)) >> s
///                              = (d·mh + ((d·ml + 2^(s−1)) >> 11)) >> (s − 11),   mult = mh·2^11 + ml
/// ```
///
/// (the first step divides out 2^20, the second takes the low 11 bits'
/// share out before the division, as in [`Narrow`]). Every term fits 32
/// bits: `|d·mh| < 2^28`, `|d·ml| < 2^19`, `2^(s−1) ≤ 2^30`.
#[derive(Clone, Copy)]
pub(crate) struct AddTerm {
    z: __m512i,
    mh: __m512i,
    ml: __m512i,
    round: __m512i,
    shift: __m512i,
}

impl AddTerm {
    /// For bytes of zero point `z`, scaled by `m`; `None` outside the range
    /// above (no two sane scales of one add are 2^20 apart).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn new(z: u8, m: Multiplier) -> Option<AddTerm> {
        if !(-20..=0).contains(&m.shift) {
            return None;
        }
        Some(AddTerm {
            z: _mm512_set1_epi32(i32::from(z)),
            mh: _mm512_set1_epi32(m.mult >> 11),
            ml: _mm512_set1_epi32(m.mult & 0x7FF),
            round: _mm512_set1_epi32(1 << (10 - m.shift)),
            shift: _mm512_set1_epi32(-m.shift),
        })
    }

    /// The terms of 16 bytes (the low byte of each lane).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn apply(self, q: __m512i) -> __m512i {
        let d = _mm512_sub_epi32(q, self.z);
        let low = _mm512_add_epi32(_mm512_mullo_epi32(d, self.ml), self.round);
        let sum = _mm512_add_epi32(_mm512_mullo_epi32(d, self.mh), _mm512_srai_epi32::<11>(low));
        _mm512_srav_epi32(sum, self.shift)
    }
}

/// The loop of [`super::add_i8`] over whole runs of 16 bytes: `x[i] =
/// add_output(add_term(x[i], za, m.a) + add_term(skip[i], zb, m.b), zo,
/// m.out)`, all in 32-bit lanes. Returns how many leading bytes it did: a
/// multiple of 16, or 0 when a multiplier is out of [`AddTerm`]'s or
/// [`Narrow`]'s range (the caller does the rest).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn add(x: &mut [u8], skip: &[u8], z: [u8; 3], m: &AddMultipliers) -> usize {
    let [za, zb, zo] = z;
    let (Some(ta), Some(tb)) = (AddTerm::new(za, m.a), AddTerm::new(zb, m.b)) else {
        return 0;
    };
    if m.out.shift > NARROW_MAX_SHIFT {
        return 0;
    }
    let out = Narrow::splat(m.out);
    let zo = _mm512_set1_epi32(i32::from(zo));
    let top = _mm512_set1_epi32(255);
    let n = x.len().min(skip.len()) / 16 * 16;
    for (xs, ss) in x[..n].chunks_exact_mut(16).zip(skip.chunks_exact(16)) {
        // SAFETY: 16 bytes of each chunk.
        let (a, b) = unsafe {
            (
                _mm512_cvtepu8_epi32(_mm_loadu_si128(xs.as_ptr().cast())),
                _mm512_cvtepu8_epi32(_mm_loadu_si128(ss.as_ptr().cast())),
            )
        };
        // Each term is within ±255·2^19, so |sum| < 2^30.
        let sum = _mm512_add_epi32(ta.apply(a), tb.apply(b));
        let y = _mm512_add_epi32(out.apply(sum), zo);
        let y = _mm512_min_epi32(_mm512_max_epi32(y, _mm512_setzero_si512()), top);
        // SAFETY: 16 bytes of the chunk.
        unsafe { _mm_storeu_si128(xs.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(y)) };
    }
    n
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::cpu::Level;
    use proptest::prelude::*;
    use std::{format, vec, vec::Vec};

    /// [`conv_multipliers`] gives `Multiplier::for_conv`'s bits (its
    /// `Default` where that refuses) for every channel of `ws`; `Err` naming
    /// the first that differs. Skipped (Ok) without AVX-512 VL.
    fn agrees(sx: f32, sy: f32, ws: &[f32]) -> Result<(), std::string::String> {
        if crate::cpu::level() < Level::Avx512Vnni {
            return Ok(());
        }
        let bytes: Vec<u8> = ws.iter().flat_map(|w| w.to_le_bytes()).collect();
        let (mut mult, mut shift) = (vec![7; ws.len()], vec![7; ws.len()]);
        // SAFETY: the CPU has AVX-512F and VL (checked above).
        unsafe { conv_multipliers(sx, sy, &bytes, &mut mult, &mut shift) };
        for (j, &w) in ws.iter().enumerate() {
            let want = Multiplier::for_conv(sx, w, sy).unwrap_or_default();
            let got = Multiplier {
                mult: mult[j],
                shift: shift[j],
            };
            if got != want {
                return Err(format!(
                    "s_x {sx:e}, w {w:e}, s_y {sy:e}: {got:?}, want {want:?}"
                ));
            }
        }
        Ok(())
    }

    #[test]
    fn conv_multipliers_at_the_edges() {
        let below_one = 1.0 - f32::EPSILON; // 1 − 2^−23
        let cases: &[(f32, f32, &[f32])] = &[
            // (1 + 2^−23)(1 − 2^−23) = 1 − 2^−46: the mantissa rounds up to
            // 2^31, so it is halved and the shift bumped.
            (1.0 + f32::EPSILON, 1.0, &[below_one]),
            // Shifts at their limits: M = 1.5·2^29 (shift 30) and 2^−32
            // (shift −31) are kept; 2^30 and 2^−33 become 0.
            (
                1.0,
                1.0,
                &[
                    1.5 * 2f32.powi(29),
                    2f32.powi(30),
                    2f32.powi(-32),
                    2f32.powi(-33),
                ],
            ),
            // Refused: zero, negative, infinite, NaN; tiny and huge ratios.
            (1.0, 1.0, &[0.0, -1.0, f32::INFINITY, f32::NAN, 1e-30, 1e30]),
            (f32::NAN, 1.0, &[0.5]),
            (1.0, 0.0, &[0.5]),
            // Usual scales.
            (1.0 / 255.0, 0.05, &[0.001, 0.0123, 0.3, 1e-5]),
        ];
        for &(sx, sy, ws) in cases {
            agrees(sx, sy, ws).unwrap();
        }
    }

    proptest! {
        /// Any number of channels (partial vectors of 8 included), scales
        /// over many decades.
        #[test]
        fn conv_multipliers_match_for_conv(
            sx in 1e-6f32..10.0,
            sy in 1e-6f32..10.0,
            ws in proptest::collection::vec(1e-8f32..100.0, 0..40),
        ) {
            prop_assert!(agrees(sx, sy, &ws).is_ok(), "{:?}", agrees(sx, sy, &ws));
        }
    }
}
