//! The int8 convolution tile (see [`super::conv_i8`]) with AVX2, for x86-64
//! CPUs without VNNI.
//!
//! AVX2's byte dot product `vpmaddubsw` adds two `u8 · i8` products in a
//! *saturating* 16-bit lane, and `255 · 127 · 2` does not fit: it would not be
//! exact. So the bytes are widened to 16 bits first and multiplied with
//! `vpmaddwd` (`i16 · i16`, pairs summed into an exact `i32`): a group's 4
//! weights for 4 output channels, sign-extended, fill one vector of 16 `i16`,
//! and the pixel's 4 input bytes, zero-extended and repeated, the other. Each
//! `i32` lane then holds the sum over half a group (channels `c`, lanes
//! `2c, 2c + 1`); the two halves are added once per tile (`vphaddd`).
//!
//! Accumulators: `P ≤ 6` pixels × 2 vectors (8 output channels). The
//! requantization is the scalar one (`Block::requantize`), as this is the
//! fallback kernel.
//!
//! Only the memory accesses through raw pointers are `unsafe`.

use super::conv_i8::TileI8;
use core::arch::x86_64::*;
use model_format::quant::GROUP;

/// Output channels per tile.
pub(crate) const COLS: usize = 8;

/// Runs one tile.
///
/// # Safety
/// The CPU must support AVX2. The tile's slices must cover what it reads and
/// writes (`x_needed`, `w_needed`, `out[(pixels−1)·px_out + cols]`),
/// `cols ≤ 8`, `pixels ≤ 6`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn tile(t: &mut TileI8<'_>) {
    debug_assert!(t.cols >= 1 && t.cols <= COLS && t.pixels <= 6);
    debug_assert!(t.out.len() >= t.px_out * t.pixels.saturating_sub(1) + t.cols);
    debug_assert!(t.rows == 0 || t.x.len() >= t.x_needed());
    debug_assert!(t.rows == 0 || t.w.len() >= t.w_needed());
    // SAFETY: `tile_n::<P>` needs what this function's caller guarantees.
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

/// The 4 weights of a group for 4 output channels (16 bytes from `p`),
/// sign-extended to 16 bits; channels at or past `n` read as zero and are not
/// touched in memory.
///
/// # Safety
/// `p .. p + 4·min(n, 4)` must be readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn weights4(p: *const u8, n: usize) -> __m256i {
    let bytes = if n >= 4 {
        // SAFETY: 16 readable bytes; no alignment needed.
        unsafe { _mm_loadu_si128(p.cast()) }
    } else {
        let mut buf = [0u8; 16];
        // SAFETY: `4·n` readable bytes (the caller's bound), into a local buffer.
        unsafe { core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), 4 * n) };
        // SAFETY: a 16-byte local array.
        unsafe { _mm_loadu_si128(buf.as_ptr().cast()) }
    };
    _mm256_cvtepi8_epi16(bytes)
}

/// A pixel's 4 input bytes of a group, zero-extended to 16 bits and repeated
/// in every 64-bit lane; a last group of `len < 4` bytes is padded with
/// zeros, never reading past it.
///
/// # Safety
/// `p .. p + min(len, 4)` must be readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn inputs4(p: *const u8, len: usize) -> __m256i {
    let v = if len >= GROUP {
        // SAFETY: 4 readable bytes; no alignment needed.
        unsafe { (p as *const i32).read_unaligned() }
    } else {
        let mut v = 0u32;
        for i in 0..len {
            // SAFETY: `i < len` bytes are readable.
            v |= u32::from(unsafe { *p.add(i) }) << (8 * i);
        }
        v as i32
    };
    _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(v)))
}

/// [`tile`] for `P = t.pixels` pixels.
///
/// # Safety
/// As for [`tile`], with that `P`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile_n<const P: usize>(t: &mut TileI8<'_>) {
    let zero = _mm256_setzero_si256();
    let mut acc = [[zero; 2]; P];
    let x = t.x.as_ptr();
    let w = t.w.as_ptr();
    let tail = t.ci - GROUP * t.groups.saturating_sub(1);
    // Channels in each of the two weight vectors.
    let n = [t.cols.min(4), t.cols.saturating_sub(4)];
    for r in 0..t.rows {
        for j in 0..t.taps {
            // SAFETY (both): `r < rows`, `j < taps`: inside `x` and `w`.
            let xr = unsafe { x.add(r * t.row_stride + j * t.ci) };
            let wr = unsafe { w.add(r * t.w_row + j * t.w_tap) };
            for gi in 0..t.groups {
                let len = if gi + 1 == t.groups { tail } else { GROUP };
                // SAFETY: group `gi`'s weights for `cols` channels are inside
                // `w` (`w_needed`); the second vector reads its `n[1]` channels
                // only, from 16 bytes further.
                let (w0, w1) = unsafe {
                    let p = wr.add(gi * t.w_group);
                    (weights4(p, n[0]), weights4(p.wrapping_add(16), n[1]))
                };
                for (p, a) in acc.iter_mut().enumerate() {
                    // SAFETY: pixel `p`'s group `gi` (its `len` bytes) is inside `x`.
                    let xv = unsafe { inputs4(xr.add(p * t.px_in + gi * GROUP), len) };
                    a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(xv, w0));
                    a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(xv, w1));
                }
            }
        }
    }
    // Channel c's halves are lanes 2c, 2c + 1: `hadd` sums them per 128-bit
    // lane, giving channels [0 1 4 5 | 2 3 6 7]; the permutation restores order.
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    for (p, a) in acc.iter().enumerate() {
        let sums = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(a[0], a[1]), order);
        let mut v = [0i32; COLS];
        // SAFETY: an 8-`i32` local array.
        unsafe { _mm256_storeu_si256(v.as_mut_ptr().cast(), sums) };
        let out = &mut t.out[p * t.px_out..][..t.cols];
        for (j, (o, s)) in out.iter_mut().zip(v).enumerate() {
            *o = t.block.requantize(j, s.wrapping_add(t.block.bias[j]));
        }
    }
}
