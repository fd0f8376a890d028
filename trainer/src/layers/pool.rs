//! Max pooling over `size×size` windows with a stride, `same` or `valid` padding.
//! Forward remembers where each maximum came from; backward routes the
//! gradient there.

use super::Padding;
use super::{Layer, Mode};
use crate::kernels::tensor::{ImageShape, Tensor};
use rayon::prelude::*;

pub struct MaxPool2d {
    input: ImageShape,
    out: ImageShape,
    size: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
    /// For every output value, the index (within its image) of the input that won.
    argmax: Vec<u32>,
}

impl MaxPool2d {
    pub fn new(input: ImageShape, size: usize, stride: usize, padding: Padding) -> Self {
        let (oh, pad_top) = padding
            .output_and_pad(input.height, size, stride)
            .expect("spec validated");
        let (ow, pad_left) = padding
            .output_and_pad(input.width, size, stride)
            .expect("spec validated");
        Self {
            input,
            out: ImageShape::new(oh, ow, input.channels),
            size,
            stride,
            pad_top,
            pad_left,
            argmax: Vec::new(),
        }
    }

    /// One image: `y[oy, ox, c] = max over the window of x[iy, ix, c]`, padded cells skipped.
    fn pool_image(&self, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
        let c = self.input.channels;
        for oy in 0..self.out.height {
            // The input rows and columns this output row/column sees, clipped to the image.
            let rows = self.window(oy, self.pad_top, self.input.height);
            for ox in 0..self.out.width {
                let cols = self.window(ox, self.pad_left, self.input.width);
                let o = (oy * self.out.width + ox) * c;
                let (y, am) = (&mut y[o..o + c], &mut argmax[o..o + c]);
                if self.size == 2 && rows.len() == 2 && cols.len() == 2 {
                    let top = (rows.start * self.input.width + cols.start) * c;
                    let bottom = top + self.input.width * c;
                    pool_2x2(x, [top, top + c, bottom, bottom + c], y, am);
                    continue;
                }
                // The first cell of the window initialises, the others compete;
                // `>` keeps the first maximum on ties.
                let first = (rows.start * self.input.width + cols.start) * c;
                y.copy_from_slice(&x[first..first + c]);
                for (ch, a) in am.iter_mut().enumerate() {
                    *a = (first + ch) as u32;
                }
                for iy in rows.clone() {
                    for ix in cols.clone() {
                        let i = (iy * self.input.width + ix) * c;
                        // Branch-free compare-and-select over the channels, so
                        // it vectorises and random data costs no mispredictions.
                        let cell = x[i..i + c].iter().zip(i as u32..);
                        for ((y, a), (&v, index)) in y.iter_mut().zip(am.iter_mut()).zip(cell) {
                            let better = v > *y;
                            *y = if better { v } else { *y };
                            *a = if better { index } else { *a };
                        }
                    }
                }
            }
        }
    }

    /// Input indices `[o·stride − pad, o·stride − pad + size)` clipped to `[0, len)`.
    fn window(&self, o: usize, pad: usize, len: usize) -> std::ops::Range<usize> {
        let start = (o * self.stride).saturating_sub(pad);
        let end = (o * self.stride + self.size).saturating_sub(pad).min(len);
        start..end
    }
}

/// A whole 2×2 window (the common case), its four cells starting at `cells`
/// in row-major order: the same result as the general loop (the first maximum
/// wins ties), written as one pass over the channels that vectorises.
#[inline]
fn pool_2x2(x: &[f32], cells: [usize; 4], y: &mut [f32], argmax: &mut [u32]) {
    let c = y.len();
    let [a, b, d, e] = cells.map(|i| &x[i..i + c]);
    let at = cells.map(|i| i as u32);
    for (ch, (y, am)) in y.iter_mut().zip(argmax.iter_mut()).enumerate() {
        let ch32 = ch as u32;
        let (mut best, mut from) = (a[ch], at[0] + ch32);
        for (v, start) in [(b[ch], at[1]), (d[ch], at[2]), (e[ch], at[3])] {
            let better = v > best;
            best = if better { v } else { best };
            from = if better { start + ch32 } else { from };
        }
        *y = best;
        *am = from;
    }
}

impl Layer for MaxPool2d {
    fn output_shape(&self) -> ImageShape {
        self.out
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _mode: Mode) {
        y.resize(x.n, self.out);
        self.argmax.resize(y.data.len(), 0);
        let (in_len, out_len) = (self.input.len(), self.out.len());
        let mut argmax = std::mem::take(&mut self.argmax);
        let this = &*self;
        y.data
            .par_chunks_mut(out_len)
            .zip(argmax.par_chunks_mut(out_len))
            .zip(x.data.par_chunks(in_len))
            .for_each(|((y, am), x)| this.pool_image(x, y, am));
        self.argmax = argmax;
    }

    /// `dx[argmax[o]] += dy[o]`, zero elsewhere.
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.resize(x.n, self.input);
        let (in_len, out_len) = (self.input.len(), self.out.len());
        dx.data
            .par_chunks_mut(in_len)
            .zip(
                dy.data
                    .par_chunks(out_len)
                    .zip(self.argmax.par_chunks(out_len)),
            )
            .for_each(|(dx, (dy, am))| {
                dx.fill(0.0);
                for (&g, &i) in dy.iter().zip(am) {
                    dx[i as usize] += g;
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general window loop, for comparison with the 2×2 fast path.
    fn reference(pool: &MaxPool2d, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
        let c = pool.input.channels;
        let (mut y, mut am) = (vec![], vec![]);
        for oy in 0..pool.out.height {
            let rows = pool.window(oy, pool.pad_top, pool.input.height);
            for ox in 0..pool.out.width {
                let cols = pool.window(ox, pool.pad_left, pool.input.width);
                for ch in 0..c {
                    let mut best = (f32::NEG_INFINITY, u32::MAX);
                    for iy in rows.clone() {
                        for ix in cols.clone() {
                            let i = (iy * pool.input.width + ix) * c + ch;
                            if best.1 == u32::MAX || x[i] > best.0 {
                                best = (x[i], i as u32);
                            }
                        }
                    }
                    y.push(best.0);
                    am.push(best.1);
                }
            }
        }
        (y, am)
    }

    /// Few distinct values, so ties are everywhere; odd sizes and `same`
    /// padding mix full windows (fast path) with clipped ones (general loop).
    #[test]
    fn fast_path_matches_the_general_loop_with_ties() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (h, w, c) in [(4, 4, 3), (5, 7, 17), (8, 6, 32)] {
            for padding in [Padding::Valid, Padding::Same] {
                let input = ImageShape::new(h, w, c);
                let mut pool = MaxPool2d::new(input, 2, 2, padding);
                let mut x = Tensor::zeros(2, input);
                x.data
                    .iter_mut()
                    .for_each(|v| *v = rng.random_range(0..3) as f32);
                let mut y = Tensor::default();
                pool.forward(&x, &mut y, Mode::Train);
                for img in 0..2 {
                    let xi = &x.data[img * input.len()..(img + 1) * input.len()];
                    let (ry, ram) = reference(&pool, xi);
                    let out = pool.out.len();
                    assert_eq!(&y.data[img * out..(img + 1) * out], &ry[..]);
                    assert_eq!(&pool.argmax[img * out..(img + 1) * out], &ram[..]);
                }
            }
        }
    }
}
