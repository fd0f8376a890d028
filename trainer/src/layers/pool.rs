//! Max pooling over `size×size` windows with a stride, `same` or `valid` padding.
//! Forward remembers where each maximum came from; backward routes the
//! gradient there.

use super::{Layer, Mode};
use crate::spec::Padding;
use crate::tensor::{ImageShape, Tensor};
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
