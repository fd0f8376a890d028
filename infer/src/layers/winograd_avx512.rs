//! The three tile transforms of [`super::winograd`] with AVX-512 intrinsics:
//! one `__m512` holds 16 channels of one tile position, so a column or row of
//! a 6×6 tile is six registers and a transform is a few dozen vector
//! instructions, without the trips through the stack that the generic
//! `[f32; 16]` code compiles to (measured: the generic transforms took about
//! a third of model 1's time with Winograd on).
//!
//! `bt` and `at` are the trainer's (`trainer/src/layers/winograd/avx512.rs`),
//! written again because this crate depends on no other; the tests of
//! `winograd.rs` compare these transforms with the generic ones and the whole
//! convolution with the direct one. Fewer than 16 channels go through masked
//! loads and stores (masked-off lanes are never touched).

// The transposes read position `i` of several rows: an index loop says it best.
#![allow(clippy::needless_range_loop)]

use super::winograd::{Outputs, Patch, PATCH, TILE};
use core::arch::x86_64::*;

type V = __m512;
const LANES: usize = 16;

/// The mask of the first `n` (≤ 16) lanes.
#[inline]
fn mask(n: usize) -> __mmask16 {
    debug_assert!(n <= LANES);
    if n >= LANES {
        0xFFFF
    } else {
        (1u16 << n) - 1
    }
}

/// `V_ξ = (Bᵀ d B)_ξ` for one tile, channels `c0 .. c0 + n` of the patch
/// `p` of `x` (zero outside the image), into `v[ξ·stride ..][..n]`.
///
/// The bounds are checked once (for the patch's last in-image pixel and for
/// `V`'s last position), and the loads and stores go through raw pointers:
/// per-access slice checks took most of the time of a tile.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn input_tile(x: &[f32], p: &Patch, c0: usize, n: usize, v: &mut [f32], stride: usize) {
    let m = mask(n);
    let zero = _mm512_setzero_ps();
    let ((r0, r1), (s0, s1)) = (p.rows, p.cols);
    if r0 < r1 && s0 < s1 {
        let last = p.at(r1 - 1, s1 - 1).map(|i| i + c0 + n);
        assert!(last.is_some_and(|e| e <= x.len()), "patch past the input");
    }
    assert!(
        n <= LANES && (PATCH * PATCH - 1) * stride + n <= v.len(),
        "V past the workspace"
    );
    let at = |r: usize, s: usize| match p.at(r, s) {
        // SAFETY: an in-image pixel's channels `c0 .. c0 + n` lie at or before
        // the last in-image pixel's (rows and columns increase with the
        // index), checked above to end inside `x`; masked-off lanes are not read.
        Some(i) => unsafe { load_ptr(x.as_ptr().add(i + c0), n, m) },
        None => zero,
    };
    // t = Bᵀ d, a column at a time.
    let mut t = [[zero; PATCH]; PATCH];
    for (s, t) in t.iter_mut().enumerate() {
        *t = bt([at(0, s), at(1, s), at(2, s), at(3, s), at(4, s), at(5, s)]);
    }
    // V = t B: row i of V is Bᵀ (row i of t).
    let v = v.as_mut_ptr();
    for i in 0..PATCH {
        let row = bt([t[0][i], t[1][i], t[2][i], t[3][i], t[4][i], t[5][i]]);
        for (j, &r) in row.iter().enumerate() {
            // SAFETY: `ξ = 6i + j ≤ 35`, and `35·stride + n ≤ v.len()` (above).
            unsafe { store_ptr(v.add((i * PATCH + j) * stride), r, n, m) };
        }
    }
}

/// `y = Aᵀ M A + bias` (then relu) for one tile, channels `j0 .. j0 + n` of
/// the block whose `M` is `m[ξ·stride ..]` and whose bias starts at `bias`,
/// into the tile's in-image outputs `o` (channel `co0 + j0` of output pixel
/// `(r, s)` at `o.at(r, s) + j0`).
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn output_tile(
    m: &[f32],
    stride: usize,
    o: &Outputs,
    bias: &[u8],
    relu: bool,
    j0: usize,
    n: usize,
    y: &mut [f32],
) {
    let k = mask(n);
    let zero = _mm512_setzero_ps();
    assert!(
        n <= LANES && (PATCH * PATCH - 1) * stride + n <= m.len(),
        "M past the workspace"
    );
    if o.rows > 0 && o.cols > 0 {
        let last = o.at(o.rows - 1, o.cols - 1).map(|i| i + j0 + n);
        assert!(last.is_some_and(|e| e <= y.len()), "tile past the output");
    }
    let bias = {
        let b = &bias[..n * 4];
        // SAFETY: `b` holds `n` little-endian `f32`s (x86-64 is
        // little-endian): the lanes `k` selects; the load is unaligned.
        unsafe { _mm512_maskz_loadu_ps(k, b.as_ptr().cast::<f32>()) }
    };
    // SAFETY: `ξ ≤ 35` and `35·stride + n ≤ m.len()` (checked above).
    let at_ =
        |r: usize, s: usize| unsafe { load_ptr(m.as_ptr().add((r * PATCH + s) * stride), n, k) };
    let mut t = [[zero; TILE]; PATCH];
    for (s, t) in t.iter_mut().enumerate() {
        *t = at([
            at_(0, s),
            at_(1, s),
            at_(2, s),
            at_(3, s),
            at_(4, s),
            at_(5, s),
        ]);
    }
    let y = y.as_mut_ptr();
    for r in 0..o.rows.min(TILE) {
        let row = at([t[0][r], t[1][r], t[2][r], t[3][r], t[4][r], t[5][r]]);
        for (s, &v) in row.iter().enumerate().take(o.cols) {
            let v = _mm512_add_ps(v, bias);
            let v = if relu { _mm512_max_ps(v, zero) } else { v };
            if let Some(i) = o.at(r, s) {
                // SAFETY: an in-image output's index is at most the last
                // in-image output's, checked above to leave `j0 + n` values.
                unsafe { store_ptr(y.add(i + j0), v, n, k) };
            }
        }
    }
}

/// `U_ξ = (G g Gᵀ)_ξ` for `n` consecutive output channels of one input
/// channel: tap `(ky, kx)`'s `n` weights are the little-endian `f32`s at
/// byte `first + (3·ky + kx)·tap` of `w`; `U_ξ` goes to `u[ξ·stride ..][..n]`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn weight_tile(
    w: &[u8],
    first: usize,
    tap: usize,
    n: usize,
    u: &mut [f32],
    stride: usize,
) {
    let m = mask(n);
    assert!(
        n <= LANES && first + 8 * tap + 4 * n <= w.len(),
        "taps past the weights"
    );
    assert!(
        (PATCH * PATCH - 1) * stride + n <= u.len(),
        "U past the workspace"
    );
    // SAFETY: tap `i ≤ 8` starts at byte `first + i·tap`, and the last one's
    // `n` values end inside `w` (checked above); x86-64 is little-endian, so
    // the bytes are the `f32`s; the loads are unaligned.
    let at = |i: usize| unsafe { load_ptr(w.as_ptr().add(first + i * tap).cast::<f32>(), n, m) };
    // t = G g, a column (kernel column kx) at a time.
    let zero = _mm512_setzero_ps();
    let mut t = [[zero; PATCH]; 3];
    for (kx, t) in t.iter_mut().enumerate() {
        *t = gm([at(kx), at(3 + kx), at(6 + kx)]);
    }
    // U = t Gᵀ: row i of U is G (row i of t).
    let u = u.as_mut_ptr();
    for i in 0..PATCH {
        let row = gm([t[0][i], t[1][i], t[2][i]]);
        for (j, &r) in row.iter().enumerate() {
            // SAFETY: `ξ ≤ 35` and `35·stride + n ≤ u.len()` (checked above).
            unsafe { store_ptr(u.add((i * PATCH + j) * stride), r, n, m) };
        }
    }
}

/// The `n` values at `p` (all 16 with a plain load; fewer masked by `m`,
/// the other lanes zero: masked loads cost more).
///
/// # Safety
/// The `n` floats from `p` must be readable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_ptr(p: *const f32, n: usize, m: __mmask16) -> V {
    // SAFETY: the caller's guarantee; masked-off lanes are not read (and
    // never fault); the loads are unaligned.
    unsafe {
        if n == LANES {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(m, p)
        }
    }
}

/// Writes the first `n` lanes of `v` to `p` (masked by `m` when fewer than
/// 16: masked stores are slow on AMD Zen).
///
/// # Safety
/// The `n` floats from `p` must be writable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_ptr(p: *mut f32, v: V, n: usize, m: __mmask16) {
    // SAFETY: the caller's guarantee; masked-off lanes are not written; the
    // stores are unaligned.
    unsafe {
        if n == LANES {
            _mm512_storeu_ps(p, v)
        } else {
            _mm512_mask_storeu_ps(p, m, v)
        }
    }
}

/// `k` in all 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn splat(k: f32) -> V {
    _mm512_set1_ps(k)
}

/// `Bᵀ d` (the rows of Bᵀ in [`super::winograd`]'s notes).
#[inline]
#[target_feature(enable = "avx512f")]
fn bt([d0, d1, d2, d3, d4, d5]: [V; 6]) -> [V; 6] {
    let (four, five, two) = (splat(4.0), splat(5.0), splat(2.0));
    let p = _mm512_fnmadd_ps(four, d2, d4); // d4 − 4·d2
    let q = _mm512_fnmadd_ps(four, d1, d3); // d3 − 4·d1
    let r = _mm512_sub_ps(d4, d2);
    let s = _mm512_mul_ps(two, _mm512_sub_ps(d3, d1));
    [
        _mm512_fmadd_ps(four, d0, _mm512_fnmadd_ps(five, d2, d4)),
        _mm512_add_ps(p, q),
        _mm512_sub_ps(p, q),
        _mm512_add_ps(r, s),
        _mm512_sub_ps(r, s),
        _mm512_fmadd_ps(four, d1, _mm512_fnmadd_ps(five, d3, d5)),
    ]
}

/// `Aᵀ m`.
#[inline]
#[target_feature(enable = "avx512f")]
fn at([m0, m1, m2, m3, m4, m5]: [V; 6]) -> [V; 4] {
    let (p, q) = (_mm512_add_ps(m1, m2), _mm512_add_ps(m3, m4));
    let (r, s) = (_mm512_sub_ps(m1, m2), _mm512_sub_ps(m3, m4));
    [
        _mm512_add_ps(m0, _mm512_add_ps(p, q)),
        _mm512_fmadd_ps(splat(2.0), s, r),
        _mm512_fmadd_ps(splat(4.0), q, p),
        _mm512_add_ps(_mm512_fmadd_ps(splat(8.0), s, r), m5),
    ]
}

/// `G g`.
#[inline]
#[target_feature(enable = "avx512f")]
fn gm([g0, g1, g2]: [V; 3]) -> [V; 6] {
    let sixth = splat(1.0 / 6.0);
    let p = _mm512_add_ps(g0, g2);
    let r = _mm512_fmadd_ps(splat(1.0 / 24.0), g0, _mm512_mul_ps(sixth, g2)); // g0/24 + g2/6
    let s = _mm512_mul_ps(splat(1.0 / 12.0), g1);
    [
        _mm512_mul_ps(splat(0.25), g0),
        _mm512_mul_ps(splat(-1.0 / 6.0), _mm512_add_ps(p, g1)),
        _mm512_mul_ps(splat(-1.0 / 6.0), _mm512_sub_ps(p, g1)),
        _mm512_add_ps(r, s),
        _mm512_sub_ps(r, s),
        g2,
    ]
}
