//! The optimisers: Adam (Keras' defaults and update rule) and SGD with
//! momentum (optionally Nesterov), both with optional decoupled weight decay.
//!
//! Adam, as Keras:
//!
//! ```text
//! m ← β1·m + (1 − β1)·g
//! v ← β2·v + (1 − β2)·g²
//! w ← w − lr · sqrt(1 − β2ᵗ)/(1 − β1ᵗ) · m / (sqrt(v) + ε)
//! ```
//!
//! SGD with momentum μ, as PyTorch (no dampening):
//!
//! ```text
//! v ← μ·v + g
//! w ← w − lr·v              (plain)
//! w ← w − lr·(g + μ·v)      (Nesterov)
//! ```
//!
//! With SGD, a recipe can step the convolutions' filters by [`Muon`]
//! instead (`muon.rs`: the momentum orthogonalised by Newton–Schulz), as
//! airbench94_muon does.
//!
//! Decoupled weight decay λ (AdamW, Loshchilov & Hutter; PyTorch's `AdamW`
//! and the same rule for SGD): before the update above, `w ← w·(1 − lr·λ)`,
//! where `lr` is the step's learning rate (after the schedule). The gradient
//! and the moments never see the decay. With `decay_bn_bias` off, biases and
//! batch-norm γ, β are not decayed (see [`crate::layers::Layer::visit_params`]).
//!
//! `lr` of a step is the optimiser's `learning_rate` times the factor the
//! learning-rate schedule gives for that step ([`Optimizer::step`]). A
//! parameter's update (not its decay) uses `lr` times its
//! [`Param::lr_scale`]; a scale of 0 leaves the parameter and its state
//! untouched (a parameter held fixed for part of a run).

mod muon;
pub mod schedule;

pub use muon::{orthogonalise, Muon, Scratch as MuonScratch};

use crate::kernels::on_pool;
use crate::layers::{Param, Params};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// Decoupled weight decay λ (0: none, the Keras default).
    #[serde(default)]
    pub weight_decay: f32,
    /// Whether weight decay also applies to biases and batch-norm parameters.
    #[serde(default = "default_true")]
    pub decay_bn_bias: bool,
    /// Steps taken so far.
    pub t: u64,
    /// First and second moments, one pair per parameter tensor in visit
    /// order, with the parameter's name (`conv1.weight`).
    #[serde(skip)]
    pub moments: Vec<(String, Vec<f32>, Vec<f32>)>,
}

impl Default for Adam {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

/// Values per parallel work item of the update.
const BLOCK: usize = 1 << 13;

/// The factor `1 − lr·λ` that decoupled weight decay multiplies a tensor by
/// (exactly 1 when it does not apply).
fn decay_factor(lr: f32, weight_decay: f32, decay_bn_bias: bool, decay: bool) -> f32 {
    if weight_decay != 0.0 && (decay || decay_bn_bias) {
        1.0 - lr * weight_decay
    } else {
        1.0
    }
}

impl Adam {
    pub fn new(learning_rate: f32) -> Self {
        Self {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.0,
            decay_bn_bias: true,
            t: 0,
            moments: Vec::new(),
        }
    }

    /// One update of every parameter of `net` from its current gradients.
    pub fn step(&mut self, net: &mut dyn Params) {
        self.step_scaled(net, 1.0);
    }

    /// [`Adam::step`] with the learning rate multiplied by `factor`.
    pub fn step_scaled(&mut self, net: &mut dyn Params, factor: f32) {
        on_pool(|| self.update(net, factor));
    }

    fn update(&mut self, net: &mut dyn Params, factor: f32) {
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        let lr = self.learning_rate * factor;
        let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        let (wd, decay_bn_bias) = (self.weight_decay, self.decay_bn_bias);
        let mut index = 0;
        let moments = &mut self.moments;
        net.visit_params(&mut |p: Param<'_>| {
            if moments.len() <= index {
                moments.push((p.name(), vec![0.0; p.value.len()], vec![0.0; p.value.len()]));
            }
            let (_, m, v) = &mut moments[index];
            let (w, g, decay) = (p.value, p.grad, p.decay);
            index += 1;
            if p.lr_scale == 0.0 {
                return;
            }
            let alpha = alpha * p.lr_scale;
            let keep = decay_factor(lr, wd, decay_bn_bias, decay);
            w.par_chunks_mut(BLOCK)
                .zip(g.par_chunks(BLOCK))
                .zip(m.par_chunks_mut(BLOCK).zip(v.par_chunks_mut(BLOCK)))
                .for_each(|((w, g), (m, v))| {
                    if keep != 1.0 {
                        w.iter_mut().for_each(|w| *w *= keep);
                    }
                    for i in 0..w.len() {
                        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                        w[i] -= alpha * m[i] / (v[i].sqrt() + eps);
                    }
                });
        });
    }
}

/// Stochastic gradient descent with momentum (PyTorch's rule, no dampening).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    pub learning_rate: f32,
    /// μ (0: plain SGD).
    pub momentum: f32,
    /// Nesterov's momentum: step along `g + μ·v` instead of `v`.
    pub nesterov: bool,
    /// Decoupled weight decay λ.
    #[serde(default)]
    pub weight_decay: f32,
    /// Whether weight decay also applies to biases and batch-norm parameters.
    #[serde(default = "default_true")]
    pub decay_bn_bias: bool,
    /// Steps taken so far.
    pub t: u64,
    /// Velocity `v`, one per parameter tensor in visit order, with the
    /// parameter's name (Muon's `v` for the filters it steps).
    #[serde(skip)]
    pub velocity: Vec<(String, Vec<f32>)>,
    /// Step the convolutions' filters by [`Muon`] instead (the settings
    /// above step the other parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muon: Option<Muon>,
    /// Muon's working matrices, kept between steps.
    #[serde(skip)]
    pub muon_scratch: MuonScratch,
}

impl Sgd {
    pub fn new(learning_rate: f32, momentum: f32, nesterov: bool) -> Self {
        Self {
            learning_rate,
            momentum,
            nesterov,
            weight_decay: 0.0,
            decay_bn_bias: true,
            t: 0,
            velocity: Vec::new(),
            muon: None,
            muon_scratch: MuonScratch::default(),
        }
    }

    /// One update of every parameter of `net`, the learning rate multiplied by `factor`.
    pub fn step_scaled(&mut self, net: &mut dyn Params, factor: f32) {
        on_pool(|| self.update(net, factor));
    }

    fn update(&mut self, net: &mut dyn Params, factor: f32) {
        self.t += 1;
        let lr = self.learning_rate * factor;
        let (mu, nesterov) = (self.momentum, self.nesterov);
        let (wd, decay_bn_bias) = (self.weight_decay, self.decay_bn_bias);
        let (muon, gemm) = (self.muon, net.gemm());
        let mut index = 0;
        let (velocity, scratch) = (&mut self.velocity, &mut self.muon_scratch);
        net.visit_params(&mut |p: Param<'_>| {
            if velocity.len() <= index {
                velocity.push((p.name(), vec![0.0; p.value.len()]));
            }
            let (_, v) = &mut velocity[index];
            let (w, g, decay) = (p.value, p.grad, p.decay);
            index += 1;
            if p.lr_scale == 0.0 {
                return;
            }
            if let Some(muon) = muon.filter(|_| Muon::applies(p.shape)) {
                let co = p.shape[p.shape.len() - 1];
                muon.step(w, g, v, co, muon.lr * factor * p.lr_scale, gemm, scratch);
                return;
            }
            let keep = decay_factor(lr, wd, decay_bn_bias, decay);
            let lr = lr * p.lr_scale;
            w.par_chunks_mut(BLOCK)
                .zip(g.par_chunks(BLOCK))
                .zip(v.par_chunks_mut(BLOCK))
                .for_each(|((w, g), v)| {
                    for i in 0..w.len() {
                        v[i] = mu * v[i] + g[i];
                        let d = if nesterov { g[i] + mu * v[i] } else { v[i] };
                        w[i] = w[i] * keep - lr * d;
                    }
                });
        });
    }
}

/// Which optimiser (for the CLI and the spec's `training` object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Adam,
    Sgd,
}

/// The optimiser of a run, with its state. Saved in checkpoints under the
/// `optimizer` key (see [`crate::train::checkpoint`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Optimizer {
    Adam(Adam),
    Sgd(Sgd),
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::Adam(Adam::default())
    }
}

impl Optimizer {
    /// One update of every parameter, at `factor` times the base learning rate.
    pub fn step(&mut self, net: &mut dyn Params, factor: f32) {
        match self {
            Optimizer::Adam(a) => a.step_scaled(net, factor),
            Optimizer::Sgd(s) => s.step_scaled(net, factor),
        }
    }

    pub fn learning_rate(&self) -> f32 {
        match self {
            Optimizer::Adam(a) => a.learning_rate,
            Optimizer::Sgd(s) => s.learning_rate,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        match self {
            Optimizer::Adam(a) => a.t,
            Optimizer::Sgd(s) => s.t,
        }
    }

    /// The settings alone: the same optimiser with its state (steps,
    /// moments, velocity) and Muon's working buffers cleared, as a fresh run
    /// would start it.
    pub fn settings(&self) -> Optimizer {
        match self {
            Optimizer::Adam(a) => Optimizer::Adam(Adam {
                t: 0,
                moments: Vec::new(),
                ..a.clone()
            }),
            Optimizer::Sgd(s) => Optimizer::Sgd(Sgd {
                t: 0,
                velocity: Vec::new(),
                muon_scratch: MuonScratch::default(),
                ..s.clone()
            }),
        }
    }

    /// Same kind and hyperparameters (the state, steps and moments, aside).
    pub fn same_settings(&self, other: &Optimizer) -> bool {
        self.settings() == other.settings()
    }

    /// The state tensors to checkpoint, keyed by parameter name:
    /// `conv1.weight.adam_m`, `conv1.weight.adam_v` (Adam), `conv1.weight.sgd_v` (SGD).
    pub fn state_tensors(&self) -> Vec<(String, &[f32])> {
        match self {
            Optimizer::Adam(a) => a
                .moments
                .iter()
                .flat_map(|(name, m, v)| {
                    [
                        (format!("{name}.adam_m"), m.as_slice()),
                        (format!("{name}.adam_v"), v.as_slice()),
                    ]
                })
                .collect(),
            Optimizer::Sgd(s) => s
                .velocity
                .iter()
                .map(|(name, v)| (format!("{name}.sgd_v"), v.as_slice()))
                .collect(),
        }
    }

    /// Puts back the state saved by [`Optimizer::state_tensors`] for the
    /// parameters of `net`; `tensor` returns a saved tensor by name. Before
    /// the first step there is no state, and nothing is looked up. Fails
    /// with the name of the first tensor missing or of the wrong size.
    pub fn restore_state(
        &mut self,
        net: &mut dyn Params,
        tensor: &mut dyn FnMut(&str) -> Option<Vec<f32>>,
    ) -> Result<(), String> {
        let mut params = Vec::new();
        net.visit_params(&mut |p| params.push((p.name(), p.value.len())));
        let started = self.steps() > 0;
        let mut get = |name: String, len: usize| match tensor(&name) {
            Some(v) if v.len() == len => Ok(v),
            Some(v) => Err(format!(
                "tensor {name} has {} values, expected {len}",
                v.len()
            )),
            None => Err(format!("tensor {name} is missing")),
        };
        match self {
            Optimizer::Adam(a) => {
                a.moments.clear();
                for (name, len) in params.into_iter().filter(|_| started) {
                    let m = get(format!("{name}.adam_m"), len)?;
                    let v = get(format!("{name}.adam_v"), len)?;
                    a.moments.push((name, m, v));
                }
            }
            Optimizer::Sgd(s) => {
                s.velocity.clear();
                for (name, len) in params.into_iter().filter(|_| started) {
                    let v = get(format!("{name}.sgd_v"), len)?;
                    s.velocity.push((name, v));
                }
            }
        }
        Ok(())
    }

    /// One line: `Adam lr 0.001` or `SGD lr 0.1, Nesterov momentum 0.9, weight decay 0.0005 (not on BN/biases)`.
    pub fn describe(&self) -> String {
        let (mut s, wd, all) = match self {
            Optimizer::Adam(a) => (
                format!("Adam lr {}", a.learning_rate),
                a.weight_decay,
                a.decay_bn_bias,
            ),
            Optimizer::Sgd(o) => (
                format!(
                    "SGD lr {}, {}momentum {}",
                    o.learning_rate,
                    if o.nesterov { "Nesterov " } else { "" },
                    o.momentum
                ),
                o.weight_decay,
                o.decay_bn_bias,
            ),
        };
        if wd != 0.0 {
            s += &format!(
                ", weight decay {wd}{}",
                if all { "" } else { " (not on BN/biases)" }
            );
        }
        if let Optimizer::Sgd(Sgd { muon: Some(m), .. }) = self {
            s += &format!(
                "; filters by Muon lr {}, {}momentum {}, {} Newton–Schulz steps",
                m.lr,
                if m.nesterov { "Nesterov " } else { "" },
                m.momentum,
                m.steps
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::Backend;
    use crate::model::network::Network;
    use crate::model::spec::ModelSpec;

    /// A network with one dense layer 2 → 1 (weights w0, w1; bias b) and a
    /// batch-norm layer: three parameter tensors of which only the weight decays.
    fn tiny() -> Network {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"t","input":{"height":1,"width":1,"channels":2},"layers":[
                {"type":"dense","units":2},{"type":"batchnorm"},{"type":"dense","units":2}]}"#,
        )
        .unwrap();
        Network::new(&spec, 1).unwrap()
    }

    /// Sets every parameter to `w` and every gradient (through one backward
    /// of a fixed batch) to what the network computes; returns (values, grads).
    fn params(net: &mut Network) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let (mut w, mut g) = (Vec::new(), Vec::new());
        net.visit_params(&mut |p| {
            w.push(p.value.to_vec());
            g.push(p.grad.to_vec());
        });
        (w, g)
    }

    fn with_gradients(net: &mut Network) {
        net.set_input_u8(&[10, 200, 90, 30, 250, 0], 3);
        net.forward_backward(&[0, 1, 1]);
    }

    /// With Muon, a network's convolution filters (4-D weights) take
    /// [`Muon::step`], every other parameter the SGD rule; the shapes come
    /// from the network.
    #[test]
    fn muon_steps_the_filters_and_sgd_the_rest() {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"t","input":{"height":4,"width":4,"channels":2},"layers":[
                {"type":"conv2d","filters":3,"kernel":3},{"type":"flatten"},
                {"type":"dense","units":2}]}"#,
        )
        .unwrap();
        let mut net = Network::new(&spec, 1).unwrap();
        let mut shapes = Vec::new();
        net.visit_params(&mut |p| shapes.push(p.shape.to_vec()));
        assert_eq!(shapes, [vec![3, 3, 2, 3], vec![3], vec![48, 2], vec![2]]);
        net.set_input_u8(
            &(0..64).map(|i| (i * 37 % 256) as u8).collect::<Vec<_>>(),
            2,
        );
        net.forward_backward(&[0, 1]);
        let (w0, g) = params(&mut net);
        let muon = Muon {
            lr: 0.3,
            momentum: 0.5,
            nesterov: false,
            steps: 3,
        };
        let mut opt = Sgd {
            muon: Some(muon),
            weight_decay: 0.1,
            ..Sgd::new(0.2, 0.9, false)
        };
        opt.step_scaled(&mut net, 0.5);
        let (w1, _) = params(&mut net);
        let mut want = w0[0].clone();
        let mut v = vec![0.0; want.len()];
        muon.step(
            &mut want,
            &g[0],
            &mut v,
            3,
            0.3 * 0.5,
            Backend::default(),
            &mut MuonScratch::default(),
        );
        assert_eq!(w1[0], want, "the filters: Muon, no weight decay");
        for i in 1..4 {
            for ((w1, w0), g) in w1[i].iter().zip(&w0[i]).zip(&g[i]) {
                // First step: v = g; decay 1 − lr·λ at lr = 0.2·0.5.
                let want = w0 * (1.0 - 0.1 * 0.1) - 0.1 * g;
                assert!(
                    (w1 - want).abs() < 1e-6,
                    "parameter {i}: {w1} against {want}"
                );
            }
        }
    }

    #[test]
    fn sgd_momentum_by_hand() {
        let mut net = tiny();
        with_gradients(&mut net);
        let (w0, g) = params(&mut net);
        let (lr, mu) = (0.1f32, 0.9f32);
        let mut opt = Sgd::new(lr, mu, false);
        // Step 1: v = g, w1 = w0 − lr·g.
        opt.step_scaled(&mut net, 1.0);
        let (w1, _) = params(&mut net);
        for t in 0..w0.len() {
            for i in 0..w0[t].len() {
                assert_eq!(w1[t][i], w0[t][i] - lr * g[t][i]);
            }
        }
        // Step 2 with the same gradients and half the rate: v = μ·g + g, w2 = w1 − (lr/2)·v.
        opt.step_scaled(&mut net, 0.5);
        let (w2, _) = params(&mut net);
        for t in 0..w0.len() {
            for i in 0..w0[t].len() {
                let v = mu * g[t][i] + g[t][i];
                assert_eq!(w2[t][i], w1[t][i] - 0.5 * lr * v);
            }
        }
        assert_eq!(opt.t, 2);
    }

    #[test]
    fn nesterov_steps_along_g_plus_mu_v() {
        let (lr, mu) = (0.05f32, 0.8f32);
        let mut plain_net = tiny();
        let mut nest_net = tiny();
        with_gradients(&mut plain_net);
        with_gradients(&mut nest_net);
        let (w0, g) = params(&mut plain_net);
        let mut plain = Sgd::new(lr, mu, false);
        let mut nest = Sgd::new(lr, mu, true);
        for _ in 0..2 {
            plain.step_scaled(&mut plain_net, 1.0);
            nest.step_scaled(&mut nest_net, 1.0);
        }
        let (wp, _) = params(&mut plain_net);
        let (wn, _) = params(&mut nest_net);
        let mut differ = false;
        for t in 0..w0.len() {
            for i in 0..w0[t].len() {
                let g = g[t][i];
                // Plain: v1 = g, v2 = μg + g; w2 = w0 − lr·(v1 + v2).
                let p = (w0[t][i] - lr * g) - lr * (mu * g + g);
                // Nesterov: steps g + μ·v1 then g + μ·v2.
                let n = (w0[t][i] - lr * (g + mu * g)) - lr * (g + mu * (mu * g + g));
                assert!(
                    (wp[t][i] - p).abs() <= 1e-6 * (1.0 + p.abs()),
                    "{} vs {p}",
                    wp[t][i]
                );
                assert!(
                    (wn[t][i] - n).abs() <= 1e-6 * (1.0 + n.abs()),
                    "{} vs {n}",
                    wn[t][i]
                );
                differ |= g != 0.0 && wp[t][i] != wn[t][i];
            }
        }
        assert!(differ);
    }

    #[test]
    fn weight_decay_skips_excluded_params() {
        // Zero gradients (nothing has run backward yet): only the decay moves
        // the parameters, which all start non-zero.
        let tiny = || {
            let mut net = tiny();
            net.visit_params(&mut |p| {
                p.value
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = 0.5 + i as f32)
            });
            net
        };
        for decay_bn_bias in [true, false] {
            let mut net = tiny();
            let (w0, _) = params(&mut net);
            let mut opt = Sgd::new(0.1, 0.9, true);
            opt.weight_decay = 0.5;
            opt.decay_bn_bias = decay_bn_bias;
            opt.step_scaled(&mut net, 1.0);
            let (w1, _) = params(&mut net);
            let mut flags = Vec::new();
            net.visit_params(&mut |p| flags.push(p.decay));
            // dense weight, dense bias, bn gamma, bn beta, dense weight, dense bias.
            assert_eq!(flags, [true, false, false, false, true, false]);
            for t in 0..w0.len() {
                let decays = flags[t] || decay_bn_bias;
                for i in 0..w0[t].len() {
                    let expected = if decays { w0[t][i] * 0.95 } else { w0[t][i] };
                    assert_eq!(
                        w1[t][i], expected,
                        "tensor {t} decay_bn_bias {decay_bn_bias}"
                    );
                }
            }
            // Adam's decay is the same multiplicative step.
            let mut net = tiny();
            let mut adam = Adam::new(0.1);
            adam.weight_decay = 0.5;
            adam.decay_bn_bias = decay_bn_bias;
            adam.step(&mut net);
            let (w1, _) = params(&mut net);
            for t in 0..w0.len() {
                let decays = flags[t] || decay_bn_bias;
                for i in 0..w0[t].len() {
                    let expected = if decays { w0[t][i] * 0.95 } else { w0[t][i] };
                    assert_eq!(w1[t][i], expected);
                }
            }
        }
    }

    #[test]
    fn adam_without_decay_is_the_keras_rule() {
        let mut net = tiny();
        with_gradients(&mut net);
        let (w0, g) = params(&mut net);
        let mut opt = Adam::new(0.01);
        opt.step(&mut net);
        let (w1, _) = params(&mut net);
        // First step: m = 0.1g, v = 0.001g², α = lr·sqrt(0.001)/0.1.
        let alpha = 0.01 * (1.0f32 - 0.999).sqrt() / (1.0 - 0.9);
        for t in 0..w0.len() {
            for i in 0..w0[t].len() {
                let (m, v) = (0.1 * g[t][i], 0.001 * g[t][i] * g[t][i]);
                let expected = w0[t][i] - alpha * m / (v.sqrt() + 1e-7);
                assert!(
                    (w1[t][i] - expected).abs() <= 1e-6,
                    "{} vs {expected}",
                    w1[t][i]
                );
            }
        }
    }

    #[test]
    fn old_adam_json_still_parses_and_state_round_trips() {
        let old = r#"{"learning_rate":0.001,"beta1":0.9,"beta2":0.999,"epsilon":1e-7,"t":5}"#;
        let a: Adam = serde_json::from_str(old).unwrap();
        assert_eq!(
            a,
            Adam {
                t: 5,
                ..Adam::new(1e-3)
            }
        );
        let mut net = tiny();
        with_gradients(&mut net);
        let mut opt = Optimizer::Sgd(Sgd::new(0.1, 0.9, true));
        opt.step(&mut net, 1.0);
        let json = serde_json::to_string(&opt).unwrap();
        assert!(json.contains(r#""type":"sgd""#), "{json}");
        let mut back: Optimizer = serde_json::from_str(&json).unwrap();
        let saved: std::collections::HashMap<String, Vec<f32>> = opt
            .state_tensors()
            .into_iter()
            .map(|(n, v)| (n, v.to_vec()))
            .collect();
        assert!(saved.contains_key("dense1.weight.sgd_v") && saved.contains_key("bn1.beta.sgd_v"));
        back.restore_state(&mut net, &mut |n| saved.get(n).cloned())
            .unwrap();
        assert_eq!(back, opt);
        assert!(back.same_settings(&Optimizer::Sgd(Sgd::new(0.1, 0.9, true))));
        assert!(!back.same_settings(&Optimizer::Sgd(Sgd::new(0.1, 0.9, false))));
        assert!(!back.same_settings(&Optimizer::default()));
    }
}
