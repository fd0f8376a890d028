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
mod direct;
mod dropout;
mod flatten;
mod gap;
mod gelu;
pub(crate) mod init;
mod padding;
mod pool;
mod relu;
mod winograd;

pub(crate) use add::add_assign;
pub use add::Add;
pub use batchnorm::BatchNorm;
pub use conv::{
    Algorithm as ConvAlgorithm, Conv2d, ConvChoice, DIRECT_MAX_CHANNELS,
    TILE_FLOATS as CONV_TILE_FLOATS, WINOGRAD_MIN_CHANNELS,
};
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use gap::GlobalAvgPool;
pub use gelu::Gelu;
pub use padding::Padding;
pub use pool::MaxPool2d;
pub use relu::Relu;

use crate::kernels::tensor::{ImageShape, Tensor};

/// How the layers of a network compute: values the network carries and hands
/// to each layer ([`Layer::set_compute`]), never process-wide switches, so
/// tests and benchmarks can run two networks side by side with different ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compute {
    /// The SGEMM under convolutions and dense layers.
    pub gemm: crate::kernels::gemm::Backend,
    /// Which convolutions run by Winograd.
    pub conv: ConvChoice,
}

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

/// What [`Layer::visit_params`] calls: `f(suffix, value, gradient, decay)`,
/// `suffix` being the parameter's name within its layer (`weight`).
pub type ParamVisitor<'a> = dyn FnMut(&'static str, &mut [f32], &[f32], bool) + 'a;

/// One trainable parameter of a model, as [`Params::visit_params`] shows it
/// to an optimiser: its full name is `{layer}.{suffix}` (`conv1.weight`).
pub struct Param<'a> {
    pub layer: &'a str,
    pub suffix: &'static str,
    pub value: &'a mut [f32],
    pub grad: &'a [f32],
    /// Whether weight decay normally applies (see [`Layer::visit_params`]).
    pub decay: bool,
    /// The tensor's shape, as in the model file (`[k, k, ci, co]` for a
    /// convolution's weight): what tells an optimiser a convolution's
    /// filters ([`crate::optim::Muon`]) from other parameters.
    pub shape: &'a [usize],
    /// What the step's learning rate is multiplied by for this parameter
    /// (1 unless a recipe groups parameters: [`crate::train::groups`]); 0
    /// holds it fixed (no update, no decay).
    pub lr_scale: f32,
}

impl Param<'_> {
    /// `{layer}.{suffix}`, as in the model file.
    pub fn name(&self) -> String {
        format!("{}.{}", self.layer, self.suffix)
    }
}

/// What an optimiser steps: anything that lists its trainable parameters with
/// their gradients, always in the same order (a network, or a single layer in tests).
/// (`Send`, so that an optimiser can step them on rayon's pool: see
/// [`crate::kernels::on_pool`].)
pub trait Params: Send {
    fn visit_params(&mut self, f: &mut dyn FnMut(Param<'_>));

    /// The SGEMM that an optimiser's own products (Muon's) run on: the
    /// model's ([`Compute::gemm`]).
    fn gemm(&self) -> crate::kernels::gemm::Backend;
}

/// Sums over the replicas of a data-parallel step, each holding one shard of
/// the batch (see `train::replicas`): what a layer whose output depends on the
/// whole batch (batch norm's statistics) needs to compute as if it saw all of
/// it. Every replica calls it in the same order with buffers of the same
/// length (a collective operation).
pub trait BatchSync {
    /// Replaces `values` by their element-wise sum over all replicas.
    fn sum_f64(&self, values: &mut [f64]);
}

pub trait Layer: Send {
    /// Per-image output shape.
    fn output_shape(&self) -> ImageShape;

    /// `y = f(x)`. `y` is resized by the layer.
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, mode: Mode);

    /// Given `dy = ∂L/∂y` (and the `x`, `y` of the last forward), accumulates
    /// nothing: it *overwrites* the parameter gradients with `∂L/∂θ` and, when
    /// `dx` is given, writes `∂L/∂x` into it (resized by the layer).
    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>);

    /// [`Layer::forward`] of this replica's shard of a batch split across
    /// replicas, computing as if on the whole batch; the same as `forward`
    /// for every layer that treats images independently.
    fn forward_synced(&mut self, x: &Tensor, y: &mut Tensor, mode: Mode, _sync: &dyn BatchSync) {
        self.forward(x, y, mode)
    }

    /// [`Layer::backward`] to match [`Layer::forward_synced`]: `dx` is this
    /// shard's part of the whole batch's gradient. Parameter gradients stay
    /// this shard's (the caller sums them over the replicas).
    fn backward_synced(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
        _sync: &dyn BatchSync,
    ) {
        self.backward(x, y, dy, dx)
    }

    /// Calls `f(suffix, value, gradient, decay)` for each trainable parameter, in a
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

    /// The non-trainable state among [`Layer::tensors_mut`] that training
    /// updates (batch norm's running statistics): what the replicas of a
    /// data-parallel run average.
    fn statistics_mut(&mut self) -> Vec<&mut [f32]> {
        Vec::new()
    }

    /// Sets how the layer computes (layers with GEMMs use it).
    fn set_compute(&mut self, _compute: Compute) {}

    /// Re-seeds any randomness (dropout), so that a resumed run repeats exactly.
    fn reseed(&mut self, _seed: u64) {}
}

/// Splits a batch of `n` images into one contiguous chunk per rayon thread:
/// returns the images per chunk (the last chunk may be shorter).
pub(crate) fn images_per_chunk(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    n.div_ceil(threads).max(1)
}
