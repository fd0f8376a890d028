//! Lookahead averaging, as airbench does it: every `every` steps the running
//! average `a` of all the network's tensors (weights and batch norm's running
//! statistics) takes a step towards the live ones, and the live ones are set
//! to it:
//!
//! ```text
//! d = decay^every · (t / T)³        (t: steps taken, T: steps of the run)
//! a ← d·a + (1 − d)·w
//! w ← a
//! ```
//!
//! Early in the run `d` is about 0 (the average follows the weights); late it
//! nears `decay^every`, averaging out the noise of the last steps. When the
//! run ends the weights are set to the average (the last update with d = 1).
//! The average starts as the initial weights.

use crate::model::network::Network;
use serde::{Deserialize, Serialize};

/// The recipe's lookahead setting (the spec's `"lookahead"` object).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookahead {
    /// Steps between two updates.
    pub every: usize,
    /// Per-step decay (airbench: 0.95).
    pub decay: f32,
}

impl Lookahead {
    pub fn validate(&self) -> Result<(), String> {
        if self.every == 0 {
            return Err("lookahead every must be at least 1 step".into());
        }
        if !(0.0..=1.0).contains(&self.decay) {
            return Err(format!("lookahead decay {} must be in [0, 1]", self.decay));
        }
        Ok(())
    }

    /// `d` after step `t` (1-based) of a run of `total` steps.
    pub fn decay_at(&self, t: u64, total: u64) -> f32 {
        let p = (t as f64 / total.max(1) as f64).min(1.0);
        (f64::from(self.decay).powi(self.every as i32) * p * p * p) as f32
    }

    /// After step `t` of `total`: on every `every`-th step, blends `net`
    /// into `average` and copies the result back into `net`. `average`
    /// starts as `net`'s tensors when it is empty.
    pub fn after_step(&self, net: &mut Network, average: &mut Vec<Vec<f32>>, t: u64, total: u64) {
        if average.is_empty() {
            *average = net.snapshot();
        }
        if t.is_multiple_of(self.every as u64) {
            blend(net, average, self.decay_at(t, total));
        }
    }
}

/// `a ← d·a + (1 − d)·w; w ← a` for every tensor (d = 1 sets `w` to `a`).
pub fn blend(net: &mut Network, average: &mut [Vec<f32>], d: f32) {
    let tensors = net.tensors_mut();
    assert_eq!(tensors.len(), average.len(), "the average of this network");
    for (w, a) in tensors.into_iter().zip(average.iter_mut()) {
        for (w, a) in w.iter_mut().zip(a.iter_mut()) {
            // d·a + (1 − d)·w, written so that w = a stays exactly a (a
            // parameter held fixed does not drift by rounding).
            *a += (1.0 - d) * (*w - *a);
            *w = *a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::ModelSpec;

    fn net(seed: u64) -> Network {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"t","input":{"height":1,"width":1,"channels":2},"layers":[
                {"type":"dense","units":3},{"type":"batchnorm"},{"type":"dense","units":2}]}"#,
        )
        .unwrap();
        Network::new(&spec, seed).unwrap()
    }

    #[test]
    fn decay_follows_the_cube_of_progress() {
        let l = Lookahead {
            every: 5,
            decay: 0.95,
        };
        assert_eq!(l.decay_at(0, 100), 0.0);
        assert!((l.decay_at(100, 100) - 0.95f32.powi(5)).abs() < 1e-6);
        assert!((l.decay_at(50, 100) - 0.95f32.powi(5) / 8.0).abs() < 1e-6);
        assert!(Lookahead {
            every: 0,
            decay: 0.9
        }
        .validate()
        .is_err());
        assert!(Lookahead {
            every: 1,
            decay: 1.5
        }
        .validate()
        .is_err());
    }

    /// Only every `every`-th step blends; a blend puts `d·a + (1−d)·w` in
    /// both the average and the network.
    #[test]
    fn updates_blend_and_copy_back() {
        let l = Lookahead {
            every: 2,
            decay: 0.9,
        };
        let mut live = net(1);
        let mut average = Vec::new();
        l.after_step(&mut live, &mut average, 1, 4);
        let start = net(1).snapshot();
        assert_eq!(average, start, "the average starts as the weights");
        // New weights; step 1 (odd) does not blend.
        let other = net(2).snapshot();
        live.restore(&other);
        l.after_step(&mut live, &mut average, 3, 4);
        assert_eq!(live.snapshot(), other);
        assert_eq!(average, start);
        // Step 4 of 4: d = 0.9² exactly.
        l.after_step(&mut live, &mut average, 4, 4);
        let d = 0.81f32;
        for ((a, s), o) in average.iter().zip(&start).zip(&other) {
            for ((a, s), o) in a.iter().zip(s).zip(o) {
                assert!((a - (d * s + (1.0 - d) * o)).abs() < 1e-6);
            }
        }
        assert_eq!(live.snapshot(), average);
    }
}
