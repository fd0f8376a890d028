//! Inverted dropout: in training each value is kept with probability `1 − rate`
//! and scaled by `1 / (1 − rate)`, so evaluation is the identity.

use super::{Layer, Mode};
use crate::kernels::tensor::{ImageShape, Tensor};
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
        // A value is kept when its uniform draw `u ∈ [0, 1)` is ≥ rate. `u` is
        // `Rng::random::<f32>()`, i.e. the top 24 bits of a `u32` times 2⁻²⁴, so
        // the test is `bits >> 8 ≥ ⌈rate · 2²⁴⌉` on `u32`s drawn in bulk (the
        // same stream and the same masks as one `random` call per value).
        let threshold = (self.rate as f64 * (1u64 << 24) as f64).ceil() as u32;
        self.mask.resize(x.data.len(), 0.0);
        let mut bits = [0u32; 256];
        for ((m, y), x) in self
            .mask
            .chunks_mut(bits.len())
            .zip(y.data.chunks_mut(bits.len()))
            .zip(x.data.chunks(bits.len()))
        {
            let bits = &mut bits[..m.len()];
            self.rng.fill(bits);
            for (((m, y), &x), &b) in m.iter_mut().zip(y).zip(x).zip(bits.iter()) {
                *m = if b >> 8 >= threshold { scale } else { 0.0 };
                *y = x * *m;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bulk draw keeps exactly the values that one `random::<f32>() ≥ rate`
    /// per value would keep, with the same seed (same stream, same masks).
    #[test]
    fn bulk_masks_match_one_draw_per_value() {
        let shape = ImageShape::vector(700);
        for (seed, rate) in [(1, 0.2), (2, 0.5), (3, 0.3), (4, 1e-7), (5, 0.999_999)] {
            let mut layer = Dropout::new(shape, rate, seed);
            let mut x = Tensor::zeros(3, shape);
            x.data.fill(1.0);
            let mut y = Tensor::default();
            layer.forward(&x, &mut y, Mode::Train);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let scale = 1.0 / (1.0 - rate);
            for (i, &m) in layer.mask.iter().enumerate() {
                let want = if rng.random::<f32>() >= rate {
                    scale
                } else {
                    0.0
                };
                assert_eq!(m, want, "value {i}, rate {rate}");
            }
        }
    }
}
