//! Direct convolution for layers with few input channels: an image's first
//! layer (1 to 4 channels), any kernel, stride and padding.
//!
//! im2col turns each output pixel's `k·k·Cin` inputs (27 for a 3×3 kernel on
//! RGB) into a row of a matrix, 9× (or 25×) the image, and the SGEMM then
//! packs that matrix once more; with so few channels those copies cost more
//! than the multiply-adds (model 1's first layer ran at 67 effective GFLOP/s
//! on two cores, its deeper ones at 250–600). Here each image is first copied
//! into a zero-bordered buffer (`padded`: `Hp×Wp×Cin`, `Hp = (H_out−1)·s + k`,
//! likewise `Wp`), so that tap `t = (ky, kx, ci)` of output pixel `(oy, ox)`
//! is always at
//!
//! ```text
//! padded[base(oy, ox) + off(t)],   base = (oy·s·Wp + ox·s)·Cin,   off = (ky·Wp + kx)·Cin + ci
//! ```
//!
//! with no test for the border, and the sums run straight from it:
//!
//! ```text
//! y[p, co]  = b[co] + Σ_t padded[base(p) + off(t)] · W[t, co]        (forward)
//! dW[t, co] = Σ_p padded[base(p) + off(t)] · dy[p, co]               (weight gradient)
//! db[co]    = Σ_p dy[p, co]
//! ```
//!
//! (`W` is the layer's `[ky, kx, ci, co]` weight, a `K×Cout` matrix, so tap
//! `t` is its row `t`.) A fused relu clamps `y` and masks `dy` by `y > 0`.
//! The input gradient (needed only when the layer is not a network's first)
//! is left to im2col by the caller.
//!
//! On AVX-512 the sums run in register tiles (`direct/avx512.rs`): forward 8
//! pixels × 32 channels, the weight gradient 9 taps × 32 channels, each
//! accumulated in 16 or 18 registers over the whole reduction. Other CPUs run
//! the portable loops here when this algorithm is asked for; the tests hold
//! both versions to the sums computed term by term in `f64`.

#[cfg(target_arch = "x86_64")]
mod avx512;

use crate::kernels::tensor::ImageShape;

/// Most input channels for which `Geometry::suits` chooses this algorithm
/// by default.
pub const DIRECT_MAX_CHANNELS: usize = 4;

/// The geometry of a direct convolution.
#[derive(Clone, Debug)]
pub(super) struct Geometry {
    pub input: ImageShape,
    pub out: ImageShape,
    kernel: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
    /// Fused relu (see the module docs).
    pub relu: bool,
    /// Padded image: rows and columns.
    hp: usize,
    wp: usize,
    /// `off(t)` of each tap, in weight-row order.
    taps: Vec<usize>,
    /// Whether the AVX-512 tiles run (detected; tests turn it off to run the
    /// portable loops on the same machine).
    avx512: bool,
}

/// What one thread needs for its chunk of the batch, besides the partial
/// weight and bias gradients the caller owns.
#[derive(Default)]
pub(super) struct Scratch {
    /// One padded image.
    padded: Vec<f32>,
    /// One image's `dy` masked by the fused relu.
    dy: Vec<f32>,
}

impl Geometry {
    pub fn new(
        input: ImageShape,
        out: ImageShape,
        kernel: usize,
        stride: usize,
        pad_top: usize,
        pad_left: usize,
    ) -> Self {
        let hp = (out.height - 1) * stride + kernel;
        let wp = (out.width - 1) * stride + kernel;
        let cin = input.channels;
        let taps = (0..kernel)
            .flat_map(|ky| (0..kernel * cin).map(move |j| ky * wp * cin + j))
            .collect();
        Self {
            input,
            out,
            kernel,
            stride,
            pad_top,
            pad_left,
            relu: false,
            hp,
            wp,
            taps,
            avx512: crate::kernels::has_avx512f(),
        }
    }

    /// Whether the default choice ([`super::ConvChoice::Auto`]) is this
    /// algorithm: few input channels, on a CPU with the AVX-512 tiles (the
    /// portable loops are correct everywhere but not faster than im2col).
    pub fn suits(&self) -> bool {
        self.input.channels <= DIRECT_MAX_CHANNELS && self.avx512
    }

    pub fn ensure_scratch(&self, s: &mut Scratch) {
        s.padded
            .resize(self.hp * self.wp * self.input.channels, 0.0);
        if self.relu {
            s.dy.resize(self.out.len(), 0.0);
        }
    }

    /// Copies one image into the zero-bordered buffer.
    fn pad(&self, x: &[f32], padded: &mut [f32]) {
        let (h, w, c) = (self.input.height, self.input.width, self.input.channels);
        padded.fill(0.0);
        // Padded row r holds image row r − pad_top, padded column q image column q − pad_left.
        let cols = self.wp.saturating_sub(self.pad_left).min(w);
        for r in self.pad_top..self.hp.min(self.pad_top + h) {
            let src = &x[(r - self.pad_top) * w * c..][..cols * c];
            padded[(r * self.wp + self.pad_left) * c..][..cols * c].copy_from_slice(src);
        }
    }

    /// Offset of output pixel `(oy, ox)`'s taps in the padded image.
    fn base(&self, oy: usize, ox: usize) -> usize {
        (oy * self.wp + ox) * self.stride * self.input.channels
    }

    /// Forward for one chunk of whole images: `y = conv(x, w) + bias`, then
    /// relu if fused.
    pub fn forward_chunk(
        &self,
        x: &[f32],
        y: &mut [f32],
        w: &[f32],
        bias: &[f32],
        s: &mut Scratch,
    ) {
        let (in_len, out_len) = (self.input.len(), self.out.len());
        let row = self.out.width * self.out.channels;
        for (x, y) in x.chunks_exact(in_len).zip(y.chunks_exact_mut(out_len)) {
            self.pad(x, &mut s.padded);
            for (oy, y) in y.chunks_exact_mut(row).enumerate() {
                self.forward_row(&s.padded, oy, w, bias, y);
            }
        }
    }

    /// Output row `oy` (`W_out × Cout`): by the AVX-512 tiles where they run,
    /// else by the portable loops.
    fn forward_row(&self, padded: &[f32], oy: usize, w: &[f32], bias: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: `avx512` is set only where the CPU has AVX-512F.
            return unsafe { self.forward_row_avx512(padded, oy, w, bias, y) };
        }
        let cout = self.out.channels;
        for ox in 0..self.out.width {
            let base = self.base(oy, ox);
            let y = &mut y[ox * cout..][..cout];
            y.copy_from_slice(&bias[..cout]);
            for (t, &off) in self.taps.iter().enumerate() {
                let v = padded[base + off];
                for (y, &w) in y.iter_mut().zip(&w[t * cout..][..cout]) {
                    *y += v * w;
                }
            }
            if self.relu {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
    }

    /// Adds one chunk's weight and bias gradients into `dweight` (`K×Cout`)
    /// and `dbias`; `y` is the forward output (for a fused relu's mask).
    pub fn weight_gradient_chunk(
        &self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dweight: &mut [f32],
        dbias: &mut [f32],
        s: &mut Scratch,
    ) {
        let (in_len, out_len) = (self.input.len(), self.out.len());
        let cout = self.out.channels;
        let images = x.chunks_exact(in_len).zip(y.chunks_exact(out_len));
        for ((x, y), dy) in images.zip(dy.chunks_exact(out_len)) {
            self.pad(x, &mut s.padded);
            let dy = if self.relu {
                for ((d, &g), &y) in s.dy.iter_mut().zip(dy).zip(y) {
                    *d = if y > 0.0 { g } else { 0.0 };
                }
                &s.dy[..]
            } else {
                dy
            };
            for row in dy.chunks_exact(cout) {
                for (d, &g) in dbias.iter_mut().zip(row) {
                    *d += g;
                }
            }
            self.weight_gradient(&s.padded, dy, dweight);
        }
    }

    /// One image's `dW += Σ_p padded · dy`: by the AVX-512 tiles where they
    /// run, else by the portable loops.
    fn weight_gradient(&self, padded: &[f32], dy: &[f32], dweight: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: `avx512` is set only where the CPU has AVX-512F.
            return unsafe { self.weight_gradient_avx512(padded, dy, dweight) };
        }
        let cout = self.out.channels;
        for oy in 0..self.out.height {
            for ox in 0..self.out.width {
                let base = self.base(oy, ox);
                let g = &dy[(oy * self.out.width + ox) * cout..][..cout];
                for (t, &off) in self.taps.iter().enumerate() {
                    let v = padded[base + off];
                    for (d, &g) in dweight[t * cout..][..cout].iter_mut().zip(g) {
                        *d += v * g;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The sums of the module docs, term by term from the unpadded image in
    /// `f64`: the reference both versions are held to.
    fn reference(
        g: &Geometry,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        dy: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (inp, out, k) = (g.input, g.out, g.kernel);
        let (cin, cout) = (inp.channels, out.channels);
        // Each tap of output pixel (oy, ox) inside the image: (tap, input index).
        let taps = |oy: usize, ox: usize| {
            let mut inside = Vec::new();
            for (ky, kx) in (0..k).flat_map(|ky| (0..k).map(move |kx| (ky, kx))) {
                let iy = (oy * g.stride + ky) as isize - g.pad_top as isize;
                let ix = (ox * g.stride + kx) as isize - g.pad_left as isize;
                if (0..inp.height as isize).contains(&iy) && (0..inp.width as isize).contains(&ix) {
                    let i = (iy as usize * inp.width + ix as usize) * cin;
                    inside.extend((0..cin).map(|ci| ((ky * k + kx) * cin + ci, i + ci)));
                }
            }
            inside
        };
        let mut y = vec![0.0; out.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; cout];
        for oy in 0..out.height {
            for ox in 0..out.width {
                let p = (oy * out.width + ox) * cout;
                let taps = taps(oy, ox);
                for co in 0..cout {
                    let s = taps.iter().fold(bias[co] as f64, |s, &(t, i)| {
                        s + x[i] as f64 * w[t * cout + co] as f64
                    });
                    y[p + co] = if g.relu { s.max(0.0) } else { s };
                    let d = if g.relu && s <= 0.0 {
                        0.0
                    } else {
                        dy[p + co] as f64
                    };
                    db[co] += d;
                    for &(t, i) in &taps {
                        dw[t * cout + co] += x[i] as f64 * d;
                    }
                }
            }
        }
        (y, dw, db)
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Both versions (the AVX-512 tiles where this CPU has them, and the
        /// portable loops) against the `f64` sums: outputs, weight and bias
        /// gradients, over kernels 1–5, strides 1–2, both paddings' offsets,
        /// widths that are not a multiple of the 8-pixel tile, channel counts
        /// around the 16- and 32-lane blocks, with and without a fused relu.
        #[test]
        fn both_versions_match_the_sums(
            (kernel, stride) in (1usize..=5, 1usize..=2),
            (h, w) in (1usize..=13, 1usize..=19),
            cin in 1usize..=4,
            cout in prop::sample::select(vec![1usize, 5, 16, 17, 32, 40, 64]),
            same in any::<bool>(),
            relu in any::<bool>(),
            n in 1usize..=2,
            seed in any::<u64>(),
        ) {
            let padding = if same { super::super::Padding::Same } else { super::super::Padding::Valid };
            let Some((oh, pad_top)) = padding.output_and_pad(h, kernel, stride) else {
                return Ok(());
            };
            let Some((ow, pad_left)) = padding.output_and_pad(w, kernel, stride) else {
                return Ok(());
            };
            let input = ImageShape::new(h, w, cin);
            let out = ImageShape::new(oh, ow, cout);
            let mut g = Geometry::new(input, out, kernel, stride, pad_top, pad_left);
            g.relu = relu;
            let x = values(n * input.len(), seed);
            let wt = values(kernel * kernel * cin * cout, seed ^ 1);
            let bias = values(cout, seed ^ 2);
            let dy = values(n * out.len(), seed ^ 3);
            let fast = g.avx512;
            for avx512 in [fast, false] {
                g.avx512 = avx512;
                let mut s = Scratch::default();
                g.ensure_scratch(&mut s);
                let mut y = vec![f32::NAN; n * out.len()];
                g.forward_chunk(&x, &mut y, &wt, &bias, &mut s);
                let (mut dw, mut db) = (vec![0.0; wt.len()], vec![0.0; cout]);
                g.weight_gradient_chunk(&x, &y, &dy, &mut dw, &mut db, &mut s);
                let (mut want_dw, mut want_db) = (vec![0.0; wt.len()], vec![0.0; cout]);
                for i in 0..n {
                    let (wy, wdw, wdb) = reference(
                        &g,
                        &x[i * input.len()..][..input.len()],
                        &wt,
                        &bias,
                        &dy[i * out.len()..][..out.len()],
                    );
                    for (j, (&got, &want)) in y[i * out.len()..][..out.len()].iter().zip(&wy).enumerate() {
                        prop_assert!((got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "y[{j}] of image {i}, avx512 {avx512}: {got} vs {want}");
                    }
                    want_dw.iter_mut().zip(&wdw).for_each(|(a, b)| *a += b);
                    want_db.iter_mut().zip(&wdb).for_each(|(a, b)| *a += b);
                }
                for (j, (&got, &want)) in dw.iter().zip(&want_dw).enumerate() {
                    prop_assert!((got as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "dW[{j}], avx512 {avx512}: {got} vs {want}");
                }
                for (j, (&got, &want)) in db.iter().zip(&want_db).enumerate() {
                    prop_assert!((got as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "db[{j}], avx512 {avx512}: {got} vs {want}");
                }
            }
        }
    }
}
