//! The four tile transforms of [`super`] written with AVX-512 intrinsics: one
//! `__m512` holds 16 channels of one tile position, so a column or row of a
//! 6×6 tile is six registers and the transforms are a few dozen vector
//! instructions per tile, with no trip through memory between the passes
//! (the generic `[f32; N]` code leaves the compiler spilling whole tiles).
//! The results equal the generic code's up to rounding (these use FMA), and
//! the tests in `conv.rs` compare both with im2col.
//!
//! Channels past the last multiple of 16 go through the generic code, one at a time.

use super::{stride, Geometry, PATCH, TILE};
use core::arch::x86_64::*;
use std::ops::Range;

type V = __m512;
const LANES: usize = 16;

/// `[f(column 0), …, f(column 5)]` of a 6×6 tile whose values `at(r, c)`
/// gives, written out: the transforms' first pass. (An array built whole:
/// zero-filled first, it cost a `memset` call per tile; and a closure in the
/// macro's place was called, not inlined.)
macro_rules! columns6 {
    ($f:ident, $at:ident) => {
        columns6!(@ $f, $at, 0, 1, 2, 3, 4, 5)
    };
    (@ $f:ident, $at:ident, $($c:literal),*) => {
        [$($f([$at(0, $c), $at(1, $c), $at(2, $c), $at(3, $c), $at(4, $c), $at(5, $c)])),*]
    };
}

impl Geometry {
    /// [`Geometry::transform_input_n`] on AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) fn transform_input_avx512(&self, x: &[f32], tiles: Range<usize>, v: &mut [f32]) {
        let (c, nb) = (self.input.channels, tiles.len());
        let xs = stride(nb, c);
        for (j, t) in tiles.enumerate() {
            let patch = self.patch(t);
            let v = &mut v[j * c..];
            let mut c0 = 0;
            while c0 + LANES <= c {
                input_tile(x, &patch, c0, v, xs);
                c0 += LANES;
            }
            for c0 in c0..c {
                self.input_lanes::<1>(x, &patch, c0, v, xs);
            }
        }
    }

    /// [`Geometry::transform_input_adjoint_n`] on AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) fn transform_input_adjoint_avx512(
        &self,
        dv: &[f32],
        tiles: Range<usize>,
        dx: &mut [f32],
    ) {
        let (c, nb) = (self.input.channels, tiles.len());
        let xs = stride(nb, c);
        for (j, t) in tiles.enumerate() {
            let patch = self.patch(t);
            let dv = &dv[j * c..];
            let mut c0 = 0;
            while c0 + LANES <= c {
                input_adjoint_tile(dv, xs, &patch, c0, dx);
                c0 += LANES;
            }
            for c0 in c0..c {
                super::input_adjoint_lanes::<1>(dv, xs, &patch, c0, dx);
            }
        }
    }

    /// [`Geometry::transform_output_n`] on AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) fn transform_output_avx512(
        &self,
        m: &[f32],
        tiles: Range<usize>,
        bias: &[f32],
        y: &mut [f32],
    ) {
        let (c, nb) = (self.out.channels, tiles.len());
        let xs = stride(nb, c);
        for (j, t) in tiles.enumerate() {
            let outputs = self.outputs(t);
            let m = &m[j * c..];
            let mut c0 = 0;
            while c0 + LANES <= c {
                output_tile(m, xs, &outputs, load(&bias[c0..]), self.relu, c0, y);
                c0 += LANES;
            }
            for c0 in c0..c {
                super::output_lanes::<1>(m, xs, &outputs, bias, self.relu, c0, y);
            }
        }
    }

    /// [`Geometry::transform_output_adjoint_n`] on AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) fn transform_output_adjoint_avx512(
        &self,
        dy: &[f32],
        y: &[f32],
        tiles: Range<usize>,
        dm: &mut [f32],
    ) {
        let (c, nb) = (self.out.channels, tiles.len());
        let xs = stride(nb, c);
        for (j, t) in tiles.enumerate() {
            let outputs = self.outputs(t);
            let dm = &mut dm[j * c..];
            let mut c0 = 0;
            while c0 + LANES <= c {
                output_adjoint_tile(dy, y, self.relu, &outputs, c0, dm, xs);
                c0 += LANES;
            }
            for c0 in c0..c {
                super::output_adjoint_lanes::<1>(dy, y, self.relu, &outputs, c0, dm, xs);
            }
        }
    }
}

/// `V_ξ = (Bᵀ d B)_ξ` for one tile, channels `c0..c0 + 16`.
#[inline]
#[target_feature(enable = "avx512f")]
fn input_tile(
    x: &[f32],
    patch: &[[Option<usize>; PATCH]; PATCH],
    c0: usize,
    v: &mut [f32],
    xs: usize,
) {
    let zero = _mm512_setzero_ps();
    let at = |r: usize, c: usize| match patch[r][c] {
        Some(i) => load(&x[i + c0..]),
        None => zero,
    };
    // t[c] = Bᵀ · (column c of d).
    let t = columns6!(bt, at);
    // Row o of (Bᵀ d) B = Bᵀ · (row o of t), to V_{6o + j}.
    for o in 0..PATCH {
        let row = bt([t[0][o], t[1][o], t[2][o], t[3][o], t[4][o], t[5][o]]);
        for (j, &r) in row.iter().enumerate() {
            store(&mut v[(o * PATCH + j) * xs + c0..], r);
        }
    }
}

/// `dx[patch] += B dV Bᵀ` for one tile, channels `c0..c0 + 16`.
#[inline]
#[target_feature(enable = "avx512f")]
fn input_adjoint_tile(
    dv: &[f32],
    xs: usize,
    patch: &[[Option<usize>; PATCH]; PATCH],
    c0: usize,
    dx: &mut [f32],
) {
    let at = |r: usize, c: usize| load(&dv[(r * PATCH + c) * xs + c0..]);
    let t = columns6!(b, at);
    for o in 0..PATCH {
        let row = b([t[0][o], t[1][o], t[2][o], t[3][o], t[4][o], t[5][o]]);
        for (j, &r) in row.iter().enumerate() {
            if let Some(i) = patch[o][j] {
                let d = &mut dx[i + c0..];
                store(d, _mm512_add_ps(load(d), r));
            }
        }
    }
}

/// `y[tile] = Aᵀ M A + bias` (then relu) for one tile, channels `c0..c0 + 16`.
#[inline]
#[target_feature(enable = "avx512f")]
fn output_tile(
    m: &[f32],
    xs: usize,
    outputs: &[[Option<usize>; TILE]; TILE],
    bias: V,
    relu: bool,
    c0: usize,
    y: &mut [f32],
) {
    let zero = _mm512_setzero_ps();
    let at_ = |r: usize, c: usize| load(&m[(r * PATCH + c) * xs + c0..]);
    let t = columns6!(at, at_);
    for o in 0..TILE {
        let row = at([t[0][o], t[1][o], t[2][o], t[3][o], t[4][o], t[5][o]]);
        for (j, &r) in row.iter().enumerate() {
            if let Some(p) = outputs[o][j] {
                let r = _mm512_add_ps(r, bias);
                store(
                    &mut y[p + c0..],
                    if relu { _mm512_max_ps(r, zero) } else { r },
                );
            }
        }
    }
}

/// `dM = A dY Aᵀ` for one tile, channels `c0..c0 + 16`; with a fused relu,
/// `dY` is masked by `y > 0` first.
#[inline]
#[target_feature(enable = "avx512f")]
fn output_adjoint_tile(
    dy: &[f32],
    y: &[f32],
    relu: bool,
    outputs: &[[Option<usize>; TILE]; TILE],
    c0: usize,
    dm: &mut [f32],
    xs: usize,
) {
    let zero = _mm512_setzero_ps();
    let at_ = |r: usize, c: usize| match outputs[r][c] {
        Some(o) if relu => {
            let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(load(&y[o + c0..]), zero);
            _mm512_maskz_mov_ps(keep, load(&dy[o + c0..]))
        }
        Some(o) => load(&dy[o + c0..]),
        None => zero,
    };
    // (The 4×4 twin of `columns6!`.)
    macro_rules! column {
        ($c:expr) => {
            a([at_(0, $c), at_(1, $c), at_(2, $c), at_(3, $c)])
        };
    }
    let t = [column!(0), column!(1), column!(2), column!(3)];
    for o in 0..PATCH {
        let row = a([t[0][o], t[1][o], t[2][o], t[3][o]]);
        for (j, &r) in row.iter().enumerate() {
            store(&mut dm[(o * PATCH + j) * xs + c0..], r);
        }
    }
}

/// The first 16 values of `s`.
#[inline]
#[target_feature(enable = "avx512f")]
fn load(s: &[f32]) -> V {
    let s = &s[..LANES];
    // SAFETY: `s` holds 16 floats; the load is unaligned.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

/// Writes `v` to the first 16 values of `d`.
#[inline]
#[target_feature(enable = "avx512f")]
fn store(d: &mut [f32], v: V) {
    let d = &mut d[..LANES];
    // SAFETY: `d` holds 16 floats; the store is unaligned.
    unsafe { _mm512_storeu_ps(d.as_mut_ptr(), v) }
}

/// `k` in all 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn splat(k: f32) -> V {
    _mm512_set1_ps(k)
}

/// `Bᵀ d` (rows of Bᵀ in the module comment of [`super`]).
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

/// `B v`, the adjoint of [`bt`].
#[inline]
#[target_feature(enable = "avx512f")]
fn b([v0, v1, v2, v3, v4, v5]: [V; 6]) -> [V; 6] {
    let (four, five, two) = (splat(4.0), splat(5.0), splat(2.0));
    let (p, q) = (_mm512_add_ps(v1, v2), _mm512_add_ps(v3, v4));
    let (r, s) = (_mm512_sub_ps(v2, v1), _mm512_sub_ps(v3, v4));
    [
        _mm512_mul_ps(four, v0),
        _mm512_fmsub_ps(four, _mm512_add_ps(r, v5), _mm512_mul_ps(two, s)), // 4(r + v5) − 2s
        _mm512_sub_ps(
            _mm512_setzero_ps(),
            _mm512_fmadd_ps(five, v0, _mm512_fmadd_ps(four, p, q)),
        ), // −5·v0 − 4p − q
        _mm512_fnmadd_ps(five, v5, _mm512_fmsub_ps(two, s, r)),             // 2s − r − 5·v5
        _mm512_add_ps(v0, _mm512_add_ps(p, q)),
        v5,
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

/// `A y`, the adjoint of [`at`].
#[inline]
#[target_feature(enable = "avx512f")]
fn a([y0, y1, y2, y3]: [V; 4]) -> [V; 6] {
    let (p, q) = (_mm512_add_ps(y0, y2), _mm512_add_ps(y1, y3));
    let r = _mm512_fmadd_ps(splat(4.0), y2, y0);
    let s = _mm512_fmadd_ps(splat(8.0), y3, _mm512_add_ps(y1, y1));
    [
        y0,
        _mm512_add_ps(p, q),
        _mm512_sub_ps(p, q),
        _mm512_add_ps(r, s),
        _mm512_sub_ps(r, s),
        y3,
    ]
}
