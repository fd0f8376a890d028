//! The layers. Each is a small type with `forward` and `backward` side by side.
//!
//! A layer is built for a fixed per-image input shape (known from the spec) and
//! any batch size. It owns its parameters, their gradients and whatever it
//! must remember between `forward` and `backward` (pooling argmax, dropout
//! mask, normalised activations); buffers are resized in place, so after the
//! first batch of the largest size the training loop allocates nothing.

mod add;
mod batchnorm;
mod conv;
mod dense;
mod dropout;
mod flatten;
mod gap;
mod pool;
mod relu;
mod winograd;

pub(crate) use add::add_assign;
pub use add::Add;
pub use batchnorm::BatchNorm;
pub use conv::{
    set_winograd, winograd_enabled, Algorithm as ConvAlgorithm, Conv2d,
    TILE_FLOATS as CONV_TILE_FLOATS, WINOGRAD_MIN_CHANNELS,
};
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use gap::GlobalAvgPool;
pub use pool::MaxPool2d;
pub use relu::Relu;

use crate::tensor::{ImageShape, Tensor};

/// Training uses batch statistics and dropout; evaluation is deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A named tensor of a layer, for export and loading: `suffix` is appended to
/// the layer name (`conv1` + `.weight`).
pub struct NamedTensor<'a> {
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// What [`Layer::visit_params`] calls: `f(value, gradient, decay)`.
pub type ParamVisitor<'a> = dyn FnMut(&mut [f32], &[f32], bool) + 'a;

pub trait Layer: Send {
    /// Per-image output shape.
    fn output_shape(&self) -> ImageShape;

    /// `y = f(x)`. `y` is resized by the layer.
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, mode: Mode);

    /// Given `dy = ∂L/∂y` (and the `x`, `y` of the last forward), accumulates
    /// nothing: it *overwrites* the parameter gradients with `∂L/∂θ` and, when
    /// `dx` is given, writes `∂L/∂x` into it (resized by the layer).
    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>);

    /// Calls `f(value, gradient, decay)` for each trainable parameter, in a
    /// fixed order. `decay` is true for the weights (kernels, matrices) that
    /// weight decay normally applies to, false for biases and batch-norm
    /// scales and shifts, which it can be told to leave alone.
    fn visit_params(&mut self, _f: &mut ParamVisitor<'_>) {}

    /// The tensors to save: parameters and non-trainable state (running statistics).
    fn tensors(&self) -> Vec<NamedTensor<'_>> {
        Vec::new()
    }

    /// Mutable access to the tensors listed by [`Layer::tensors`], same order.
    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        Vec::new()
    }

    /// Re-seeds any randomness (dropout), so that a resumed run repeats exactly.
    fn reseed(&mut self, _seed: u64) {}
}

/// Splits a batch of `n` images into one contiguous chunk per rayon thread:
/// returns the images per chunk (the last chunk may be shorter).
pub(crate) fn images_per_chunk(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    n.div_ceil(threads).max(1)
}
