//! The convolution tile (see [`super::conv`]) with AVX2 + FMA.
//!
//! Accumulators: `P` pixels × 2 vectors of 8 channels (`P ≤ 6`, so at most 12
//! of the 16 YMM registers), initialised with the bias. Per tap: two weight
//! vectors are loaded (unaligned, straight from the file's bytes), and for each
//! pixel the input value is broadcast and fused-multiply-added into its two
//! accumulators. With fewer than 16 channels left, masked loads and stores
//! (`vmaskmovps`) touch only the valid lanes.
//!
//! Only the memory accesses through raw pointers are `unsafe` (each block says
//! why it stays inside its slice); the arithmetic intrinsics are safe to call
//! in these functions, which are compiled with the features they need.

use super::conv::Tile;
use core::arch::x86_64::*;

/// Runs one tile.
///
/// # Safety
/// The CPU must support AVX2 and FMA. The tile's slices must cover what it
/// reads and writes, as `conv::Conv::tile` builds them:
/// `x[(pixels−1)·px_in + (rows−1)·row_stride + span]`,
/// `w[((rows−1)·w_row + (span−1)·w_tap + cols)·4]`, `bias[cols·4]`,
/// `out[(pixels−1)·px_out + cols]`, with `cols ≤ 16`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile(t: &mut Tile<'_>) {
    debug_assert!(t.cols >= 1 && t.cols <= 16 && t.pixels <= 6);
    debug_assert!(t.bias.len() >= t.cols * 4);
    debug_assert!(t.out.len() >= t.px_out * t.pixels.saturating_sub(1) + t.cols);
    debug_assert!(t.rows == 0 || t.x.len() >= t.x_needed());
    debug_assert!(t.rows == 0 || t.w.len() >= t.w_needed());
    // SAFETY: `tile_n::<P, _>` needs what this function's caller guarantees,
    // with `P = pixels` and `MASKED` exactly when `cols < 16`: the match picks
    // those arguments (and this function has the target features it needs).
    unsafe {
        match (t.pixels, t.cols == 16) {
            (6, true) => tile_n::<6, false>(t),
            (5, true) => tile_n::<5, false>(t),
            (4, true) => tile_n::<4, false>(t),
            (3, true) => tile_n::<3, false>(t),
            (2, true) => tile_n::<2, false>(t),
            (1, true) => tile_n::<1, false>(t),
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

/// Lane masks for the first `cols` of 16 channels: lanes `< cols` and `< cols − 8`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn masks(cols: usize) -> (__m256i, __m256i) {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let c = cols as i32;
    (
        _mm256_cmpgt_epi32(_mm256_set1_epi32(c), lane),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(c - 8), lane),
    )
}

/// Loads 16 little-endian `f32`s from `p` (unaligned), or only the masked lanes.
/// The second half's address is formed with `wrapping_add`: when masked off it
/// may lie past the end of the data, and is never dereferenced.
///
/// # Safety
/// The 16 `f32`s from `p` (with `MASKED`, those of the lanes `m` selects) must
/// be readable: inside one allocation.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load16<const MASKED: bool>(p: *const u8, m: (__m256i, __m256i)) -> (__m256, __m256) {
    let (p0, p1) = (p as *const f32, p.wrapping_add(32) as *const f32);
    // SAFETY: the caller guarantees the lanes read are in bounds; `vmaskmovps`
    // does not touch masked-off lanes, and the loads need no alignment.
    unsafe {
        if MASKED {
            (_mm256_maskload_ps(p0, m.0), _mm256_maskload_ps(p1, m.1))
        } else {
            (_mm256_loadu_ps(p0), _mm256_loadu_ps(p1))
        }
    }
}

/// [`tile`] for `P = t.pixels` pixels, `MASKED` when `t.cols < 16`.
///
/// # Safety
/// As for [`tile`], with those `P` and `MASKED`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_n<const P: usize, const MASKED: bool>(t: &mut Tile<'_>) {
    let m = masks(t.cols);
    // SAFETY: `bias` holds `cols` values (the caller's bound): all 16 lanes
    // unmasked (`cols = 16`), else the `cols` masked ones.
    let (b0, b1) = unsafe { load16::<MASKED>(t.bias.as_ptr(), m) };
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
            // values from tap `(r, j)` are in it, and `cols = 16` when unmasked.
            let (w0, w1) = unsafe { load16::<MASKED>(w.add((wr + j * t.w_tap) * 4), m) };
            for (p, a) in acc.iter_mut().enumerate() {
                // SAFETY: `p < P = pixels`, `r < rows`, `j < span`, so the index
                // `p·px_in + r·row_stride + j` is below the length of `x`,
                // `(pixels−1)·px_in + (rows−1)·row_stride + span`.
                let xv = _mm256_set1_ps(unsafe { *xr.add(p * t.px_in + j) });
                a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
            }
        }
    }
    let zero = _mm256_setzero_ps();
    let out = t.out.as_mut_ptr();
    for (p, a) in acc.iter().enumerate() {
        let (mut v0, mut v1) = (a[0], a[1]);
        if t.relu {
            v0 = _mm256_max_ps(v0, zero);
            v1 = _mm256_max_ps(v1, zero);
        }
        // SAFETY: `p < pixels` and `out` holds `(pixels−1)·px_out + cols`
        // values: the `cols` values of pixel `p` are in it (`cols = 16` when
        // unmasked); masked-off lanes are not written, so the second half's
        // address may be out of range when all of its lanes are off.
        unsafe {
            let o = out.add(p * t.px_out);
            if MASKED {
                _mm256_maskstore_ps(o, m.0, v0);
                _mm256_maskstore_ps(o.wrapping_add(8), m.1, v1);
            } else {
                _mm256_storeu_ps(o, v0);
                _mm256_storeu_ps(o.add(8), v1);
            }
        }
    }
}
