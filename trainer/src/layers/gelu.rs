//! GELU: `y = x · Φ(x)`, `Φ` the standard normal distribution function, as
//! [`model_format::gelu`] computes it (so `infer` gives the same `y`).

use super::{Layer, Mode};
use crate::kernels::has_avx2_fma;
use crate::kernels::tensor::{ImageShape, Tensor};
use model_format::gelu::{gelu, grad};
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
        let avx2 = has_avx2_fma();
        y.data
            .par_chunks_mut(BLOCK)
            .zip(x.data.par_chunks(BLOCK))
            .for_each(|(y, x)| forward_block(y, x, avx2));
    }

    /// `dx = dy · gelu'(x) = dy · (Φ(x) + x·φ(x))`, `φ` the standard normal density.
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.resize(x.n, self.shape);
        let avx2 = has_avx2_fma();
        dx.data
            .par_chunks_mut(BLOCK)
            .zip(x.data.par_chunks(BLOCK).zip(dy.data.par_chunks(BLOCK)))
            .for_each(|(dx, (x, dy))| backward_block(dx, x, dy, avx2));
    }
}

/// `y = gelu(x)` over one block, by the AVX2 copy when `avx2`.
fn forward_block(y: &mut [f32], x: &[f32], avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the caller checked the CPU (`has_avx2_fma`).
        return unsafe { simd::forward(y, x) };
    }
    let _ = avx2;
    forward_portable(y, x);
}

/// `dx = dy · gelu'(x)` over one block, by the AVX2 copy when `avx2`.
fn backward_block(dx: &mut [f32], x: &[f32], dy: &[f32], avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the caller checked the CPU (`has_avx2_fma`).
        return unsafe { simd::backward(dx, x, dy) };
    }
    let _ = avx2;
    backward_portable(dx, x, dy);
}

#[inline(always)]
fn forward_portable(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = gelu(x);
    }
}

#[inline(always)]
fn backward_portable(dx: &mut [f32], x: &[f32], dy: &[f32]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        *dx = dy * grad(x);
    }
}

/// The same loops compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
mod simd {
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(y: &mut [f32], x: &[f32]) {
        super::forward_portable(y, x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn backward(dx: &mut [f32], x: &[f32], dy: &[f32]) {
        super::backward_portable(dx, x, dy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 copy gives the portable loop's values bit for bit (on a CPU
    /// without AVX2 both calls run the portable loop).
    #[test]
    fn avx2_copy_matches_the_portable_loop() {
        let x: Vec<f32> = (0..5000).map(|i| (i as f32 - 2500.0) / 300.0).collect();
        let dy: Vec<f32> = (0..5000).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let (mut a, mut b) = (vec![0f32; 5000], vec![0f32; 5000]);
        forward_block(&mut a, &x, false);
        forward_block(&mut b, &x, has_avx2_fma());
        assert_eq!(a, b);
        backward_block(&mut a, &x, &dy, false);
        backward_block(&mut b, &x, &dy, has_avx2_fma());
        assert_eq!(a, b);
    }
}
