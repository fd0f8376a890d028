//! Residual connection: `y = x + s`, where `s` is the output of an earlier
//! layer (named in the spec's `from`).
//!
//! The layer itself passes `x` through (`y = x`, `dx = dy`); the network adds
//! the skip input `s` after its forward, and sends `dy` back to `s`'s producer
//! as well during backward (see [`crate::model::network::Network`]), since only the
//! network holds both activations.

use super::{Layer, Mode};
use crate::kernels::tensor::{ImageShape, Tensor};

pub struct Add {
    shape: ImageShape,
}

impl Add {
    pub fn new(shape: ImageShape) -> Self {
        Self { shape }
    }
}

impl Layer for Add {
    fn output_shape(&self) -> ImageShape {
        self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _mode: Mode) {
        y.resize(x.n, self.shape);
        y.data.copy_from_slice(&x.data);
    }

    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.resize(x.n, self.shape);
        dx.data.copy_from_slice(&dy.data);
    }
}

/// `a += b`, element-wise.
pub(crate) fn add_assign(a: &mut [f32], b: &[f32]) {
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 14;
    assert_eq!(a.len(), b.len(), "add of tensors of different sizes");
    a.par_chunks_mut(BLOCK)
        .zip(b.par_chunks(BLOCK))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b));
}
