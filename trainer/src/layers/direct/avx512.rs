//! The sums of [`super`] in AVX-512 register tiles.
//!
//! Output channels go in blocks of 32 (two vectors) or, for the last 16 or
//! fewer, one vector; a block that does not fill its vectors loads and stores
//! under a lane mask, so every channel count runs here.
//!
//! - Forward: a tile is 8 neighbouring output pixels of one row × one block:
//!   16 accumulators, started at the bias; per tap, the block's weight row is
//!   loaded once and each pixel's input broadcast (2 loads and 8 broadcasts
//!   per 16 FMAs).
//! - Weight gradient: a tile is up to 9 consecutive taps of one kernel row
//!   (`k·Cin` values adjacent in the padded image, so their addresses differ
//!   by constants) × one block: 18 accumulators, summed over every output
//!   pixel of the image; per pixel, `dy` is loaded once and each tap's input
//!   broadcast.
//!
//! Each entry point checks once that the furthest element it will touch is
//! inside its slices; the tiles then index by raw pointer.

use super::Geometry;
use core::arch::x86_64::*;

/// Pixels per forward tile.
const PIXELS: usize = 8;
/// Most taps per weight-gradient tile.
const TAPS: usize = 9;
const LANES: usize = 16;

/// The lane masks of a block of `n` channels (`n ≤ 16·V`).
fn masks<const V: usize>(n: usize) -> [__mmask16; V] {
    std::array::from_fn(|v| {
        let n = n.saturating_sub(v * LANES);
        if n >= LANES {
            0xFFFF
        } else {
            (1u16 << n) - 1
        }
    })
}

impl Geometry {
    /// Output row `oy` (all channels) into `y` (`W_out × Cout`).
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn forward_row_avx512(
        &self,
        padded: &[f32],
        oy: usize,
        w: &[f32],
        bias: &[f32],
        y: &mut [f32],
    ) {
        let (ow, cout) = (self.out.width, self.out.channels);
        let last_tap = *self.taps.last().expect("a kernel has taps");
        assert!(
            self.base(oy, ow - 1) + last_tap < padded.len(),
            "padded image"
        );
        assert!(w.len() >= self.taps.len() * cout && bias.len() >= cout);
        assert!(y.len() >= ow * cout, "output row");
        let xstep = self.stride * self.input.channels;
        let mut co = 0;
        while co < cout {
            let n = (cout - co).min(2 * LANES);
            let mut ox = 0;
            while ox < ow {
                let p = (ow - ox).min(PIXELS);
                let x = padded[self.base(oy, ox)..].as_ptr();
                let y = y[ox * cout + co..].as_mut_ptr();
                let (w, b) = (w[co..].as_ptr(), bias[co..].as_ptr());
                let args = (x, xstep, &self.taps[..], w, cout, b, y, self.relu);
                // SAFETY: pixels ox..ox+p < ow and channels co..co+n ≤ cout,
                // inside the slices by the checks above (the masks keep
                // each access to the block's n channels).
                unsafe {
                    if n > LANES {
                        forward_pixels::<2>(p, masks(n), args);
                    } else {
                        forward_pixels::<1>(p, masks(n), args);
                    }
                }
                ox += p;
            }
            co += n;
        }
    }

    /// One image's `dW += Σ_p padded · dy` (all channels).
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_gradient_avx512(
        &self,
        padded: &[f32],
        dy: &[f32],
        dweight: &mut [f32],
    ) {
        let (oh, ow, cout) = (self.out.height, self.out.width, self.out.channels);
        let last_tap = *self.taps.last().expect("a kernel has taps");
        assert!(
            self.base(oh - 1, ow - 1) + last_tap < padded.len(),
            "padded image"
        );
        assert!(dy.len() >= oh * ow * cout && dweight.len() >= self.taps.len() * cout);
        let row = self.kernel * self.input.channels;
        let pixels = Pixels {
            rows: oh,
            cols: ow,
            row_step: self.stride * self.wp * self.input.channels,
            col_step: self.stride * self.input.channels,
            cout,
        };
        let mut co = 0;
        while co < cout {
            let n = (cout - co).min(2 * LANES);
            for (ky, &row_off) in self.taps.iter().step_by(row).enumerate() {
                let mut j = 0;
                while j < row {
                    let t = (row - j).min(TAPS);
                    let x = padded[row_off + j..].as_ptr();
                    let d = dy[co..].as_ptr();
                    let dw = dweight[(ky * row + j) * cout + co..].as_mut_ptr();
                    // SAFETY: taps row_off + j .. + t are taps of kernel row ky
                    // (t ≤ row − j), every pixel's base plus them is inside
                    // `padded`, and channels co..co+n ≤ cout of `dy` and of
                    // those t rows of `dweight` are inside by the checks above.
                    unsafe {
                        if n > LANES {
                            weight_taps::<2>(t, masks(n), x, d, dw, &pixels);
                        } else {
                            weight_taps::<1>(t, masks(n), x, d, dw, &pixels);
                        }
                    }
                    j += t;
                }
            }
            co += n;
        }
    }
}

/// Forward tile arguments: input at the first pixel's base, input step
/// between pixels, taps, weights at the block's first channel, `Cout` (the
/// weight row and output pixel stride), bias at the block, output at the
/// first pixel and channel, relu.
type ForwardArgs<'a> = (
    *const f32,
    usize,
    &'a [usize],
    *const f32,
    usize,
    *const f32,
    *mut f32,
    bool,
);

/// [`forward_tile`] with its pixel count `p ≤ PIXELS` as a constant.
///
/// # Safety
/// As for [`forward_tile`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn forward_pixels<const V: usize>(p: usize, m: [__mmask16; V], a: ForwardArgs<'_>) {
    // SAFETY: forwarded.
    unsafe {
        match p {
            8 => forward_tile::<8, V>(m, a),
            7 => forward_tile::<7, V>(m, a),
            6 => forward_tile::<6, V>(m, a),
            5 => forward_tile::<5, V>(m, a),
            4 => forward_tile::<4, V>(m, a),
            3 => forward_tile::<3, V>(m, a),
            2 => forward_tile::<2, V>(m, a),
            1 => forward_tile::<1, V>(m, a),
            _ => unreachable!("1 to {PIXELS} pixels"),
        }
    }
}

/// `P` pixels × one block: `y[p, ·] = b + Σ_t x[p·xstep + off_t] · w[t, ·]`.
///
/// # Safety
/// For `p < P` and every tap, `x + p·xstep + off` is readable; the masked
/// lanes of bias, of each weight row `t·cout` and of the `P` output pixels
/// are in bounds.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn forward_tile<const P: usize, const V: usize>(m: [__mmask16; V], a: ForwardArgs<'_>) {
    let (x, xstep, taps, w, cout, bias, y, relu) = a;
    // SAFETY: the caller's bounds, as documented; masked-off lanes are never touched.
    unsafe {
        let b: [__m512; V] =
            std::array::from_fn(|v| _mm512_maskz_loadu_ps(m[v], bias.wrapping_add(v * LANES)));
        let mut acc = [b; P];
        for (t, &off) in taps.iter().enumerate() {
            let wr = w.add(t * cout);
            let wv: [__m512; V] =
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(m[v], wr.wrapping_add(v * LANES)));
            for (p, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*x.add(off + p * xstep));
                for v in 0..V {
                    acc[v] = _mm512_fmadd_ps(xv, wv[v], acc[v]);
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            for v in 0..V {
                let r = if relu {
                    _mm512_max_ps(acc[v], _mm512_setzero_ps())
                } else {
                    acc[v]
                };
                _mm512_mask_storeu_ps(y.wrapping_add(p * cout + v * LANES), m[v], r);
            }
        }
    }
}

/// The output pixels of one image, as the weight-gradient tiles walk them.
struct Pixels {
    rows: usize,
    cols: usize,
    /// Padded-image offsets between output rows and between output columns.
    row_step: usize,
    col_step: usize,
    /// `dy`'s pixel stride.
    cout: usize,
}

/// [`weight_tile`] with its tap count `t ≤ TAPS` as a constant.
///
/// # Safety
/// As for [`weight_tile`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn weight_taps<const V: usize>(
    t: usize,
    m: [__mmask16; V],
    x: *const f32,
    dy: *const f32,
    dw: *mut f32,
    px: &Pixels,
) {
    // SAFETY: forwarded.
    unsafe {
        match t {
            9 => weight_tile::<9, V>(m, x, dy, dw, px),
            8 => weight_tile::<8, V>(m, x, dy, dw, px),
            7 => weight_tile::<7, V>(m, x, dy, dw, px),
            6 => weight_tile::<6, V>(m, x, dy, dw, px),
            5 => weight_tile::<5, V>(m, x, dy, dw, px),
            4 => weight_tile::<4, V>(m, x, dy, dw, px),
            3 => weight_tile::<3, V>(m, x, dy, dw, px),
            2 => weight_tile::<2, V>(m, x, dy, dw, px),
            1 => weight_tile::<1, V>(m, x, dy, dw, px),
            _ => unreachable!("1 to {TAPS} taps"),
        }
    }
}

/// `T` consecutive taps × one block:
/// `dw[i, ·] += Σ_pixels x[base + i] · dy[pixel, ·]` for `i < T`.
///
/// # Safety
/// For every pixel `(r, c)` of `px` and `i < T`, `x + r·row_step + c·col_step + i`
/// is readable; the masked lanes of `dy + (r·cols + c)·cout` and of
/// `dw + i·cout` are in bounds.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn weight_tile<const T: usize, const V: usize>(
    m: [__mmask16; V],
    x: *const f32,
    dy: *const f32,
    dw: *mut f32,
    px: &Pixels,
) {
    // SAFETY: the caller's bounds, as documented; masked-off lanes are never touched.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; T];
        for r in 0..px.rows {
            let xr = x.add(r * px.row_step);
            let dr = dy.add(r * px.cols * px.cout);
            for c in 0..px.cols {
                let xc = xr.add(c * px.col_step);
                let dc = dr.add(c * px.cout);
                let d: [__m512; V] = std::array::from_fn(|v| {
                    _mm512_maskz_loadu_ps(m[v], dc.wrapping_add(v * LANES))
                });
                for (i, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*xc.add(i));
                    for v in 0..V {
                        acc[v] = _mm512_fmadd_ps(xv, d[v], acc[v]);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for v in 0..V {
                let p = dw.wrapping_add(i * px.cout + v * LANES);
                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(m[v], p), acc[v]);
                _mm512_mask_storeu_ps(p, m[v], sum);
            }
        }
    }
}
