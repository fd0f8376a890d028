//! `conv2d`, and `dense` as its 1×1 special case.
//!
//! ```text
//! y[oy, ox, co] = bias[co] + Σ_{ky,kx,ci} x[oy·s + ky − pad_top, ox·s + kx − pad_left, ci] · w[ky, kx, ci, co]
//! ```
//! with `x` zero outside the image. A dense layer `y[o] = bias[o] + Σ_i x[i]·w[i, o]`
//! is the same sum on a 1×1 image with `k = 1`, `ci = i`, `co = o`.
//!
//! # How it is computed
//!
//! Directly, without an im2col matrix, in *tiles*: up to [`MAX_PIXELS`] output
//! pixels (AVX-512: [`MOST_PIXELS`]) × two SIMD vectors of output channels (16
//! with AVX2 and in the portable code, 32 with AVX-512), accumulated in
//! registers.
//!
//! - With the weight layout `[ky][kx][ci][co]`, the weights of one tap
//!   `(ky, kx, ci)` for 16 (or 32) consecutive output channels are contiguous,
//!   so one tap is a broadcast of the input value times a weight vector, added
//!   into the accumulators (an axpy over `co`); each weight vector loaded serves
//!   every pixel of the tile.
//! - For one kernel row `ky`, the taps `(kx, ci)` of a pixel are *contiguous* in
//!   the NHWC input (`x[iy, ix0 .. ix0 + k, ..]`) and in the weights, so the two
//!   inner loops `kx, ci` fuse into one loop of `k·ci` taps.
//! - Kernel rows/columns that fall in the zero padding are skipped rather than
//!   multiplied by zero: a tile's pixels share the same in-image kernel rows and
//!   columns. The output is cut into regions where that holds (see
//!   [`conv2d`]): the interior is tiled along rows; the left/right edge columns
//!   are tiled down the column; the top/bottom rows along the row.
//!
//! Weights stay in the file's bytes. The AVX2 kernel loads them with unaligned
//! vector loads, which on a little-endian CPU *is* the decoding of
//! little-endian `f32`s; the portable kernel decodes with `f32::from_le_bytes`.

use super::in_image;
use crate::arch::Shape;

/// Most output pixels in one tile of the AVX2 and portable kernels (6 pixels
/// × 2 vectors = 12 of the 16 YMM registers), and of the int8 kernels but
/// the VNNI one.
pub(crate) const MAX_PIXELS: usize = 6;
/// Most output pixels in one tile of any kernel: the AVX-512 ones' 8 (this
/// `f32` one's and the int8 VNNI one's: 8 × 2 vectors = 16 of the 32 ZMM
/// registers; each weight vector loaded serves a third more pixels than
/// with 6).
#[cfg(target_arch = "x86_64")]
pub(crate) const MOST_PIXELS: usize = 8;
/// Most output channels in one tile of the portable and AVX2 kernels.
pub(crate) const MAX_COLS: usize = 16;

/// Which implementation of the tile kernel to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Plain Rust; any CPU.
    Portable,
    /// AVX2 + FMA; the caller has checked the CPU supports them.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F; the caller has checked the CPU supports it.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// Output channels per tile: two vectors' worth.
    pub(crate) fn cols(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => super::conv_avx512::COLS,
            _ => MAX_COLS,
        }
    }

    /// Most pixels in one of its tiles.
    pub(crate) fn max_pixels(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => MOST_PIXELS,
            _ => MAX_PIXELS,
        }
    }

    /// Computes one tile with this kernel.
    ///
    /// Panics if the tile's slices do not cover what it reads and writes (a
    /// bug in its builder; checked here, a few comparisons per tile, so that
    /// the SIMD kernels' raw accesses stay in bounds whoever builds the tile).
    pub(crate) fn run(self, t: &mut Tile<'_>) {
        assert!(
            t.in_bounds(self.max_pixels(), self.cols()),
            "convolution tile out of bounds"
        );
        match self {
            Kernel::Portable => tile_portable(t),
            // SAFETY: `Kernel::Avx2` is only chosen after checking the CPU has
            // AVX2 and FMA; the tile's slices cover what it reads and writes
            // (checked above).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { super::conv_avx2::tile(t) },
            // SAFETY: as above, for AVX-512F.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { super::conv_avx512::tile(t) },
        }
    }
}

/// Shapes and padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub input: Shape,
    pub output: Shape,
    pub k: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl ConvGeom {
    /// A dense layer as a 1×1 convolution of a 1×1 image.
    pub fn dense(inputs: usize, outputs: usize) -> ConvGeom {
        ConvGeom {
            input: Shape {
                h: 1,
                w: 1,
                c: inputs,
            },
            output: Shape {
                h: 1,
                w: 1,
                c: outputs,
            },
            k: 1,
            stride: 1,
            pad_top: 0,
            pad_left: 0,
        }
    }
}

/// One tile: `pixels` output pixels, each `px_in` input values and `px_out`
/// output values after the previous one, × `cols` output channels. The slices
/// start at the first pixel's first in-image tap / weight / output value.
pub(crate) struct Tile<'t> {
    /// Input, from `x[iy0 + ky0, ix0 + kx0, 0]` of the first pixel.
    pub x: &'t [f32],
    /// Weights (bytes), from `w[ky0, kx0, 0, co0]`.
    pub w: &'t [u8],
    /// Bias (bytes), from `bias[co0]`.
    pub bias: &'t [u8],
    /// Output, from `y[oy, ox, co0]` of the first pixel.
    pub out: &'t mut [f32],
    pub pixels: usize,
    pub cols: usize,
    /// In-image kernel rows.
    pub rows: usize,
    /// Contiguous taps per kernel row: in-image kernel columns × input channels.
    pub span: usize,
    /// Input values between consecutive pixels of the tile.
    pub px_in: usize,
    /// Output values between consecutive pixels of the tile.
    pub px_out: usize,
    /// Input values between consecutive image rows.
    pub row_stride: usize,
    /// Weights (in `f32`s) between consecutive taps: the number of output channels.
    pub w_tap: usize,
    /// Weights (in `f32`s) between consecutive kernel rows: `k · ci · co`.
    pub w_row: usize,
    /// Apply `max(0, ·)` before storing (a fused `relu` layer).
    pub relu: bool,
}

impl Tile<'_> {
    /// Input values the tile reads from `x` (when `rows > 0`, so `span > 0`):
    /// `(pixels−1)·px_in + (rows−1)·row_stride + span`.
    pub fn x_needed(&self) -> usize {
        (self.pixels - 1) * self.px_in + (self.rows - 1) * self.row_stride + self.span
    }

    /// Weight bytes the tile reads from `w` (when `rows > 0`):
    /// `((rows−1)·w_row + (span−1)·w_tap + cols)·4`.
    pub fn w_needed(&self) -> usize {
        ((self.rows - 1) * self.w_row + (self.span - 1) * self.w_tap + self.cols) * 4
    }

    /// Whether the slices cover what a kernel of `max_pixels` pixels and
    /// `max_cols` columns reads and writes: 1 to `max_pixels` pixels, 1 to `max_cols` columns, `bias` and `out` long
    /// enough, and when there are taps (`rows > 0`) `span > 0` and `x` and `w`
    /// long enough.
    fn in_bounds(&self, max_pixels: usize, max_cols: usize) -> bool {
        (1..=max_pixels).contains(&self.pixels)
            && (1..=max_cols).contains(&self.cols)
            && self.bias.len() >= self.cols * 4
            && self.out.len() >= (self.pixels - 1) * self.px_out + self.cols
            && (self.rows == 0
                || (self.span > 0
                    && self.x.len() >= self.x_needed()
                    && self.w.len() >= self.w_needed()))
    }
}

/// First and one-past-last output index whose whole window lies in the input
/// (`o·s − pad ≥ 0` and `o·s − pad + k ≤ len`), clamped to `[0, out]`.
fn full_window_range(out: usize, len: usize, k: usize, s: usize, pad: usize) -> (usize, usize) {
    let lo = pad.div_ceil(s).min(out);
    let hi = if len + pad >= k {
        ((len + pad - k) / s + 1).min(out)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Cuts `[lo, hi)` into runs of at most `max` (a kernel's tile, at most
/// `MOST_PIXELS`, or the int8 VNNI kernel's run, which it cuts again) of
/// near-equal length (14 → 5, 5, 4 rather than 6, 6, 2: a tile of few pixels
/// has too few independent accumulators to keep the FMA units busy). Yields
/// `(start, len)`.
pub(crate) fn tiles(lo: usize, hi: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let len = hi.saturating_sub(lo);
    let count = len.div_ceil(max.max(1));
    // (`count` is 0 only when `len` is, and then nothing is yielded.)
    let base = len.checked_div(count).unwrap_or(0);
    let longer = len.checked_rem(count).unwrap_or(0);
    (0..count).scan(lo, move |start, i| {
        let n = base + usize::from(i < longer);
        let tile = (*start, n);
        *start += n;
        Some(tile)
    })
}

/// Where one tile lies: the `n` output pixels `(oy + i·dy, ox + i·dx)`,
/// `i < n`, and the output channels `co0 .. co0 + cols`. All `n` pixels have
/// the same in-image kernel rows and columns as the first one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TilePos {
    pub oy: usize,
    pub ox: usize,
    pub step: (usize, usize),
    pub n: usize,
    pub co0: usize,
    pub cols: usize,
}

/// The part of a pixel's window inside the image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    /// Input row and column of the first in-image tap.
    pub iy: usize,
    pub ix: usize,
    /// First in-image kernel row and column, and how many there are.
    pub ky0: usize,
    pub kx0: usize,
    pub rows: usize,
    pub taps: usize,
}

impl ConvGeom {
    /// The in-image part of output pixel `(oy, ox)`'s window.
    pub fn window(&self, oy: usize, ox: usize) -> Window {
        // Top-left corner of the window, in input coordinates (may be negative).
        let iy0 = (oy * self.stride) as isize - self.pad_top as isize;
        let ix0 = (ox * self.stride) as isize - self.pad_left as isize;
        let (ky0, ky1) = in_image(iy0, self.k, self.input.h);
        let (kx0, kx1) = in_image(ix0, self.k, self.input.w);
        Window {
            // In the image when the window has a tap there; else unused.
            iy: (iy0 + ky0 as isize).max(0) as usize,
            ix: (ix0 + kx0 as isize).max(0) as usize,
            ky0,
            kx0,
            rows: ky1 - ky0,
            taps: kx1 - kx0,
        }
    }
}

/// Calls `tile` for every tile of the output, blocks of `block` output
/// channels outermost. Kernel rows/columns that fall in the padding are
/// skipped rather than multiplied by zero, so a tile's pixels must share their
/// in-image kernel rows and columns: the interior is tiled along rows; the
/// left/right edge columns down the column; the top/bottom rows along the row.
pub(crate) fn for_each_tile(
    g: &ConvGeom,
    block: usize,
    max_pixels: usize,
    mut tile: impl FnMut(TilePos),
) {
    let (oh, ow, oc) = (g.output.h, g.output.w, g.output.c);
    let (oy_lo, oy_hi) = full_window_range(oh, g.input.h, g.k, g.stride, g.pad_top);
    let (ox_lo, ox_hi) = full_window_range(ow, g.input.w, g.k, g.stride, g.pad_left);
    for co0 in (0..oc).step_by(block) {
        let cols = (oc - co0).min(block);
        let mut at = |oy, ox, step, n| {
            tile(TilePos {
                oy,
                ox,
                step,
                n,
                co0,
                cols,
            })
        };
        // Interior: all taps in the image; tiles along the rows.
        for oy in oy_lo..oy_hi {
            for (ox, n) in tiles(ox_lo, ox_hi, max_pixels) {
                at(oy, ox, (0, 1), n);
            }
        }
        // Left and right edge columns, next to the interior: all kernel rows in
        // the image, the same kernel columns down a column; tiles down the column.
        for ox in (0..ox_lo).chain(ox_hi..ow) {
            for (oy, n) in tiles(oy_lo, oy_hi, max_pixels) {
                at(oy, ox, (1, 0), n);
            }
        }
        // Top and bottom rows: every pixel of such a row has the same in-image
        // kernel rows; tiles along the row, single pixels at the corners.
        for oy in (0..oy_lo).chain(oy_hi..oh) {
            for ox in (0..ox_lo).chain(ox_hi..ow) {
                at(oy, ox, (0, 1), 1);
            }
            for (ox, n) in tiles(ox_lo, ox_hi, max_pixels) {
                at(oy, ox, (0, 1), n);
            }
        }
    }
}

/// `y = conv(x, w) + bias`, optionally followed by relu. `x` and `y` hold at
/// least `g.input.len()` / `g.output.len()` values; `w` and `bias` hold the
/// tensors' bytes (`k·k·ci·co` and `co` little-endian `f32`s). The caller
/// (model loading) has checked all of these sizes.
pub(crate) fn conv2d(
    g: &ConvGeom,
    x: &[f32],
    w: &[u8],
    bias: &[u8],
    y: &mut [f32],
    relu: bool,
    kernel: Kernel,
) {
    let conv = Conv {
        g,
        x,
        w,
        bias,
        relu,
        kernel,
    };
    for_each_tile(g, kernel.cols(), kernel.max_pixels(), |t| conv.tile(y, t));
}

/// Most output pixels of a convolution that runs by [`conv2d_small`].
pub(crate) const SMALL_PIXELS: usize = 16;

/// Whether a convolution runs by [`conv2d_small`]: a kernel larger than 1×1
/// on an output of at most [`SMALL_PIXELS`] pixels (a 4×4 image).
///
/// There the direct tiles are at their worst: a 4×4 output with `same`
/// padding is 10 tiles of 1 or 2 pixels (a tile's pixels must have the same
/// taps in the image), each reading its taps' weights, so the weights (2.4 MB
/// for 256 channels in and out) go through the caches 6.4 times per image,
/// with one weight vector loaded per 2–4 multiply-adds.
pub(crate) fn small_applies(g: &ConvGeom) -> bool {
    g.k > 1 && g.output.h * g.output.w <= SMALL_PIXELS
}

/// Values of workspace [`conv2d_small`] needs: one row of `k·k·ci` inputs per
/// output pixel. `None` on overflow.
pub(crate) fn small_workspace_len(g: &ConvGeom) -> Option<usize> {
    (g.output.h * g.output.w)
        .checked_mul(g.k.checked_mul(g.k)?)?
        .checked_mul(g.input.c)
}

/// [`conv2d`] for a small output ([`small_applies`]): every output pixel's
/// window is first copied into a row of `ws` (im2col, zeros in the padding),
/// so that the pixels form full tiles whatever their windows: with AVX-512's
/// tiles of 8 the weights are read twice per image for 16 pixels, not 6.4
/// times, and each weight vector loaded serves 8 pixels. (Tiles of all 16
/// pixels × 16 channels, which read the weights once, measured slower on AMD
/// Zen 5: 16 broadcasts per weight vector keep the load ports busier than the
/// FMAs.)
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_small(
    g: &ConvGeom,
    x: &[f32],
    w: &[u8],
    bias: &[u8],
    y: &mut [f32],
    relu: bool,
    kernel: Kernel,
    ws: &mut [f32],
) {
    let (ow, ci, co, k) = (g.output.w, g.input.c, g.output.c, g.k);
    let pixels = g.output.h * ow;
    let taps = k * k * ci;
    for p in 0..pixels {
        let row = &mut ws[p * taps..(p + 1) * taps];
        row.fill(0.0);
        // The window's in-image part, as the direct tiles see it: per kernel
        // row, `win.taps` contiguous pixels of the NHWC input.
        let win = g.window(p / ow, p % ow);
        let span = win.taps * ci;
        for r in 0..win.rows {
            let at = ((win.iy + r) * g.input.w + win.ix) * ci;
            let to = ((win.ky0 + r) * k + win.kx0) * ci;
            row[to..to + span].copy_from_slice(&x[at..at + span]);
        }
    }
    let block = kernel.cols();
    // Blocks of output channels outermost: a block's weights (k·k·ci rows of
    // 32 values) are read from memory for its first tile and from L2 for the
    // others.
    for co0 in (0..co).step_by(block) {
        let cols = block.min(co - co0);
        for (p0, n) in tiles(0, pixels, kernel.max_pixels()) {
            kernel.run(&mut Tile {
                x: &ws[p0 * taps..],
                w: &w[co0 * 4..],
                bias: &bias[co0 * 4..],
                out: &mut y[p0 * co + co0..],
                pixels: n,
                cols,
                rows: 1,
                span: taps,
                px_in: taps,
                px_out: co,
                row_stride: 0,
                w_tap: co,
                w_row: 0,
                relu,
            });
        }
    }
}

/// The arguments of one [`conv2d`] call, shared by its tiles.
struct Conv<'c> {
    g: &'c ConvGeom,
    x: &'c [f32],
    w: &'c [u8],
    bias: &'c [u8],
    relu: bool,
    kernel: Kernel,
}

impl Conv<'_> {
    /// Computes one tile.
    fn tile(&self, y: &mut [f32], at: TilePos) {
        let g = self.g;
        let (iw, ic) = (g.input.w, g.input.c);
        let (ow, oc) = (g.output.w, g.output.c);
        let (k, s) = (g.k, g.stride);
        let TilePos {
            oy,
            ox,
            step: (dy, dx),
            n,
            co0,
            cols,
        } = at;
        let win = g.window(oy, ox);
        let rows = win.rows;
        let span = win.taps * ic;
        let px_in = (dy * iw + dx) * s * ic;
        let row_stride = iw * ic;
        let w_row = k * ic * oc;
        let (x, w) = if rows == 0 || span == 0 {
            // No tap in the image (cannot happen with same/valid padding): bias only.
            (&[][..], &[][..])
        } else {
            let x_at = (win.iy * iw + win.ix) * ic;
            let x_len = (n - 1) * px_in + (rows - 1) * row_stride + span;
            let w_at = ((win.ky0 * k + win.kx0) * ic * oc + co0) * 4;
            let w_len = ((rows - 1) * w_row + (span - 1) * oc + cols) * 4;
            (&self.x[x_at..x_at + x_len], &self.w[w_at..w_at + w_len])
        };
        let px_out = (dy * ow + dx) * oc;
        let y_at = (oy * ow + ox) * oc + co0;
        let y_len = (n - 1) * px_out + cols;
        let mut t = Tile {
            x,
            w,
            bias: &self.bias[co0 * 4..(co0 + cols) * 4],
            out: &mut y[y_at..y_at + y_len],
            pixels: n,
            cols,
            rows: if x.is_empty() { 0 } else { rows },
            span,
            px_in,
            px_out,
            row_stride,
            w_tap: oc,
            w_row,
            relu: self.relu,
        };
        self.kernel.run(&mut t);
    }
}

/// Reads the little-endian `f32` in a 4-byte chunk.
#[inline(always)]
pub(crate) fn le_f32(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The tile in plain Rust: per pixel, an accumulator row of up to 16 channels.
fn tile_portable(t: &mut Tile<'_>) {
    let cols = t.cols;
    for p in 0..t.pixels {
        let mut acc = [0f32; MAX_COLS];
        for (a, b) in acc[..cols].iter_mut().zip(t.bias.chunks_exact(4)) {
            *a = le_f32(b);
        }
        for r in 0..t.rows {
            let xs = &t.x[p * t.px_in + r * t.row_stride..][..t.span];
            let wr = &t.w[r * t.w_row * 4..];
            for (j, &xv) in xs.iter().enumerate() {
                let wj = &wr[j * t.w_tap * 4..][..cols * 4];
                for (a, b) in acc[..cols].iter_mut().zip(wj.chunks_exact(4)) {
                    *a += xv * le_f32(b);
                }
            }
        }
        let out = &mut t.out[p * t.px_out..][..cols];
        for (o, &a) in out.iter_mut().zip(&acc[..cols]) {
            *o = if t.relu { a.max(0.0) } else { a };
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Values in [−0.5, 0.5) from `seed` (xorshift), for the layers' tests.
    pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
    }

    /// Every kernel this CPU runs.
    pub(crate) fn kernels() -> Vec<Kernel> {
        let mut k = std::vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use crate::cpu::{level, Level};
            if level() >= Level::Avx2 {
                k.push(Kernel::Avx2);
            }
            if level() >= Level::Avx512 {
                k.push(Kernel::Avx512);
            }
        }
        k
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The small-image path (im2col, then tiles of any 6 pixels) gives the
        /// direct tiles' outputs within float rounding, with every kernel:
        /// strides 1 and 2, kernels 2 to 4, `same` and `valid` padding,
        /// channel counts around the 16-lane blocks, relu or not.
        #[test]
        fn small_images_match_the_direct_convolution(
            h in 1usize..6, w in 1usize..6, ci in 1usize..40, co in 1usize..40,
            k in 2usize..5, stride in 1usize..3, same: bool, relu: bool, seed: u64,
        ) {
            let pad = |len: usize| if same {
                let out = len.div_ceil(stride);
                let total = ((out - 1) * stride + k).saturating_sub(len);
                Some((out, total / 2))
            } else if len >= k {
                Some(((len - k) / stride + 1, 0))
            } else {
                None
            };
            let (Some((oh, pad_top)), Some((ow, pad_left))) = (pad(h), pad(w)) else {
                return Ok(());
            };
            let g = ConvGeom {
                input: Shape { h, w, c: ci },
                output: Shape { h: oh, w: ow, c: co },
                k, stride, pad_top, pad_left,
            };
            prop_assume!(small_applies(&g));
            let mut next = uniform(seed);
            let x: Vec<f32> = (0..h * w * ci).map(|_| next()).collect();
            let wb: Vec<u8> = (0..k * k * ci * co).flat_map(|_| next().to_le_bytes()).collect();
            let bias: Vec<u8> = (0..co).flat_map(|_| next().to_le_bytes()).collect();
            let mut want = std::vec![0f32; oh * ow * co];
            conv2d(&g, &x, &wb, &bias, &mut want, relu, Kernel::Portable);
            let tol = 1e-6 * (k * k * ci) as f32;
            for kernel in kernels() {
                let mut ws = std::vec![f32::NAN; small_workspace_len(&g).unwrap()];
                let mut got = std::vec![f32::NAN; want.len()];
                conv2d_small(&g, &x, &wb, &bias, &mut got, relu, kernel, &mut ws);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    prop_assert!((a - b).abs() <= tol, "{kernel:?} {g:?} value {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn tiles_are_even_and_cover_the_range() {
        let t = |lo, hi| tiles(lo, hi, MAX_PIXELS).collect::<Vec<_>>();
        assert_eq!(t(1, 15), [(1, 5), (6, 5), (11, 4)]);
        assert_eq!(t(0, 6), [(0, 6)]);
        assert_eq!(t(0, 7), [(0, 4), (4, 3)]);
        assert_eq!(t(3, 3), []);
        assert_eq!(t(5, 2), []);
        for len in 0..50 {
            let v = t(2, 2 + len);
            assert_eq!(v.iter().map(|&(_, n)| n).sum::<usize>(), len);
            assert!(v.iter().all(|&(_, n)| (1..=6).contains(&n)));
            assert!(v.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        }
    }
}
