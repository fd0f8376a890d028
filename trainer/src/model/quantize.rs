//! Post-training static quantization: an `f32` model file in, the bytes of an
//! int8 model file out, exactly as `docs/FORMAT.md` ("Int8 models") describes
//! them. The arithmetic (activation ranges to scale and zero point, weight
//! and bias rounding, multipliers) is `model_format::quant`'s, the one home
//! of it; this module decides *which* numbers go in.
//!
//! The steps ([`quantize`]):
//!
//! 1. **Fold** every batch norm into the conv2d or dense layer right before
//!    it ([`fold_batchnorms`]): `w' = w · γ/√(σ² + ε)` per output channel,
//!    `b' = (b − μ) · γ/√(σ² + ε) + β`, computed in `f64`; also through a
//!    max-pool between them when every channel's scale is positive (the
//!    affine map then commutes with the maximum). A batch norm that does not
//!    follow one so, or an `add` reading the convolution whose output the
//!    folding changes, is refused ([`QuantizeError`]).
//! 2. **Calibrate** ([`calibrate`]): the folded `f32` network runs on the
//!    calibration images (evaluation mode, in batches of
//!    [`CALIBRATION_BATCH`]) and each activation tensor gets a range, hence an
//!    [`ActQuant`]. A conv2d or dense followed by a relu takes the range after
//!    the relu (the reader fuses that relu), unless an `add` reads the
//!    layer's own output, which is then before the relu; so does one followed
//!    by a max-pool and then a relu (they commute); `relu`,
//!    `maxpool2d`, `global_avg_pool`, `flatten` and `dropout` repeat their
//!    input's quantization; `add`, conv2d and dense have their own.
//! 3. **Write** ([`write_int8`]): weights symmetric per output channel in the
//!    `[k, k, ⌈ci/4⌉, co, 4]` layout, `i32` biases in units of input scale ×
//!    weight scale, the `weight_scale` tensors, the folded architecture and
//!    the `quantization` metadata entry; deterministic bytes.
//!
//! [`Int8Reference`] is a plain integer forward pass written straight from
//! FORMAT.md's "Integer semantics" (accumulating in `i64`), which reads the
//! int8 file back: the tests check the quantized model with it, independently
//! of `infer`'s kernels.
//!
//! ## Calibration methods
//!
//! [`Calibration::MinMax`] takes each tensor's smallest and largest value
//! over the calibration images. The other two start from a histogram of each
//! side of zero (2,048 bins per side over the min/max range, a second pass
//! over the images): [`Calibration::Percentile`] clips each side at a
//! percentile of its magnitudes; [`Calibration::Mse`] scales the min/max
//! range by the factor `t ∈ (0, 1]` that minimises the expected squared
//! error (clipping error outside, `step²/12` rounding error inside).
//!
//! The default, [`Calibration::DEFAULT`], is **MSE**. Measured on a
//! validation split of the *training* set (its last 5,000 images; 500
//! calibration images drawn from the other 45,000 with seeds 1, 2, 3; int8
//! run by `infer`; never the test set; `trainer-cli/tests/int8.rs`,
//! `measure_calibration_methods`), mean accuracy over the three draws:
//!
//! | model (f32 accuracy) | minmax | percentile 99.9 | 99.99 | 99.999 | MSE |
//! |---|---|---|---|---|---|
//! | model1 (84.28 %) | 84.07 | 83.99 | 84.07 | 84.03 | 84.09 |
//! | fast (99.22 %, trained on these images) | 99.20 | 99.07 | 99.19 | 99.22 | 99.17 |
//!
//! On accuracy the methods tie (model 1's spread between calibration draws,
//! ±0.15 points, is larger than their differences) except percentile 99.9,
//! which clips too much. MSE wins on fidelity: its signal-to-quantization-
//! noise ratio is the best of the three at every layer of both models (model
//! 1's logits: 36.2 dB against 35.3 for minmax and 33.9 for percentile
//! 99.99; fast's: 31.8, 31.3, 30.6; `trainer/tests/quantize.rs`,
//! `layer_sqnr`), and unlike min/max
//! it does not let one outlier among the calibration images stretch a scale.

use crate::kernels::tensor::ImageShape;
use crate::layers::Mode;
use crate::model::network::{
    canonical_header, decode_class_names, encode_class_names, Network, NetworkError,
};
use crate::model::spec::{LayerSpec, ModelSpec, SpecError};
use model_format::quant::{self, ActQuant, AddMultipliers, Multiplier};
use model_format::{Dtype, Param, ParamLayer};

/// A model file's number type (`f32` or int8), as the format names it.
pub use model_format::Precision;
use std::collections::HashMap;

/// Images per forward pass while calibrating.
pub const CALIBRATION_BATCH: usize = 100;

/// Bins of each side's histogram (percentile calibration).
const HISTOGRAM_BINS: usize = 2048;

/// How activation ranges are taken from the calibration images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Calibration {
    /// The smallest and largest values seen.
    MinMax,
    /// Each side of zero clipped at this percentile (0–100] of its
    /// magnitudes.
    Percentile(f64),
    /// The range `[t·min, t·max]` (`0 < t ≤ 1`) with the least mean squared
    /// quantization error over the histogram: clipping error for the values
    /// outside, `step²/12` rounding error for those inside.
    Mse,
}

impl Calibration {
    /// What `trainer quantize` uses unless told otherwise (see the module
    /// documentation for the measurement behind it).
    pub const DEFAULT: Calibration = Calibration::Mse;

    /// The names the command line offers: `minmax`, `percentile` (at
    /// 99.99 %), `mse`.
    pub const NAMES: [&'static str; 3] = ["minmax", "percentile", "mse"];

    /// The method a name of [`Calibration::NAMES`] stands for.
    pub fn from_name(name: &str) -> Option<Calibration> {
        match name {
            "minmax" => Some(Calibration::MinMax),
            "percentile" => Some(Calibration::Percentile(99.99)),
            "mse" => Some(Calibration::Mse),
            _ => None,
        }
    }

    /// The method's name (for logs).
    pub fn describe(&self) -> String {
        match self {
            Calibration::MinMax => "minmax".to_string(),
            Calibration::Percentile(p) => format!("percentile ({p} %)"),
            Calibration::Mse => "mse".to_string(),
        }
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration::DEFAULT
    }
}

/// Why a model could not be quantized (or an int8 file not read back).
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("layer {index} (batchnorm {name:?}) follows a {previous}: only a batchnorm right after a conv2d or dense layer, or after a maxpool2d right after one, can be folded into it")]
    UnfoldableBatchNorm {
        index: usize,
        name: String,
        /// The type of the layer before it, or `nothing` for the first layer.
        previous: &'static str,
    },
    #[error("layer {index} (batchnorm {name:?}) follows a maxpool2d, and its scale γ/√(σ² + ε) is {scale} in channel {channel}: only a positive scale commutes with the max-pool, so it cannot be folded through it")]
    NegativeScaleThroughPool {
        index: usize,
        name: String,
        channel: usize,
        scale: f64,
    },
    #[error("layer {index} reads {from:?}, whose output changes when batchnorm {batchnorm:?} is folded into it")]
    ReadsFoldedLayer {
        index: usize,
        from: String,
        batchnorm: String,
    },
    #[error("no calibration images")]
    NoCalibrationImages,
    #[error("calibration images: {bytes} bytes are not a whole number of {shape} images")]
    CalibrationSize { bytes: usize, shape: ImageShape },
    #[error("layer {layer}: {problem}")]
    Layer { layer: String, problem: String },
    #[error("int8 model file {origin}: {problem}")]
    Int8File { origin: String, problem: String },
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Whether a model file is `f32` or int8 (it has the
/// [`quant::KEY_QUANTIZATION`] metadata entry); `origin` names it in errors.
pub fn precision_of(bytes: &[u8], origin: &str) -> Result<Precision, NetworkError> {
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| NetworkError::Format {
            origin: origin.to_string(),
            problem: format!("not a safetensors file: {e}"),
        })?;
    let int8 = metadata
        .metadata()
        .as_ref()
        .is_some_and(|m| m.contains_key(quant::KEY_QUANTIZATION));
    Ok(if int8 {
        Precision::Int8
    } else {
        Precision::F32
    })
}

/// The architecture in a model file's metadata (`f32` or int8); `origin`
/// names the file in errors.
pub fn architecture_of(bytes: &[u8], origin: &str) -> Result<ModelSpec, NetworkError> {
    let err = |problem: String| NetworkError::Format {
        origin: origin.to_string(),
        problem,
    };
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let arch = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(model_format::KEY_ARCHITECTURE))
        .ok_or_else(|| err("no \"architecture\" in the metadata".into()))?;
    Ok(ModelSpec::from_json_str(arch)?)
}

/// The first `n` of a seeded shuffle of `0..total` (all of them, shuffled,
/// if `n ≥ total`): which training images calibrate.
pub fn calibration_indices(total: usize, n: usize, seed: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..total).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    order.truncate(n);
    order
}

/// Quantizes `net`: folds its batch norms, calibrates on `images` (`u8`
/// HWC, whole images of the network's input shape) with `calibration`, and
/// returns the int8 model file's bytes (class names: the network's own).
pub fn quantize(
    net: &Network,
    images: &[u8],
    calibration: Calibration,
) -> Result<Vec<u8>, QuantizeError> {
    let mut folded = fold_batchnorms(net)?;
    let acts = calibrate(&mut folded, images, calibration)?;
    write_int8(&folded, &acts)
}

/// The network with every batch norm folded into the conv2d or dense layer
/// before it (evaluation-mode outputs equal the original's up to `f32`
/// rounding). An `add` that read a batch norm reads its convolution instead
/// (whose output is now the batch norm's).
///
/// A batch norm may also follow a max-pool that follows the convolution
/// (airbench's conv → max-pool → batch norm): with a positive scale `a` per
/// channel, `max(a·x + b) = a·max(x) + b` (padded cells never win), so the
/// batch norm folds into the convolution and the pool's output becomes the
/// batch norm's; a `from`/`input` naming the batch norm then names the pool
/// (which takes the batch norm's name if it had none and is read so). A
/// channel whose scale is not positive is refused.
pub fn fold_batchnorms(net: &Network) -> Result<Network, QuantizeError> {
    let spec = net.spec();
    let tensors: HashMap<String, Vec<f32>> = net
        .named_tensors()
        .into_iter()
        .map(|(n, _, d)| (n, d.to_vec()))
        .collect();
    let value = |layer: &str, suffix: &str| -> &[f32] {
        tensors
            .get(&format!("{layer}.{suffix}"))
            .map(Vec::as_slice)
            .expect("a network holds every tensor of its spec")
    };
    // Names an add may not read (a folded convolution), and the renames of
    // folded batch norms to their convolutions.
    let mut changed: HashMap<String, String> = HashMap::new();
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut folded: HashMap<String, Vec<f32>> = HashMap::new();
    // Unnamed pools a batch norm is folded through, given its name.
    let mut pool_names: HashMap<usize, String> = HashMap::new();
    let read_later = spec.read_later();
    for (index, layer) in spec.layers.iter().enumerate() {
        let LayerSpec::BatchNorm { name, epsilon, .. } = layer else {
            continue;
        };
        let bn = name.clone().expect("canonical specs name batch norms");
        // The batch norm must read the layer right before it (or the
        // max-pool right before it, reading the layer right before that).
        let reads_previous = |i: usize| {
            i.checked_sub(1)
                .filter(|_| spec.layers[i].input_name().is_none())
        };
        let mut through_pool = None;
        let mut previous = reads_previous(index);
        if let Some(p) = previous.filter(|&p| matches!(spec.layers[p], LayerSpec::MaxPool2d { .. }))
        {
            through_pool = Some(p);
            previous = reads_previous(p);
        }
        let target = match previous.map(|p| &spec.layers[p]) {
            Some(LayerSpec::Conv2d { name, .. } | LayerSpec::Dense { name, .. }) => {
                name.clone().expect("canonical specs name parameter layers")
            }
            other => {
                let previous = match (through_pool, other) {
                    (Some(_), Some(l)) => l.kind(),
                    (Some(_), None) => "maxpool2d reading the image",
                    (None, other) => other.map_or("nothing", LayerSpec::kind),
                };
                return Err(QuantizeError::UnfoldableBatchNorm {
                    index,
                    name: bn,
                    previous,
                });
            }
        };
        let (gamma, beta) = (value(&bn, "gamma"), value(&bn, "beta"));
        let (mean, var) = (value(&bn, "moving_mean"), value(&bn, "moving_variance"));
        let factor: Vec<f64> = gamma
            .iter()
            .zip(var)
            .map(|(&g, &v)| f64::from(g) / (f64::from(v) + f64::from(*epsilon)).sqrt())
            .collect();
        if through_pool.is_some() {
            if let Some((channel, &scale)) = factor
                .iter()
                .enumerate()
                .find(|(_, &f)| f.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
            {
                return Err(QuantizeError::NegativeScaleThroughPool {
                    index,
                    name: bn,
                    channel,
                    scale,
                });
            }
        }
        let co = factor.len();
        let weight: Vec<f32> = value(&target, "weight")
            .chunks_exact(co)
            .flat_map(|row| {
                row.iter()
                    .zip(&factor)
                    .map(|(&w, &f)| (f64::from(w) * f) as f32)
            })
            .collect();
        let bias: Vec<f32> = (0..co)
            .map(|c| {
                ((f64::from(value(&target, "bias")[c]) - f64::from(mean[c])) * factor[c]
                    + f64::from(beta[c])) as f32
            })
            .collect();
        folded.insert(format!("{target}.weight"), weight);
        folded.insert(format!("{target}.bias"), bias);
        changed.insert(target.clone(), bn.clone());
        match through_pool {
            Some(p) => {
                // The pool's output is the batch norm's now: readers of the
                // batch norm read the pool, and no one may read the pool's old output.
                let pool = match spec.layers[p].name() {
                    Some(pool) => {
                        changed.insert(pool.to_string(), bn.clone());
                        pool.to_string()
                    }
                    None => {
                        // Named only when a layer reads the batch norm by name.
                        if read_later[index] {
                            pool_names.insert(p, bn.clone());
                        }
                        bn.clone()
                    }
                };
                renamed.insert(bn, pool);
            }
            None => {
                renamed.insert(bn, target);
            }
        }
    }
    // Every other layer stays; a name it reads (`input`, an add's `from`)
    // that was a folded batch norm becomes the convolution's.
    let mut layers = Vec::with_capacity(spec.layers.len());
    for (index, layer) in spec.layers.iter().enumerate() {
        if matches!(layer, LayerSpec::BatchNorm { .. }) {
            continue;
        }
        let mut layer = layer.clone();
        if let (Some(name), LayerSpec::MaxPool2d { name: slot, .. }) =
            (pool_names.get(&index), &mut layer)
        {
            *slot = Some(name.clone());
        }
        for read in layer.read_names_mut() {
            if let Some(bn) = changed.get(read.as_str()) {
                return Err(QuantizeError::ReadsFoldedLayer {
                    index,
                    from: read.clone(),
                    batchnorm: bn.clone(),
                });
            }
            if let Some(conv) = renamed.get(read.as_str()) {
                *read = conv.clone();
            }
        }
        layers.push(layer);
    }
    let folded_spec = ModelSpec {
        name: spec.name.clone(),
        input: spec.input,
        layers,
    }
    .checked()?;
    let mut out = Network::new(&folded_spec, 0)?;
    let values: Vec<Vec<f32>> = out
        .named_tensors()
        .into_iter()
        .map(|(name, _, _)| {
            folded
                .remove(&name)
                .unwrap_or_else(|| tensors[&name].clone())
        })
        .collect();
    out.restore(&values);
    out.class_names = net.class_names.clone();
    Ok(out)
}

/// Whether layer `i` is a conv2d or dense whose relu (the next layer) the
/// reader fuses: the relu reads it and no other layer reads its own output
/// (`read_later`: [`ModelSpec::read_later`]).
fn fuses_relu(spec: &ModelSpec, read_later: &[bool], i: usize) -> bool {
    matches!(
        spec.layers[i],
        LayerSpec::Conv2d { .. } | LayerSpec::Dense { .. }
    ) && only_relu_reads(spec, read_later, i)
}

/// The shape of activation `a` (0: the input, `j + 1`: layer `j`'s output).
fn activation_shape(spec: &ModelSpec, shapes: &[ImageShape], a: usize) -> ImageShape {
    match a {
        0 => spec.input,
        a => shapes[a - 1],
    }
}

/// Whether layer `i`'s output goes only to a relu right after it (which
/// reads it, and no other layer reads it).
fn only_relu_reads(spec: &ModelSpec, read_later: &[bool], i: usize) -> bool {
    matches!(
        spec.layers.get(i + 1),
        Some(l @ LayerSpec::Relu { .. }) if l.input_name().is_none()
    ) && !read_later[i]
}

/// Whether layer `i`'s output goes only to a max-pool right after it, and
/// the pool's only to a relu right after that (airbench's conv → max-pool →
/// relu once its batch norms are folded). A relu commutes with a max-pool,
/// so the layer can take the relu's range: zero point 0, where `u8`
/// saturation is the relu and the next convolutions read zero-point-0 inputs.
fn pool_then_relu_reads(spec: &ModelSpec, read_later: &[bool], i: usize) -> bool {
    matches!(
        spec.layers.get(i + 1),
        Some(l @ LayerSpec::MaxPool2d { .. }) if l.input_name().is_none()
    ) && !read_later[i]
        && only_relu_reads(spec, read_later, i + 1)
}

/// For each layer, the layer whose output tensor its quantization is taken
/// from (`None`: it repeats its input's, the activation it reads). A conv2d or dense with a fused
/// relu takes the relu's output. So does an add whose output only a relu
/// reads (a ResNet block's end): its range then starts at 0, so its zero
/// point is 0, `u8` saturation is the relu (which repeats the pair and
/// changes nothing), and the next convolutions read zero-point-0 inputs,
/// which the SIMD kernels of `infer` need.
fn range_sources(spec: &ModelSpec) -> Vec<Option<usize>> {
    let read = spec.read_later();
    (0..spec.layers.len())
        .map(|i| match spec.layers[i] {
            LayerSpec::Conv2d { .. } | LayerSpec::Dense { .. } => {
                Some(if fuses_relu(spec, &read, i) {
                    i + 1
                } else if pool_then_relu_reads(spec, &read, i) {
                    i + 2
                } else {
                    i
                })
            }
            LayerSpec::Add { .. } => Some(if only_relu_reads(spec, &read, i) {
                i + 1
            } else {
                i
            }),
            // Batch norms are folded before calibrating; give one its own
            // range anyway rather than a wrong repeat.
            LayerSpec::BatchNorm { .. } => Some(i),
            LayerSpec::Gelu { .. } => Some(i),
            LayerSpec::Relu { .. }
            | LayerSpec::MaxPool2d { .. }
            | LayerSpec::GlobalAvgPool { .. }
            | LayerSpec::Flatten { .. }
            | LayerSpec::Dropout { .. } => None,
        })
        .collect()
}

/// Counts of one tensor's values on each side of zero, in
/// [`HISTOGRAM_BINS`] bins over `[0, max]` and `[0, −min]`.
struct Histogram {
    max: f32,
    min: f32,
    pos: Vec<u64>,
    neg: Vec<u64>,
}

impl Histogram {
    fn new(min: f32, max: f32) -> Self {
        Histogram {
            max,
            min,
            pos: vec![0; HISTOGRAM_BINS],
            neg: vec![0; HISTOGRAM_BINS],
        }
    }

    fn add(&mut self, values: &[f32]) {
        let bins = HISTOGRAM_BINS as f32;
        let (up, down) = (bins / self.max, bins / -self.min);
        for &v in values {
            if v > 0.0 {
                let b = ((v * up) as usize).min(HISTOGRAM_BINS - 1);
                self.pos[b] += 1;
            } else if v < 0.0 {
                let b = ((v * -down) as usize).min(HISTOGRAM_BINS - 1);
                self.neg[b] += 1;
            }
        }
    }

    /// The upper edge of the bin where the cumulative count reaches
    /// `percent` % of the side's values, times `edge` (the side's extreme).
    fn clip(counts: &[u64], edge: f32, percent: f64) -> f32 {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let want = (total as f64 * percent / 100.0).ceil() as u64;
        let mut seen = 0;
        for (b, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return edge * (b + 1) as f32 / HISTOGRAM_BINS as f32;
            }
        }
        edge
    }

    fn percentile_range(&self, percent: f64) -> (f32, f32) {
        (
            -Self::clip(&self.neg, -self.min, percent),
            Self::clip(&self.pos, self.max, percent),
        )
    }

    /// [`Calibration::Mse`]: the factor `t = k / bins` of the min/max range
    /// with the least squared error, the values taken at their bin's centre.
    fn mse_range(&self) -> (f32, f32) {
        let bins = HISTOGRAM_BINS as f64;
        let sides = [
            (&self.pos, f64::from(self.max)),
            (&self.neg, -f64::from(self.min)),
        ];
        let span = f64::from(self.max) - f64::from(self.min);
        let mut best = (f64::INFINITY, 1.0);
        for k in 1..=HISTOGRAM_BINS {
            let t = k as f64 / bins;
            let step = t * span / 255.0;
            let mut err = 0.0;
            for (counts, extreme) in sides {
                let (width, edge) = (extreme / bins, t * extreme);
                for (b, &c) in counts.iter().enumerate() {
                    if c == 0 {
                        continue;
                    }
                    let centre = (b as f64 + 0.5) * width;
                    err += c as f64
                        * if centre > edge {
                            (centre - edge).powi(2)
                        } else {
                            step * step / 12.0
                        };
                }
            }
            if err < best.0 {
                best = (err, t);
            }
        }
        let t = best.1 as f32;
        (t * self.min, t * self.max)
    }
}

/// Runs `net` in evaluation mode on `images` in batches, calling `visit`
/// with every layer's output after each batch.
fn run_batches(
    net: &mut Network,
    images: &[u8],
    visit: &mut dyn FnMut(&[&crate::kernels::tensor::Tensor]),
) {
    let len = net.input_shape().len();
    for chunk in images.chunks(CALIBRATION_BATCH * len) {
        net.set_input_u8(chunk, chunk.len() / len);
        net.forward(Mode::Eval);
        visit(&net.layer_outputs());
    }
}

/// The quantization of every activation tensor of `net` (batch norms
/// folded): the input's ([`ActQuant::INPUT`]) then each layer's output's,
/// `layers + 1` pairs, from `net`'s outputs on `images` (see the module
/// documentation for which tensor each one covers).
pub fn calibrate(
    net: &mut Network,
    images: &[u8],
    calibration: Calibration,
) -> Result<Vec<ActQuant>, QuantizeError> {
    let shape = net.input_shape();
    if images.is_empty() {
        return Err(QuantizeError::NoCalibrationImages);
    }
    if !images.len().is_multiple_of(shape.len()) {
        return Err(QuantizeError::CalibrationSize {
            bytes: images.len(),
            shape,
        });
    }
    let sources = range_sources(net.spec());
    let count = sources.len();
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); count];
    run_batches(net, images, &mut |outs| {
        for (i, src) in sources.iter().enumerate() {
            if let Some(s) = *src {
                let r = &mut ranges[i];
                for &v in &outs[s].data {
                    r.0 = r.0.min(v);
                    r.1 = r.1.max(v);
                }
            }
        }
    });
    if calibration != Calibration::MinMax {
        let mut hists: Vec<Option<Histogram>> = sources
            .iter()
            .zip(&ranges)
            .map(|(s, &(lo, hi))| s.map(|_| Histogram::new(lo.min(0.0), hi.max(0.0))))
            .collect();
        run_batches(net, images, &mut |outs| {
            for (h, src) in hists.iter_mut().zip(&sources) {
                if let (Some(h), Some(s)) = (h, src) {
                    h.add(&outs[*s].data);
                }
            }
        });
        for (r, h) in ranges.iter_mut().zip(&hists) {
            if let Some(h) = h {
                *r = match calibration {
                    Calibration::Percentile(percent) => h.percentile_range(percent),
                    _ => h.mse_range(),
                };
            }
        }
    }
    let inputs = net.spec().inputs();
    let mut acts = Vec::with_capacity(count + 1);
    acts.push(ActQuant::INPUT);
    for (i, src) in sources.iter().enumerate() {
        let q = match src {
            Some(_) => ActQuant::from_range(ranges[i].0, ranges[i].1),
            None => acts[inputs[i]],
        };
        acts.push(q);
    }
    Ok(acts)
}

/// The int8 model file of `net` (no batch norms: [`fold_batchnorms`]) with
/// activation quantization `acts` (`layers + 1` pairs, [`calibrate`]).
pub fn write_int8(net: &Network, acts: &[ActQuant]) -> Result<Vec<u8>, QuantizeError> {
    use safetensors::tensor::TensorView;
    let spec = net.spec();
    let shapes = spec.shapes()?;
    assert_eq!(acts.len(), spec.layers.len() + 1, "one pair per activation");
    let values: HashMap<String, (Vec<usize>, &[f32])> = net
        .named_tensors()
        .into_iter()
        .map(|(n, s, d)| (n, (s, d)))
        .collect();
    let layer_err = |layer: String, problem: String| QuantizeError::Layer { layer, problem };
    for (i, q) in acts.iter().enumerate() {
        if !q.is_valid() {
            let layer = if i == 0 {
                "input".to_string()
            } else {
                describe(spec, i - 1)
            };
            return Err(layer_err(layer, format!("unusable scale {}", q.scale)));
        }
    }
    let mut tensors: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = Vec::new();
    let inputs = spec.inputs();
    for (i, layer) in spec.layers.iter().enumerate() {
        let input = activation_shape(spec, &shapes, inputs[i]);
        let (x, y) = (acts[inputs[i]], acts[i + 1]);
        let param_layer = match layer {
            LayerSpec::Conv2d { kernel, .. } => ParamLayer::Conv2d {
                kernel: *kernel,
                in_channels: input.channels,
                filters: shapes[i].channels,
            },
            LayerSpec::Dense { units, .. } => ParamLayer::Dense {
                in_features: input.len(),
                units: *units,
            },
            LayerSpec::Add { from, .. } => {
                let s = spec
                    .source_of(i, from)
                    .map_err(|p| layer_err(describe(spec, i), p))?;
                if AddMultipliers::new(x, acts[s + 1], y).is_none() {
                    return Err(layer_err(
                        describe(spec, i),
                        "the scales give an add multiplier out of range".into(),
                    ));
                }
                continue;
            }
            LayerSpec::BatchNorm { .. } => {
                return Err(layer_err(
                    describe(spec, i),
                    "batch norms must be folded before writing an int8 model".into(),
                ))
            }
            // A table maps any input pair to any output pair.
            LayerSpec::Gelu { .. } => continue,
            LayerSpec::Relu { .. }
            | LayerSpec::MaxPool2d { .. }
            | LayerSpec::GlobalAvgPool { .. }
            | LayerSpec::Flatten { .. }
            | LayerSpec::Dropout { .. } => {
                if y != x {
                    return Err(layer_err(
                        describe(spec, i),
                        "must repeat its input's quantization".into(),
                    ));
                }
                continue;
            }
        };
        let name = layer
            .name()
            .expect("parameter layers are named")
            .to_string();
        let (shape, w) = &values[&format!("{name}.weight")];
        let bias = values[&format!("{name}.bias")].1;
        // f32 layout: conv [k, k, ci, co], dense [ci, co]: rows of co.
        let (ci, co) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let taps = w.len() / (ci * co);
        let groups = quant::groups(ci);
        let reach = (taps * quant::GROUP * groups) as u64 * 255 * quant::WEIGHT_MAX as u64;
        if reach > i32::MAX as u64 {
            return Err(layer_err(
                name,
                format!("{taps} taps × {ci} inputs could overflow the 32-bit accumulator"),
            ));
        }
        let scales: Vec<f32> = (0..co)
            .map(|c| {
                let max = (0..taps * ci)
                    .map(|r| w[r * co + c].abs())
                    .fold(0.0, f32::max);
                quant::weight_scale(max)
            })
            .collect();
        for &s in &scales {
            if Multiplier::for_conv(x.scale, s, y.scale).is_none() {
                return Err(layer_err(
                    name,
                    "the scales give a requantization multiplier out of range".into(),
                ));
            }
        }
        let mut q = vec![0u8; taps * groups * co * quant::GROUP];
        for t in 0..taps {
            for c in 0..ci {
                for o in 0..co {
                    let at = ((t * groups + c / quant::GROUP) * co + o) * quant::GROUP
                        + c % quant::GROUP;
                    q[at] = quant::quantize_weight(w[(t * ci + c) * co + o], scales[o]) as u8;
                }
            }
        }
        let b: Vec<u8> = bias
            .iter()
            .zip(&scales)
            .flat_map(|(&b, &s)| quant::quantize_bias(b, x.scale, s).to_le_bytes())
            .collect();
        let s: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        for (param, data) in [
            (Param::Weight, q),
            (Param::Bias, b),
            (Param::WeightScale, s),
        ] {
            debug_assert!(layer
                .layer_kind()
                .params_in(Precision::Int8)
                .contains(&param));
            let (shape, dtype) = param_layer
                .tensor(param, Precision::Int8)
                .expect("conv2d and dense have these tensors");
            debug_assert_eq!(shape.num_bytes_as(dtype), Some(data.len()));
            tensors.push((
                format!("{name}.{}", param.suffix()),
                shape.dims().to_vec(),
                dtype,
                data,
            ));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, dtype, data)| {
            TensorView::new(to_safetensors(*dtype), shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| layer_err(spec.name.clone(), e.to_string()))?;
    let metadata = HashMap::from([
        (
            model_format::KEY_FORMAT.to_string(),
            model_format::FORMAT.to_string(),
        ),
        (model_format::KEY_ARCHITECTURE.to_string(), spec.to_json()),
        (
            model_format::KEY_CLASS_NAMES.to_string(),
            encode_class_names(&net.class_names),
        ),
        (quant::KEY_QUANTIZATION.to_string(), quantization_json(acts)),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| layer_err(spec.name.clone(), e.to_string()))?;
    Ok(canonical_header(bytes))
}

/// The `quantization` metadata value: `{"scheme":"int8/1","activations":[[scale,zero_point],…]}`,
/// scales in their shortest round-trip decimal form.
pub fn quantization_json(acts: &[ActQuant]) -> String {
    let pairs: Vec<String> = acts
        .iter()
        .map(|q| format!("[{},{}]", q.scale, q.zero_point))
        .collect();
    format!(
        "{{\"scheme\":\"{}\",\"activations\":[{}]}}",
        quant::SCHEME,
        pairs.join(",")
    )
}

/// The `safetensors` crate's name for a format dtype.
fn to_safetensors(dtype: Dtype) -> safetensors::Dtype {
    match dtype {
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::I8 => safetensors::Dtype::I8,
        Dtype::I32 => safetensors::Dtype::I32,
    }
}

/// `layer i (conv2d conv1)` for messages.
fn describe(spec: &ModelSpec, i: usize) -> String {
    let l = &spec.layers[i];
    match l.name() {
        Some(n) => format!("{i} ({} {n})", l.kind()),
        None => format!("{i} ({})", l.kind()),
    }
}

/// The integer parameters of an int8 conv2d or dense layer
/// ([`Int8Reference::conv_params`]): `real weight = weight_scale[o] · weight`,
/// `real bias = input_scale · weight_scale[o] · bias`.
#[derive(Clone, Copy, Debug)]
pub struct Int8Conv<'a> {
    /// `[ky][kx][ci][co]` (a dense layer's `[in][units]`).
    pub weight: &'a [i8],
    pub bias: &'a [i32],
    pub weight_scale: &'a [f32],
    /// Whether its output is clamped at its zero point, real 0 (a fused
    /// relu; or a zero point of 0, where the clamp at 0 is the same).
    pub relu_fused: bool,
}

/// One layer of [`Int8Reference`].
#[derive(Clone, Debug)]
enum RefOp {
    /// conv2d, or dense as a 1×1 convolution over a 1×1 image.
    Conv {
        kernel: usize,
        stride: usize,
        pad: (usize, usize),
        /// `[ky][kx][ci][co]`, unpacked from the file's groups.
        weight: Vec<i8>,
        bias: Vec<i32>,
        weight_scale: Vec<f32>,
        mult: Vec<Multiplier>,
        /// Lower clamp: the output zero point when the next relu is fused.
        lo: u8,
    },
    Relu,
    /// `y = table[x]` ([`quant::gelu_table`] of the input's and output's quantizations).
    Gelu(Box<[u8; 256]>),
    MaxPool {
        size: usize,
        stride: usize,
        pad: (usize, usize),
    },
    GlobalAvgPool,
    Identity,
    Add {
        /// Index of the activation (0 = input) added to the input.
        skip: usize,
        mult: AddMultipliers,
    },
}

/// A plain integer forward pass of an int8 model file, straight from
/// FORMAT.md's "Integer semantics": `i64` accumulation (checked to fit the
/// format's `i32`), every activation kept. Slow and simple, the yardstick
/// for the quantizer's files and for faster kernels.
#[derive(Clone, Debug)]
pub struct Int8Reference {
    spec: ModelSpec,
    shapes: Vec<ImageShape>,
    /// The activation each layer reads ([`ModelSpec::inputs`]).
    inputs: Vec<usize>,
    acts: Vec<ActQuant>,
    ops: Vec<RefOp>,
    /// Class names from the file.
    pub class_names: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantizationEntry {
    scheme: String,
    activations: Vec<(serde_json::Number, u8)>,
}

impl Int8Reference {
    /// Reads an int8 model file; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, QuantizeError> {
        use safetensors::SafeTensors;
        let err = |problem: String| QuantizeError::Int8File {
            origin: origin.to_string(),
            problem,
        };
        let (_, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| err(format!("not safetensors: {e}")))?;
        let meta = metadata
            .metadata()
            .as_ref()
            .ok_or_else(|| err("no metadata".into()))?;
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| err(format!("no {key:?} in the metadata")))
        };
        if get(model_format::KEY_FORMAT)? != model_format::FORMAT {
            return Err(err("unknown format".into()));
        }
        let spec = ModelSpec::from_json_str(get(model_format::KEY_ARCHITECTURE)?)?;
        let entry: QuantizationEntry = serde_json::from_str(get(quant::KEY_QUANTIZATION)?)
            .map_err(|e| err(format!("quantization entry: {e}")))?;
        if entry.scheme != quant::SCHEME {
            return Err(err(format!("scheme {:?}", entry.scheme)));
        }
        let mut acts = Vec::with_capacity(entry.activations.len());
        for (scale, zero_point) in &entry.activations {
            // Through the decimal text: f32 parsing is correctly rounded.
            let scale: f32 = scale
                .to_string()
                .parse()
                .map_err(|_| err(format!("scale {scale}")))?;
            let q = ActQuant {
                scale,
                zero_point: *zero_point,
            };
            if !q.is_valid() {
                return Err(err(format!("scale {scale}")));
            }
            acts.push(q);
        }
        if acts.len() != spec.layers.len() + 1 {
            return Err(err(format!(
                "{} activation pairs for {} layers",
                acts.len(),
                spec.layers.len()
            )));
        }
        if acts[0] != ActQuant::INPUT {
            return Err(err("the input's pair is not [1/255, 0]".into()));
        }
        let shapes = spec.shapes()?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
        let read = spec.read_later();
        let inputs = spec.inputs();
        let mut ops = Vec::with_capacity(spec.layers.len());
        let mut expected_tensors = 0;
        for (i, layer) in spec.layers.iter().enumerate() {
            let input = activation_shape(&spec, &shapes, inputs[i]);
            let (x, y) = (acts[inputs[i]], acts[i + 1]);
            let repeat = || {
                if x == y {
                    Ok(())
                } else {
                    Err(err(format!(
                        "layer {} does not repeat its input's quantization",
                        describe(&spec, i)
                    )))
                }
            };
            let op = match layer {
                LayerSpec::Conv2d { .. } | LayerSpec::Dense { .. } => {
                    let name = layer.name().expect("parameter layers are named");
                    let (kernel, stride, pad, ci, co, param_layer) = match *layer {
                        LayerSpec::Conv2d {
                            kernel,
                            stride,
                            padding,
                            filters,
                            ..
                        } => {
                            let (_, top) = padding
                                .output_and_pad(input.height, kernel, stride)
                                .expect("validated");
                            let (_, left) = padding
                                .output_and_pad(input.width, kernel, stride)
                                .expect("validated");
                            (
                                kernel,
                                stride,
                                (top, left),
                                input.channels,
                                filters,
                                ParamLayer::Conv2d {
                                    kernel,
                                    in_channels: input.channels,
                                    filters,
                                },
                            )
                        }
                        LayerSpec::Dense { units, .. } => (
                            1,
                            1,
                            (0, 0),
                            input.len(),
                            units,
                            ParamLayer::Dense {
                                in_features: input.len(),
                                units,
                            },
                        ),
                        _ => unreachable!("conv2d or dense"),
                    };
                    let mut data = HashMap::new();
                    for &param in layer.layer_kind().params_in(Precision::Int8) {
                        let key = format!("{name}.{}", param.suffix());
                        let view = file
                            .tensor(&key)
                            .map_err(|_| err(format!("tensor {key} is missing")))?;
                        let (shape, dtype) =
                            param_layer.tensor(param, Precision::Int8).expect("has it");
                        if view.dtype() != to_safetensors(dtype) || view.shape() != shape.dims() {
                            return Err(err(format!(
                                "tensor {key} is {:?} {:?}, expected {} {:?}",
                                view.dtype(),
                                view.shape(),
                                dtype.tag(),
                                shape.dims()
                            )));
                        }
                        data.insert(param, view.data().to_vec());
                        expected_tensors += 1;
                    }
                    let four = |b: &[u8]| [b[0], b[1], b[2], b[3]];
                    let scales: Vec<f32> = data[&Param::WeightScale]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(four(b)))
                        .collect();
                    let bias: Vec<i32> = data[&Param::Bias]
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes(four(b)))
                        .collect();
                    let packed = &data[&Param::Weight];
                    let groups = quant::groups(ci);
                    let taps = kernel * kernel;
                    let mut weight = vec![0i8; taps * ci * co];
                    for t in 0..taps {
                        for g in 0..groups {
                            for o in 0..co {
                                for j in 0..quant::GROUP {
                                    let q = packed[((t * groups + g) * co + o) * quant::GROUP + j]
                                        as i8;
                                    let c = g * quant::GROUP + j;
                                    if c < ci {
                                        weight[(t * ci + c) * co + o] = q;
                                    } else if q != 0 {
                                        return Err(err(format!(
                                            "{name}.weight: padding entry not 0"
                                        )));
                                    }
                                    if q == i8::MIN {
                                        return Err(err(format!("{name}.weight holds -128")));
                                    }
                                }
                            }
                        }
                    }
                    let mut mult = Vec::with_capacity(co);
                    for &s in &scales {
                        if !(s.is_normal() && s > 0.0) {
                            return Err(err(format!("{name}.weight_scale holds {s}")));
                        }
                        mult.push(
                            Multiplier::for_conv(x.scale, s, y.scale)
                                .ok_or_else(|| err(format!("{name}: multiplier out of range")))?,
                        );
                    }
                    let reach = (taps * quant::GROUP * groups) as u64 * 255 * 127;
                    if reach > i32::MAX as u64 {
                        return Err(err(format!("{name}: the accumulator could overflow")));
                    }
                    RefOp::Conv {
                        kernel,
                        stride,
                        pad,
                        weight,
                        bias,
                        weight_scale: scales,
                        mult,
                        lo: if fuses_relu(&spec, &read, i) {
                            y.zero_point
                        } else {
                            0
                        },
                    }
                }
                LayerSpec::Relu { .. } => {
                    repeat()?;
                    RefOp::Relu
                }
                LayerSpec::Gelu { .. } => RefOp::Gelu(Box::new(quant::gelu_table(x, y))),
                LayerSpec::MaxPool2d {
                    size,
                    stride,
                    padding,
                    ..
                } => {
                    repeat()?;
                    let (size, stride) = (*size, *stride);
                    let (_, top) = padding
                        .output_and_pad(input.height, size, stride)
                        .expect("validated");
                    let (_, left) = padding
                        .output_and_pad(input.width, size, stride)
                        .expect("validated");
                    RefOp::MaxPool {
                        size,
                        stride,
                        pad: (top, left),
                    }
                }
                LayerSpec::GlobalAvgPool { .. } => {
                    repeat()?;
                    RefOp::GlobalAvgPool
                }
                LayerSpec::Flatten { .. } | LayerSpec::Dropout { .. } => {
                    repeat()?;
                    RefOp::Identity
                }
                LayerSpec::Add { from, .. } => {
                    let s = spec.source_of(i, from).map_err(err)?;
                    RefOp::Add {
                        skip: s + 1,
                        mult: AddMultipliers::new(x, acts[s + 1], y)
                            .ok_or_else(|| err(format!("add {i}: multiplier out of range")))?,
                    }
                }
                LayerSpec::BatchNorm { .. } => {
                    return Err(err("an int8 model has no batchnorm".into()))
                }
            };
            ops.push(op);
        }
        if file.len() != expected_tensors {
            return Err(err(format!(
                "{} tensors, the architecture has {expected_tensors}",
                file.len()
            )));
        }
        let class_names = match meta.get(model_format::KEY_CLASS_NAMES) {
            Some(value) => decode_class_names(value).map_err(err)?,
            None => Vec::new(),
        };
        Ok(Int8Reference {
            spec,
            shapes,
            inputs,
            acts,
            ops,
            class_names,
        })
    }

    /// The architecture (batch norms folded).
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The quantization of every activation (input first).
    pub fn activations(&self) -> &[ActQuant] {
        &self.acts
    }

    /// The parameters of layer `i` when it is a conv2d or dense layer.
    pub fn conv_params(&self, i: usize) -> Option<Int8Conv<'_>> {
        match &self.ops[i] {
            RefOp::Conv {
                weight,
                bias,
                weight_scale,
                lo,
                ..
            } => Some(Int8Conv {
                weight,
                bias,
                weight_scale,
                relu_fused: *lo == self.acts[i + 1].zero_point,
            }),
            _ => None,
        }
    }

    /// Every activation of one image (`u8` HWC of the input shape): the
    /// input, then each layer's output.
    pub fn forward_all(&self, image: &[u8]) -> Vec<Vec<u8>> {
        assert_eq!(image.len(), self.spec.input.len(), "image size");
        let mut outs: Vec<Vec<u8>> = Vec::with_capacity(self.ops.len() + 1);
        outs.push(image.to_vec());
        for (i, op) in self.ops.iter().enumerate() {
            let a = self.inputs[i];
            let input = activation_shape(&self.spec, &self.shapes, a);
            let out_shape = self.shapes[i];
            let (qx, qy) = (self.acts[a], self.acts[i + 1]);
            let x = &outs[a];
            let y = match op {
                RefOp::Conv {
                    kernel,
                    stride,
                    pad,
                    weight,
                    bias,
                    mult,
                    lo,
                    ..
                } => conv_ref(
                    x, input, out_shape, *kernel, *stride, *pad, weight, bias, mult, qx, qy, *lo,
                ),
                RefOp::Relu => x.iter().map(|&v| v.max(qx.zero_point)).collect(),
                RefOp::Gelu(table) => x.iter().map(|&v| table[usize::from(v)]).collect(),
                RefOp::MaxPool { size, stride, pad } => {
                    maxpool_ref(x, input, out_shape, *size, *stride, *pad)
                }
                RefOp::GlobalAvgPool => {
                    let (c, n) = (input.channels, input.pixels());
                    let z = i32::from(qx.zero_point);
                    (0..c)
                        .map(|ch| {
                            let sum: i64 = (0..n)
                                .map(|p| i64::from(x[p * c + ch]) - i64::from(z))
                                .sum();
                            let sum = i32::try_from(sum).expect("at most 2^16·2^16·255");
                            (z + quant::rounded_div(sum, n as i32)).clamp(0, 255) as u8
                        })
                        .collect()
                }
                RefOp::Identity => x.clone(),
                RefOp::Add { skip, mult } => {
                    let qs = self.acts[*skip];
                    x.iter()
                        .zip(&outs[*skip])
                        .map(|(&a, &b)| {
                            quant::add(a, qx.zero_point, b, qs.zero_point, qy.zero_point, mult)
                        })
                        .collect()
                }
            };
            outs.push(y);
        }
        outs
    }

    /// The last layer's quantized output (the logits) for one image.
    pub fn logits_q(&self, image: &[u8]) -> Vec<u8> {
        self.forward_all(image).pop().expect("at least the input")
    }

    /// Class probabilities: `softmax(s · (q − z))` of the last layer's output.
    pub fn probabilities(&self, image: &[u8]) -> Vec<f32> {
        let q = *self.acts.last().expect("at least the input");
        let mut p: Vec<f32> = self
            .logits_q(image)
            .into_iter()
            .map(|v| q.dequantize(v))
            .collect();
        crate::model::loss::softmax_in_place(&mut p);
        p
    }
}

/// Integer convolution (dense: `kernel` 1 on a 1×1 image), per FORMAT.md.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[u8],
    input: ImageShape,
    out: ImageShape,
    kernel: usize,
    stride: usize,
    (top, left): (usize, usize),
    weight: &[i8],
    bias: &[i32],
    mult: &[Multiplier],
    qx: ActQuant,
    qy: ActQuant,
    lo: u8,
) -> Vec<u8> {
    // A dense layer's input is a vector: a 1×1 image of all its features.
    let (ih, iw, ci) = (input.height, input.width, input.channels);
    let co = out.channels;
    let zx = i64::from(qx.zero_point);
    let mut y = vec![0u8; out.len()];
    let mut acc = vec![0i64; co];
    for oy in 0..out.height {
        for ox in 0..out.width {
            for (a, &b) in acc.iter_mut().zip(bias) {
                *a = i64::from(b);
            }
            for ky in 0..kernel {
                let Some(iy) = (oy * stride + ky).checked_sub(top).filter(|&v| v < ih) else {
                    continue;
                };
                for kx in 0..kernel {
                    let Some(ix) = (ox * stride + kx).checked_sub(left).filter(|&v| v < iw) else {
                        continue;
                    };
                    let px = &x[(iy * iw + ix) * ci..][..ci];
                    let taps = &weight[(ky * kernel + kx) * ci * co..][..ci * co];
                    for (&v, w) in px.iter().zip(taps.chunks_exact(co)) {
                        let d = i64::from(v) - zx;
                        for (a, &w) in acc.iter_mut().zip(w) {
                            *a += d * i64::from(w);
                        }
                    }
                }
            }
            let row = &mut y[(oy * out.width + ox) * co..][..co];
            for ((o, &a), &m) in row.iter_mut().zip(&acc).zip(mult) {
                let a = i32::try_from(a).expect("the format bounds the accumulator to i32");
                *o = quant::requantize(a, m, qy.zero_point, lo);
            }
        }
    }
    y
}

/// Integer max-pooling: the `u8` maximum over the window's cells inside the image.
fn maxpool_ref(
    x: &[u8],
    input: ImageShape,
    out: ImageShape,
    size: usize,
    stride: usize,
    (top, left): (usize, usize),
) -> Vec<u8> {
    let c = input.channels;
    let mut y = vec![0u8; out.len()];
    for oy in 0..out.height {
        for ox in 0..out.width {
            for ch in 0..c {
                let mut m = 0u8;
                for ky in 0..size {
                    let Some(iy) = (oy * stride + ky)
                        .checked_sub(top)
                        .filter(|&v| v < input.height)
                    else {
                        continue;
                    };
                    for kx in 0..size {
                        let Some(ix) = (ox * stride + kx)
                            .checked_sub(left)
                            .filter(|&v| v < input.width)
                        else {
                            continue;
                        };
                        m = m.max(x[(iy * input.width + ix) * c + ch]);
                    }
                }
                y[(oy * out.width + ox) * c + ch] = m;
            }
        }
    }
    y
}
