//! A network built from a [`ModelSpec`]: the layers in order, the activations
//! between them, and their gradients. Also its file format (safetensors with
//! the spec in the metadata; see `docs/FORMAT.md`).

use crate::kernels::on_pool;
use crate::kernels::tensor::{ImageShape, Tensor};
use crate::layers::{self, Layer, Mode, Param, Params};
use crate::model::loss::{
    softmax_cross_entropy, softmax_cross_entropy_targets, softmax_in_place, BatchLoss, Targets,
};
use crate::model::spec::{LayerSpec, ModelSpec, SpecError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

/// The CIFAR-10 class names, used when a caller gives none.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Value of the `format` metadata key (the format's own, [`model_format::FORMAT`]).
pub const FORMAT: &str = model_format::FORMAT;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot read model file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write model file {path}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("model file {origin}: {problem}")]
    Format { origin: String, problem: String },
}

pub struct Network {
    spec: ModelSpec,
    layers: Vec<Box<dyn Layer>>,
    /// Parameter-name prefix of each layer (`conv1`), if it has parameters.
    names: Vec<Option<String>>,
    /// `acts[0]` is the input batch, `acts[i + 1]` the output of layer `i`.
    acts: Vec<Tensor>,
    /// `grads[i] = ∂L/∂acts[i]` (`grads[0]` is never computed). Each lives
    /// only from its first writer to its reader in backward; then its
    /// buffer goes to `spare_grads`, so a step holds a few of them at a
    /// time, not one per activation.
    grads: Vec<Tensor>,
    /// Gradient buffers not in use, for the next `grads[a]` to be written
    /// (the same sequence every step, so they stop growing after the first).
    spare_grads: Vec<Tensor>,
    /// The activation index each layer reads: `i` (the previous layer's
    /// output) unless its `input` names an earlier layer ([`ModelSpec::inputs`]).
    inputs: Vec<usize>,
    /// For an `add` layer `i`, the activation index of its skip input.
    skips: Vec<Option<usize>>,
    /// During backward, `has_grad[a]`: some layer reading `acts[a]` has
    /// written `grads[a]` already, so the next one adds its share to it.
    has_grad: Vec<bool>,
    /// Where a layer's `dx` goes before it is added to `grads[a]`, when
    /// `acts[a]` is read by more than one layer.
    dx_scratch: Tensor,
    /// `fused[i]`: layer `i` is a relu or GELU computed by the layer before
    /// it ([`layers::Conv2d::fuse_relu`], [`layers::BatchNorm::fuse_relu`],
    /// [`layers::BatchNorm::fuse_gelu`]); it only moves tensors into place.
    fused: Vec<bool>,
    /// `frozen[i]`: layer `i`'s parameters are not trained ([`Network::freeze`]).
    frozen: Vec<bool>,
    /// `param_shapes[i]`: layer `i`'s tensors' suffixes and shapes, taken
    /// once so that listing the parameters allocates nothing.
    param_shapes: Vec<Vec<(&'static str, Vec<usize>)>>,
    /// Backward stops at this layer: everything below it is frozen, so
    /// nothing there needs a gradient (0 unless layers are frozen).
    first_trained: usize,
    /// Backward stops at this layer too: every parameter below it is held
    /// for now ([`Network::skip_held_prefix`]; 0 by default).
    held_prefix: usize,
    /// How the layers compute ([`Network::set_compute`]); the optimiser's
    /// products (Muon's) run on its GEMM too.
    compute: layers::Compute,
    /// Class names in label order.
    pub class_names: Vec<String>,
}

/// For each layer, whether it is an activation to fuse into the layer right
/// before it: a relu after a convolution or batch norm, a GELU after a batch
/// norm (a convolution's backward can mask by its output, but GELU's
/// derivative needs the input, which batch norm recomputes). Always when it
/// reads that layer, unless another layer (an add's `from`, an `input`) reads
/// that layer's output before the activation too, which fusing would overwrite.
fn activations_to_fuse(spec: &ModelSpec) -> Vec<bool> {
    let read_later = spec.read_later();
    (0..spec.layers.len())
        .map(|i| {
            i > 0
                && spec.layers[i].input_name().is_none()
                && matches!(
                    (&spec.layers[i - 1], &spec.layers[i]),
                    (
                        LayerSpec::Conv2d { .. } | LayerSpec::BatchNorm { .. },
                        LayerSpec::Relu { .. }
                    ) | (LayerSpec::BatchNorm { .. }, LayerSpec::Gelu { .. })
                )
                && !read_later[i - 1]
        })
        .collect()
}

impl Network {
    /// A freshly initialised network (Glorot-uniform weights, zero biases).
    pub fn new(spec: &ModelSpec, seed: u64) -> Result<Self, NetworkError> {
        spec.validate()?;
        let shapes = spec.shapes()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let inputs = spec.inputs();
        let mut layers: Vec<Box<dyn Layer>> = Vec::with_capacity(spec.layers.len());
        let fused = activations_to_fuse(spec);
        for (i, layer) in spec.layers.iter().enumerate() {
            let input = match inputs[i] {
                0 => spec.input,
                a => shapes[a - 1],
            };
            let built: Box<dyn Layer> = match *layer {
                LayerSpec::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    let mut conv =
                        layers::Conv2d::new(input, filters, kernel, stride, padding, &mut rng);
                    if fused.get(i + 1) == Some(&true) {
                        conv.fuse_relu();
                    }
                    Box::new(conv)
                }
                LayerSpec::Relu { .. } => Box::new(layers::Relu::new(input)),
                LayerSpec::Gelu { .. } => Box::new(layers::Gelu::new(input)),
                LayerSpec::MaxPool2d {
                    size,
                    stride,
                    padding,
                    ..
                } => Box::new(layers::MaxPool2d::new(input, size, stride, padding)),
                LayerSpec::GlobalAvgPool { .. } => Box::new(layers::GlobalAvgPool::new(input)),
                LayerSpec::BatchNorm {
                    momentum, epsilon, ..
                } => {
                    let mut bn = layers::BatchNorm::new(input, momentum, epsilon);
                    if fused.get(i + 1) == Some(&true) {
                        match spec.layers[i + 1] {
                            LayerSpec::Gelu { .. } => bn.fuse_gelu(),
                            _ => bn.fuse_relu(),
                        }
                    }
                    Box::new(bn)
                }
                LayerSpec::Flatten { .. } => Box::new(layers::Flatten::new(input)),
                LayerSpec::Add { .. } => Box::new(layers::Add::new(input)),
                LayerSpec::Dropout { rate, .. } => {
                    Box::new(layers::Dropout::new(input, rate, seed ^ (i as u64) << 32))
                }
                LayerSpec::Dense { units, .. } => {
                    Box::new(layers::Dense::new(input, units, &mut rng))
                }
            };
            debug_assert_eq!(built.output_shape(), shapes[i]);
            layers.push(built);
        }
        let count = layers.len() + 1;
        // Activation index (`acts[j + 1]` is layer j's output) of each add's skip input.
        let skips = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| match l {
                LayerSpec::Add { from, .. } => Some(
                    spec.source_of(i, from)
                        .expect("validated: the source comes first")
                        + 1,
                ),
                _ => None,
            })
            .collect();
        let param_shapes = layers
            .iter()
            .map(|l| {
                l.tensors()
                    .into_iter()
                    .map(|t| (t.suffix, t.shape))
                    .collect()
            })
            .collect();
        Ok(Self {
            spec: spec.clone(),
            names: spec
                .layers
                .iter()
                .map(|l| l.name().map(str::to_string))
                .collect(),
            layers,
            acts: (0..count).map(|_| Tensor::default()).collect(),
            grads: (0..count).map(|_| Tensor::default()).collect(),
            spare_grads: Vec::new(),
            inputs,
            skips,
            has_grad: vec![false; count],
            dx_scratch: Tensor::default(),
            fused,
            frozen: vec![false; spec.layers.len()],
            param_shapes,
            first_trained: 0,
            held_prefix: 0,
            compute: layers::Compute::default(),
            class_names: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Sets how every layer computes (GEMM backend, convolution algorithm);
    /// [`layers::Compute::default`] until then.
    pub fn set_compute(&mut self, compute: layers::Compute) {
        self.compute = compute;
        for layer in &mut self.layers {
            layer.set_compute(compute);
        }
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Freezes the parameter layers that `patterns` name, for fine-tuning the
    /// others: an exact layer name (`conv1`) or a prefix ending in `*`
    /// (`conv*`). A frozen layer's parameters are never updated (the
    /// optimiser does not see them), a frozen batch norm uses and keeps its
    /// running statistics, and no gradient is computed below the first
    /// trained layer. Errors when a pattern names no parameter layer, when
    /// nothing is left to train, or when a frozen batch norm has a trained
    /// layer before it (its backward pass would need batch statistics).
    pub fn freeze(&mut self, patterns: &[String]) -> Result<(), NetworkError> {
        let bad = |problem: String| NetworkError::Format {
            origin: self.spec.name.clone(),
            problem,
        };
        let matches = |pattern: &str, name: &str| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        };
        let param_layers: Vec<(usize, &str)> = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((i, n.as_deref()?)))
            .filter(|&(i, _)| !self.layers[i].tensors().is_empty())
            .collect();
        let mut frozen = vec![false; self.layers.len()];
        for pattern in patterns {
            let hits: Vec<usize> = param_layers
                .iter()
                .filter(|(_, n)| matches(pattern, n))
                .map(|&(i, _)| i)
                .collect();
            if hits.is_empty() {
                let names: Vec<&str> = param_layers.iter().map(|&(_, n)| n).collect();
                return Err(bad(format!(
                    "--freeze {pattern}: no parameter layer has that name (they are {})",
                    names.join(", ")
                )));
            }
            for i in hits {
                frozen[i] = true;
            }
        }
        let Some(first) = param_layers.iter().map(|&(i, _)| i).find(|&i| !frozen[i]) else {
            return Err(bad(
                "--freeze: every parameter layer is frozen, nothing would train".into(),
            ));
        };
        for &(i, name) in &param_layers {
            let bn = matches!(self.spec.layers[i], LayerSpec::BatchNorm { .. });
            if bn && frozen[i] && i > first {
                let trained = param_layers
                    .iter()
                    .find(|&&(j, _)| j == first)
                    .map_or("", |&(_, n)| n);
                return Err(bad(format!(
                    "--freeze: batch norm {name} is frozen but {trained} before it is trained; freeze the layers before it too, or not {name}"
                )));
            }
        }
        self.frozen = frozen;
        self.first_trained = if patterns.is_empty() { 0 } else { first };
        Ok(())
    }

    /// Runs no backward below the first layer that has a parameter for which
    /// `trains(layer, suffix)` is true (a whitening layer held fixed, say):
    /// no weight gradient for the layers below it and no input gradient for
    /// it, which nothing would use. The held parameters' gradients keep their
    /// last values, so an optimiser must leave them alone (a learning-rate
    /// scale of 0 does). Called again, it recomputes the prefix; with no
    /// trained parameter at all, backward runs whole.
    pub fn skip_held_prefix(&mut self, trains: &dyn Fn(&str, &'static str) -> bool) {
        self.held_prefix = (0..self.layers.len())
            .find(|&i| {
                let mut any = false;
                self.visit_layer_params(i, &mut |p| any |= trains(p.layer, p.suffix));
                any
            })
            .unwrap_or(0);
    }

    /// The lowest layer whose backward runs: below it nothing is trained
    /// (frozen, [`Network::freeze`], or held, [`Network::skip_held_prefix`]).
    fn backward_floor(&self) -> usize {
        self.first_trained.max(self.held_prefix)
    }

    /// Whether layer `i` is frozen ([`Network::freeze`]).
    pub fn is_frozen(&self, i: usize) -> bool {
        self.frozen.get(i).copied().unwrap_or(false)
    }

    pub fn input_shape(&self) -> ImageShape {
        self.spec.input
    }

    pub fn num_classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output_shape().len())
    }

    /// Loads `n` images of `u8` pixels (HWC) as the input batch, scaled to `[0, 1]`.
    pub fn set_input_u8(&mut self, images: &[u8], n: usize) {
        let shape = self.spec.input;
        assert_eq!(images.len(), n * shape.len(), "input batch size");
        let x = &mut self.acts[0];
        x.resize(n, shape);
        for (v, &p) in x.data.iter_mut().zip(images) {
            *v = f32::from(p) * (1.0 / 255.0);
        }
    }

    /// Runs every layer on the current input; returns the logits.
    pub fn forward(&mut self, mode: Mode) -> &Tensor {
        on_pool(|| {
            for i in 0..self.layers.len() {
                self.forward_layer(i, mode, None);
            }
        });
        self.acts.last().expect("at least the input")
    }

    /// The output of every layer for the current batch (after
    /// [`Network::forward`]), in layer order: `layer_outputs()[i]` is layer
    /// `i`'s output. A convolution or batch norm whose relu is fused into it
    /// ([`layers::Conv2d::fuse_relu`]) only ever holds its output after the
    /// relu, so for it, as for the relu, this is the post-relu tensor.
    pub fn layer_outputs(&self) -> Vec<&Tensor> {
        (0..self.layers.len())
            .map(|i| {
                // A fused relu at i + 1 moved the layer's output into
                // acts[i + 2], leaving acts[i + 1] empty.
                if self.fused.get(i + 1) == Some(&true) {
                    &self.acts[i + 2]
                } else {
                    &self.acts[i + 1]
                }
            })
            .collect()
    }

    /// `acts[i + 1] = layer i (acts[inputs[i]])`, plus the skip input for an add.
    /// With `sync`, the batch is one replica's shard (see
    /// [`Network::forward_backward_shard`]).
    fn forward_layer(&mut self, i: usize, mode: Mode, sync: Option<&dyn layers::BatchSync>) {
        if self.fused[i] {
            // The layer before already applied this relu: its output becomes
            // this layer's, and acts[i] is left empty.
            self.acts.swap(i, i + 1);
            self.acts[i] = Tensor::default();
            return;
        }
        if self.fused.get(i + 1) == Some(&true) {
            // This layer's output buffer is the one its fused relu passed on
            // last step: one buffer for the two activations, not two.
            self.acts.swap(i + 1, i + 2);
        }
        let (done, rest) = self.acts.split_at_mut(i + 1);
        // A frozen batch norm keeps its running statistics and uses them,
        // as Keras does for a layer that is not trainable.
        let mode = if self.frozen[i] { Mode::Eval } else { mode };
        let (x, y) = (&done[self.inputs[i]], &mut rest[0]);
        match sync {
            Some(sync) => self.layers[i].forward_synced(x, y, mode, sync),
            None => self.layers[i].forward(x, y, mode),
        }
        if let Some(s) = self.skips[i] {
            layers::add_assign(&mut rest[0].data, &done[s].data);
        }
    }

    /// Before backward: only `grads[last] = ∂L/∂logits` is written.
    fn start_backward(&mut self) {
        self.has_grad.fill(false);
        if let Some(last) = self.has_grad.last_mut() {
            *last = true;
        }
    }

    /// Layer `i`'s backward: from `grads[i + 1]`, its share of `∂L/∂acts[a]`
    /// for the activation `a` it reads, and for an add also of its skip
    /// input's. The first layer (in backward order) to reach `grads[a]`
    /// writes it, any other adds to it; every reader of `acts[a]` comes after
    /// `a` in the spec, so `grads[a]` is whole before layer `a − 1` reads it.
    fn backward_layer(&mut self, i: usize, sync: Option<&dyn layers::BatchSync>) {
        if self.fused[i] {
            // ∂L/∂(relu output) goes to the layer before unmasked: it masks it
            // (a convolution with the relu output, given as its `y`: acts[i + 2]).
            self.grads.swap(i, i + 1);
            self.has_grad.swap(i, i + 1);
            self.release_grad(i + 1);
            return;
        }
        debug_assert!(self.has_grad[i + 1], "every output is read (validated)");
        let a = self.inputs[i];
        let floor = self.backward_floor();
        if a > floor && !self.has_grad[a] {
            self.reuse_grad(a);
        }
        if let Some(s) = self.skips[i].filter(|&s| s > floor && !self.has_grad[s]) {
            self.reuse_grad(s);
        }
        self.backward_into(i, a, floor, sync);
        // Every reader of acts[i + 1] comes after layer i: its gradient is spent.
        self.release_grad(i + 1);
    }

    /// Gives `grads[a]` a spare buffer, if it has none, before it is written.
    fn reuse_grad(&mut self, a: usize) {
        if self.grads[a].data.capacity() == 0 {
            if let Some(t) = self.spare_grads.pop() {
                self.grads[a] = t;
            }
        }
    }

    /// Returns `grads[a]`'s buffer to the spares.
    fn release_grad(&mut self, a: usize) {
        let t = std::mem::take(&mut self.grads[a]);
        if t.data.capacity() > 0 {
            self.spare_grads.push(t);
        }
    }

    /// [`Network::backward_layer`]'s computation, `grads[a]` (and the skip
    /// input's) ready to be written.
    fn backward_into(
        &mut self,
        i: usize,
        a: usize,
        floor: usize,
        sync: Option<&dyn layers::BatchSync>,
    ) {
        let (lower, upper) = self.grads.split_at_mut(i + 1);
        let y = if self.fused.get(i + 1) == Some(&true) {
            &self.acts[i + 2]
        } else {
            &self.acts[i + 1]
        };
        let layer = &mut self.layers[i];
        let mut backward = |x: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>| match sync {
            Some(sync) => layer.backward_synced(x, y, dy, dx, sync),
            None => layer.backward(x, y, dy, dx),
        };
        // No gradient below the first trained layer (nor for the input).
        if a <= floor {
            backward(&self.acts[a], &upper[0], None);
        } else if self.has_grad[a] {
            let dx = &mut self.dx_scratch;
            backward(&self.acts[a], &upper[0], Some(dx));
            layers::add_assign(&mut lower[a].data, &dx.data);
        } else {
            backward(&self.acts[a], &upper[0], Some(&mut lower[a]));
            self.has_grad[a] = true;
        }
        if let Some(s) = self.skips[i] {
            let dy = &upper[0];
            if s > floor && self.has_grad[s] {
                layers::add_assign(&mut lower[s].data, &dy.data);
            } else if s > floor {
                lower[s].resize(dy.n, dy.image_shape());
                lower[s].data.copy_from_slice(&dy.data);
                self.has_grad[s] = true;
            }
        }
    }

    /// Forward in training mode, loss against `labels`, and backward: after
    /// this every parameter's gradient is `∂L/∂θ` for the current input batch.
    pub fn forward_backward(&mut self, labels: &[u8]) -> BatchLoss {
        self.forward_backward_smoothed(labels, 0.0)
    }

    /// [`Network::forward_backward`] with the labels smoothed by `smoothing`
    /// (see [`crate::model::loss`]); the loss returned is the smoothed one.
    pub fn forward_backward_smoothed(&mut self, labels: &[u8], smoothing: f32) -> BatchLoss {
        self.forward_backward_shard(Targets::smoothed(labels, smoothing), 1.0, None)
    }

    /// [`Network::forward_backward`] towards `targets` (labels, smoothing and
    /// a teacher's probabilities, see [`crate::model::loss`]) of one
    /// replica's shard of a batch split across the replicas of a
    /// data-parallel run, with gradients
    /// scaled by `weight` (the shard's share of the batch, `n_r / B`), so that
    /// the replicas' gradients sum to the whole batch's. With `sync`, batch
    /// norm normalises by the whole batch's statistics (summed over `sync`);
    /// without, by the shard's. The loss returned is the shard's own mean.
    pub fn forward_backward_shard(
        &mut self,
        targets: Targets,
        weight: f32,
        sync: Option<&dyn layers::BatchSync>,
    ) -> BatchLoss {
        match sync {
            None => {
                on_pool(|| self.forward_backward_shard_with(targets, weight, None, &mut |_, _| {}))
            }
            // (Summing over replicas may need the caller's own thread: MPI.)
            Some(_) => self.forward_backward_shard_with(targets, weight, sync, &mut |_, _| {}),
        }
    }

    /// [`Network::forward_backward_shard`] calling `after_layer(self, i)` as
    /// soon as layer `i`'s backward is done, for every layer from the last
    /// down to the first: from then on its parameters' gradients are final
    /// ([`Network::copy_layer_grads`]), so a data-parallel step can start
    /// summing them over the replicas while backward goes on below. Layers
    /// below the backward floor (frozen or held) are called last, their
    /// gradients as they were.
    pub fn forward_backward_shard_with(
        &mut self,
        targets: Targets,
        weight: f32,
        sync: Option<&dyn layers::BatchSync>,
        after_layer: &mut dyn FnMut(&mut Network, usize),
    ) -> BatchLoss {
        for i in 0..self.layers.len() {
            self.forward_layer(i, Mode::Train, sync);
        }
        let last = self.layers.len();
        self.reuse_grad(last);
        let loss =
            softmax_cross_entropy_targets(&self.acts[last], targets, Some(&mut self.grads[last]));
        if weight != 1.0 {
            self.grads[last].data.iter_mut().for_each(|g| *g *= weight);
        }
        self.start_backward();
        let floor = self.backward_floor();
        for i in (floor..self.layers.len()).rev() {
            self.backward_layer(i, sync);
            after_layer(self, i);
        }
        // The layers below the floor have no backward, but `after_layer`
        // still hears of them, in order (a data-parallel step starts its
        // last gradient bucket on the lowest layer).
        for i in (0..floor).rev() {
            after_layer(self, i);
        }
        loss
    }

    /// For each layer, how many trained parameter values it has (0 for a
    /// layer without parameters, or frozen): [`Params::visit_params`] visits
    /// them in this order, so a flat buffer of every gradient is these
    /// lengths end to end.
    pub fn param_lens(&mut self) -> Vec<usize> {
        (0..self.layers.len())
            .map(|i| {
                let mut len = 0;
                self.visit_layer_params(i, &mut |p| len += p.grad.len());
                len
            })
            .collect()
    }

    /// Copies layer `i`'s parameter gradients, in [`Params::visit_params`]
    /// order, into `out` (of length `param_lens()[i]`).
    pub fn copy_layer_grads(&mut self, i: usize, out: &mut [f32]) {
        let mut offset = 0;
        self.visit_layer_params(i, &mut |p| {
            out[offset..offset + p.grad.len()].copy_from_slice(p.grad);
            offset += p.grad.len();
        });
        assert_eq!(offset, out.len(), "layer {i}'s gradients fill its part");
    }

    /// [`Params::visit_params`] for layer `i` alone.
    fn visit_layer_params(&mut self, i: usize, f: &mut dyn FnMut(Param<'_>)) {
        let Some(name) = self.names[i].as_deref() else {
            return;
        };
        if self.frozen[i] {
            return;
        }
        let shapes = &self.param_shapes[i];
        self.layers[i].visit_params(&mut |suffix, value, grad, decay| {
            let shape = shapes.iter().find(|(s, _)| *s == suffix);
            let shape = shape.map_or(&[][..], |(_, shape)| shape.as_slice());
            debug_assert_eq!(
                shape.iter().product::<usize>(),
                value.len(),
                "{name}.{suffix}"
            );
            f(Param {
                layer: name,
                suffix,
                value,
                grad,
                decay,
                shape,
                lr_scale: 1.0,
            })
        });
    }

    /// [`Network::forward_backward`] with the time spent in each layer, for profiling:
    /// `(layer kind/name, forward seconds, backward seconds)`. A relu fused into
    /// the layer before it is listed as `relu (fused)`, with its time
    /// counted in that layer's.
    pub fn forward_backward_profiled(
        &mut self,
        labels: &[u8],
    ) -> (BatchLoss, Vec<(String, f64, f64)>) {
        use std::time::Instant;
        let mut times: Vec<(String, f64, f64)> = self
            .spec
            .layers
            .iter()
            .zip(&self.fused)
            .map(|(l, &fused)| {
                let label = l.name().unwrap_or(l.kind());
                let label = if fused {
                    format!("{label} (fused)")
                } else {
                    label.to_string()
                };
                (label, 0.0, 0.0)
            })
            .collect();
        for (i, time) in times.iter_mut().enumerate() {
            let t = Instant::now();
            self.forward_layer(i, Mode::Train, None);
            time.1 = t.elapsed().as_secs_f64();
        }
        let last = self.layers.len();
        self.reuse_grad(last);
        let loss = softmax_cross_entropy(&self.acts[last], labels, Some(&mut self.grads[last]));
        self.start_backward();
        for i in (self.backward_floor()..self.layers.len()).rev() {
            let t = Instant::now();
            self.backward_layer(i, None);
            times[i].2 = t.elapsed().as_secs_f64();
        }
        (loss, times)
    }

    /// Loss of the current input batch in evaluation mode (no gradients).
    pub fn eval_loss(&mut self, labels: &[u8]) -> BatchLoss {
        let logits = self.forward(Mode::Eval);
        softmax_cross_entropy(logits, labels, None)
    }

    /// Re-seeds every source of randomness inside the network (dropout masks).
    pub fn reseed(&mut self, seed: u64) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.reseed(seed ^ ((i as u64) << 32));
        }
    }

    /// Class probabilities (`n × classes`, evaluation mode) for `n` HWC `u8` images.
    pub fn predict_proba(&mut self, images: &[u8], n: usize) -> Vec<f32> {
        const BATCH: usize = 250;
        let (len, classes) = (self.spec.input.len(), self.num_classes());
        let mut probs = Vec::with_capacity(n * classes);
        for start in (0..n).step_by(BATCH) {
            let m = (n - start).min(BATCH);
            self.set_input_u8(&images[start * len..(start + m) * len], m);
            probs.extend_from_slice(&self.forward(Mode::Eval).data);
        }
        for row in probs.chunks_exact_mut(classes) {
            softmax_in_place(row);
        }
        probs
    }

    /// Every saved tensor, as `(full name, shape, values)`, in layer order.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        let mut out = Vec::new();
        for (layer, name) in self.layers.iter().zip(&self.names) {
            for t in layer.tensors() {
                let prefix = name.as_deref().expect("layers with tensors are named");
                out.push((format!("{prefix}.{}", t.suffix), t.shape, t.data));
            }
        }
        out
    }

    /// A copy of every saved tensor (for early stopping's "best weights").
    pub fn snapshot(&self) -> Vec<Vec<f32>> {
        self.named_tensors()
            .into_iter()
            .map(|(_, _, d)| d.to_vec())
            .collect()
    }

    /// Every layer's running statistics ([`Layer::statistics_mut`]), in layer order.
    pub fn statistics_mut(&mut self) -> Vec<&mut [f32]> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.statistics_mut())
            .collect()
    }

    /// Every saved tensor, mutable, in [`Network::named_tensors`] order.
    pub fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.tensors_mut())
            .collect()
    }

    /// Restores a [`Network::snapshot`] of this same network.
    pub fn restore(&mut self, snapshot: &[Vec<f32>]) {
        let tensors = self.tensors_mut();
        assert_eq!(tensors.len(), snapshot.len(), "a snapshot of this network");
        for (t, saved) in tensors.into_iter().zip(snapshot) {
            t.copy_from_slice(saved);
        }
    }

    /// The model file: safetensors with one tensor per parameter and running
    /// statistic, and the canonical spec and class names in the metadata.
    pub fn to_safetensors_bytes(&self, class_names: &[&str]) -> Result<Vec<u8>, NetworkError> {
        use safetensors::tensor::{Dtype, TensorView};
        let tensors = self.named_tensors();
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views = tensors
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| {
                TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (name.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.format_error(e))?;
        let metadata = HashMap::from([
            (model_format::KEY_FORMAT.to_string(), FORMAT.to_string()),
            (
                model_format::KEY_ARCHITECTURE.to_string(),
                self.spec.to_json(),
            ),
            (
                model_format::KEY_CLASS_NAMES.to_string(),
                encode_class_names(class_names),
            ),
        ]);
        let bytes =
            safetensors::serialize(views, Some(metadata)).map_err(|e| self.format_error(e))?;
        Ok(canonical_header(bytes))
    }

    fn format_error(&self, e: impl std::fmt::Display) -> NetworkError {
        NetworkError::Format {
            origin: self.spec.name.clone(),
            problem: e.to_string(),
        }
    }

    /// Saves the model file atomically (temporary file, then rename).
    pub fn save(&self, path: &Path, class_names: &[&str]) -> Result<(), NetworkError> {
        let bytes = self.to_safetensors_bytes(class_names)?;
        crate::atomic::write_atomic(path, &bytes).map_err(|source| NetworkError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Saves with this network's own class names.
    pub fn save_with_classes(&self, path: &Path) -> Result<(), NetworkError> {
        let names: Vec<&str> = self.class_names.iter().map(String::as_str).collect();
        self.save(path, &names)
    }

    /// Loads a model file written by [`Network::save`].
    pub fn load(path: &Path) -> Result<Self, NetworkError> {
        let bytes = std::fs::read(path).map_err(|source| NetworkError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_safetensors_bytes(&bytes, &path.display().to_string())
    }

    /// Parses a model file; `origin` names it in errors.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &str) -> Result<Self, NetworkError> {
        use safetensors::{tensor::Dtype, SafeTensors};
        let err = |problem: String| NetworkError::Format {
            origin: origin.to_string(),
            problem,
        };
        let (_, metadata) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let meta = metadata
            .metadata()
            .as_ref()
            .ok_or_else(|| err("no metadata: not exported by this trainer".into()))?;
        let arch = meta
            .get("architecture")
            .ok_or_else(|| err("no \"architecture\" in the metadata".into()))?;
        let spec = ModelSpec::from_json_str(arch)?;
        // Check the file holds the architecture's values before building it
        // (a few bytes of header must not make us allocate gigabytes).
        let data_len = bytes.len().saturating_sub(8 + header_len(bytes));
        let needed = spec.saved_values()?;
        if needed.checked_mul(4) != Some(data_len) {
            return Err(err(format!(
                "the tensors hold {data_len} bytes, the architecture needs {needed} f32 values"
            )));
        }
        let mut net = Network::new(&spec, 0)?;
        if let Some(names) = meta.get(model_format::KEY_CLASS_NAMES) {
            net.class_names = decode_class_names(names).map_err(err)?;
        }
        if net.class_names.len() != net.num_classes() {
            return Err(err(format!(
                "{} class names for {} outputs",
                net.class_names.len(),
                net.num_classes()
            )));
        }
        let file = SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
        let expected: Vec<(String, Vec<usize>)> = net
            .named_tensors()
            .into_iter()
            .map(|(n, s, _)| (n, s))
            .collect();
        if file.len() != expected.len() {
            return Err(err(format!(
                "{} tensors, the architecture needs {}",
                file.len(),
                expected.len()
            )));
        }
        let mut loaded = Vec::with_capacity(expected.len());
        for (name, shape) in &expected {
            let view = file
                .tensor(name)
                .map_err(|_| err(format!("tensor {name} is missing")))?;
            if view.dtype() != Dtype::F32 || view.shape() != shape.as_slice() {
                return Err(err(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(err(format!("tensor {name} holds NaN or infinite values")));
            }
            loaded.push(values);
        }
        net.restore(&loaded);
        Ok(net)
    }
}

/// The `class_names` metadata value: a JSON array of the names in label
/// order (`model_format::class_names`), so a name may hold any character.
pub fn encode_class_names<S: AsRef<str>>(names: &[S]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&names).expect("strings serialise")
}

/// Reads a `class_names` metadata value in either form: the JSON array, or
/// the names joined by commas of files written before it.
pub fn decode_class_names(value: &str) -> Result<Vec<String>, String> {
    if value.trim_start().starts_with('[') {
        serde_json::from_str(value).map_err(|e| format!("class_names: {e}"))
    } else {
        Ok(value.split(',').map(str::to_string).collect())
    }
}

/// The length of a safetensors file's JSON header (0 if the file is too short).
fn header_len(bytes: &[u8]) -> usize {
    bytes.get(..8).map_or(0, |b| {
        u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize
    })
}

/// The same safetensors file with its JSON header's keys in sorted order, so
/// that the same network always gives the same bytes (`safetensors` writes the
/// metadata from a `HashMap`, in a different order each time). The header
/// keeps its length: the same entries, reordered, padded with spaces as before.
pub(crate) fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    use std::collections::BTreeMap;
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let map: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::to_value(map).expect("string keys")
            }
            other => other,
        }
    }
    let Some(n) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(Ok(header)) = bytes
        .get(8..8 + n)
        .map(serde_json::from_slice::<serde_json::Value>)
    else {
        return bytes;
    };
    let text = serde_json::to_string(&sorted(header)).expect("JSON values serialise");
    if text.len() <= n {
        let slot = &mut bytes[8..8 + n];
        slot[..text.len()].copy_from_slice(text.as_bytes());
        slot[text.len()..].fill(b' ');
    }
    bytes
}

impl Params for Network {
    /// Every trainable parameter, layer by layer, named `{layer}.{suffix}`
    /// (see [`Layer::visit_params`] for `decay`).
    fn visit_params(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        for i in 0..self.layers.len() {
            self.visit_layer_params(i, f);
        }
    }

    fn gemm(&self) -> crate::kernels::gemm::Backend {
        self.compute.gemm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same network gives the same file, byte for byte, every time; the
    /// file reloads to the same tensors.
    #[test]
    fn exports_are_byte_reproducible() {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"t","input":{"height":6,"width":5,"channels":1},"layers":[
                {"type":"conv2d","filters":3,"kernel":3},{"type":"batchnorm"},{"type":"relu"},
                {"type":"flatten"},{"type":"dense","units":4}]}"#,
        )
        .unwrap();
        let names = ["a", "b", "c", "d"];
        let files: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                Network::new(&spec, 3)
                    .unwrap()
                    .to_safetensors_bytes(&names)
                    .unwrap()
            })
            .collect();
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        let back = Network::from_safetensors_bytes(&files[0], "t").unwrap();
        assert_eq!(back.snapshot(), Network::new(&spec, 3).unwrap().snapshot());
        assert_eq!(back.class_names, names);
        // The header's keys are sorted.
        let n = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&files[0][8..8 + n]).unwrap();
        let at = |key: &str| header.find(&format!("\"{key}\"")).unwrap();
        let keys = ["__metadata__", "bn1.beta", "conv1.bias", "dense1.weight"];
        assert!(keys.windows(2).all(|k| at(k[0]) < at(k[1])), "{header}");
    }

    /// With its first convolution held, backward stops above it: the other
    /// layers' gradients are those of a full backward, the held
    /// layer's are not computed (they keep their earlier values), and
    /// releasing it brings the full backward back.
    #[test]
    fn a_held_prefix_gets_no_backward() {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"t","input":{"height":6,"width":6,"channels":2},"layers":[
                {"type":"conv2d","filters":3,"kernel":2,"padding":"valid","name":"w"},
                {"type":"relu"},
                {"type":"conv2d","filters":4,"kernel":3},{"type":"batchnorm"},{"type":"gelu"},
                {"type":"flatten"},{"type":"dense","units":3}]}"#,
        )
        .unwrap();
        let images: Vec<u8> = (0..4 * 6 * 6 * 2).map(|i| (i * 37 % 251) as u8).collect();
        let grads = |net: &mut Network| {
            let mut out = Vec::new();
            net.visit_params(&mut |p| out.push((p.name(), p.grad.to_vec())));
            out
        };
        let mut full = Network::new(&spec, 5).unwrap();
        full.set_input_u8(&images, 4);
        full.forward_backward(&[0, 1, 2, 1]);
        let want = grads(&mut full);

        let mut held = Network::new(&spec, 5).unwrap();
        held.skip_held_prefix(&|layer, _| layer != "w");
        assert_eq!(held.backward_floor(), 2);
        held.set_input_u8(&images, 4);
        held.forward_backward(&[0, 1, 2, 1]);
        let got = grads(&mut held);
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            if name.starts_with("w.") {
                assert!(g.iter().all(|&v| v == 0.0), "{name}: never computed");
                assert!(
                    w.iter().any(|&v| v != 0.0),
                    "{name}: full backward computes it"
                );
            } else if name.starts_with("conv2.") {
                // The lowest layer with a backward now computes no input
                // gradient, so (3 input channels) its weight gradient takes
                // the direct sums instead of im2col's: the same sums in
                // another order.
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() <= 1e-5, "{name}: {a} vs {b}");
                }
            } else {
                assert_eq!(g, w, "{name}");
            }
        }
        held.skip_held_prefix(&|_, _| true);
        assert_eq!(held.backward_floor(), 0);
        held.forward_backward(&[0, 1, 2, 1]);
        assert_eq!(grads(&mut held), want);
    }

    /// A small file whose architecture would need gigabytes is refused from
    /// its size, before any layer is built (found by fuzzing:
    /// fuzz/artifacts/model_file/dense-units-oom.safetensors).
    #[test]
    fn a_file_too_small_for_its_architecture_is_refused_before_building() {
        let arch = r#"{"name":"t","input":{"height":64,"width":64,"channels":64},"layers":[
            {"type":"flatten"},{"type":"dense","units":1024}]}"#;
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("architecture".to_string(), arch.to_string()),
        ]);
        let bytes = safetensors::serialize(
            Vec::<(String, safetensors::tensor::TensorView)>::new(),
            Some(meta),
        )
        .unwrap();
        let err = Network::from_safetensors_bytes(&bytes, "small.safetensors")
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("small.safetensors") && err.contains("needs"),
            "{err}"
        );
    }
}
