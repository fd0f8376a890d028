//! Inverted dropout: in training each value is kept with probability `1 − rate`
//! and scaled by `1 / (1 − rate)`, so evaluation is the identity.

use super::{Layer, Mode};
use crate::tensor::{ImageShape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Dropout {
    shape: ImageShape,
    rate: f32,
    rng: ChaCha8Rng,
    /// Per value: 0 or `1 / (1 − rate)`, from the last training forward.
    mask: Vec<f32>,
}

impl Dropout {
    pub fn new(shape: ImageShape, rate: f32, seed: u64) -> Self {
        Self {
            shape,
            rate,
            rng: ChaCha8Rng::seed_from_u64(seed),
            mask: Vec::new(),
        }
    }
}

impl Layer for Dropout {
    fn output_shape(&self) -> ImageShape {
        self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, mode: Mode) {
        y.resize(x.n, self.shape);
        if mode == Mode::Eval || self.rate == 0.0 {
            y.data.copy_from_slice(&x.data);
            self.mask.clear();
            return;
        }
        let scale = 1.0 / (1.0 - self.rate);
        self.mask.resize(x.data.len(), 0.0);
        for ((m, y), &x) in self.mask.iter_mut().zip(&mut y.data).zip(&x.data) {
            *m = if self.rng.random::<f32>() >= self.rate {
                scale
            } else {
                0.0
            };
            *y = x * *m;
        }
    }

    /// `dx = dy · mask`
    fn backward(&mut self, _x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.resize(y.n, self.shape);
        if self.mask.is_empty() {
            dx.data.copy_from_slice(&dy.data);
        } else {
            for ((dx, &dy), &m) in dx.data.iter_mut().zip(&dy.data).zip(&self.mask) {
                *dx = dy * m;
            }
        }
    }

    fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }
}
