//! 2-D convolution by im2col + SGEMM, NHWC.
//!
//! For output pixel `p = (image, oy, ox)` the im2col row is the receptive field
//! `x[oy·s + ky − pad_top, ox·s + kx − pad_left, ci]` over `(ky, kx, ci)`, zero
//! outside the image. With `W` stored `[ky, kx, ci, co]` = a `K×Cout` matrix
//! (`K = k·k·Cin`), the whole layer is one matrix product:
//!
//! ```text
//! Y[P×Cout]  = cols[P×K] · W[K×Cout] + b        (forward)
//! dW[K×Cout] = colsᵀ · dY                        (weight gradient)
//! dcols      = dY · Wᵀ,  dx = col2im(dcols)      (input gradient)
//! ```
//!
//! The batch is split into one chunk of whole images per thread (rayon); each
//! chunk walks its rows in tiles small enough for the im2col tile to stay in
//! cache, and owns its scratch, so threads never share a write.
//!
//! 3×3 stride-1 layers with enough input channels take the Winograd route
//! instead ([`super::winograd`]): the same sums with 4× fewer multiplies; layers
//! with few input channels (an image's first) the direct route
//! ([`super::direct`]), which skips im2col's copies (both by default on
//! AVX-512 CPUs; see [`ConvChoice`]).

use super::direct;
use super::winograd::{self, Geometry};
use super::Padding;
use super::{images_per_chunk, Layer, Mode, NamedTensor, ParamVisitor};
use crate::kernels::gemm::{Backend, Op};
use crate::kernels::tensor::{ImageShape, Tensor};
use rayon::prelude::*;

/// Fewest input channels for which a 3×3 stride-1 layer uses Winograd by
/// default (with fewer, its GEMMs are too thin to pay for the transforms).
pub const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Which convolutions run by Winograd or directly, as a network's
/// [`super::Compute`] says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvChoice {
    /// Winograd for the layers it suits (3×3, stride 1, at least
    /// [`WINOGRAD_MIN_CHANNELS`] input channels) where its transforms have
    /// their AVX-512 version (measured 1.5× faster on a model-1 step than
    /// im2col; the portable and AVX2 versions are correct everywhere but were
    /// not measured to win, so other CPUs keep im2col unless asked); the
    /// direct sums for layers with at most [`DIRECT_MAX_CHANNELS`] input
    /// channels, also where their AVX-512 tiles run.
    #[default]
    Auto,
    /// im2col everywhere.
    Im2col,
    /// Winograd for the layers it suits, on any CPU (the others as `Auto`).
    Winograd,
}

pub use direct::DIRECT_MAX_CHANNELS;

/// How a [`Conv2d`] computes its sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// im2col + one SGEMM: any kernel, stride and padding.
    Im2col,
    /// Winograd F(4×4, 3×3): 3×3 kernels with stride 1 only.
    Winograd,
    /// The direct sums from a zero-bordered copy of each image: any kernel,
    /// stride and padding; meant for few input channels. Forward and the
    /// weight gradient; an input gradient, if asked for, goes by im2col.
    Direct,
}

/// Target size of one im2col tile, in floats (1 MiB: half of this machine's
/// 2 MiB L2 per core; 1 MiB ran a model-1 step 3 % faster than 256 KiB).
pub const TILE_FLOATS: usize = 1 << 18;

pub struct Conv2d {
    input: ImageShape,
    out: ImageShape,
    kernel: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
    /// `[kernel, kernel, in_channels, filters]`, row-major: a `K×Cout` matrix.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    dweight: Vec<f32>,
    dbias: Vec<f32>,
    /// One per chunk of the batch.
    scratch: Vec<Scratch>,
    /// Forced by [`Conv2d::set_algorithm`]; `None`: chosen by shape and `choice`.
    algorithm: Option<Algorithm>,
    choice: ConvChoice,
    gemm: Backend,
    /// The algorithm of the last forward pass (backward follows it).
    used: Algorithm,
    /// A following relu fused into this layer (see [`Conv2d::fuse_relu`]).
    relu: bool,
    /// Winograd: the geometry and the transformed weights of the last forward.
    winograd: Option<Geometry>,
    /// The direct sums' geometry.
    direct: direct::Geometry,
    u: Vec<f32>,
    du: Vec<f32>,
}

/// What one thread needs for its chunk of the batch.
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    dcols: Vec<f32>,
    dweight: Vec<f32>,
    dbias: Vec<f32>,
    /// One tile of `dy` masked by a fused relu.
    dy: Vec<f32>,
    winograd: winograd::Scratch,
    direct: direct::Scratch,
}

impl Conv2d {
    /// Glorot-uniform weights (fan_in = k·k·Cin, fan_out = k·k·Cout), zero bias.
    pub fn new(
        input: ImageShape,
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        rng: &mut impl rand::Rng,
    ) -> Self {
        let (oh, pad_top) = padding
            .output_and_pad(input.height, kernel, stride)
            .expect("spec validated");
        let (ow, pad_left) = padding
            .output_and_pad(input.width, kernel, stride)
            .expect("spec validated");
        let k = kernel * kernel * input.channels;
        let out = ImageShape::new(oh, ow, filters);
        let weight = crate::layers::init::glorot_uniform(
            kernel * kernel * input.channels,
            kernel * kernel * filters,
            k * filters,
            rng,
        );
        Self {
            input,
            out,
            kernel,
            stride,
            pad_top,
            pad_left,
            weight,
            bias: vec![0.0; filters],
            dweight: vec![0.0; k * filters],
            dbias: vec![0.0; filters],
            scratch: Vec::new(),
            algorithm: None,
            choice: ConvChoice::default(),
            gemm: Backend::default(),
            used: Algorithm::Im2col,
            relu: false,
            winograd: (kernel == 3 && stride == 1)
                .then(|| Geometry::new(input, out, pad_top, pad_left)),
            direct: direct::Geometry::new(input, out, kernel, stride, pad_top, pad_left),
            u: Vec::new(),
            du: Vec::new(),
        }
    }

    /// Fuses a relu that follows this layer into it: forward stores
    /// `max(0, conv(x))`, and backward takes `dy` and `y` of that relu's output
    /// (the gradient is masked by `y > 0` here). Saves the relu's two passes
    /// over memory; the network does this when the spec allows.
    pub fn fuse_relu(&mut self) {
        self.relu = true;
        self.direct.relu = true;
        if let Some(g) = &mut self.winograd {
            g.relu = true;
        }
    }

    /// Sets how the layer computes (see [`super::Compute`]); an algorithm
    /// forced by [`Conv2d::set_algorithm`] stays.
    pub fn set_compute(&mut self, compute: super::Compute) {
        self.choice = compute.conv;
        self.gemm = compute.gemm;
        if let Some(g) = &mut self.winograd {
            g.gemm = compute.gemm;
        }
    }

    /// Forces an algorithm; `false` (and no change) if this layer's shape
    /// does not allow it (Winograd needs a 3×3 kernel and stride 1; the
    /// direct sums take any layer).
    pub fn set_algorithm(&mut self, algorithm: Algorithm) -> bool {
        if algorithm == Algorithm::Winograd && self.winograd.is_none() {
            return false;
        }
        self.algorithm = Some(algorithm);
        true
    }

    /// The algorithm the next forward pass will use.
    pub fn algorithm(&self) -> Algorithm {
        match (self.algorithm, &self.winograd) {
            (Some(a), _) => a,
            (None, Some(_))
                if self.input.channels >= WINOGRAD_MIN_CHANNELS
                    && match self.choice {
                        ConvChoice::Auto => crate::kernels::has_avx512f(),
                        ConvChoice::Im2col => false,
                        ConvChoice::Winograd => true,
                    } =>
            {
                Algorithm::Winograd
            }
            (None, _) if self.choice != ConvChoice::Im2col && self.direct.suits() => {
                Algorithm::Direct
            }
            _ => Algorithm::Im2col,
        }
    }

    /// Length of one im2col row: `K = k·k·Cin`.
    fn k(&self) -> usize {
        self.kernel * self.kernel * self.input.channels
    }

    /// Rows per tile, so that a `rows × K` tile is about [`TILE_FLOATS`].
    fn tile_rows(&self) -> usize {
        (TILE_FLOATS / self.k()).clamp(16, 4096)
    }

    /// Sizes the scratch of `chunks` chunks for the algorithm in use (and
    /// for im2col's input gradient after the direct sums, if `input_gradient`).
    fn ensure_scratch(&mut self, chunks: usize, input_gradient: bool) {
        let (k, cout, tile) = (self.k(), self.out.channels, self.tile_rows());
        self.scratch.resize_with(chunks, Scratch::default);
        for s in &mut self.scratch {
            match (self.used, &self.winograd) {
                (Algorithm::Winograd, Some(g)) => g.ensure_scratch(&mut s.winograd),
                (Algorithm::Direct, _) if !input_gradient => {
                    self.direct.ensure_scratch(&mut s.direct);
                    s.dweight.resize(k * cout, 0.0);
                    s.dbias.resize(cout, 0.0);
                }
                _ => {
                    s.cols.resize(tile * k, 0.0);
                    s.dcols.resize(tile * k, 0.0);
                    s.dweight.resize(k * cout, 0.0);
                    s.dbias.resize(cout, 0.0);
                    if self.relu {
                        s.dy.resize(tile * cout, 0.0);
                    }
                }
            }
        }
    }

    /// Source pixel index of kernel tap `(ky, kx)` at output `(oy, ox)`, or `None` in the padding.
    #[inline]
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let iy = (oy * self.stride + ky).checked_sub(self.pad_top)?;
        let ix = (ox * self.stride + kx).checked_sub(self.pad_left)?;
        (iy < self.input.height && ix < self.input.width).then_some(iy * self.input.width + ix)
    }

    /// First source pixel of kernel row `ky` at output `(oy, ox)` when the
    /// whole row is inside the image and, with stride 1 in NHWC, its `k·Cin`
    /// values are contiguous in memory; `None` otherwise (go tap by tap).
    #[inline]
    fn whole_row(&self, oy: usize, ox: usize, ky: usize) -> Option<usize> {
        let first = self.source(oy, ox, ky, 0)?;
        let last = self.source(oy, ox, ky, self.kernel - 1)?;
        (last - first == self.kernel - 1).then_some(first)
    }

    /// im2col for output rows `rows` of a chunk: `cols[r − start, (ky, kx, ci)]`.
    fn im2col(&self, x: &[f32], rows: std::ops::Range<usize>, cols: &mut [f32]) {
        let (cin, k, kk) = (self.input.channels, self.kernel, self.k());
        let (out_pixels, in_len) = (self.out.pixels(), self.input.len());
        for (r, row) in rows.zip(cols.chunks_exact_mut(kk)) {
            let (img, p) = (r / out_pixels, r % out_pixels);
            let (oy, ox) = (p / self.out.width, p % self.out.width);
            let x = &x[img * in_len..(img + 1) * in_len];
            for ky in 0..k {
                let dst = &mut row[ky * k * cin..(ky + 1) * k * cin];
                if let Some(a) = self.whole_row(oy, ox, ky) {
                    copy_short(dst, &x[a * cin..(a + k) * cin]);
                    continue;
                }
                for kx in 0..k {
                    let d = &mut dst[kx * cin..(kx + 1) * cin];
                    match self.source(oy, ox, ky, kx) {
                        Some(i) => copy_short(d, &x[i * cin..(i + 1) * cin]),
                        None => d.fill(0.0),
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col`]: `dx[source of (r, tap)] += dcols[r, tap]`.
    fn col2im(&self, dcols: &[f32], rows: std::ops::Range<usize>, dx: &mut [f32]) {
        let (cin, k, kk) = (self.input.channels, self.kernel, self.k());
        let (out_pixels, in_len) = (self.out.pixels(), self.input.len());
        for (r, row) in rows.zip(dcols.chunks_exact(kk)) {
            let (img, p) = (r / out_pixels, r % out_pixels);
            let (oy, ox) = (p / self.out.width, p % self.out.width);
            let dx = &mut dx[img * in_len..(img + 1) * in_len];
            for ky in 0..k {
                let src = &row[ky * k * cin..(ky + 1) * k * cin];
                if let Some(a) = self.whole_row(oy, ox, ky) {
                    add_assign(&mut dx[a * cin..(a + k) * cin], src);
                    continue;
                }
                for kx in 0..k {
                    if let Some(i) = self.source(oy, ox, ky, kx) {
                        add_assign(
                            &mut dx[i * cin..(i + 1) * cin],
                            &src[kx * cin..(kx + 1) * cin],
                        );
                    }
                }
            }
        }
    }

    /// Forward for one chunk of whole images.
    fn forward_chunk(&self, x: &[f32], y: &mut [f32], s: &mut Scratch) {
        let (kk, cout) = (self.k(), self.out.channels);
        let rows = y.len() / cout;
        for start in (0..rows).step_by(self.tile_rows()) {
            let end = (start + self.tile_rows()).min(rows);
            let m = end - start;
            self.im2col(x, start..end, &mut s.cols[..m * kk]);
            let y = &mut y[start * cout..end * cout];
            for row in y.chunks_exact_mut(cout) {
                row.copy_from_slice(&self.bias);
            }
            // Y[m×Cout] += cols[m×K] · W[K×Cout]
            self.gemm
                .sgemm(m, kk, cout, &s.cols, Op::N, &self.weight, Op::N, 1.0, y);
            if self.relu {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
    }

    /// Backward for one chunk: partial dW, db into the scratch; dx if asked.
    /// `y` is the forward output (for a fused relu's mask).
    fn backward_chunk(
        &self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        mut dx: Option<&mut [f32]>,
        s: &mut Scratch,
    ) {
        let (kk, cout) = (self.k(), self.out.channels);
        let rows = dy.len() / cout;
        s.dweight.fill(0.0);
        s.dbias.fill(0.0);
        if let Some(dx) = dx.as_deref_mut() {
            dx.fill(0.0);
        }
        for start in (0..rows).step_by(self.tile_rows()) {
            let end = (start + self.tile_rows()).min(rows);
            let m = end - start;
            let mut dy = &dy[start * cout..end * cout];
            if self.relu {
                // dy ⊙ [y > 0] for this tile.
                let y = &y[start * cout..end * cout];
                let masked = &mut s.dy[..m * cout];
                for ((d, &g), &y) in masked.iter_mut().zip(dy).zip(y) {
                    *d = if y > 0.0 { g } else { 0.0 };
                }
                dy = masked;
            }
            for row in dy.chunks_exact(cout) {
                for (d, &g) in s.dbias.iter_mut().zip(row) {
                    *d += g;
                }
            }
            // dW[K×Cout] += colsᵀ[K×m] · dY[m×Cout]
            self.im2col(x, start..end, &mut s.cols[..m * kk]);
            self.gemm
                .sgemm(kk, m, cout, &s.cols, Op::T, dy, Op::N, 1.0, &mut s.dweight);
            if let Some(dx) = dx.as_deref_mut() {
                // dcols[m×K] = dY[m×Cout] · Wᵀ[Cout×K], then scatter back.
                self.gemm.sgemm(
                    m,
                    cout,
                    kk,
                    dy,
                    Op::N,
                    &self.weight,
                    Op::T,
                    0.0,
                    &mut s.dcols,
                );
                self.col2im(&s.dcols[..m * kk], start..end, dx);
            }
        }
    }
}

impl Layer for Conv2d {
    fn set_compute(&mut self, compute: super::Compute) {
        Conv2d::set_compute(self, compute);
    }

    fn output_shape(&self) -> ImageShape {
        self.out
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _mode: Mode) {
        let n = x.n;
        y.resize(n, self.out);
        let per = images_per_chunk(n);
        self.used = self.algorithm();
        self.ensure_scratch(n.div_ceil(per), false);
        let mut scratch = std::mem::take(&mut self.scratch);
        let chunks = y
            .data
            .par_chunks_mut(per * self.out.len())
            .zip(x.data.par_chunks(per * self.input.len()))
            .zip(scratch.par_iter_mut());
        match (self.used, &self.winograd) {
            (Algorithm::Winograd, Some(g)) => {
                self.u.resize(g.u_len(), 0.0);
                g.transform_weights(&self.weight, &mut self.u);
                let (u, bias) = (&self.u, &self.bias);
                chunks.for_each(|((y, x), s)| g.forward_chunk(x, y, u, bias, &mut s.winograd));
            }
            (Algorithm::Direct, _) => {
                let (d, w, bias) = (&self.direct, &self.weight, &self.bias);
                chunks.for_each(|((y, x), s)| d.forward_chunk(x, y, w, bias, &mut s.direct));
            }
            _ => {
                let this = &*self;
                chunks.for_each(|((y, x), s)| this.forward_chunk(x, y, s));
            }
        }
        self.scratch = scratch;
    }

    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let n = x.n;
        let per = images_per_chunk(n);
        self.ensure_scratch(n.div_ceil(per), dx.is_some());
        let mut scratch = std::mem::take(&mut self.scratch);
        let this = &*self;
        // One chunk's backward, by the algorithm of the forward pass.
        let chunk = |(x, y): (&[f32], &[f32]),
                     dy: &[f32],
                     dx: Option<&mut [f32]>,
                     s: &mut Scratch| match (this.used, &this.winograd) {
            (Algorithm::Winograd, Some(g)) => {
                g.backward_chunk(x, y, dy, dx, &this.u, &mut s.winograd)
            }
            (Algorithm::Direct, _) if dx.is_none() => {
                s.dweight.fill(0.0);
                s.dbias.fill(0.0);
                let (dw, db) = (&mut s.dweight, &mut s.dbias);
                this.direct
                    .weight_gradient_chunk(x, y, dy, dw, db, &mut s.direct)
            }
            _ => this.backward_chunk(x, y, dy, dx, s),
        };
        // (x, y) of each chunk.
        let x_chunks = x
            .data
            .par_chunks(per * self.input.len())
            .zip(y.data.par_chunks(per * self.out.len()));
        let dy_chunks = dy.data.par_chunks(per * self.out.len());
        match dx {
            Some(dx) => {
                dx.resize(n, self.input);
                x_chunks
                    .zip(dy_chunks)
                    .zip(dx.data.par_chunks_mut(per * self.input.len()))
                    .zip(scratch.par_iter_mut())
                    .for_each(|(((x, dy), dx), s)| chunk(x, dy, Some(dx), s));
            }
            None => x_chunks
                .zip(dy_chunks)
                .zip(scratch.par_iter_mut())
                .for_each(|((x, dy), s)| chunk(x, dy, None, s)),
        }
        // Sum the per-chunk partial gradients.
        let chunks = &scratch[..n.div_ceil(per)];
        self.dbias.fill(0.0);
        if let (Algorithm::Winograd, Some(g)) = (self.used, &self.winograd) {
            // dU summed over chunks (in parallel over parts of dU), then dW = Gᵀ dU G.
            self.du.resize(self.u.len(), 0.0);
            let (first, rest) = chunks.split_first().expect("at least one chunk");
            const PART: usize = 1 << 14;
            self.du
                .par_chunks_mut(PART)
                .enumerate()
                .for_each(|(i, du)| {
                    du.copy_from_slice(&first.winograd.du[i * PART..][..du.len()]);
                    for s in rest {
                        add_assign(du, &s.winograd.du[i * PART..][..du.len()]);
                    }
                });
            for s in chunks {
                add_assign(&mut self.dbias, &s.winograd.dbias);
            }
            g.weight_gradient(&self.du, &mut self.dweight);
        } else {
            self.dweight.fill(0.0);
            for s in chunks {
                add_assign(&mut self.dweight, &s.dweight);
                add_assign(&mut self.dbias, &s.dbias);
            }
        }
        self.scratch = scratch;
    }

    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        f("weight", &mut self.weight, &self.dweight, true);
        f("bias", &mut self.bias, &self.dbias, false);
    }

    fn tensors(&self) -> Vec<NamedTensor<'_>> {
        let (k, cin, cout) = (self.kernel, self.input.channels, self.out.channels);
        vec![
            NamedTensor {
                suffix: "weight",
                shape: vec![k, k, cin, cout],
                data: &self.weight,
            },
            NamedTensor {
                suffix: "bias",
                shape: vec![cout],
                data: &self.bias,
            },
        ]
    }

    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.weight, &mut self.bias]
    }
}

/// `dst = src` for the short runs im2col copies (one kernel row: `k·Cin`
/// floats), in 16-float blocks the compiler keeps inline instead of one
/// `memcpy` call per run (a model-1 step measured ~2 % faster on 1 thread).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let (mut d, mut s) = (dst.chunks_exact_mut(16), src.chunks_exact(16));
    for (d, s) in (&mut d).zip(&mut s) {
        let block: [f32; 16] = s.try_into().expect("16 floats");
        d.copy_from_slice(&block);
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}

/// `acc += x`, serially: called inside each thread's chunk (unlike the
/// rayon-parallel `layers::add_assign`, which is for whole tensors).
fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Direct convolution, `same` padding, stride 1: `y[p, co] = b[co] + Σ x · w`.
    fn direct(conv: &Conv2d, x: &[f32]) -> Vec<f32> {
        let (inp, out, k) = (conv.input, conv.out, conv.kernel);
        let mut y = vec![0.0; out.len()];
        for oy in 0..out.height {
            for ox in 0..out.width {
                for co in 0..out.channels {
                    let mut s = conv.bias[co] as f64;
                    for ky in 0..k {
                        for kx in 0..k {
                            let Some(i) = conv.source(oy, ox, ky, kx) else {
                                continue;
                            };
                            for ci in 0..inp.channels {
                                let w = conv.weight
                                    [((ky * k + kx) * inp.channels + ci) * out.channels + co];
                                s += (x[i * inp.channels + ci] * w) as f64;
                            }
                        }
                    }
                    y[(oy * out.width + ox) * out.channels + co] = s as f32;
                }
            }
        }
        y
    }

    /// An image with more output rows than one im2col tile holds, so forward
    /// and backward cross tile boundaries. Forward is checked against the
    /// direct sum. For backward, `L = Σ dy ⊙ y` is linear in each weight,
    /// bias and input, so its gradient entry is exactly the change of `L`
    /// under a unit step of that entry, computed with the direct sum. Both
    /// algorithms (the Winograd blocks of tiles cross boundaries too).
    #[test]
    fn tiled_forward_and_backward_match_direct_sums() {
        for algorithm in [Algorithm::Im2col, Algorithm::Winograd] {
            tiled_case(algorithm);
        }
    }

    fn tiled_case(algorithm: Algorithm) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let input = ImageShape::new(40, 40, 64);
        let mut conv = Conv2d::new(input, 5, 3, 1, Padding::Same, &mut rng);
        assert!(conv.set_algorithm(algorithm));
        conv.bias
            .iter_mut()
            .for_each(|b| *b = rng.random_range(-0.5..0.5));
        assert!(
            conv.out.pixels() > 2 * conv.tile_rows(),
            "needs several tiles"
        );
        let mut x = Tensor::zeros(1, input);
        x.data
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0));

        let mut y = Tensor::default();
        conv.forward(&x, &mut y, Mode::Train);
        let want = direct(&conv, &x.data);
        for (a, b) in y.data.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "forward {a} vs direct {b}");
        }

        let mut dy = Tensor::zeros(1, conv.out);
        dy.data
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0));
        let mut dx = Tensor::default();
        conv.backward(&x, &y, &dy, Some(&mut dx));
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
        };
        // L(w) is linear in w, x and b: each gradient entry is the change of L
        // under a unit step of that entry.
        let base = dot(&want, &dy.data);
        for j in [0, 7, 1000, conv.weight.len() - 1] {
            conv.weight[j] += 1.0;
            let numeric = dot(&direct(&conv, &x.data), &dy.data) - base;
            conv.weight[j] -= 1.0;
            assert!((numeric - conv.dweight[j] as f64).abs() < 1e-2, "dW[{j}]");
        }
        for co in 0..conv.out.channels {
            let numeric: f64 = dy
                .data
                .iter()
                .skip(co)
                .step_by(conv.out.channels)
                .map(|&g| g as f64)
                .sum();
            assert!((numeric - conv.dbias[co] as f64).abs() < 1e-2, "db[{co}]");
        }
        for i in [0, 64 * 41 + 3, x.data.len() / 2, x.data.len() - 1] {
            let mut xp = x.data.clone();
            xp[i] += 1.0;
            let numeric = dot(&direct(&conv, &xp), &dy.data) - base;
            assert!((numeric - dx.data[i] as f64).abs() < 1e-2, "dx[{i}]");
        }
    }

    /// Winograd against im2col on the same layer: forward output, input,
    /// weight and bias gradients. Shapes cover odd sizes (partial tiles),
    /// both paddings, channel counts that are not a multiple of the lanes,
    /// and batches with several blocks of tiles per chunk; each SIMD version
    /// of the transforms this CPU can run (AVX-512, AVX2, baseline).
    #[test]
    fn winograd_matches_im2col() {
        super::winograd::at_each_level(winograd_matches_im2col_case);
    }

    fn winograd_matches_im2col_case() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let cases = [
            (3, 32, 32, 32, 32, Padding::Same),
            (2, 7, 5, 17, 9, Padding::Same),
            (2, 9, 6, 40, 33, Padding::Valid),
            (1, 1, 1, 16, 3, Padding::Same),
            (4, 16, 16, 64, 128, Padding::Same),
        ];
        for (n, h, w, cin, cout, padding) in cases {
            let input = ImageShape::new(h, w, cin);
            let mut conv = Conv2d::new(input, cout, 3, 1, padding, &mut rng);
            let (x, dy) = random_case(&mut conv, n, &mut rng);
            let want = run(&mut conv, Algorithm::Im2col, &x, &dy, true);
            let got = run(&mut conv, Algorithm::Winograd, &x, &dy, true);
            assert_close(
                &got,
                &want,
                &format!("{n}×{h}×{w}×{cin}→{cout} {padding:?}"),
            );
        }
    }

    /// The direct sums against im2col through the layer: batches split into
    /// several chunks, kernels 3 and 5, strides 1 and 2, a fused relu or not,
    /// backward as a first layer (no input gradient: the direct weight
    /// gradient) and as a later one (im2col's backward after a direct forward).
    #[test]
    fn direct_matches_im2col() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for (n, h, w, cin, cout, kernel, stride, relu) in [
            (5, 32, 32, 3, 32, 3, 1, true),
            (3, 17, 13, 1, 16, 5, 1, false),
            (4, 15, 16, 4, 40, 3, 2, true),
        ] {
            let input = ImageShape::new(h, w, cin);
            let mut conv = Conv2d::new(input, cout, kernel, stride, Padding::Same, &mut rng);
            if relu {
                conv.fuse_relu();
            }
            let (x, dy) = random_case(&mut conv, n, &mut rng);
            for with_dx in [false, true] {
                let want = run(&mut conv, Algorithm::Im2col, &x, &dy, with_dx);
                let got = run(&mut conv, Algorithm::Direct, &x, &dy, with_dx);
                let case = format!("{n}×{h}×{w}×{cin}→{cout} k{kernel} s{stride} dx {with_dx}");
                assert_close(&got, &want, &case);
            }
        }
    }

    /// A random bias for `conv`, and a random input and output gradient of `n` images.
    fn random_case(conv: &mut Conv2d, n: usize, rng: &mut impl Rng) -> (Tensor, Tensor) {
        conv.bias
            .iter_mut()
            .for_each(|b| *b = rng.random_range(-0.5..0.5));
        let mut x = Tensor::zeros(n, conv.input);
        x.data
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0));
        let mut dy = Tensor::zeros(n, conv.out);
        dy.data
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0));
        (x, dy)
    }

    /// Forward and backward by `algorithm` (with an input gradient if
    /// `with_dx`): `[y, dx, dW, db]`. `dx` starts full of NaN, so every
    /// value of it must be written, not added to.
    fn run(
        conv: &mut Conv2d,
        algorithm: Algorithm,
        x: &Tensor,
        dy: &Tensor,
        with_dx: bool,
    ) -> [Vec<f32>; 4] {
        assert!(conv.set_algorithm(algorithm));
        let mut y = Tensor::default();
        let mut dx = Tensor::default();
        if with_dx {
            dx = Tensor::zeros(x.n, conv.input);
            dx.data.fill(f32::NAN);
        }
        conv.forward(x, &mut y, Mode::Train);
        assert_eq!(conv.used, algorithm);
        conv.backward(x, &y, dy, with_dx.then_some(&mut dx));
        [y.data, dx.data, conv.dweight.clone(), conv.dbias.clone()]
    }

    /// Each of `[y, dx, dW, db]` within 1e-5 of the largest magnitude of its `want`.
    fn assert_close(got: &[Vec<f32>; 4], want: &[Vec<f32>; 4], case: &str) {
        for (name, (got, want)) in ["y", "dx", "dW", "db"].iter().zip(got.iter().zip(want)) {
            assert_eq!(got.len(), want.len(), "{name} of {case}");
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "{name}[{i}] of {case}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn winograd_only_for_3x3_stride_1() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let input = ImageShape::new(8, 8, 32);
        let mut conv = Conv2d::new(input, 8, 3, 2, Padding::Same, &mut rng);
        assert!(!conv.set_algorithm(Algorithm::Winograd));
        assert_eq!(conv.algorithm(), Algorithm::Im2col);
        let conv = Conv2d::new(input, 8, 5, 1, Padding::Same, &mut rng);
        assert_eq!(conv.algorithm(), Algorithm::Im2col);
        // Too few channels for Winograd: the direct sums where they are the
        // default (AVX-512), else im2col.
        let conv = Conv2d::new(ImageShape::new(8, 8, 3), 8, 3, 1, Padding::Same, &mut rng);
        let direct = conv.direct.suits();
        let want = if direct {
            Algorithm::Direct
        } else {
            Algorithm::Im2col
        };
        assert_eq!(conv.algorithm(), want, "too few channels");
        // Eligible: Winograd where it is the default (AVX-512), or when asked.
        let conv = Conv2d::new(input, 8, 3, 1, Padding::Same, &mut rng);
        let default = crate::kernels::has_avx512f();
        assert_eq!(conv.algorithm() == Algorithm::Winograd, default);
        let mut conv = conv;
        assert!(conv.set_algorithm(Algorithm::Winograd));
        assert_eq!(conv.algorithm(), Algorithm::Winograd);
    }

    /// A fused relu gives what the convolution followed by a relu layer gives:
    /// the same output, and the same gradients for the relu's `dy`.
    #[test]
    fn fused_relu_matches_conv_then_relu() {
        super::winograd::at_each_level(fused_relu_case);
    }

    fn fused_relu_case() {
        use crate::layers::Relu;
        for algorithm in [Algorithm::Im2col, Algorithm::Winograd, Algorithm::Direct] {
            let input = ImageShape::new(9, 10, 16);
            let build = || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
                let mut conv = Conv2d::new(input, 20, 3, 1, Padding::Same, &mut rng);
                conv.bias
                    .iter_mut()
                    .for_each(|b| *b = rng.random_range(-0.5..0.5));
                assert!(conv.set_algorithm(algorithm));
                conv
            };
            let (mut plain, mut fused) = (build(), build());
            fused.fuse_relu();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
            let mut x = Tensor::zeros(3, input);
            x.data
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-1.0..1.0));
            let mut relu = Relu::new(plain.out);
            let (mut y, mut r, mut yf) = (Tensor::default(), Tensor::default(), Tensor::default());
            plain.forward(&x, &mut y, Mode::Train);
            relu.forward(&y, &mut r, Mode::Train);
            fused.forward(&x, &mut yf, Mode::Train);
            assert_eq!(yf.data, r.data, "{algorithm:?} forward");
            assert!(r.data.contains(&0.0) && r.data.iter().any(|&v| v > 0.0));

            let mut dy = Tensor::zeros(3, plain.out);
            dy.data
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-1.0..1.0));
            let (mut dmasked, mut dx, mut dxf) =
                (Tensor::default(), Tensor::default(), Tensor::default());
            relu.backward(&y, &r, &dy, Some(&mut dmasked));
            plain.backward(&x, &y, &dmasked, Some(&mut dx));
            fused.backward(&x, &yf, &dy, Some(&mut dxf));
            for (name, a, b) in [
                ("dx", &dx.data, &dxf.data),
                ("dW", &plain.dweight, &fused.dweight),
                ("db", &plain.dbias, &fused.dbias),
            ] {
                for (a, b) in a.iter().zip(b.iter()) {
                    assert!((a - b).abs() <= 1e-5, "{algorithm:?} {name}: {a} vs {b}");
                }
            }
        }
    }
}
