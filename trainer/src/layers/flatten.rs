//! Flatten: an image `h×w×c` becomes a vector of `h·w·c` values, in NHWC order.
//! The data is already laid out that way, so only the shape changes.

use super::{Layer, Mode};
use crate::kernels::tensor::{ImageShape, Tensor};

pub struct Flatten {
    out: ImageShape,
}

impl Flatten {
    pub fn new(input: ImageShape) -> Self {
        Self {
            out: ImageShape::vector(input.len()),
        }
    }
}

impl Layer for Flatten {
    fn output_shape(&self) -> ImageShape {
        self.out
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _mode: Mode) {
        y.resize(x.n, self.out);
        y.data.copy_from_slice(&x.data);
    }

    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        if let Some(dx) = dx {
            dx.resize(x.n, x.image_shape());
            dx.data.copy_from_slice(&dy.data);
        }
    }
}
