//! Batch normalisation over the channel axis (the last, in NHWC).
//!
//! Training: `y = γ · (x − μ_B) / sqrt(σ²_B + ε) + β` with the batch mean and
//! (biased) variance over all `n·h·w` positions, and the running statistics
//! updated as `m ← momentum · m + (1 − momentum) · μ_B` (Keras). Evaluation
//! uses the running statistics instead.

// Per-channel loops index several parallel arrays (γ, β, statistics) by channel.
#![allow(clippy::needless_range_loop)]

use super::{Layer, Mode, NamedTensor, ParamVisitor};
use crate::tensor::{ImageShape, Tensor};
use rayon::prelude::*;

/// Rows (positions) per parallel work item.
const BLOCK_ROWS: usize = 2048;

/// `sums[ch] = Σ_rows f(a[row, ch], b[row, ch])` for a pair-valued `f`, in
/// parallel over blocks of rows; `partials` is scratch (one entry per block
/// and channel), reused across calls.
fn channel_sums(
    a: &[f32],
    b: &[f32],
    c: usize,
    partials: &mut Vec<(f64, f64)>,
    sums: &mut [(f64, f64)],
    f: impl Fn(f32, f32) -> (f64, f64) + Sync,
) {
    let blocks = (a.len() / c).div_ceil(BLOCK_ROWS);
    partials.resize(blocks * c, (0.0, 0.0));
    partials
        .par_chunks_mut(c)
        .zip(
            a.par_chunks(BLOCK_ROWS * c)
                .zip(b.par_chunks(BLOCK_ROWS * c)),
        )
        .for_each(|(acc, (a, b))| {
            acc.fill((0.0, 0.0));
            for (ra, rb) in a.chunks_exact(c).zip(b.chunks_exact(c)) {
                for ch in 0..c {
                    let (u, v) = f(ra[ch], rb[ch]);
                    acc[ch].0 += u;
                    acc[ch].1 += v;
                }
            }
        });
    sums.fill((0.0, 0.0));
    for block in partials.chunks_exact(c) {
        for (s, p) in sums.iter_mut().zip(block) {
            s.0 += p.0;
            s.1 += p.1;
        }
    }
}

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
    /// Mean used by the last forward (batch or running), per channel.
    mean: Vec<f32>,
    /// Per-channel pairs of sums, and per-block partial sums (scratch).
    sum: Vec<(f64, f64)>,
    partials: Vec<(f64, f64)>,
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
            mean: vec![0.0; c],
            sum: vec![(0.0, 0.0); c],
            partials: Vec::new(),
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
        let mean = match mode {
            Mode::Eval => {
                // Fixed statistics: an affine map per channel.
                for ch in 0..c {
                    self.inv_std[ch] = 1.0 / (self.moving_variance[ch] + self.epsilon).sqrt();
                    self.mean[ch] = self.moving_mean[ch];
                }
                &self.mean
            }
            Mode::Train => {
                // Σx and Σx² per channel, in f64 so large batches stay accurate.
                let rows = (x.data.len() / c) as f64;
                channel_sums(
                    &x.data,
                    &x.data,
                    c,
                    &mut self.partials,
                    &mut self.sum,
                    |a, _| (a as f64, a as f64 * a as f64),
                );
                let m = self.momentum;
                for ch in 0..c {
                    let mu = self.sum[ch].0 / rows;
                    let var = (self.sum[ch].1 / rows - mu * mu).max(0.0);
                    self.mean[ch] = mu as f32;
                    self.inv_std[ch] = 1.0 / ((var as f32) + self.epsilon).sqrt();
                    self.moving_mean[ch] = m * self.moving_mean[ch] + (1.0 - m) * mu as f32;
                    self.moving_variance[ch] =
                        m * self.moving_variance[ch] + (1.0 - m) * var as f32;
                }
                &self.mean
            }
        };
        // x̂ = (x − μ)·inv_std,  y = γ·x̂ + β
        let (inv_std, gamma, beta) = (&self.inv_std, &self.gamma, &self.beta);
        y.data
            .par_chunks_mut(BLOCK_ROWS * c)
            .zip(self.xhat.par_chunks_mut(BLOCK_ROWS * c))
            .zip(x.data.par_chunks(BLOCK_ROWS * c))
            .for_each(|((y, xh), x)| {
                for ((ys, xh), xs) in y
                    .chunks_exact_mut(c)
                    .zip(xh.chunks_exact_mut(c))
                    .zip(x.chunks_exact(c))
                {
                    for ch in 0..c {
                        xh[ch] = (xs[ch] - mean[ch]) * inv_std[ch];
                        ys[ch] = gamma[ch] * xh[ch] + beta[ch];
                    }
                }
            });
    }

    /// With `M = n·h·w` positions per channel: `dβ = Σ dy`, `dγ = Σ dy·x̂`, and
    /// `dx = γ·inv_std/M · (M·dy − dβ − x̂·dγ)` in training (the batch
    /// statistics depend on x), `dx = γ·inv_std·dy` in evaluation.
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let c = self.shape.channels;
        let rows = (x.data.len() / c) as f32;
        channel_sums(
            &dy.data,
            &self.xhat,
            c,
            &mut self.partials,
            &mut self.sum,
            |g, xh| (g as f64, g as f64 * xh as f64),
        );
        for ch in 0..c {
            self.dbeta[ch] = self.sum[ch].0 as f32;
            self.dgamma[ch] = self.sum[ch].1 as f32;
        }
        let Some(dx) = dx else { return };
        dx.resize(x.n, self.shape);
        let train = self.last_mode == Mode::Train;
        let (gamma, inv_std, dbeta, dgamma) =
            (&self.gamma, &self.inv_std, &self.dbeta, &self.dgamma);
        dx.data
            .par_chunks_mut(BLOCK_ROWS * c)
            .zip(dy.data.par_chunks(BLOCK_ROWS * c))
            .zip(self.xhat.par_chunks(BLOCK_ROWS * c))
            .for_each(|((dx, dy), xh)| {
                for ((d, g), xh) in dx
                    .chunks_exact_mut(c)
                    .zip(dy.chunks_exact(c))
                    .zip(xh.chunks_exact(c))
                {
                    for ch in 0..c {
                        d[ch] = if train {
                            gamma[ch] * inv_std[ch] / rows
                                * (rows * g[ch] - dbeta[ch] - xh[ch] * dgamma[ch])
                        } else {
                            gamma[ch] * inv_std[ch] * g[ch]
                        };
                    }
                }
            });
    }

    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        f(&mut self.gamma, &self.dgamma, false);
        f(&mut self.beta, &self.dbeta, false);
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
