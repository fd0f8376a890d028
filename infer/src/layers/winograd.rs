//! Winograd F(4×4, 3×3) for one image: a 3×3 stride-1 convolution with 4×
//! fewer multiplies than the direct tiles of [`super::conv`], for the price
//! of a workspace beside the activations ([`workspace_len`]).
//!
//! The output is cut into 4×4 tiles. Tile `t` reads the 6×6 input patch `d`
//! that covers its receptive field (zero outside the image), and per pair of
//! channels (ci, co), with `g` the 3×3 kernel,
//!
//! ```text
//! Y = Aᵀ [ U ⊙ V ] A,    U = G g Gᵀ (6×6),    V = Bᵀ d B (6×6)
//!
//! Bᵀ = [4  0 −5  0  1  0]    G = [ 1/4     0     0 ]    Aᵀ = [1  1  1  1  1  0]
//!      [0 −4 −4  1  1  0]        [−1/6  −1/6  −1/6 ]         [0  1 −1  2 −2  0]
//!      [0  4 −4 −1  1  0]        [−1/6   1/6  −1/6 ]         [0  1  1  4  4  0]
//!      [0 −2 −1  2  1  0]        [1/24  1/12   1/6 ]         [0  1 −1  8 −8  1]
//!      [0  2 −1 −2  1  0]        [1/24 −1/12   1/6 ]
//!      [0  4  0 −5  0  1]        [   0     0     1 ]
//! ```
//!
//! (Lavin & Gray 2016; interpolation points 0, ±1, ±2, ∞), summed over input
//! channels. At each of the 36 positions ξ of a transformed tile that sum is a
//! matrix product over the tiles,
//!
//! ```text
//! M_ξ[tiles × co] = V_ξ[tiles × ci] · U_ξ[ci × co]          (36 products)
//! ```
//!
//! so a 4×4 output tile costs 36·ci·co multiply-adds instead of 16·9·ci·co.
//! Each product is a 1×1 "convolution" of the tiles' `V_ξ` rows, which is
//! what the direct tile kernels ([`Kernel::run`]: AVX-512, AVX2 or portable)
//! compute. The small transforms work on 16 channels at once (contiguous in
//! NHWC): with AVX-512 intrinsics (`winograd_avx512.rs`), else in generic
//! `[f32; 16]` code compiled for the kernel's instruction set.
//!
//! The same matrices as the trainer's `trainer/src/layers/winograd.rs`
//! (which also runs them backwards); this crate depends on no other, so the
//! three 1-D transforms are written again here, and the tests check each
//! against the matrices above.
//!
//! # Order and workspace
//!
//! The file's weights are `[ky][kx][ci][co]`. First `V` for every tile of
//! the image (36 `tiles × ci` matrices); then per block of `b` output
//! channels (the kernel's tile width, 32 or 16): `U` for the block (36
//! `ci × b` matrices), the 36 products into `M` (36 `tiles × b`), and the
//! output transform, bias and relu into `y`. So each input patch and each
//! weight is transformed once per image, and each `U_ξ` (a few KiB) stays in
//! L1 while every tile's row of `V_ξ` goes past it. The workspace is
//! `36·(tiles·ci + ci·b + tiles·b)` values ([`workspace_len`]): 737 KiB for
//! a 32×32 image of 32 channels. (Groups of 12 tiles, which need less, with
//! `V` transformed again for each block, measured about as fast, before the
//! transforms' rewrite; not measured since.)
//!
//! Transforming `U` costs about as much per weight as one tile's product, so
//! Winograd pays where the image has many tiles per weight: [`applies`].

// The transposes read position `i` of several rows: an index loop says it best.
#![allow(clippy::needless_range_loop)]

use super::conv::{le_f32, tiles as tiles_of, ConvGeom, Kernel, Tile};

/// Output tile side.
pub(crate) const TILE: usize = 4;
/// Input patch side: the tile plus the kernel's reach.
pub(crate) const PATCH: usize = TILE + 2;
/// Positions of a transformed tile: the number of products per group.
const XI: usize = PATCH * PATCH;
/// Channels per lane vector of the transforms.
const LANES: usize = 16;
/// The widest block of output channels (the AVX-512 kernel's tile).
const MAX_BLOCK: usize = 32;
/// When Winograd is used (an 8×8 output has 4 tiles, a 16×16 one 16): from
/// [`MANY_TILES`] tiles with at least [`MIN_INPUT_CHANNELS`] input channels,
/// and from [`FEW_TILES`] with at least [`WIDE_INPUT`]. With fewer tiles
/// per weight, transforming the weights (once per image) and the fixed costs
/// of a layer outweigh the multiplies saved; with fewer input channels (an
/// RGB image's 3) each product is too short. Chosen by timing single layers
/// of the shipped models' shapes on the AVX-512 kernel, both ways; the whole
/// models' times are `classify_winograd` against `classify_auto` in
/// `benches/infer_latency.rs`.
const MANY_TILES: usize = 16;
const MIN_INPUT_CHANNELS: usize = 8;
const FEW_TILES: usize = 4;
const WIDE_INPUT: usize = 64;
/// Padding between consecutive matrices of `U`, `V` and `M`, in values (one
/// cache line): their sizes are often multiples of 4 KiB, and 36 streams in
/// one cache set would thrash an 8-way L1.
const SKEW: usize = 16;

type Lanes = [f32; LANES];

/// Whether a convolution runs by Winograd when allowed: 3×3, stride 1, and
/// enough tiles and input channels (see [`MANY_TILES`]).
pub(crate) fn applies(g: &ConvGeom) -> bool {
    let (_, tiles) = tile_grid(g);
    let ci = g.input.c;
    g.k == 3
        && g.stride == 1
        && ((tiles >= MANY_TILES && ci >= MIN_INPUT_CHANNELS)
            || (tiles >= FEW_TILES && ci >= WIDE_INPUT))
}

/// Output tiles per row, and in all (`⌈w/4⌉`, `⌈h/4⌉·⌈w/4⌉`). No more than
/// the output's pixels, so no overflow: a stride-1 output is no larger than
/// its input, whose size model loading has checked.
fn tile_grid(g: &ConvGeom) -> (usize, usize) {
    let across = g.output.w.div_ceil(TILE);
    (across, g.output.h.div_ceil(TILE) * across)
}

/// Values of workspace [`conv2d`] needs for `g` (any kernel), or `None` on
/// overflow.
pub(crate) fn workspace_len(g: &ConvGeom) -> Option<usize> {
    let ci = g.input.c;
    let (_, tiles) = tile_grid(g);
    let u = ci.checked_mul(MAX_BLOCK)?.checked_add(SKEW)?;
    let v = tiles.checked_mul(ci)?.checked_add(SKEW)?;
    let m = tiles.checked_mul(MAX_BLOCK)?.checked_add(SKEW)?;
    u.checked_add(v)?.checked_add(m)?.checked_mul(XI)
}

/// `y = conv(x, w) + bias`, optionally followed by relu, for a 3×3 stride-1
/// convolution (Winograd is *used* where it [`applies`]; it computes any),
/// with `ws` holding at least [`workspace_len`] values (contents ignored).
/// Sizes as for [`super::conv::conv2d`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d(
    g: &ConvGeom,
    x: &[f32],
    w: &[u8],
    bias: &[u8],
    y: &mut [f32],
    relu: bool,
    kernel: Kernel,
    ws: &mut [f32],
) {
    assert!(
        g.k == 3 && g.stride == 1,
        "Winograd F(4×4, 3×3) needs 3×3 stride 1"
    );
    let c = Conv {
        g,
        x,
        w,
        bias,
        relu,
        kernel,
    };
    match kernel {
        Kernel::Portable => c.run(y, ws),
        // SAFETY: the kernel is only chosen after checking the CPU has the
        // features these functions are compiled with.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { c.run_avx2(y, ws) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { c.run_avx512(y, ws) },
    }
}

/// The arguments of one [`conv2d`] call.
struct Conv<'c> {
    g: &'c ConvGeom,
    x: &'c [f32],
    w: &'c [u8],
    bias: &'c [u8],
    relu: bool,
    /// The tile kernel of the products (and the transforms' instructions).
    kernel: Kernel,
}

/// Zero bias for the products (the layer's bias is added after the output
/// transform), as little-endian bytes.
static ZERO_BIAS: [u8; MAX_BLOCK * 4] = [0; MAX_BLOCK * 4];

impl Conv<'_> {
    /// [`Conv::run`] with the transforms compiled for AVX-512F.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, y: &mut [f32], ws: &mut [f32]) {
        self.run(y, ws)
    }

    /// [`Conv::run`] with the transforms compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, y: &mut [f32], ws: &mut [f32]) {
        self.run(y, ws)
    }

    /// The whole convolution (module notes, "Order and workspace").
    #[inline(always)]
    fn run(&self, y: &mut [f32], ws: &mut [f32]) {
        let g = self.g;
        let (ci, co) = (g.input.c, g.output.c);
        let b = self.kernel.cols();
        let (tiles_x, tiles) = tile_grid(g);
        let (u_stride, v_stride, m_stride) = (ci * b + SKEW, tiles * ci + SKEW, tiles * b + SKEW);
        let (u, rest) = ws.split_at_mut(XI * u_stride);
        let (v, rest) = rest.split_at_mut(XI * v_stride);
        let m = &mut rest[..XI * m_stride];
        for t in 0..tiles {
            self.transform_input(t / tiles_x, t % tiles_x, &mut v[t * ci..], v_stride);
        }
        for co0 in (0..co).step_by(b) {
            let cols = b.min(co - co0);
            self.transform_weights(co0, cols, u, u_stride);
            let u_bytes = le_bytes(u);
            for xi in 0..XI {
                let (vx, mx) = (&v[xi * v_stride..], &mut m[xi * m_stride..]);
                let ux = &u_bytes[xi * u_stride * 4..];
                for (p0, pixels) in tiles_of(0, tiles, self.kernel.max_pixels()) {
                    self.kernel.run(&mut Tile {
                        x: &vx[p0 * ci..],
                        w: ux,
                        bias: &ZERO_BIAS,
                        out: &mut mx[p0 * b..],
                        pixels,
                        cols,
                        rows: 1,
                        span: ci,
                        px_in: ci,
                        px_out: b,
                        row_stride: 0,
                        w_tap: b,
                        w_row: 0,
                        relu: false,
                    });
                }
            }
            for t in 0..tiles {
                let (ty, tx) = (t / tiles_x, t % tiles_x);
                self.transform_output(ty, tx, co0, cols, &m[t * b..], m_stride, y);
            }
        }
    }

    /// `U_ξ[c][j] = (G g Gᵀ)_ξ` for input channel `c` and output channel
    /// `co0 + j`, `j < cols`, into `u[ξ·stride + c·b + j]` (`b` ≥ `cols`
    /// columns per row; the weights are `[ky][kx][ci][co]` bytes). Stored as
    /// little-endian bit patterns, for the tile kernels read weights as bytes.
    #[inline(always)]
    fn transform_weights(&self, co0: usize, cols: usize, u: &mut [f32], stride: usize) {
        let (ci, co) = (self.g.input.c, self.g.output.c);
        let b = self.kernel.cols();
        for c in 0..ci {
            for j0 in (0..cols).step_by(LANES) {
                let n = LANES.min(cols - j0);
                // Tap `(ky, kx)` of this input channel and output channel
                // `co0 + j0` is at byte `first + (3·ky + kx)·tap`.
                let (first, tap) = (((c * co) + co0 + j0) * 4, ci * co * 4);
                let u = &mut u[c * b + j0..];
                #[cfg(target_arch = "x86_64")]
                if self.kernel == Kernel::Avx512 {
                    // SAFETY: `Kernel::Avx512` is only chosen on CPUs with AVX-512F.
                    unsafe {
                        super::winograd_avx512::weight_tile(self.w, first, tap, n, u, stride)
                    };
                    continue;
                }
                let mut g = [[[0.0; LANES]; 3]; 3];
                for (i, lanes) in g.iter_mut().flatten().enumerate() {
                    load_le(lanes, &self.w[first + i * tap..], n);
                }
                sandwich(&g, gm, |xi, lanes| {
                    let mut le = *lanes;
                    for v in &mut le {
                        *v = f32::from_bits(v.to_bits().to_le());
                    }
                    store(&mut u[xi * stride..], &le, n);
                });
            }
        }
    }

    /// `V_ξ = (Bᵀ d B)_ξ` of the tile in tile row `ty`, column `tx`, for
    /// every input channel, into `v[ξ·stride + c]`.
    #[inline(always)]
    fn transform_input(&self, ty: usize, tx: usize, v: &mut [f32], stride: usize) {
        let patch = Patch::new(self.g, ty, tx);
        let ci = self.g.input.c;
        for c0 in (0..ci).step_by(LANES) {
            let n = LANES.min(ci - c0);
            let v = &mut v[c0..];
            #[cfg(target_arch = "x86_64")]
            if self.kernel == Kernel::Avx512 {
                // SAFETY: `Kernel::Avx512` is only chosen on CPUs with AVX-512F.
                unsafe { super::winograd_avx512::input_tile(self.x, &patch, c0, n, v, stride) };
                continue;
            }
            let mut d = [[[0.0; LANES]; PATCH]; PATCH];
            for (r, row) in d.iter_mut().enumerate() {
                for (s, lanes) in row.iter_mut().enumerate() {
                    if let Some(p) = patch.at(r, s) {
                        load(lanes, &self.x[p + c0..], n);
                    }
                }
            }
            sandwich(&d, bt, |xi, lanes| store(&mut v[xi * stride..], lanes, n));
        }
    }

    /// `Y = Aᵀ M A` plus the bias (and relu) of the tile in tile row `ty`,
    /// column `tx`, output channels `co0 .. co0 + cols`, from
    /// `m[ξ·stride + j]`, into `y` (its pixels inside the output only).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn transform_output(
        &self,
        ty: usize,
        tx: usize,
        co0: usize,
        cols: usize,
        m: &[f32],
        stride: usize,
        y: &mut [f32],
    ) {
        let outputs = Outputs::new(self.g, ty, tx, co0);
        for j0 in (0..cols).step_by(LANES) {
            let n = LANES.min(cols - j0);
            let (m, bias) = (&m[j0..], &self.bias[(co0 + j0) * 4..]);
            #[cfg(target_arch = "x86_64")]
            if self.kernel == Kernel::Avx512 {
                // SAFETY: `Kernel::Avx512` is only chosen on CPUs with AVX-512F.
                unsafe {
                    super::winograd_avx512::output_tile(
                        m, stride, &outputs, bias, self.relu, j0, n, y,
                    )
                };
                continue;
            }
            let mut mx = [[[0.0; LANES]; PATCH]; PATCH];
            for (xi, lanes) in mx.iter_mut().flatten().enumerate() {
                load(lanes, &m[xi * stride..], n);
            }
            let mut b = [0.0; LANES];
            load_le(&mut b, bias, n);
            sandwich(&mx, at, |i, lanes| {
                if let Some(p) = outputs.at(i / TILE, i % TILE) {
                    let mut o = [0.0; LANES];
                    for ((o, &v), &b) in o.iter_mut().zip(lanes).zip(&b) {
                        let v = v + b;
                        *o = if self.relu { v.max(0.0) } else { v };
                    }
                    store(&mut y[p + j0..], &o, n);
                }
            });
        }
    }
}

/// Where one tile's 6×6 input patch lies in the NHWC input: patch pixel
/// `(r, s)` is input pixel `(iy0 + r, ix0 + s)`, in the image for rows
/// `rows.0 ≤ r < rows.1` and columns `cols.0 ≤ s < cols.1` (zero padding
/// elsewhere).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Patch {
    /// Index in the input of patch pixel `(0, 0)`'s first channel, had it
    /// been in the image (negative when it lies above or left of it).
    pub origin: isize,
    /// Values between vertically (horizontally) adjacent pixels: `w·c` (`c`).
    pub row: usize,
    pub col: usize,
    pub rows: (usize, usize),
    pub cols: (usize, usize),
}

impl Patch {
    fn new(g: &ConvGeom, ty: usize, tx: usize) -> Patch {
        let (ih, iw, ci) = (g.input.h, g.input.w, g.input.c);
        // Top-left corner of the patch, in input coordinates (may be negative).
        let iy0 = (ty * TILE) as isize - g.pad_top as isize;
        let ix0 = (tx * TILE) as isize - g.pad_left as isize;
        let (row, col) = (iw * ci, ci);
        Patch {
            origin: iy0 * row as isize + ix0 * col as isize,
            row,
            col,
            rows: super::in_image(iy0, PATCH, ih),
            cols: super::in_image(ix0, PATCH, iw),
        }
    }

    /// Index in the input of pixel `(r, s)`'s first channel, if in the image.
    #[inline(always)]
    pub fn at(&self, r: usize, s: usize) -> Option<usize> {
        let inside =
            (self.rows.0..self.rows.1).contains(&r) && (self.cols.0..self.cols.1).contains(&s);
        // In the image, the index is that of a real pixel: not negative.
        inside.then(|| (self.origin + (r * self.row + s * self.col) as isize) as usize)
    }
}

/// Where one tile's 4×4 outputs lie in the NHWC output: tile pixel `(r, s)`
/// at `origin + r·row + s·col`, for `r < rows`, `s < cols` (the others are
/// past the image's edge).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outputs {
    /// Index in the output of tile pixel `(0, 0)`'s channel `co0`.
    pub origin: usize,
    pub row: usize,
    pub col: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Outputs {
    fn new(g: &ConvGeom, ty: usize, tx: usize, co0: usize) -> Outputs {
        let (oh, ow, co) = (g.output.h, g.output.w, g.output.c);
        Outputs {
            origin: (ty * TILE * ow + tx * TILE) * co + co0,
            row: ow * co,
            col: co,
            rows: TILE.min(oh - ty * TILE),
            cols: TILE.min(ow - tx * TILE),
        }
    }

    /// Index in the output of pixel `(r, s)`'s channel `co0`, if in the image.
    #[inline(always)]
    pub fn at(&self, r: usize, s: usize) -> Option<usize> {
        (r < self.rows && s < self.cols).then(|| self.origin + r * self.row + s * self.col)
    }
}

/// The workspace's values as the little-endian bytes the tile kernels read
/// weights from (`U` is stored as little-endian bit patterns).
fn le_bytes(u: &[f32]) -> &[u8] {
    // SAFETY: the same memory viewed as bytes: `u8` has no alignment
    // requirement, and the shared borrow of `u` lasts as long as the result.
    unsafe { core::slice::from_raw_parts(u.as_ptr().cast::<u8>(), core::mem::size_of_val(u)) }
}

/// The first `n` lanes from `src` (all 16 with one fixed-size copy, the
/// common case; the others stay as they are).
#[inline(always)]
fn load(lanes: &mut Lanes, src: &[f32], n: usize) {
    if n == LANES {
        lanes.copy_from_slice(&src[..LANES]);
    } else {
        lanes[..n].copy_from_slice(&src[..n]);
    }
}

/// [`load`] from little-endian `f32` bytes.
#[inline(always)]
fn load_le(lanes: &mut Lanes, src: &[u8], n: usize) {
    if n == LANES {
        for (v, b) in lanes.iter_mut().zip(src[..LANES * 4].chunks_exact(4)) {
            *v = le_f32(b);
        }
    } else {
        for (v, b) in lanes[..n].iter_mut().zip(src[..n * 4].chunks_exact(4)) {
            *v = le_f32(b);
        }
    }
}

/// The first `n` lanes into `dst`.
#[inline(always)]
fn store(dst: &mut [f32], lanes: &Lanes, n: usize) {
    if n == LANES {
        dst[..LANES].copy_from_slice(lanes);
    } else {
        dst[..n].copy_from_slice(&lanes[..n]);
    }
}

/// `L X Lᵀ` for a square `X` of lanes, with `f(v) = L v`, handed to `out`
/// entry by entry (`out(i·O + j, (L X Lᵀ)[i][j])`).
#[inline(always)]
fn sandwich<const I: usize, const O: usize>(
    x: &[[Lanes; I]; I],
    f: impl Fn(&[Lanes; I]) -> [Lanes; O],
    mut out: impl FnMut(usize, &Lanes),
) {
    // rows[r] = f(row r of X) = row r of X Lᵀ.
    let mut rows = [[[0.0; LANES]; O]; I];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = f(&x[r]);
    }
    // Column j of L (X Lᵀ) is f(column j of X Lᵀ).
    for j in 0..O {
        let mut col = [[0.0; LANES]; I];
        for (r, c) in col.iter_mut().enumerate() {
            *c = rows[r][j];
        }
        for (i, lanes) in f(&col).iter().enumerate() {
            out(i * O + j, lanes);
        }
    }
}

/// `Bᵀ d`.
#[inline(always)]
fn bt(d: &[Lanes; PATCH]) -> [Lanes; PATCH] {
    let mut o = [[0.0; LANES]; PATCH];
    for i in 0..LANES {
        let (p, q) = (d[4][i] - 4.0 * d[2][i], d[3][i] - 4.0 * d[1][i]);
        let (r, s) = (d[4][i] - d[2][i], 2.0 * (d[3][i] - d[1][i]));
        o[0][i] = 4.0 * d[0][i] - 5.0 * d[2][i] + d[4][i];
        o[1][i] = p + q;
        o[2][i] = p - q;
        o[3][i] = r + s;
        o[4][i] = r - s;
        o[5][i] = 4.0 * d[1][i] - 5.0 * d[3][i] + d[5][i];
    }
    o
}

/// `Aᵀ m`.
#[inline(always)]
fn at(m: &[Lanes; PATCH]) -> [Lanes; TILE] {
    let mut o = [[0.0; LANES]; TILE];
    for i in 0..LANES {
        let (p, q) = (m[1][i] + m[2][i], m[3][i] + m[4][i]);
        let (r, s) = (m[1][i] - m[2][i], m[3][i] - m[4][i]);
        o[0][i] = m[0][i] + p + q;
        o[1][i] = r + 2.0 * s;
        o[2][i] = p + 4.0 * q;
        o[3][i] = r + 8.0 * s + m[5][i];
    }
    o
}

/// `G g`.
#[inline(always)]
fn gm(g: &[Lanes; 3]) -> [Lanes; PATCH] {
    let mut o = [[0.0; LANES]; PATCH];
    for i in 0..LANES {
        let (p, q) = (g[0][i] + g[2][i], g[1][i]);
        let (r, s) = (g[0][i] / 24.0 + g[2][i] / 6.0, g[1][i] / 12.0);
        o[0][i] = g[0][i] / 4.0;
        o[1][i] = -(p + q) / 6.0;
        o[2][i] = -(p - q) / 6.0;
        o[3][i] = r + s;
        o[4][i] = r - s;
        o[5][i] = g[2][i];
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Shape;
    use crate::layers::conv;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// The matrix of a 1-D transform, column by column from unit vectors in lane 0.
    fn matrix<const I: usize, const O: usize>(
        f: impl Fn(&[Lanes; I]) -> [Lanes; O],
    ) -> [[f64; I]; O] {
        let mut m = [[0.0; I]; O];
        for j in 0..I {
            let mut e = [[0.0; LANES]; I];
            e[j][0] = 1.0;
            for (i, row) in f(&e).iter().enumerate() {
                m[i][j] = f64::from(row[0]);
            }
        }
        m
    }

    fn close<const I: usize, const O: usize>(got: [[f64; I]; O], want: [[f64; I]; O]) {
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{got:?}\n!=\n{want:?}");
        }
    }

    #[test]
    fn transforms_are_the_documented_matrices() {
        close(
            matrix(bt),
            [
                [4., 0., -5., 0., 1., 0.],
                [0., -4., -4., 1., 1., 0.],
                [0., 4., -4., -1., 1., 0.],
                [0., -2., -1., 2., 1., 0.],
                [0., 2., -1., -2., 1., 0.],
                [0., 4., 0., -5., 0., 1.],
            ],
        );
        close(
            matrix(gm),
            [
                [1. / 4., 0., 0.],
                [-1. / 6., -1. / 6., -1. / 6.],
                [-1. / 6., 1. / 6., -1. / 6.],
                [1. / 24., 1. / 12., 1. / 6.],
                [1. / 24., -1. / 12., 1. / 6.],
                [0., 0., 1.],
            ],
        );
        close(
            matrix(at),
            [
                [1., 1., 1., 1., 1., 0.],
                [0., 1., -1., 2., -2., 0.],
                [0., 1., 1., 4., 4., 0.],
                [0., 1., -1., 8., -8., 1.],
            ],
        );
    }

    /// A 3×3 stride-1 convolution with `same` (pad 1) or `valid` (pad 0) padding.
    fn geom(h: usize, w: usize, ci: usize, co: usize, same: bool) -> ConvGeom {
        let (oh, ow, pad) = if same { (h, w, 1) } else { (h - 2, w - 2, 0) };
        ConvGeom {
            input: Shape { h, w, c: ci },
            output: Shape {
                h: oh,
                w: ow,
                c: co,
            },
            k: 3,
            stride: 1,
            pad_top: pad,
            pad_left: pad,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Winograd gives the direct convolution's outputs (portable tiles)
        /// within float rounding, with every kernel: image sides that are not
        /// multiples of 4 (partial edge tiles), channel counts that are not
        /// multiples of 16 or 32 (partial lanes and blocks), both paddings,
        /// with and without relu.
        #[test]
        fn matches_the_direct_convolution(
            h in 3usize..19, w in 3usize..19, ci in 1usize..41, co in 1usize..71,
            same: bool, relu: bool, seed: u64,
        ) {
            let g = geom(h, w, ci, co, same);
            let mut next = crate::layers::conv::tests::uniform(seed);
            let x: Vec<f32> = (0..h * w * ci).map(|_| next()).collect();
            let wb: Vec<u8> = (0..9 * ci * co).flat_map(|_| next().to_le_bytes()).collect();
            let bias: Vec<u8> = (0..co).flat_map(|_| next().to_le_bytes()).collect();
            let out_len = g.output.h * g.output.w * co;
            let mut want = std::vec![0f32; out_len];
            conv::conv2d(&g, &x, &wb, &bias, &mut want, relu, Kernel::Portable);
            // Each output sums 9·ci products of values below 0.5 in size.
            let tol = 2e-6 * (9 * ci) as f32;
            for kernel in crate::layers::conv::tests::kernels() {
                let mut ws = std::vec![f32::NAN; workspace_len(&g).unwrap()];
                let mut got = std::vec![f32::NAN; out_len];
                conv2d(&g, &x, &wb, &bias, &mut got, relu, kernel, &mut ws);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    prop_assert!((a - b).abs() <= tol, "{kernel:?} {g:?} value {i}: {a} vs {b}");
                }
            }
        }
    }
}
