//! Global average pooling: `y[c] = mean over (h, w) of x[h, w, c]`.

use super::{Layer, Mode};
use crate::kernels::tensor::{ImageShape, Tensor};

pub struct GlobalAvgPool {
    input: ImageShape,
}

impl GlobalAvgPool {
    pub fn new(input: ImageShape) -> Self {
        Self { input }
    }
}

impl Layer for GlobalAvgPool {
    fn output_shape(&self) -> ImageShape {
        ImageShape::vector(self.input.channels)
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _mode: Mode) {
        let c = self.input.channels;
        let scale = 1.0 / self.input.pixels() as f32;
        y.resize(x.n, self.output_shape());
        for (x, y) in x
            .data
            .chunks_exact(self.input.len())
            .zip(y.data.chunks_exact_mut(c))
        {
            y.fill(0.0);
            for pixel in x.chunks_exact(c) {
                for (y, &v) in y.iter_mut().zip(pixel) {
                    *y += v;
                }
            }
            y.iter_mut().for_each(|v| *v *= scale);
        }
    }

    /// `dx[h, w, c] = dy[c] / (h·w)`
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        let c = self.input.channels;
        let scale = 1.0 / self.input.pixels() as f32;
        dx.resize(x.n, self.input);
        for (dx, dy) in dx
            .data
            .chunks_exact_mut(self.input.len())
            .zip(dy.data.chunks_exact(c))
        {
            for pixel in dx.chunks_exact_mut(c) {
                for (d, &g) in pixel.iter_mut().zip(dy) {
                    *d = g * scale;
                }
            }
        }
    }
}
