//! The int8 convolution tile (see [`super::conv_i8`]) with AVX-512 VNNI.
//!
//! `vpdpbusd` multiplies 4 unsigned bytes by 4 signed bytes and adds the four
//! products to an `i32` lane, which is exactly the int8 format's weight layout:
//! one 64-byte load holds the 4 weights of a group for 16 output channels.
//! Accumulators: `P` pixels × 2 vectors of 16 channels (`P ≤ 6`), initialised
//! with the biases. Per group of 4 input channels: two weight vectors are
//! loaded, and for each pixel its 4 input bytes are broadcast and dot-multiplied
//! into its two accumulators. The input bytes are used as they are, so the
//! input's zero point must be 0 (the driver sends other layers to the portable
//! kernel).
//!
//! Requantization is vectorised in 64-bit lanes with the same formula as
//! `model_format::quant::Multiplier::apply`: `(acc · mult + 2^(total−1)) >>
//! total`, `total = 31 − shift`, then `+ z_y` and the clamp to `[lo, 255]`
//! (equal to the scalar path's `i32` saturation followed by the clamp).
//!
//! Only the memory accesses through raw pointers are `unsafe`.

use super::conv_i8::TileI8;
use core::arch::x86_64::*;
use model_format::quant::GROUP;

/// Output channels per tile.
pub(crate) const COLS: usize = 32;

/// Runs one tile.
///
/// # Safety
/// The CPU must support AVX-512F, BW, VL and VNNI. The tile's slices must
/// cover what it reads and writes (`x_needed`, `w_needed`, and
/// `out[(pixels−1)·px_out + cols]`), `cols ≤ 32`, `pixels ≤ 6`, `zp_in = 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn tile(t: &mut TileI8<'_>) {
    debug_assert!(t.cols >= 1 && t.cols <= COLS && t.pixels <= 6 && t.zp_in == 0);
    debug_assert!(t.out.len() >= t.px_out * t.pixels.saturating_sub(1) + t.cols);
    debug_assert!(t.rows == 0 || t.x.len() >= t.x_needed());
    debug_assert!(t.rows == 0 || t.w.len() >= t.w_needed());
    // SAFETY: `tile_n::<P>` needs what this function's caller guarantees, with
    // `P = pixels`.
    unsafe {
        match t.pixels {
            6 => tile_n::<6>(t),
            5 => tile_n::<5>(t),
            4 => tile_n::<4>(t),
            3 => tile_n::<3>(t),
            2 => tile_n::<2>(t),
            1 => tile_n::<1>(t),
            _ => {}
        }
    }
}

/// Lane masks for the first `cols` of 32 channels, one per 16-lane vector.
fn masks(cols: usize) -> [__mmask16; 2] {
    let lanes = |n: usize| if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
    [lanes(cols), lanes(cols.saturating_sub(16))]
}

/// The 4 input bytes of a group as one `i32` (little-endian); a last group of
/// `len < 4` bytes is padded with zeros, never reading past it.
///
/// # Safety
/// `p .. p + min(len, 4)` must be readable.
#[inline(always)]
unsafe fn group(p: *const u8, len: usize) -> i32 {
    if len >= GROUP {
        // SAFETY: 4 readable bytes (the caller's bound); no alignment needed.
        unsafe { (p as *const i32).read_unaligned() }
    } else {
        let mut v = 0u32;
        for i in 0..len {
            // SAFETY: `i < len` bytes are readable.
            v |= u32::from(unsafe { *p.add(i) }) << (8 * i);
        }
        v as i32
    }
}

/// [`tile`] for `P = t.pixels` pixels.
///
/// # Safety
/// As for [`tile`], with that `P`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_n<const P: usize>(t: &mut TileI8<'_>) {
    let m = masks(t.cols);
    let b = t.block;
    // The block's arrays hold 32 values each; the lanes past `cols` are unused.
    // SAFETY: `[i32; 32]` arrays: 2 × 16 lanes in bounds.
    let load =
        |a: &[i32; COLS], v: usize| unsafe { _mm512_loadu_si512(a.as_ptr().add(16 * v).cast()) };
    let bias = [load(&b.bias, 0), load(&b.bias, 1)];
    let mut acc = [bias; P];
    let x = t.x.as_ptr();
    let w = t.w.as_ptr();
    // The last group of each tap holds `tail` bytes (4 unless ci % 4 ≠ 0).
    let tail = t.ci - GROUP * t.groups.saturating_sub(1);
    for r in 0..t.rows {
        for j in 0..t.taps {
            // SAFETY (both `add`s): `r < rows`, `j < taps`: inside `x`
            // (`x_needed`) and `w` (`w_needed`).
            let xr = unsafe { x.add(r * t.row_stride + j * t.ci) };
            let wr = unsafe { w.add(r * t.w_row + j * t.w_tap) };
            for gi in 0..t.groups {
                let len = if gi + 1 == t.groups { tail } else { GROUP };
                // SAFETY: group `gi`'s weights for `cols` channels are inside
                // `w` (`w_needed` counts `(groups−1)·w_group + cols·4`); the
                // masked-off lanes are not read and never fault.
                let (w0, w1) = unsafe {
                    let p = wr.add(gi * t.w_group);
                    (
                        _mm512_maskz_loadu_epi32(m[0], p.cast()),
                        _mm512_maskz_loadu_epi32(m[1], p.wrapping_add(64).cast()),
                    )
                };
                for (p, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `p < pixels`: pixel `p`'s group `gi` (its `len`
                    // bytes) lies inside `x` (`x_needed`).
                    let xv =
                        _mm512_set1_epi32(unsafe { group(xr.add(p * t.px_in + gi * GROUP), len) });
                    a[0] = _mm512_dpbusd_epi32(a[0], xv, w0);
                    a[1] = _mm512_dpbusd_epi32(a[1], xv, w1);
                }
            }
        }
    }
    // Requantization constants per vector of 16 channels, as two halves of 8
    // 64-bit lanes: multiplier, rounding term and shift.
    let consts = |v: usize| {
        let mult = load(&b.mult, v);
        let total = _mm512_sub_epi32(_mm512_set1_epi32(31), load(&b.shift, v));
        let half = |lo: bool| {
            let pick = |z: __m512i| {
                if lo {
                    _mm512_cvtepi32_epi64(_mm512_castsi512_si256(z))
                } else {
                    _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(z))
                }
            };
            let total = pick(total);
            let round = _mm512_sllv_epi64(
                _mm512_set1_epi64(1),
                _mm512_sub_epi64(total, _mm512_set1_epi64(1)),
            );
            (pick(mult), round, total)
        };
        [half(true), half(false)]
    };
    let k = [consts(0), consts(1)];
    let zp = _mm512_set1_epi64(i64::from(b.zero_point));
    let lo = _mm512_set1_epi64(i64::from(b.lo));
    let hi = _mm512_set1_epi64(255);
    let out = t.out.as_mut_ptr();
    for (p, a) in acc.iter().enumerate() {
        for v in 0..2 {
            let halves = [
                _mm512_cvtepi32_epi64(_mm512_castsi512_si256(a[v])),
                _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(a[v])),
            ];
            let [h0, h1] = halves;
            let q = |h: __m512i, (mult, round, total): (__m512i, __m512i, __m512i)| {
                let r =
                    _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(h, mult), round), total);
                let r = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(r, zp), lo), hi);
                _mm512_cvtepi64_epi8(r)
            };
            let y = _mm_unpacklo_epi64(q(h0, k[v][0]), q(h1, k[v][1]));
            // SAFETY: `p < pixels`, and the `cols` bytes of pixel `p` are in
            // `out`; masked-off bytes are not written (their address may lie
            // past the end when all lanes of the vector are off).
            unsafe {
                _mm_mask_storeu_epi8(out.add(p * t.px_out).wrapping_add(16 * v).cast(), m[v], y);
            }
        }
    }
}
