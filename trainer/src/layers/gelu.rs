//! GELU: `y = x · Φ(x)`, `Φ` the standard normal distribution function, as
//! [`model_format::gelu`] computes it (so `infer` gives the same `y`).

use super::{Layer, Mode};
use crate::kernels::tensor::{ImageShape, Tensor};
use model_format::gelu::{cdf, gelu, pdf};
use rayon::prelude::*;

/// Work unit for the element-wise loops (large enough to amortise rayon's overhead).
const BLOCK: usize = 1 << 14;

pub struct Gelu {
    shape: ImageShape,
}

impl Gelu {
    pub fn new(shape: ImageShape) -> Self {
        Self { shape }
    }
}

impl Layer for Gelu {
    fn output_shape(&self) -> ImageShape {
        self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _mode: Mode) {
        y.resize(x.n, self.shape);
        y.data
            .par_chunks_mut(BLOCK)
            .zip(x.data.par_chunks(BLOCK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = gelu(x);
                }
            });
    }

    /// `dx = dy · (Φ(x) + x·φ(x))`, `φ` the standard normal density.
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.resize(x.n, self.shape);
        dx.data
            .par_chunks_mut(BLOCK)
            .zip(x.data.par_chunks(BLOCK).zip(dy.data.par_chunks(BLOCK)))
            .for_each(|(dx, (x, dy))| {
                for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                    *dx = dy * (cdf(x) + x * pdf(x));
                }
            });
    }
}
