//! The training recipe: optimiser, learning-rate schedule, augmentation,
//! label smoothing, epochs and batch size.
//!
//! It comes from two places: the optional `"training"` object of a model spec
//! (a [`TrainingSpec`], every field optional) and the `trainer train` flags
//! (the same fields); a flag given on the command line wins over the spec's
//! field, and what neither gives takes the default. The defaults are the
//! reference study's settings: Adam 0.001 (Keras), constant rate, no
//! augmentation, no label smoothing, 35 epochs of batch 32.

use crate::data::augment::{Augment, PadMode};
use crate::optim::schedule::{Schedule, ScheduleKind};
use crate::optim::{Adam, Muon, Optimizer, OptimizerKind, Sgd};
use crate::train::groups::ParamGroups;
use crate::train::lookahead::Lookahead;
use crate::train::whitening::Whitening;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DEFAULT_EPOCHS: usize = 35;
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// Keras' default learning rates.
pub const DEFAULT_ADAM_LR: f32 = 1e-3;
pub const DEFAULT_SGD_LR: f32 = 1e-2;
pub const DEFAULT_MOMENTUM: f32 = 0.9;

/// The `"training"` object of a model spec, or the training flags of the
/// command line: every field optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Base (peak) learning rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerKind>,
    /// SGD only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f32>,
    /// SGD only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    /// Whether weight decay applies to biases and batch-norm parameters too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_bn_bias: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_epochs: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_lr_factor: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_epochs: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_gamma: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop_pad: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_mode: Option<PadMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutout: Option<usize>,
    /// The warm-up starts at this factor of the base rate (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_lr_factor: Option<f32>,
    /// Flip every image in alternate epochs (a random half first) instead
    /// of at random (needs `flip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternate_flip: Option<bool>,
    /// Learning-rate multiplier of batch norm's shift β (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bn_bias_lr_scale: Option<f32>,
    /// Whether batch norm's scale γ trains (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bn_scale: Option<bool>,
    /// Lookahead averaging of the weights ([`Lookahead`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<Lookahead>,
    /// The first convolution set to whiten image patches ([`Whitening`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whitening: Option<Whitening>,
    /// Identity (Dirac) initialisation of the convolutions' first filters
    /// ([`crate::train::whitening::dirac`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirac: Option<bool>,
    /// Learning-rate multipliers of named layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_scales: Option<BTreeMap<String, f32>>,
    /// Multipliers of named layers' initial weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_scales: Option<BTreeMap<String, f32>>,
    /// With SGD: the convolutions' filters step by Muon ([`Muon`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muon: Option<Muon>,
}

/// A complete recipe, every setting decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    /// A fresh optimiser with its settings.
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub augment: Augment,
    pub label_smoothing: f32,
    pub groups: ParamGroups,
    pub lookahead: Option<Lookahead>,
    pub whitening: Option<Whitening>,
    pub dirac: bool,
    pub init_scales: BTreeMap<String, f32>,
}

impl Default for Recipe {
    fn default() -> Self {
        TrainingSpec::default()
            .resolve()
            .expect("the defaults are valid")
    }
}

impl Recipe {
    /// One line for the log.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}; schedule {}; augmentation {}",
            self.optimizer.describe(),
            self.schedule.describe(),
            self.augment.describe()
        );
        if self.label_smoothing != 0.0 {
            s += &format!("; label smoothing {}", self.label_smoothing);
        }
        if self.groups.bn_bias_lr_scale != 1.0 {
            s += &format!("; BN shifts at {}× the rate", self.groups.bn_bias_lr_scale);
        }
        if !self.groups.bn_scale {
            s += "; BN scales fixed";
        }
        if let Some(l) = &self.lookahead {
            s += &format!("; lookahead every {} steps, decay {}", l.every, l.decay);
        }
        if let Some(w) = &self.whitening {
            s += &format!(
                "; {} whitened ({} images, bias trained {} epochs)",
                w.layer, w.images, w.bias_epochs
            );
        }
        if self.dirac {
            s += "; dirac init";
        }
        for (layer, f) in &self.groups.layers {
            s += &format!("; {layer} at {f}× the rate");
        }
        for (layer, f) in &self.init_scales {
            s += &format!("; {layer} initialised ×{f}");
        }
        s
    }
}

impl TrainingSpec {
    /// Each field of `self`, or `fallback`'s where `self` has none. When
    /// `self` names another optimiser than `fallback`, `fallback`'s learning
    /// rate, momentum and Nesterov (meant for its optimiser) are dropped.
    pub fn or(&self, fallback: &TrainingSpec) -> TrainingSpec {
        let switched = self.optimizer.is_some()
            && self.optimizer.unwrap_or_default() != fallback.optimizer.unwrap_or_default();
        let fallback = &if switched {
            TrainingSpec {
                lr: None,
                momentum: None,
                nesterov: None,
                muon: None,
                ..fallback.clone()
            }
        } else {
            fallback.clone()
        };
        // (Defined here so that `fallback` is the one above.)
        macro_rules! pick {
            ($($f:ident),*) => { TrainingSpec { $($f: self.$f.clone().or(fallback.$f.clone())),* } };
        }
        pick!(
            epochs,
            batch_size,
            lr,
            optimizer,
            momentum,
            nesterov,
            weight_decay,
            decay_bn_bias,
            schedule,
            warmup_epochs,
            final_lr_factor,
            step_epochs,
            step_gamma,
            label_smoothing,
            crop_pad,
            pad_mode,
            flip,
            cutout,
            initial_lr_factor,
            alternate_flip,
            bn_bias_lr_scale,
            bn_scale,
            lookahead,
            whitening,
            dirac,
            lr_scales,
            init_scales,
            muon
        )
    }

    /// The recipe with the defaults filled in, checked.
    pub fn resolve(&self) -> Result<Recipe, String> {
        let kind = self.optimizer.unwrap_or_default();
        let lr = self.lr.unwrap_or(match kind {
            OptimizerKind::Adam => DEFAULT_ADAM_LR,
            OptimizerKind::Sgd => DEFAULT_SGD_LR,
        });
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(format!("learning rate {lr} must be positive"));
        }
        let weight_decay = self.weight_decay.unwrap_or(0.0);
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return Err(format!("weight decay {weight_decay} must be 0 or more"));
        }
        let decay_bn_bias = self.decay_bn_bias.unwrap_or(true);
        let optimizer = match kind {
            OptimizerKind::Adam => {
                if self.momentum.is_some() || self.nesterov == Some(true) || self.muon.is_some() {
                    return Err(
                        "momentum, Nesterov and Muon are settings of SGD (optimizer sgd), not Adam"
                            .to_string(),
                    );
                }
                Optimizer::Adam(Adam {
                    weight_decay,
                    decay_bn_bias,
                    ..Adam::new(lr)
                })
            }
            OptimizerKind::Sgd => {
                let momentum = self.momentum.unwrap_or(DEFAULT_MOMENTUM);
                if !(0.0..1.0).contains(&momentum) {
                    return Err(format!("momentum {momentum} must be in [0, 1)"));
                }
                let nesterov = self.nesterov.unwrap_or(false);
                if nesterov && momentum == 0.0 {
                    return Err("Nesterov needs a momentum above 0".to_string());
                }
                if let Some(m) = &self.muon {
                    m.validate()?;
                }
                Optimizer::Sgd(Sgd {
                    weight_decay,
                    decay_bn_bias,
                    muon: self.muon,
                    ..Sgd::new(lr, momentum, nesterov)
                })
            }
        };
        let defaults = Schedule::default();
        let schedule = Schedule {
            kind: self.schedule.unwrap_or_default(),
            warmup_epochs: self.warmup_epochs.unwrap_or(defaults.warmup_epochs),
            final_factor: self.final_lr_factor.unwrap_or(defaults.final_factor),
            step_epochs: self.step_epochs.unwrap_or(defaults.step_epochs),
            step_gamma: self.step_gamma.unwrap_or(defaults.step_gamma),
            initial_factor: self.initial_lr_factor.unwrap_or(defaults.initial_factor),
        };
        schedule.validate()?;
        let augment = Augment {
            crop_pad: self.crop_pad.unwrap_or(0),
            pad_mode: self.pad_mode.unwrap_or_default(),
            flip: self.flip.unwrap_or(false),
            cutout: self.cutout.unwrap_or(0),
            alternate_flip: self.alternate_flip.unwrap_or(false),
        };
        augment.validate()?;
        let groups = ParamGroups {
            bn_bias_lr_scale: self.bn_bias_lr_scale.unwrap_or(1.0),
            bn_scale: self.bn_scale.unwrap_or(true),
            layers: self.lr_scales.clone().unwrap_or_default(),
            held: Vec::new(),
        };
        let init_scales = self.init_scales.clone().unwrap_or_default();
        for (layer, f) in groups.layers.iter().chain(&init_scales) {
            if !(*f >= 0.0 && f.is_finite()) {
                return Err(format!(
                    "the scale of layer {layer}, {f}, must be 0 or more"
                ));
            }
        }
        if !(groups.bn_bias_lr_scale >= 0.0 && groups.bn_bias_lr_scale.is_finite()) {
            return Err(format!(
                "bn_bias_lr_scale {} must be 0 or more",
                groups.bn_bias_lr_scale
            ));
        }
        if let Some(l) = &self.lookahead {
            l.validate()?;
        }
        let label_smoothing = self.label_smoothing.unwrap_or(0.0);
        if !(0.0..1.0).contains(&label_smoothing) {
            return Err(format!(
                "label smoothing {label_smoothing} must be in [0, 1)"
            ));
        }
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err("batch size must be at least 1".to_string());
        }
        let epochs = self.epochs.unwrap_or(DEFAULT_EPOCHS);
        if epochs == 0 {
            return Err("epochs must be at least 1 (0 would save the untrained model)".to_string());
        }
        Ok(Recipe {
            epochs,
            batch_size,
            optimizer,
            schedule,
            augment,
            label_smoothing,
            groups,
            lookahead: self.lookahead,
            whitening: self.whitening.clone(),
            dirac: self.dirac.unwrap_or(false),
            init_scales,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_settings() {
        let r = Recipe::default();
        assert_eq!(r.epochs, 35);
        assert_eq!(r.batch_size, 32);
        assert_eq!(r.optimizer, Optimizer::Adam(Adam::new(1e-3)));
        assert_eq!(r.schedule, Schedule::default());
        assert!(r.augment.is_identity());
        assert_eq!(r.label_smoothing, 0.0);
    }

    #[test]
    fn flags_override_the_spec() {
        let spec: TrainingSpec = serde_json::from_str(
            r#"{"optimizer":"sgd","lr":0.2,"nesterov":true,"weight_decay":5e-4,
                "decay_bn_bias":false,"schedule":"onecycle","warmup_epochs":2,
                "crop_pad":4,"flip":true,"label_smoothing":0.2,"epochs":10}"#,
        )
        .unwrap();
        let cli = TrainingSpec {
            lr: Some(0.1),
            epochs: Some(3),
            cutout: Some(8),
            ..TrainingSpec::default()
        };
        let r = cli.or(&spec).resolve().unwrap();
        assert_eq!(r.epochs, 3);
        let Optimizer::Sgd(sgd) = &r.optimizer else {
            panic!("{:?}", r.optimizer)
        };
        assert_eq!(
            (sgd.learning_rate, sgd.momentum, sgd.nesterov),
            (0.1, 0.9, true)
        );
        assert_eq!((sgd.weight_decay, sgd.decay_bn_bias), (5e-4, false));
        assert_eq!(r.schedule.kind, ScheduleKind::OneCycle);
        assert_eq!(r.schedule.warmup_epochs, 2.0);
        assert_eq!(
            r.augment,
            Augment {
                crop_pad: 4,
                pad_mode: PadMode::Reflect,
                flip: true,
                cutout: 8,
                alternate_flip: false,
            }
        );
        assert_eq!(r.label_smoothing, 0.2);
    }

    #[test]
    fn muon_comes_with_sgd_and_survives_a_checkpoint() {
        let json = r#"{"optimizer": "sgd", "lr": 0.5, "nesterov": true,
            "muon": {"lr": 0.24, "momentum": 0.6, "nesterov": true}}"#;
        let spec: TrainingSpec = serde_json::from_str(json).unwrap();
        let r = spec.resolve().unwrap();
        let Optimizer::Sgd(sgd) = &r.optimizer else {
            panic!("{:?}", r.optimizer)
        };
        let muon = sgd.muon.expect("muon settings");
        assert_eq!((muon.lr, muon.momentum, muon.steps), (0.24, 0.6, 3));
        assert!(r.optimizer.describe().contains("filters by Muon lr 0.24"));
        // The optimiser's settings as a checkpoint saves them.
        let saved = serde_json::to_string(&r.optimizer).unwrap();
        let back: Optimizer = serde_json::from_str(&saved).unwrap();
        assert!(back.same_settings(&r.optimizer));
        assert!(!back.same_settings(&Optimizer::Sgd(Sgd {
            muon: None,
            ..sgd.clone()
        })));
        // Not with Adam; bad settings are refused.
        let adam = TrainingSpec {
            optimizer: Some(OptimizerKind::Adam),
            ..spec.clone()
        };
        assert!(adam.resolve().unwrap_err().contains("Muon"));
        let bad: TrainingSpec =
            serde_json::from_str(r#"{"optimizer": "sgd", "muon": {"lr": 0.24, "momentum": 1.5}}"#)
                .unwrap();
        assert!(bad.resolve().unwrap_err().contains("momentum"));
        assert!(serde_json::from_str::<TrainingSpec>(
            r#"{"muon": {"lr": 0.2, "momentum": 0.5, "typo": 1}}"#
        )
        .is_err());
    }

    #[test]
    fn switching_optimizer_drops_the_other_ones_settings() {
        let spec = TrainingSpec {
            optimizer: Some(OptimizerKind::Sgd),
            lr: Some(0.4),
            momentum: Some(0.8),
            nesterov: Some(true),
            weight_decay: Some(1e-3),
            ..TrainingSpec::default()
        };
        let adam = TrainingSpec {
            optimizer: Some(OptimizerKind::Adam),
            ..TrainingSpec::default()
        };
        let r = adam.or(&spec).resolve().unwrap();
        let expected = Adam {
            weight_decay: 1e-3,
            ..Adam::new(DEFAULT_ADAM_LR)
        };
        assert_eq!(r.optimizer, Optimizer::Adam(expected));
        // Naming the same optimiser keeps them.
        let sgd = TrainingSpec {
            optimizer: Some(OptimizerKind::Sgd),
            ..TrainingSpec::default()
        };
        assert_eq!(
            sgd.or(&spec).resolve().unwrap().optimizer.learning_rate(),
            0.4
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |json: &str| {
            serde_json::from_str::<TrainingSpec>(json)
                .map_err(|e| e.to_string())
                .and_then(|t| t.resolve().map(|_| ()))
                .unwrap_err()
        };
        assert!(bad(r#"{"momentum":0.9}"#).contains("SGD"));
        assert!(bad(r#"{"optimizer":"sgd","momentum":1.0}"#).contains("momentum"));
        assert!(bad(r#"{"label_smoothing":1.0}"#).contains("label smoothing"));
        assert!(bad(r#"{"crop_pad":20}"#).contains("crop"));
        assert!(bad(r#"{"lr":-1}"#).contains("learning rate"));
        assert!(bad(r#"{"lr":0}"#).contains("learning rate"));
        assert!(bad(r#"{"epochs":0}"#).contains("epochs must be at least 1"));
        assert!(bad(r#"{"batch_size":0}"#).contains("batch size"));
        assert!(bad(r#"{"learning_rate":0.1}"#).contains("unknown field"));
        // SGD's default rate is Keras' 0.01.
        let sgd = TrainingSpec {
            optimizer: Some(OptimizerKind::Sgd),
            ..TrainingSpec::default()
        };
        assert_eq!(sgd.resolve().unwrap().optimizer.learning_rate(), 0.01);
    }
}
