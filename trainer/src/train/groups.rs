//! Parameter groups: per-parameter learning-rate multipliers, as fast
//! CIFAR-10 recipes use them (airbench trains batch norm's shifts at 64× the
//! rate of the weights and keeps its scales at 1), and parameters held
//! fixed for part of a run (a whitening layer's filters always, its bias
//! after a few epochs).
//!
//! The network lists its parameters with [`Param::lr_scale`] 1; [`Grouped`]
//! wraps whatever the optimiser steps and sets each parameter's scale from a
//! [`ParamGroups`]. The optimiser multiplies the step's learning rate by it
//! for the update (not for weight decay) and leaves a parameter of scale 0
//! alone (see [`crate::optim`]).

use crate::layers::{Param, Params};
use model_format::Param as Suffix;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How parameters are grouped; the default is one group at the base rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParamGroups {
    /// The learning-rate multiplier of batch norm's shift β.
    pub bn_bias_lr_scale: f32,
    /// Whether batch norm's scale γ trains; when not, it keeps its value
    /// (1 in a fresh network), as Keras' `scale=False`.
    pub bn_scale: bool,
    /// Learning-rate multipliers of whole layers, by name (airbench's head,
    /// whose output is scaled by 1/9, trains as an unscaled layer at 1/81).
    pub layers: BTreeMap<String, f32>,
    /// Parameters held fixed: `(layer, suffix)`, a suffix of `None` holding
    /// every parameter of the layer.
    pub held: Vec<(String, Option<String>)>,
}

impl Default for ParamGroups {
    fn default() -> Self {
        Self {
            bn_bias_lr_scale: 1.0,
            bn_scale: true,
            layers: BTreeMap::new(),
            held: Vec::new(),
        }
    }
}

impl ParamGroups {
    /// The multiplier of parameter `suffix` of layer `layer`.
    pub fn lr_scale(&self, layer: &str, suffix: &str) -> f32 {
        let held = self
            .held
            .iter()
            .any(|(l, s)| l == layer && s.as_deref().is_none_or(|s| s == suffix));
        let layer_scale = self.layers.get(layer).copied().unwrap_or(1.0);
        if held || (!self.bn_scale && suffix == Suffix::Gamma.suffix()) {
            0.0
        } else if suffix == Suffix::Beta.suffix() {
            self.bn_bias_lr_scale * layer_scale
        } else {
            layer_scale
        }
    }

    /// Whether every parameter is in the one default group.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `inner`'s parameters with their multipliers from `groups`.
pub struct Grouped<'a> {
    pub inner: &'a mut dyn Params,
    pub groups: &'a ParamGroups,
}

impl Params for Grouped<'_> {
    fn visit_params(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        let groups = self.groups;
        self.inner.visit_params(&mut |p| {
            let lr_scale = p.lr_scale * groups.lr_scale(p.layer, p.suffix);
            f(Param { lr_scale, ..p })
        });
    }

    fn gemm(&self) -> crate::kernels::gemm::Backend {
        self.inner.gemm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::network::Network;
    use crate::model::spec::ModelSpec;
    use crate::optim::Sgd;

    fn net() -> Network {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"t","input":{"height":1,"width":1,"channels":2},"layers":[
                {"type":"dense","units":2,"name":"a"},{"type":"batchnorm","name":"n"},
                {"type":"dense","units":2,"name":"b"}]}"#,
        )
        .unwrap();
        let mut net = Network::new(&spec, 1).unwrap();
        net.set_input_u8(&[10, 200, 90, 30, 250, 0], 3);
        net.forward_backward(&[0, 1, 1]);
        net
    }

    fn values(net: &mut Network) -> Vec<(String, Vec<f32>, Vec<f32>)> {
        let mut out = Vec::new();
        net.visit_params(&mut |p| out.push((p.name(), p.value.to_vec(), p.grad.to_vec())));
        out
    }

    /// One plain SGD step under groups moves each parameter by exactly
    /// `lr · scale · g`: β at 64×, γ and the held layer not at all.
    #[test]
    fn each_parameter_moves_at_its_groups_rate() {
        let mut net = net();
        let before = values(&mut net);
        let groups = ParamGroups {
            bn_bias_lr_scale: 64.0,
            bn_scale: false,
            layers: BTreeMap::from([("a".to_string(), 0.5)]),
            held: vec![("b".into(), Some("bias".into()))],
        };
        let lr = 0.01;
        Sgd::new(lr, 0.0, false).step_scaled(
            &mut Grouped {
                inner: &mut net,
                groups: &groups,
            },
            1.0,
        );
        let after = values(&mut net);
        for ((name, w0, g), (_, w1, _)) in before.iter().zip(&after) {
            let scale = match name.as_str() {
                "n.beta" => 64.0,
                "n.gamma" | "b.bias" => 0.0,
                "a.weight" | "a.bias" => 0.5,
                _ => 1.0,
            };
            assert!(g.iter().any(|&g| g != 0.0), "{name} has a gradient");
            for ((a, b), g) in w0.iter().zip(w1).zip(g) {
                let expected = a - lr * scale * g;
                assert!((b - expected).abs() <= 1e-6, "{name}: {b} vs {expected}");
            }
        }
    }

    #[test]
    fn a_held_layer_holds_every_parameter() {
        let groups = ParamGroups {
            held: vec![("a".into(), None)],
            ..ParamGroups::default()
        };
        assert_eq!(groups.lr_scale("a", "weight"), 0.0);
        assert_eq!(groups.lr_scale("a", "bias"), 0.0);
        assert_eq!(groups.lr_scale("b", "weight"), 1.0);
        assert!(ParamGroups::default().is_default());
    }
}
