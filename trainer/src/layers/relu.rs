//! ReLU: `y = max(x, 0)`.

use super::{Layer, Mode};
use crate::kernels::tensor::{ImageShape, Tensor};
use rayon::prelude::*;

/// Work unit for the element-wise loops (large enough to amortise rayon's overhead).
const BLOCK: usize = 1 << 14;

pub struct Relu {
    shape: ImageShape,
}

impl Relu {
    pub fn new(shape: ImageShape) -> Self {
        Self { shape }
    }
}

impl Layer for Relu {
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
                    *y = x.max(0.0);
                }
            });
    }

    /// `dx = dy · [y > 0]`
    fn backward(&mut self, _x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.resize(y.n, self.shape);
        dx.data
            .par_chunks_mut(BLOCK)
            .zip(y.data.par_chunks(BLOCK).zip(dy.data.par_chunks(BLOCK)))
            .for_each(|(dx, (y, dy))| {
                for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                    *dx = if y > 0.0 { dy } else { 0.0 };
                }
            });
    }
}
