//! Architectures as data: the model spec format (`models/*.json`).
//!
//! A spec lists the layers and their settings; [`ModelSpec::validate`] infers
//! every layer's output shape and rejects a spec that cannot work, naming the
//! layer, before any training starts. The canonical form (every field filled in,
//! every parameter layer named) is what the exporter stores in the model file,
//! so a file alone says how to rebuild its network. See `docs/FORMAT.md`.

use crate::tensor::ImageShape;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Padding mode, with TensorFlow's semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Output `ceil(in / stride)`, zero (or, for pooling, ignored) cells around the input.
    Same,
    /// Output `(in - k) / stride + 1`, no padding.
    Valid,
}

impl Padding {
    /// Output length and padding before (top/left) for one spatial axis.
    pub fn output_and_pad(
        self,
        input: usize,
        kernel: usize,
        stride: usize,
    ) -> Option<(usize, usize)> {
        match self {
            Padding::Valid => (input >= kernel).then(|| ((input - kernel) / stride + 1, 0)),
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out - 1) * stride + kernel).saturating_sub(input);
                Some((out, total / 2))
            }
        }
    }
}

fn default_stride() -> usize {
    1
}
fn default_pool() -> usize {
    2
}
fn default_same() -> Padding {
    Padding::Same
}
fn default_valid() -> Padding {
    Padding::Valid
}
fn default_momentum() -> f32 {
    0.99
}
fn default_epsilon() -> f32 {
    1e-3
}

/// One layer of a spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv2d {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
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
    },
    #[serde(rename = "maxpool2d")]
    MaxPool2d {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default = "default_pool")]
        size: usize,
        #[serde(default = "default_pool")]
        stride: usize,
        #[serde(default = "default_valid")]
        padding: Padding,
    },
    GlobalAvgPool {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    #[serde(rename = "batchnorm")]
    BatchNorm {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default = "default_momentum")]
        momentum: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
    },
    Flatten {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Dropout {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        rate: f32,
    },
    Dense {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        units: usize,
    },
    /// Residual connection: the input plus the output of the earlier layer
    /// named `from` (same shape).
    Add {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        from: String,
    },
}

impl LayerSpec {
    /// The `type` tag, as written in spec files.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::Relu { .. } => "relu",
            LayerSpec::MaxPool2d { .. } => "maxpool2d",
            LayerSpec::GlobalAvgPool { .. } => "global_avg_pool",
            LayerSpec::BatchNorm { .. } => "batchnorm",
            LayerSpec::Flatten { .. } => "flatten",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Add { .. } => "add",
        }
    }

    /// The layer's name: given in the spec (any layer may have one, for an
    /// `add` to refer to), or assigned to parameter layers (`conv1`, …), whose
    /// tensors it prefixes.
    pub fn name(&self) -> Option<&str> {
        match self {
            LayerSpec::Conv2d { name, .. }
            | LayerSpec::Relu { name }
            | LayerSpec::MaxPool2d { name, .. }
            | LayerSpec::GlobalAvgPool { name }
            | LayerSpec::BatchNorm { name, .. }
            | LayerSpec::Flatten { name }
            | LayerSpec::Dropout { name, .. }
            | LayerSpec::Dense { name, .. }
            | LayerSpec::Add { name, .. } => name.as_deref(),
        }
    }

    fn name_slot(&mut self) -> Option<(&'static str, &mut Option<String>)> {
        match self {
            LayerSpec::Conv2d { name, .. } => Some(("conv", name)),
            LayerSpec::BatchNorm { name, .. } => Some(("bn", name)),
            LayerSpec::Dense { name, .. } => Some(("dense", name)),
            _ => None,
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
    /// The training recipe that goes with the model (optional; the
    /// `trainer train` flags override it). Not part of the architecture: a
    /// network and its exported file hold the spec without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<crate::recipe::TrainingSpec>,
}

/// Why a spec was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read model spec {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid model spec {origin}: {source}")]
    Json {
        origin: String,
        source: serde_json::Error,
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
    #[error("unknown built-in model {0:?} (built in: model1, model2, model3, fast; or give a path to a .json spec)")]
    UnknownBuiltin(String),
}

/// The specs shipped in `models/`, compiled in so the CLI works from anywhere.
const BUILTINS: &[(&str, &str)] = &[
    ("model1", include_str!("../../models/model1.json")),
    ("model2", include_str!("../../models/model2.json")),
    ("model3", include_str!("../../models/model3.json")),
    ("fast", include_str!("../../models/fast.json")),
];

impl ModelSpec {
    /// Parses a spec and checks it (see [`ModelSpec::validate`]).
    pub fn from_json_str(json: &str) -> Result<Self, SpecError> {
        Self::parse(json, "<string>")
    }

    fn parse(json: &str, origin: &str) -> Result<Self, SpecError> {
        let mut spec: ModelSpec = serde_json::from_str(json).map_err(|source| SpecError::Json {
            origin: origin.to_string(),
            source,
        })?;
        spec.assign_names()?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a spec file.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// One of the shipped specs: `model1`, `model2`, `model3`, `fast`.
    pub fn builtin(name: &str) -> Result<Self, SpecError> {
        let (_, json) = BUILTINS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| SpecError::UnknownBuiltin(name.to_string()))?;
        Self::parse(json, &format!("models/{name}.json"))
    }

    /// A built-in name or a path to a spec file.
    pub fn resolve(name_or_path: &str) -> Result<Self, SpecError> {
        if BUILTINS.iter().any(|(n, _)| *n == name_or_path) {
            Self::builtin(name_or_path)
        } else if name_or_path.ends_with(".json") || Path::new(name_or_path).exists() {
            Self::from_file(Path::new(name_or_path))
        } else {
            Err(SpecError::UnknownBuiltin(name_or_path.to_string()))
        }
    }

    /// The architecture alone (without the `training` object).
    pub fn without_training(&self) -> ModelSpec {
        ModelSpec {
            training: None,
            ..self.clone()
        }
    }

    /// The canonical JSON stored in exported files.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serialises")
    }

    /// Names unnamed parameter layers `conv1, conv2, …, bn1, …, dense1, …` and
    /// rejects duplicate names.
    fn assign_names(&mut self) -> Result<(), SpecError> {
        let mut counters = std::collections::HashMap::<&str, usize>::new();
        let mut seen = std::collections::HashSet::new();
        for (index, layer) in self.layers.iter_mut().enumerate() {
            let kind = layer.kind();
            if let Some((prefix, slot)) = layer.name_slot() {
                let count = counters.entry(prefix).or_insert(0);
                *count += 1;
                slot.get_or_insert_with(|| format!("{prefix}{count}"));
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
        if shape.is_empty() {
            return Err(SpecError::Model {
                model: self.name.clone(),
                problem: format!("input shape {shape} is empty"),
            });
        }
        let mut shapes = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let err = |problem: String| self.layer_error_at(index, layer.kind(), problem);
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
                LayerSpec::Relu { .. } => shape,
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
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// The index of the layer named `from`, which must come before layer `index`.
    pub fn source_of(&self, index: usize, from: &str) -> Result<usize, String> {
        match self.layers.iter().position(|l| l.name() == Some(from)) {
            Some(j) if j < index => Ok(j),
            Some(_) => Err(format!("layer {from:?} does not come before this add")),
            None => Err(format!("no layer is named {from:?}")),
        }
    }

    /// Checks the whole spec: every layer fits, and the output is a vector of logits.
    pub fn validate(&self) -> Result<(), SpecError> {
        let shapes = self.shapes()?;
        let model_err = |problem: &str| SpecError::Model {
            model: self.name.clone(),
            problem: problem.to_string(),
        };
        let last = shapes.last().ok_or_else(|| model_err("has no layers"))?;
        if !last.is_vector() || !matches!(self.layers.last(), Some(LayerSpec::Dense { .. })) {
            return Err(model_err(
                "the last layer must be a dense layer giving the class logits",
            ));
        }
        Ok(())
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

    #[test]
    fn builtins_parse_and_name_layers() {
        let m1 = ModelSpec::builtin("model1").unwrap();
        let names: Vec<_> = m1.layers.iter().filter_map(|l| l.name()).collect();
        assert_eq!(
            names,
            ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "dense1", "dense2"]
        );
        assert_eq!(m1.num_classes(), 10);
        assert_eq!(m1.shapes().unwrap()[15], ImageShape::vector(2048));
        for name in ["model2", "model3"] {
            assert_eq!(ModelSpec::builtin(name).unwrap().num_classes(), 10);
        }
    }

    #[test]
    fn training_object_parses_and_stays_out_of_the_architecture() {
        let spec = spec_with(r#"{"type":"flatten"},{"type":"dense","units":2}"#).unwrap();
        assert!(spec.training.is_none());
        let json = r#"{"name":"t","input":{"height":8,"width":8,"channels":3},
            "layers":[{"type":"flatten"},{"type":"dense","units":2}],
            "training":{"optimizer":"sgd","lr":0.1,"crop_pad":4,"flip":true}}"#;
        let with = ModelSpec::from_json_str(json).unwrap();
        let t = with.training.clone().unwrap();
        assert_eq!((t.lr, t.crop_pad, t.flip), (Some(0.1), Some(4), Some(true)));
        assert_eq!(with.without_training(), spec);
        assert!(!with.without_training().to_json().contains("training"));
        let net = crate::network::Network::new(&with, 1).unwrap();
        assert_eq!(net.spec(), &spec);
        let err = ModelSpec::from_json_str(&json.replace("crop_pad", "crop"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
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
        let json = ModelSpec::builtin("model1").unwrap().to_json();
        assert!(json.contains(r#"{"type":"relu"}"#), "{json}");
        assert!(json.contains(r#"{"type":"flatten"}"#), "{json}");
        assert!(!json.contains("training"));
    }

    #[test]
    fn canonical_json_round_trips() {
        let m1 = ModelSpec::builtin("model3").unwrap();
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

    #[test]
    fn last_layer_must_be_dense() {
        let err = spec_with(r#"{"type":"flatten"},{"type":"dense","units":4},{"type":"relu"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("last layer"), "{err}");
    }
}
