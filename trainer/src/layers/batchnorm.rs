//! Batch normalisation over the channel axis (the last, in NHWC).
//!
//! Training: `y = γ · (x − μ_B) / sqrt(σ²_B + ε) + β` with the batch mean and
//! (biased) variance over all `n·h·w` positions, and the running statistics
//! updated as `m ← momentum · m + (1 − momentum) · μ_B` (Keras). Evaluation
//! uses the running statistics instead.

// Per-channel loops index several parallel arrays (γ, β, statistics) by channel.
#![allow(clippy::needless_range_loop)]

use super::{Layer, Mode, NamedTensor};
use crate::tensor::{ImageShape, Tensor};

pub struct BatchNorm {
    shape: ImageShape,
    momentum: f32,
    epsilon: f32,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub moving_mean: Vec<f32>,
    pub moving_variance: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    /// `x̂ = (x − μ_B) / sqrt(σ²_B + ε)` from the last training forward.
    xhat: Vec<f32>,
    /// `1 / sqrt(σ²_B + ε)` per channel, from the last training forward.
    inv_std: Vec<f32>,
    /// Mode of the last forward: backward differs (batch vs running statistics).
    last_mode: Mode,
    /// Scratch for per-channel sums.
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
}

impl BatchNorm {
    pub fn new(shape: ImageShape, momentum: f32, epsilon: f32) -> Self {
        let c = shape.channels;
        Self {
            shape,
            momentum,
            epsilon,
            gamma: vec![1.0; c],
            beta: vec![0.0; c],
            moving_mean: vec![0.0; c],
            moving_variance: vec![1.0; c],
            dgamma: vec![0.0; c],
            dbeta: vec![0.0; c],
            xhat: Vec::new(),
            inv_std: vec![0.0; c],
            last_mode: Mode::Train,
            sum: vec![0.0; c],
            sum_sq: vec![0.0; c],
        }
    }
}

impl Layer for BatchNorm {
    fn output_shape(&self) -> ImageShape {
        self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, mode: Mode) {
        let c = self.shape.channels;
        y.resize(x.n, self.shape);
        self.last_mode = mode;
        self.xhat.resize(x.data.len(), 0.0);
        if mode == Mode::Eval {
            // Fixed statistics: an affine map per channel.
            for ch in 0..c {
                self.inv_std[ch] = 1.0 / (self.moving_variance[ch] + self.epsilon).sqrt();
            }
            for ((ys, xh), xs) in y
                .data
                .chunks_exact_mut(c)
                .zip(self.xhat.chunks_exact_mut(c))
                .zip(x.data.chunks_exact(c))
            {
                for ch in 0..c {
                    xh[ch] = (xs[ch] - self.moving_mean[ch]) * self.inv_std[ch];
                    ys[ch] = self.gamma[ch] * xh[ch] + self.beta[ch];
                }
            }
            return;
        }
        // Batch statistics, accumulated in f64 so large batches stay accurate.
        let rows = x.data.len() / c;
        self.sum.fill(0.0);
        self.sum_sq.fill(0.0);
        for xs in x.data.chunks_exact(c) {
            for ch in 0..c {
                let v = xs[ch] as f64;
                self.sum[ch] += v;
                self.sum_sq[ch] += v * v;
            }
        }
        for ch in 0..c {
            let mu = self.sum[ch] / rows as f64;
            let var = (self.sum_sq[ch] / rows as f64 - mu * mu).max(0.0);
            self.sum[ch] = mu; // reuse as the mean
            self.inv_std[ch] = 1.0 / ((var as f32) + self.epsilon).sqrt();
            let m = self.momentum;
            self.moving_mean[ch] = m * self.moving_mean[ch] + (1.0 - m) * mu as f32;
            self.moving_variance[ch] = m * self.moving_variance[ch] + (1.0 - m) * var as f32;
        }
        for ((ys, xh), xs) in y
            .data
            .chunks_exact_mut(c)
            .zip(self.xhat.chunks_exact_mut(c))
            .zip(x.data.chunks_exact(c))
        {
            for ch in 0..c {
                xh[ch] = (xs[ch] - self.sum[ch] as f32) * self.inv_std[ch];
                ys[ch] = self.gamma[ch] * xh[ch] + self.beta[ch];
            }
        }
    }

    /// With `M = n·h·w` positions per channel: `dβ = Σ dy`, `dγ = Σ dy·x̂`, and
    /// `dx = γ·inv_std/M · (M·dy − dβ − x̂·dγ)` in training (the batch
    /// statistics depend on x), `dx = γ·inv_std·dy` in evaluation.
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let c = self.shape.channels;
        let rows = (x.data.len() / c) as f32;
        self.dgamma.fill(0.0);
        self.dbeta.fill(0.0);
        for (g, xh) in dy.data.chunks_exact(c).zip(self.xhat.chunks_exact(c)) {
            for ch in 0..c {
                self.dbeta[ch] += g[ch];
                self.dgamma[ch] += g[ch] * xh[ch];
            }
        }
        let Some(dx) = dx else { return };
        dx.resize(x.n, self.shape);
        if self.last_mode == Mode::Eval {
            for (d, g) in dx.data.chunks_exact_mut(c).zip(dy.data.chunks_exact(c)) {
                for ch in 0..c {
                    d[ch] = self.gamma[ch] * self.inv_std[ch] * g[ch];
                }
            }
            return;
        }
        for ((d, g), xh) in dx
            .data
            .chunks_exact_mut(c)
            .zip(dy.data.chunks_exact(c))
            .zip(self.xhat.chunks_exact(c))
        {
            for ch in 0..c {
                let k = self.gamma[ch] * self.inv_std[ch] / rows;
                d[ch] = k * (rows * g[ch] - self.dbeta[ch] - xh[ch] * self.dgamma[ch]);
            }
        }
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut [f32], &[f32])) {
        f(&mut self.gamma, &self.dgamma);
        f(&mut self.beta, &self.dbeta);
    }

    fn tensors(&self) -> Vec<NamedTensor<'_>> {
        let c = self.shape.channels;
        let t = |suffix, data| NamedTensor {
            suffix,
            shape: vec![c],
            data,
        };
        vec![
            t("gamma", &self.gamma),
            t("beta", &self.beta),
            t("moving_mean", &self.moving_mean),
            t("moving_variance", &self.moving_variance),
        ]
    }

    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        vec![
            &mut self.gamma,
            &mut self.beta,
            &mut self.moving_mean,
            &mut self.moving_variance,
        ]
    }
}
