//! The convolution tile (see [`super::conv`]) with AVX-512F: the AVX2 kernel
//! (`conv_avx2.rs`) with registers twice as wide.
//!
//! Accumulators: `P` pixels × 2 vectors of 16 channels (`P ≤ 8`: 16 of the 32
//! ZMM registers), initialised with the bias. Per tap: two weight vectors are
//! loaded (unaligned, straight from the file's bytes), and for each pixel the
//! input value is broadcast and fused-multiply-added into its two accumulators.
//! With fewer than 32 channels left, masked loads and stores touch only the
//! valid lanes (masked-off lanes never fault); with at most 16 (a layer of 16
//! channels, common in small networks), one accumulator vector per pixel
//! instead of two ([`narrow`]), so no FMA is spent on zeros.
//!
//! Only the memory accesses through raw pointers are `unsafe` (each block says
//! why it stays inside its slice); the arithmetic intrinsics are safe to call
//! in these functions, which are compiled with the feature they need.

use super::conv::Tile;
use core::arch::x86_64::*;

/// Output channels per tile.
pub(crate) const COLS: usize = 32;
/// At most this many channels, a tile runs on one vector per pixel
/// ([`narrow`]).
const HALF: usize = 16;

/// Runs one tile.
///
/// # Safety
/// The CPU must support AVX-512F. The tile's slices must cover what it reads
/// and writes, as `conv::Conv::tile` builds them:
/// `x[(pixels−1)·px_in + (rows−1)·row_stride + span]`,
/// `w[((rows−1)·w_row + (span−1)·w_tap + cols)·4]`, `bias[cols·4]`,
/// `out[(pixels−1)·px_out + cols]`, with `cols ≤ 32`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile(t: &mut Tile<'_>) {
    debug_assert!(t.cols >= 1 && t.cols <= COLS && t.pixels <= 8);
    debug_assert!(t.bias.len() >= t.cols * 4);
    debug_assert!(t.out.len() >= t.px_out * t.pixels.saturating_sub(1) + t.cols);
    debug_assert!(t.rows == 0 || t.x.len() >= t.x_needed());
    debug_assert!(t.rows == 0 || t.w.len() >= t.w_needed());
    // SAFETY: `tile_n::<P, _>` needs what this function's caller guarantees,
    // with `P = pixels` and `MASKED` exactly when `cols < 32`: the match picks
    // those arguments (and this function has the target feature it needs).
    unsafe {
        if t.cols <= HALF {
            return match t.pixels {
                8 => narrow::<8>(t),
                7 => narrow::<7>(t),
                6 => narrow::<6>(t),
                5 => narrow::<5>(t),
                4 => narrow::<4>(t),
                3 => narrow::<3>(t),
                2 => narrow::<2>(t),
                1 => narrow::<1>(t),
                _ => {}
            };
        }
        match (t.pixels, t.cols == COLS) {
            (8, true) => tile_n::<8, false>(t),
            (7, true) => tile_n::<7, false>(t),
            (6, true) => tile_n::<6, false>(t),
            (5, true) => tile_n::<5, false>(t),
            (4, true) => tile_n::<4, false>(t),
            (3, true) => tile_n::<3, false>(t),
            (2, true) => tile_n::<2, false>(t),
            (1, true) => tile_n::<1, false>(t),
            (8, false) => tile_n::<8, true>(t),
            (7, false) => tile_n::<7, true>(t),
            (6, false) => tile_n::<6, true>(t),
            (5, false) => tile_n::<5, true>(t),
            (4, false) => tile_n::<4, true>(t),
            (3, false) => tile_n::<3, true>(t),
            (2, false) => tile_n::<2, true>(t),
            (1, false) => tile_n::<1, true>(t),
            _ => {}
        }
    }
}

/// Lane masks for the first `cols` of 32 channels, one per 16-lane vector.
fn masks(cols: usize) -> (__mmask16, __mmask16) {
    let lanes = |n: usize| if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
    (lanes(cols), lanes(cols.saturating_sub(16)))
}

/// Loads 32 little-endian `f32`s from `p` (unaligned), or only the masked
/// lanes (the others read as zero). The second half's address is formed with
/// `wrapping_add`: when fully masked off it may lie past the end of the data,
/// and is never dereferenced.
///
/// # Safety
/// The 32 `f32`s from `p` (with `MASKED`, those of the lanes `m` selects) must
/// be readable: inside one allocation.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load32<const MASKED: bool>(p: *const u8, m: (__mmask16, __mmask16)) -> (__m512, __m512) {
    let (p0, p1) = (p as *const f32, p.wrapping_add(64) as *const f32);
    // SAFETY: the caller guarantees the lanes read are in bounds; masked-off
    // lanes are not touched (and never fault), and the loads need no alignment.
    unsafe {
        if MASKED {
            (
                _mm512_maskz_loadu_ps(m.0, p0),
                _mm512_maskz_loadu_ps(m.1, p1),
            )
        } else {
            (_mm512_loadu_ps(p0), _mm512_loadu_ps(p1))
        }
    }
}

/// [`tile`] for `P = t.pixels` pixels, `MASKED` when `t.cols < 32`.
///
/// # Safety
/// As for [`tile`], with those `P` and `MASKED`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile_n<const P: usize, const MASKED: bool>(t: &mut Tile<'_>) {
    let m = masks(t.cols);
    // SAFETY: `bias` holds `cols` values (the caller's bound): all 32 lanes
    // unmasked (`cols = 32`), else the `cols` masked ones.
    let (b0, b1) = unsafe { load32::<MASKED>(t.bias.as_ptr(), m) };
    let mut acc = [[b0, b1]; P];
    let x = t.x.as_ptr();
    let w = t.w.as_ptr();
    for r in 0..t.rows {
        // SAFETY: `r < rows` and `x` reaches `(rows−1)·row_stride + span > r·row_stride`.
        let xr = unsafe { x.add(r * t.row_stride) };
        let wr = r * t.w_row;
        for j in 0..t.span {
            // SAFETY: `r < rows`, `j < span`, and `w` holds
            // `((rows−1)·w_row + (span−1)·w_tap + cols)·4` bytes: the `cols`
            // values from tap `(r, j)` are in it, and `cols = 32` when unmasked.
            let (w0, w1) = unsafe { load32::<MASKED>(w.add((wr + j * t.w_tap) * 4), m) };
            for (p, a) in acc.iter_mut().enumerate() {
                // SAFETY: `p < P = pixels`, `r < rows`, `j < span`, so the index
                // `p·px_in + r·row_stride + j` is below the length of `x`,
                // `(pixels−1)·px_in + (rows−1)·row_stride + span`.
                let xv = _mm512_set1_ps(unsafe { *xr.add(p * t.px_in + j) });
                a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
            }
        }
    }
    let zero = _mm512_setzero_ps();
    let out = t.out.as_mut_ptr();
    for (p, a) in acc.iter().enumerate() {
        let (mut v0, mut v1) = (a[0], a[1]);
        if t.relu {
            v0 = _mm512_max_ps(v0, zero);
            v1 = _mm512_max_ps(v1, zero);
        }
        // SAFETY: `p < pixels` and `out` holds `(pixels−1)·px_out + cols`
        // values: the `cols` values of pixel `p` are in it (`cols = 32` when
        // unmasked); masked-off lanes are not written, so the second half's
        // address may be out of range when all of its lanes are off.
        unsafe {
            let o = out.add(p * t.px_out);
            if MASKED {
                _mm512_mask_storeu_ps(o, m.0, v0);
                _mm512_mask_storeu_ps(o.wrapping_add(16), m.1, v1);
            } else {
                _mm512_storeu_ps(o, v0);
                _mm512_storeu_ps(o.add(16), v1);
            }
        }
    }
}

/// [`tile`] for `P = t.pixels` pixels and `cols ≤ 16`: one accumulator
/// vector per pixel, so one FMA per pixel and tap where [`tile_n`] would
/// spend two (the second on zeros) and the AVX2 kernel two of half the width.
/// Loads and stores are masked to the `cols` lanes.
///
/// # Safety
/// As for [`tile`], with `P = pixels` and `cols ≤ 16`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn narrow<const P: usize>(t: &mut Tile<'_>) {
    let m = masks(t.cols).0;
    // SAFETY: `bias` holds `cols` values; only those lanes are read.
    let b = unsafe { _mm512_maskz_loadu_ps(m, t.bias.as_ptr() as *const f32) };
    let mut acc = [b; P];
    let x = t.x.as_ptr();
    let w = t.w.as_ptr();
    for r in 0..t.rows {
        // SAFETY: as in `tile_n`.
        let xr = unsafe { x.add(r * t.row_stride) };
        let wr = r * t.w_row;
        for j in 0..t.span {
            // SAFETY: the `cols` values from tap `(r, j)` are in `w` (as in
            // `tile_n`); only those lanes are read.
            let wv =
                unsafe { _mm512_maskz_loadu_ps(m, w.add((wr + j * t.w_tap) * 4) as *const f32) };
            for (p, a) in acc.iter_mut().enumerate() {
                // SAFETY: as in `tile_n`.
                let xv = _mm512_set1_ps(unsafe { *xr.add(p * t.px_in + j) });
                *a = _mm512_fmadd_ps(xv, wv, *a);
            }
        }
    }
    let zero = _mm512_setzero_ps();
    let out = t.out.as_mut_ptr();
    for (p, &a) in acc.iter().enumerate() {
        let v = if t.relu { _mm512_max_ps(a, zero) } else { a };
        // SAFETY: pixel `p`'s `cols` values are in `out` (as in `tile_n`);
        // only those lanes are written.
        unsafe { _mm512_mask_storeu_ps(out.add(p * t.px_out), m, v) };
    }
}
