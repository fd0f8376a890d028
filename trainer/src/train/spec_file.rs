//! Spec files (`models/*.json`): an architecture ([`ModelSpec`]) and,
//! optionally, the training recipe that goes with it (its `"training"`
//! object, a [`TrainingSpec`]). The two are parsed apart: a network and its
//! exported file hold the architecture alone.
//!
//! A dense layer of a spec file may say `"units": "classes"`: its width is
//! the number of classes of the data set it trains on, set by
//! [`SpecFile::set_classes`] once the data set is known (until then it is 1).

use crate::kernels::tensor::ImageShape;
use crate::model::spec::{LayerSpec, ModelSpec, SpecError};
use crate::train::recipe::TrainingSpec;
use serde::Deserialize;
use std::path::Path;

/// A spec file, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecFile {
    pub model: ModelSpec,
    /// The recipe (the `trainer train` flags override it field by field).
    pub training: Option<TrainingSpec>,
    /// The layers written `"units": "classes"` (indices into `model.layers`).
    pub units_from_classes: Vec<usize>,
}

/// The file as written: the architecture's fields and `training`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    input: ImageShape,
    layers: Vec<LayerSpec>,
    #[serde(default)]
    training: Option<TrainingSpec>,
}

/// The specs shipped in `models/`, compiled in so the CLI works from anywhere.
pub const BUILTINS: &[(&str, &str)] = &[
    ("model1", include_str!("../../../models/model1.json")),
    ("model2", include_str!("../../../models/model2.json")),
    ("model3", include_str!("../../../models/model3.json")),
    ("fast", include_str!("../../../models/fast.json")),
    ("mnist", include_str!("../../../models/mnist.json")),
    ("cifar100", include_str!("../../../models/cifar100.json")),
    ("resnet8", include_str!("../../../models/resnet8.json")),
    ("airbench", include_str!("../../../models/airbench.json")),
    (
        "airbench-muon",
        include_str!("../../../models/airbench-muon.json"),
    ),
];

impl SpecFile {
    /// Parses a spec file's text; `origin` names it in errors.
    pub fn parse(json: &str, origin: &str) -> Result<Self, SpecError> {
        let json_err = |error| SpecError::Json {
            origin: origin.to_string(),
            error,
        };
        // `"units": "classes"` is read as 1 and remembered; without it the
        // text is parsed directly, so that errors keep their line numbers.
        let mut units_from_classes = Vec::new();
        let raw: Raw = if json.contains("\"classes\"") {
            let mut value: serde_json::Value = serde_json::from_str(json).map_err(json_err)?;
            if let Some(layers) = value.get_mut("layers").and_then(|l| l.as_array_mut()) {
                for (i, layer) in layers.iter_mut().enumerate() {
                    if let Some(units) = layer.get_mut("units") {
                        if units == "classes" {
                            *units = 1.into();
                            units_from_classes.push(i);
                        }
                    }
                }
            }
            serde_json::from_value(value).map_err(json_err)?
        } else {
            serde_json::from_str(json).map_err(json_err)?
        };
        let model = ModelSpec {
            name: raw.name,
            input: raw.input,
            layers: raw.layers,
        }
        .checked()?;
        Ok(Self {
            model,
            training: raw.training,
            units_from_classes,
        })
    }

    /// Gives every dense layer written `"units": "classes"` `classes` units,
    /// and checks the spec again.
    pub fn set_classes(&mut self, classes: usize) -> Result<(), SpecError> {
        if self.units_from_classes.is_empty() {
            return Ok(());
        }
        let mut model = self.model.clone();
        for &i in &self.units_from_classes {
            if let Some(LayerSpec::Dense { units, .. }) = model.layers.get_mut(i) {
                *units = classes;
            }
        }
        self.model = model.checked()?;
        Ok(())
    }

    /// Reads a spec file.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// One of the shipped specs: `model1`, `model2`, `model3`, `fast`
    /// (CIFAR-10), `mnist` (28×28 grayscale, 10 classes), `cifar100`.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_object_parses_apart_from_the_architecture() {
        let arch = r#"{"name":"t","input":{"height":8,"width":8,"channels":3},
            "layers":[{"type":"flatten"},{"type":"dense","units":2}]"#;
        let plain = SpecFile::parse(&format!("{arch}}}"), "a").unwrap();
        assert!(plain.training.is_none());
        let with = SpecFile::parse(
            &format!(
                r#"{arch},"training":{{"optimizer":"sgd","lr":0.1,"crop_pad":4,"flip":true}}}}"#
            ),
            "b",
        )
        .unwrap();
        assert_eq!(with.model, plain.model);
        let t = with.training.unwrap();
        assert_eq!((t.lr, t.crop_pad, t.flip), (Some(0.1), Some(4), Some(true)));
        assert!(!with.model.to_json().contains("training"));
        let err = SpecFile::parse(&format!(r#"{arch},"training":{{"crop":4}}}}"#), "c")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field") && err.contains("invalid model spec c"),
            "{err}"
        );
    }

    #[test]
    fn units_classes_takes_the_data_sets_class_count() {
        let json = r#"{"name":"t","input":{"height":8,"width":8,"channels":1},
            "layers":[{"type":"flatten"},{"type":"dense","units":5},{"type":"relu"},
            {"type":"dense","units":"classes"}]}"#;
        let mut f = SpecFile::parse(json, "t").unwrap();
        assert_eq!(f.units_from_classes, [3]);
        f.set_classes(37).unwrap();
        assert_eq!(f.model.num_classes(), 37);
        assert_eq!(f.model.shapes().unwrap()[1], ImageShape::vector(5));
        // Any other string is still an error.
        let err = SpecFile::parse(&json.replace("\"classes\"", "\"many\""), "u")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid model spec u"), "{err}");
        // Zero classes is refused by the usual check.
        assert!(f.set_classes(0).is_err());
    }

    #[test]
    fn builtins_parse_with_their_recipes() {
        for (name, _) in BUILTINS {
            let f = SpecFile::builtin(name).unwrap();
            let classes = if *name == "cifar100" { 100 } else { 10 };
            assert_eq!(f.model.num_classes(), classes, "{name}");
            let own_recipe = [
                "fast",
                "mnist",
                "cifar100",
                "resnet8",
                "airbench",
                "airbench-muon",
            ]
            .contains(name);
            assert_eq!(f.training.is_some(), own_recipe, "{name}");
        }
        let mnist = SpecFile::builtin("mnist").unwrap().model;
        assert_eq!(mnist.input, ImageShape::new(28, 28, 1));
        assert!(SpecFile::resolve("model9").is_err());
    }
}
