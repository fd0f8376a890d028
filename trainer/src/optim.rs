//! Adam (Kingma & Ba), with the Keras defaults and update rule:
//!
//! ```text
//! m ← β1·m + (1 − β1)·g
//! v ← β2·v + (1 − β2)·g²
//! w ← w − lr · sqrt(1 − β2ᵗ)/(1 − β1ᵗ) · m / (sqrt(v) + ε)
//! ```

use crate::network::Network;
use rayon::prelude::*;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adam {
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// Steps taken so far.
    pub t: u64,
    /// First and second moments, one pair per parameter tensor in visit order.
    #[serde(skip)]
    pub moments: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Default for Adam {
    fn default() -> Self {
        Self::new(1e-3)
    }
}

/// Values per parallel work item of the update.
const BLOCK: usize = 1 << 13;

impl Adam {
    pub fn new(learning_rate: f32) -> Self {
        Self {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            t: 0,
            moments: Vec::new(),
        }
    }

    /// One update of every parameter of `net` from its current gradients.
    pub fn step(&mut self, net: &mut Network) {
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        let alpha = self.learning_rate * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        let mut index = 0;
        let moments = &mut self.moments;
        net.visit_params(&mut |w, g| {
            if moments.len() <= index {
                moments.push((vec![0.0; w.len()], vec![0.0; w.len()]));
            }
            let (m, v) = &mut moments[index];
            index += 1;
            w.par_chunks_mut(BLOCK)
                .zip(g.par_chunks(BLOCK))
                .zip(m.par_chunks_mut(BLOCK).zip(v.par_chunks_mut(BLOCK)))
                .for_each(|((w, g), (m, v))| {
                    for i in 0..w.len() {
                        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                        w[i] -= alpha * m[i] / (v[i].sqrt() + eps);
                    }
                });
        });
    }
}
