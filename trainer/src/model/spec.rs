//! Architectures as data: the model spec format (`models/*.json`).
//!
//! A spec lists the layers and their settings; [`ModelSpec::validate`] infers
//! every layer's output shape and rejects a spec that cannot work, naming the
//! layer, before any training starts. The canonical form (every field filled in,
//! every parameter layer named) is what the exporter stores in the model file,
//! so a file alone says how to rebuild its network. See `docs/FORMAT.md`.

use crate::kernels::tensor::ImageShape;
use serde::{Deserialize, Serialize};

pub use crate::layers::Padding;

// The defaults of optional fields: the format's (FORMAT.md).
use model_format::defaults;
fn default_stride() -> usize {
    defaults::CONV_STRIDE
}
fn default_pool() -> usize {
    defaults::POOL_SIZE
}
fn default_pool_stride() -> usize {
    defaults::POOL_STRIDE
}
fn default_same() -> Padding {
    Padding::from_format(defaults::CONV_PADDING)
}
fn default_valid() -> Padding {
    Padding::from_format(defaults::POOL_PADDING)
}
fn default_momentum() -> f32 {
    defaults::BN_MOMENTUM
}
fn default_epsilon() -> f32 {
    defaults::BN_EPSILON
}

/// One layer of a spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv2d {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        filters: usize,
        kernel: usize,
        #[serde(default = "default_stride")]
        stride: usize,
        #[serde(default = "default_same")]
        padding: Padding,
    },
    Relu {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    Gelu {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    #[serde(rename = "maxpool2d")]
    MaxPool2d {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        #[serde(default = "default_pool")]
        size: usize,
        #[serde(default = "default_pool_stride")]
        stride: usize,
        #[serde(default = "default_valid")]
        padding: Padding,
    },
    GlobalAvgPool {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    #[serde(rename = "batchnorm")]
    BatchNorm {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        #[serde(default = "default_momentum")]
        momentum: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
    },
    Flatten {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    Dropout {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        rate: f32,
    },
    Dense {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        units: usize,
    },
    /// Residual connection: the input plus the output of the earlier layer
    /// named `from` (same shape).
    Add {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        from: String,
    },
}

impl LayerSpec {
    /// The layer type, as the format names it.
    pub fn layer_kind(&self) -> model_format::LayerKind {
        use model_format::LayerKind as K;
        match self {
            LayerSpec::Conv2d { .. } => K::Conv2d,
            LayerSpec::Relu { .. } => K::Relu,
            LayerSpec::Gelu { .. } => K::Gelu,
            LayerSpec::MaxPool2d { .. } => K::MaxPool2d,
            LayerSpec::GlobalAvgPool { .. } => K::GlobalAvgPool,
            LayerSpec::BatchNorm { .. } => K::BatchNorm,
            LayerSpec::Flatten { .. } => K::Flatten,
            LayerSpec::Dropout { .. } => K::Dropout,
            LayerSpec::Dense { .. } => K::Dense,
            LayerSpec::Add { .. } => K::Add,
        }
    }

    /// The `type` tag, as written in spec files.
    pub fn kind(&self) -> &'static str {
        self.layer_kind().tag()
    }

    /// The layer's name: given in the spec (any layer may have one, for an
    /// `add` to refer to), or assigned to parameter layers (`conv1`, …), whose
    /// tensors it prefixes.
    pub fn name(&self) -> Option<&str> {
        match self {
            LayerSpec::Conv2d { name, .. }
            | LayerSpec::Relu { name, .. }
            | LayerSpec::Gelu { name, .. }
            | LayerSpec::MaxPool2d { name, .. }
            | LayerSpec::GlobalAvgPool { name, .. }
            | LayerSpec::BatchNorm { name, .. }
            | LayerSpec::Flatten { name, .. }
            | LayerSpec::Dropout { name, .. }
            | LayerSpec::Dense { name, .. }
            | LayerSpec::Add { name, .. } => name.as_deref(),
        }
    }

    /// The earlier layer whose output this layer reads, when the spec names
    /// one (`input`); otherwise it reads the previous layer's output (the
    /// first layer: the image). With it a spec is a small DAG, such as a
    /// ResNet's projection shortcut.
    pub fn input_name(&self) -> Option<&str> {
        match self {
            LayerSpec::Conv2d { input, .. }
            | LayerSpec::Relu { input, .. }
            | LayerSpec::Gelu { input, .. }
            | LayerSpec::MaxPool2d { input, .. }
            | LayerSpec::GlobalAvgPool { input, .. }
            | LayerSpec::BatchNorm { input, .. }
            | LayerSpec::Flatten { input, .. }
            | LayerSpec::Dropout { input, .. }
            | LayerSpec::Dense { input, .. }
            | LayerSpec::Add { input, .. } => input.as_deref(),
        }
    }

    /// The names of the earlier layers this one reads (its `input`, an
    /// add's `from`), for renaming.
    pub fn read_names_mut(&mut self) -> impl Iterator<Item = &mut String> {
        let (input, from) = match self {
            LayerSpec::Add { input, from, .. } => (input, Some(from)),
            LayerSpec::Conv2d { input, .. }
            | LayerSpec::Relu { input, .. }
            | LayerSpec::Gelu { input, .. }
            | LayerSpec::MaxPool2d { input, .. }
            | LayerSpec::GlobalAvgPool { input, .. }
            | LayerSpec::BatchNorm { input, .. }
            | LayerSpec::Flatten { input, .. }
            | LayerSpec::Dropout { input, .. }
            | LayerSpec::Dense { input, .. } => (input, None),
        };
        input.as_mut().into_iter().chain(from)
    }

    fn name_slot(&mut self) -> &mut Option<String> {
        match self {
            LayerSpec::Conv2d { name, .. }
            | LayerSpec::Relu { name, .. }
            | LayerSpec::Gelu { name, .. }
            | LayerSpec::MaxPool2d { name, .. }
            | LayerSpec::GlobalAvgPool { name, .. }
            | LayerSpec::BatchNorm { name, .. }
            | LayerSpec::Flatten { name, .. }
            | LayerSpec::Dropout { name, .. }
            | LayerSpec::Dense { name, .. }
            | LayerSpec::Add { name, .. } => name,
        }
    }
}

/// A whole network: input shape and layers. The last layer's output is the logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub input: ImageShape,
    pub layers: Vec<LayerSpec>,
}

/// Largest side (height, width, channels, filters, units, kernel) a spec may
/// give, as in `infer`: bigger models are not what this toolkit is for, and
/// the bound keeps every shape product far from overflow.
pub const MAX_DIM: usize = 1 << 16;

/// Most values in one activation or one layer's weights (1 GiB of `f32`).
pub const MAX_VALUES: usize = 1 << 28;

/// Whether `shape` holds at most [`MAX_VALUES`] values (checked without overflowing).
fn fits(shape: ImageShape) -> bool {
    shape
        .height
        .checked_mul(shape.width)
        .and_then(|p| p.checked_mul(shape.channels))
        .is_some_and(|n| n <= MAX_VALUES)
}

/// The sizes a layer's spec gives (filters, kernel, units, pool size).
fn given_sizes(layer: &LayerSpec) -> Vec<usize> {
    match layer {
        LayerSpec::Conv2d {
            filters, kernel, ..
        } => vec![*filters, *kernel],
        LayerSpec::MaxPool2d { size, stride, .. } => vec![*size, *stride],
        LayerSpec::Dense { units, .. } => vec![*units],
        _ => Vec::new(),
    }
}

/// Why a spec was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read model spec {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Not a `source`: serde's message (with its line and column) is the
    /// problem itself, said once.
    #[error("invalid model spec {origin}: {error}")]
    Json {
        origin: String,
        error: serde_json::Error,
    },
    #[error("model spec {model:?}, layer {index} ({kind}): {problem}")]
    Layer {
        model: String,
        index: usize,
        kind: &'static str,
        problem: String,
    },
    #[error("model spec {model:?}: {problem}")]
    Model { model: String, problem: String },
    #[error("unknown built-in model {0:?} (built in: model1, model2, model3, fast, mnist, cifar100, resnet8; or give a path to a .json spec)")]
    UnknownBuiltin(String),
}

impl ModelSpec {
    /// Parses an architecture and checks it (see [`ModelSpec::checked`]).
    /// A spec *file* may also carry a training recipe: read those with
    /// [`crate::train::spec_file::SpecFile`].
    pub fn from_json_str(json: &str) -> Result<Self, SpecError> {
        let spec: ModelSpec = serde_json::from_str(json).map_err(|error| SpecError::Json {
            origin: "<string>".to_string(),
            error,
        })?;
        spec.checked()
    }

    /// Names unnamed parameter layers (`conv1`, …) and validates the whole
    /// spec (see [`ModelSpec::validate`]).
    pub fn checked(mut self) -> Result<Self, SpecError> {
        self.assign_names()?;
        self.validate()?;
        Ok(self)
    }

    /// The canonical JSON stored in exported files.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serialises")
    }

    /// Names unnamed parameter layers `conv1, conv2, …, bn1, …, dense1, …`
    /// (the format's [`model_format::DefaultNames`]) and rejects duplicate names.
    fn assign_names(&mut self) -> Result<(), SpecError> {
        let mut defaults = model_format::DefaultNames::new();
        let mut seen = std::collections::HashSet::new();
        for (index, layer) in self.layers.iter_mut().enumerate() {
            let kind = layer.kind();
            if let Some(default) = defaults.next(layer.layer_kind()) {
                layer
                    .name_slot()
                    .get_or_insert_with(|| default.as_str().to_string());
            }
            if let Some(name) = layer.name().map(str::to_string) {
                if name.is_empty() || name.contains(['"', '\\', ',']) {
                    return Err(self.layer_error_at(index, kind, format!("invalid name {name:?}")));
                }
                if !seen.insert(name.clone()) {
                    return Err(self.layer_error_at(
                        index,
                        kind,
                        format!("duplicate name {name:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn layer_error_at(&self, index: usize, kind: &'static str, problem: String) -> SpecError {
        SpecError::Layer {
            model: self.name.clone(),
            index,
            kind,
            problem,
        }
    }

    /// Output shape of every layer, checking that each layer fits its input.
    pub fn shapes(&self) -> Result<Vec<ImageShape>, SpecError> {
        let mut shape = self.input;
        let input_sides = [shape.height, shape.width, shape.channels];
        if !fits(shape) || input_sides.iter().any(|&d| d > MAX_DIM) {
            return Err(SpecError::Model {
                model: self.name.clone(),
                problem: format!(
                    "input shape {}×{}×{} is too large (at most {MAX_DIM} a side, {MAX_VALUES} values)",
                    shape.height, shape.width, shape.channels
                ),
            });
        }
        if shape.is_empty() {
            return Err(SpecError::Model {
                model: self.name.clone(),
                problem: format!("input shape {shape} is empty"),
            });
        }
        let mut shapes: Vec<ImageShape> = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let err = |problem: String| self.layer_error_at(index, layer.kind(), problem);
            let input = match self.input_of(index).map_err(&err)? {
                0 => self.input,
                a => shapes[a - 1],
            };
            shape = input;
            if given_sizes(layer).iter().any(|&d| d > MAX_DIM) {
                return Err(err(format!("a size above {MAX_DIM} is too large")));
            }
            shape = match layer {
                LayerSpec::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    if *filters == 0 || *kernel == 0 {
                        return Err(err("filters and kernel must be at least 1".into()));
                    }
                    if !(1..=2).contains(stride) {
                        return Err(err(format!("stride {stride} is not supported (1 or 2)")));
                    }
                    if shape.is_vector() && shape.channels > 1 && *kernel > 1 {
                        return Err(err(format!(
                            "input is a vector ({shape}); a convolution needs an image"
                        )));
                    }
                    let (h, _) = padding.output_and_pad(shape.height, *kernel, *stride).ok_or_else(|| {
                        err(format!("kernel {kernel} is larger than the {shape} input with valid padding"))
                    })?;
                    let (w, _) = padding.output_and_pad(shape.width, *kernel, *stride).ok_or_else(|| {
                        err(format!("kernel {kernel} is larger than the {shape} input with valid padding"))
                    })?;
                    ImageShape::new(h, w, *filters)
                }
                LayerSpec::MaxPool2d {
                    size,
                    stride,
                    padding,
                    ..
                } => {
                    if *size == 0 || *stride == 0 {
                        return Err(err("size and stride must be at least 1".into()));
                    }
                    let too_small = || {
                        err(format!(
                            "pool {size} is larger than the {shape} input with valid padding"
                        ))
                    };
                    let (h, _) = padding
                        .output_and_pad(shape.height, *size, *stride)
                        .ok_or_else(too_small)?;
                    let (w, _) = padding
                        .output_and_pad(shape.width, *size, *stride)
                        .ok_or_else(too_small)?;
                    ImageShape::new(h, w, shape.channels)
                }
                LayerSpec::GlobalAvgPool { .. } => ImageShape::vector(shape.channels),
                LayerSpec::Flatten { .. } => ImageShape::vector(shape.len()),
                LayerSpec::Relu { .. } | LayerSpec::Gelu { .. } => shape,
                LayerSpec::Add { from, .. } => {
                    let source = self.source_of(index, from).map_err(&err)?;
                    if shapes[source] != shape {
                        return Err(err(format!(
                            "layer {from:?} gives {}, but the input here is {shape}: an add needs the same shape",
                            shapes[source]
                        )));
                    }
                    shape
                }
                LayerSpec::BatchNorm {
                    momentum, epsilon, ..
                } => {
                    if !(0.0..1.0).contains(momentum) || *epsilon <= 0.0 {
                        return Err(err("momentum must be in [0, 1) and epsilon > 0".into()));
                    }
                    shape
                }
                LayerSpec::Dropout { rate, .. } => {
                    if !(0.0..1.0).contains(rate) {
                        return Err(err(format!("rate {rate} must be in [0, 1)")));
                    }
                    shape
                }
                LayerSpec::Dense { units, .. } => {
                    if !shape.is_vector() {
                        return Err(err(format!(
                            "input is an image ({shape}); put a flatten or global_avg_pool layer before a dense layer"
                        )));
                    }
                    if *units == 0 {
                        return Err(err("units must be at least 1".into()));
                    }
                    ImageShape::vector(*units)
                }
            };
            if !fits(shape) {
                return Err(err(format!(
                    "output {}×{}×{} is too large (at most {MAX_VALUES} values)",
                    shape.height, shape.width, shape.channels
                )));
            }
            let params = match layer {
                LayerSpec::Conv2d { kernel, .. } => kernel
                    .checked_mul(*kernel)
                    .and_then(|k| k.checked_mul(input.channels))
                    .and_then(|k| k.checked_mul(shape.channels)),
                LayerSpec::Dense { units, .. } => input.len().checked_mul(*units),
                _ => Some(0),
            };
            if params.is_none_or(|p| p > MAX_VALUES) {
                return Err(err(format!("more than {MAX_VALUES} weights in one layer")));
            }
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// The index of the layer named `from`, which must come before layer `index`.
    pub fn source_of(&self, index: usize, from: &str) -> Result<usize, String> {
        match self.layers.iter().position(|l| l.name() == Some(from)) {
            Some(j) if j < index => Ok(j),
            Some(_) => Err(format!("layer {from:?} does not come before this layer")),
            None => Err(format!("no layer is named {from:?}")),
        }
    }

    /// The activation layer `index` reads: 0 for the image, `j + 1` for the
    /// output of layer `j` (the layer its `input` names, or else the previous one).
    pub fn input_of(&self, index: usize) -> Result<usize, String> {
        match self.layers[index].input_name() {
            Some(name) => self.source_of(index, name).map(|j| j + 1),
            None => Ok(index),
        }
    }

    /// [`ModelSpec::input_of`] for every layer (of a validated spec).
    pub fn inputs(&self) -> Vec<usize> {
        (0..self.layers.len())
            .map(|i| self.input_of(i).expect("validated: inputs come first"))
            .collect()
    }

    /// For every layer, whether a layer other than the next one reads its
    /// output: a later layer's `input`, or an add's `from` (of a validated spec).
    pub fn read_later(&self) -> Vec<bool> {
        let mut read = vec![false; self.layers.len()];
        for (i, layer) in self.layers.iter().enumerate() {
            let named = [
                layer.input_name(),
                match layer {
                    LayerSpec::Add { from, .. } => Some(from.as_str()),
                    _ => None,
                },
            ];
            for name in named.into_iter().flatten() {
                if let Ok(j) = self.source_of(i, name) {
                    read[j] = true;
                }
            }
        }
        read
    }

    /// Checks the whole spec: every layer fits, and the output is a vector of logits.
    pub fn validate(&self) -> Result<(), SpecError> {
        let shapes = self.shapes()?;
        let model_err = |problem: &str| SpecError::Model {
            model: self.name.clone(),
            problem: problem.to_string(),
        };
        let last = shapes.last().ok_or_else(|| model_err("has no layers"))?;
        // Every output but the logits is read by some layer: a layer whose
        // output nothing reads would be computed for nothing.
        let read = self.read_later();
        for (i, layer) in self.layers.iter().enumerate() {
            let next_reads = self
                .layers
                .get(i + 1)
                .is_none_or(|next| next.input_name().is_none());
            if !next_reads && !read[i] {
                return Err(self.layer_error_at(
                    i,
                    layer.kind(),
                    "no layer reads its output (the next one names another `input`)".into(),
                ));
            }
        }
        if !last.is_vector() || !matches!(self.layers.last(), Some(LayerSpec::Dense { .. })) {
            return Err(model_err(
                "the last layer must be a dense layer giving the class logits",
            ));
        }
        Ok(())
    }

    /// How many `f32` values the model file of this architecture holds: every
    /// parameter and running statistic (conv `k·k·Cin·Cout + Cout`, batch norm
    /// `4·C`, dense `in·units + units`). Known before any layer is built, so a
    /// reader can check a file's size first.
    pub fn saved_values(&self) -> Result<usize, SpecError> {
        let shapes = self.shapes()?;
        let mut total = 0usize;
        for (i, layer) in self.layers.iter().enumerate() {
            let input = match self
                .input_of(i)
                .map_err(|p| self.layer_error_at(i, layer.kind(), p))?
            {
                0 => self.input,
                a => shapes[a - 1],
            };
            let out = shapes[i];
            // Bounded by `shapes` (each layer's weights ≤ MAX_VALUES, at most
            // a few thousand layers), so these sums cannot overflow a usize.
            total += match layer {
                LayerSpec::Conv2d { kernel, .. } => {
                    kernel * kernel * input.channels * out.channels + out.channels
                }
                LayerSpec::BatchNorm { .. } => 4 * out.channels,
                LayerSpec::Dense { units, .. } => input.len() * units + units,
                _ => 0,
            };
        }
        Ok(total)
    }

    /// Number of classes (width of the last layer).
    pub fn num_classes(&self) -> usize {
        self.shapes()
            .ok()
            .and_then(|s| s.last().map(|s| s.len()))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(name: &str) -> ModelSpec {
        crate::train::spec_file::SpecFile::builtin(name)
            .unwrap()
            .model
    }

    #[test]
    fn builtins_parse_and_name_layers() {
        let m1 = builtin("model1");
        let names: Vec<_> = m1.layers.iter().filter_map(|l| l.name()).collect();
        assert_eq!(
            names,
            ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "dense1", "dense2"]
        );
        assert_eq!(m1.num_classes(), 10);
        assert_eq!(m1.shapes().unwrap()[15], ImageShape::vector(2048));
        for name in ["model2", "model3"] {
            assert_eq!(builtin(name).num_classes(), 10);
        }
    }

    #[test]
    fn a_training_object_is_not_part_of_an_architecture() {
        let json = r#"{"name":"t","input":{"height":8,"width":8,"channels":3},
            "layers":[{"type":"flatten"},{"type":"dense","units":2}],
            "training":{"optimizer":"sgd"}}"#;
        let err = ModelSpec::from_json_str(json).unwrap_err().to_string();
        assert!(err.contains("unknown field `training`"), "{err}");
    }

    #[test]
    fn add_layers_check_their_source() {
        let ok = spec_with(
            r#"{"type":"conv2d","filters":3,"kernel":3,"name":"a"},{"type":"relu","name":"r"},
               {"type":"add","from":"r"},{"type":"add","from":"a"},{"type":"flatten"},{"type":"dense","units":2}"#,
        )
        .unwrap();
        assert_eq!(ok.source_of(3, "a"), Ok(0));
        assert_eq!(ok.layers[1].name(), Some("r"));
        let again = ModelSpec::from_json_str(&ok.to_json()).unwrap();
        assert_eq!(again, ok);
        let err = |layers: &str| spec_with(layers).unwrap_err().to_string();
        let e = err(r#"{"type":"add","from":"x"},{"type":"flatten"},{"type":"dense","units":2}"#);
        assert!(
            e.contains("layer 0 (add)") && e.contains("no layer is named \"x\""),
            "{e}"
        );
        let e = err(
            r#"{"type":"add","from":"f"},{"type":"flatten","name":"f"},{"type":"dense","units":2}"#,
        );
        assert!(e.contains("does not come before"), "{e}");
        let e = err(
            r#"{"type":"relu","name":"r"},{"type":"conv2d","filters":4,"kernel":3},{"type":"add","from":"r"},{"type":"flatten"},{"type":"dense","units":2}"#,
        );
        assert!(
            e.contains("layer 2 (add)") && e.contains("same shape"),
            "{e}"
        );
        let e = err(
            r#"{"type":"relu","name":"conv1"},{"type":"conv2d","filters":4,"kernel":3},{"type":"flatten"},{"type":"dense","units":2}"#,
        );
        assert!(e.contains("duplicate name \"conv1\""), "{e}");
    }

    #[test]
    fn builtins_keep_their_canonical_form() {
        // No names appear on layers that were not given one (infer reads this form).
        let json = builtin("model1").to_json();
        assert!(json.contains(r#"{"type":"relu"}"#), "{json}");
        assert!(json.contains(r#"{"type":"flatten"}"#), "{json}");
        assert!(!json.contains("training"));
    }

    #[test]
    fn canonical_json_round_trips() {
        let m1 = builtin("model3");
        let again = ModelSpec::from_json_str(&m1.to_json()).unwrap();
        assert_eq!(m1, again);
    }

    #[test]
    fn same_padding_follows_tensorflow() {
        // 5 → ceil(5/2) = 3 with total padding 1, all of it after.
        assert_eq!(Padding::Same.output_and_pad(5, 2, 2), Some((3, 0)));
        assert_eq!(Padding::Same.output_and_pad(32, 3, 1), Some((32, 1)));
        assert_eq!(Padding::Same.output_and_pad(32, 5, 1), Some((32, 2)));
        assert_eq!(Padding::Same.output_and_pad(8, 3, 2), Some((4, 0)));
        assert_eq!(Padding::Valid.output_and_pad(32, 3, 1), Some((30, 0)));
        assert_eq!(Padding::Valid.output_and_pad(2, 3, 1), None);
    }

    fn spec_with(layers: &str) -> Result<ModelSpec, SpecError> {
        ModelSpec::from_json_str(&format!(
            r#"{{"name":"t","input":{{"height":8,"width":8,"channels":3}},"layers":[{layers}]}}"#
        ))
    }

    #[test]
    fn dense_after_conv_without_flatten_names_the_layer() {
        let err =
            spec_with(r#"{"type":"conv2d","filters":4,"kernel":3},{"type":"dense","units":10}"#)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("layer 1 (dense)") && err.contains("flatten"),
            "{err}"
        );
    }

    #[test]
    fn unknown_layer_names_the_line() {
        let err = spec_with("{\"type\":\"flatten\"},\n{\"type\":\"lstm\"}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lstm") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn kernel_larger_than_input_is_rejected() {
        let err = spec_with(r#"{"type":"conv2d","filters":4,"kernel":9,"padding":"valid"},{"type":"flatten"},{"type":"dense","units":2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 0 (conv2d)"), "{err}");
    }

    /// Sizes whose products overflow, or are absurd, are errors, not panics
    /// (found by fuzzing: fuzz/artifacts/spec_file/).
    #[test]
    fn huge_sizes_are_refused() {
        let big = |input: &str, layers: &str| {
            ModelSpec::from_json_str(&format!(
                r#"{{"name":"t","input":{input},"layers":[{layers}]}}"#
            ))
            .unwrap_err()
            .to_string()
        };
        let e = big(
            r#"{"height":4294967296,"width":4294967296,"channels":4294967296}"#,
            r#"{"type":"flatten"},{"type":"dense","units":2}"#,
        );
        assert!(e.contains("too large"), "{e}");
        let e = big(
            r#"{"height":60000,"width":60000,"channels":3}"#,
            r#"{"type":"flatten"},{"type":"dense","units":2}"#,
        );
        assert!(e.contains("too large"), "{e}");
        let e = big(
            r#"{"height":8,"width":8,"channels":3}"#,
            r#"{"type":"flatten"},{"type":"dense","units":68719476736}"#,
        );
        assert!(
            e.contains("layer 1 (dense)") && e.contains("too large"),
            "{e}"
        );
        let e = big(
            r#"{"height":8,"width":8,"channels":3}"#,
            r#"{"type":"conv2d","filters":65536,"kernel":3},{"type":"conv2d","filters":65536,"kernel":3},{"type":"flatten"},{"type":"dense","units":2}"#,
        );
        assert!(e.contains("weights"), "{e}");
    }

    #[test]
    fn saved_values_count_every_tensor() {
        let spec = spec_with(
            r#"{"type":"conv2d","filters":4,"kernel":3},{"type":"batchnorm"},{"type":"flatten"},{"type":"dense","units":2}"#,
        )
        .unwrap();
        // conv 3·3·3·4 + 4, bn 4·4, dense 8·8·4·2 + 2.
        assert_eq!(spec.saved_values().unwrap(), 112 + 16 + 514);
        let net = crate::model::network::Network::new(&spec, 1).unwrap();
        let saved: usize = net.named_tensors().iter().map(|(_, _, d)| d.len()).sum();
        assert_eq!(spec.saved_values().unwrap(), saved);
    }

    #[test]
    fn last_layer_must_be_dense() {
        let err = spec_with(r#"{"type":"flatten"},{"type":"dense","units":4},{"type":"relu"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("last layer"), "{err}");
    }
}
