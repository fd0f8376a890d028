//! Int8 arithmetic 16 lanes at a time with AVX-512, shared by the VNNI
//! convolution (`conv_i8_vnni.rs`) and the integer `add`: the requantization
//! `model_format::quant::Multiplier::apply` for multipliers below 1/4, and
//! the add's loop.
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
use model_format::quant::Multiplier;

/// Whether every lane of `shift` that `mask` selects is at most −2 (its
/// multiplier below 1/4): [`Narrow`] applies.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn narrow_applies(mask: __mmask16, shift: __m512i) -> bool {
    _mm512_mask_cmpgt_epi32_mask(mask, shift, _mm512_set1_epi32(-2)) == 0
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

/// The loop of [`super::add_i8`] over whole runs of 16 bytes: `x[i] =
/// add_output(ta[x[i]] + tb[skip[i]], zo, out)`, the terms gathered from the
/// tables. Returns how many leading bytes it did: a multiple of 16, or 0
/// when the output multiplier is not below 1/4 (the caller does the rest).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) fn add(
    x: &mut [u8],
    skip: &[u8],
    ta: &[i32; 256],
    tb: &[i32; 256],
    zo: u8,
    out: Multiplier,
) -> usize {
    if out.shift > -2 {
        return 0;
    }
    let m = Narrow::splat(out);
    let zo = _mm512_set1_epi32(i32::from(zo));
    let top = _mm512_set1_epi32(255);
    let n = x.len().min(skip.len()) / 16 * 16;
    for (xs, ss) in x[..n].chunks_exact_mut(16).zip(skip.chunks_exact(16)) {
        // SAFETY: 16 bytes of each chunk; the indices are bytes, so the
        // gathers stay inside the tables of 256.
        unsafe {
            let a = _mm512_cvtepu8_epi32(_mm_loadu_si128(xs.as_ptr().cast()));
            let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(ss.as_ptr().cast()));
            let sum = _mm512_add_epi32(
                _mm512_i32gather_epi32::<4>(a, ta.as_ptr().cast()),
                _mm512_i32gather_epi32::<4>(b, tb.as_ptr().cast()),
            );
            // Each term is within ±255·2^19, so |sum| < 2^30.
            let y = _mm512_add_epi32(m.apply(sum), zo);
            let y = _mm512_min_epi32(_mm512_max_epi32(y, _mm512_setzero_si512()), top);
            _mm_storeu_si128(xs.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(y));
        }
    }
    n
}
