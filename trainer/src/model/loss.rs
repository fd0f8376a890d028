//! Softmax fused with categorical cross-entropy.
//!
//! For logits `z` and label `t`: `p = softmax(z)`, `L = −log p[t]`, averaged
//! over the batch, and `∂L/∂z = (p − onehot(t)) / n`, which is why the two
//! are fused: the gradient is simple and numerically safe.
//!
//! With label smoothing ε the target is `q = (1 − ε)·onehot(t) + ε/K` for `K`
//! classes: `L = −Σ_c q_c log p_c = logsumexp(z) − Σ_c q_c z_c` and
//! `∂L/∂z = (p − q) / n`. With ε = 0 both are exactly the plain ones.

use crate::kernels::tensor::Tensor;

/// Loss and number of correct predictions of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchLoss {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    pub correct: usize,
}

/// `softmax` of one row of logits, in place, computed stably (`z − max z`).
pub fn softmax_in_place(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(z: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best
}

/// Loss of `logits` against `labels`; writes `∂L/∂logits` into `grad` when given.
pub fn softmax_cross_entropy(
    logits: &Tensor,
    labels: &[u8],
    grad: Option<&mut Tensor>,
) -> BatchLoss {
    softmax_cross_entropy_smoothed(logits, labels, 0.0, grad)
}

/// [`softmax_cross_entropy`] against labels smoothed by `smoothing` (ε in `[0, 1)`).
pub fn softmax_cross_entropy_smoothed(
    logits: &Tensor,
    labels: &[u8],
    smoothing: f32,
    grad: Option<&mut Tensor>,
) -> BatchLoss {
    let classes = logits.image_len();
    let (on, off) = (1.0 - smoothing, smoothing / classes as f32);
    let n = logits.n;
    assert_eq!(labels.len(), n, "one label per image");
    let mut probs = [0f32; 256];
    let mut total = 0.0f64;
    let mut correct = 0;
    let mut grad = grad;
    if let Some(g) = grad.as_deref_mut() {
        g.resize(n, logits.image_shape());
    }
    for (i, (z, &t)) in logits.data.chunks_exact(classes).zip(labels).enumerate() {
        let p = &mut probs[..classes];
        p.copy_from_slice(z);
        softmax_in_place(p);
        // −log p[t] = logsumexp(z) − z[t], computed stably. Not clamped: a
        // network whose logits overflow must show up as a non-finite loss.
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max as f64
            + z.iter()
                .map(|&v| ((v - max) as f64).exp())
                .sum::<f64>()
                .ln();
        total += if smoothing == 0.0 {
            lse - z[t as usize] as f64
        } else {
            let target: f64 = z
                .iter()
                .enumerate()
                .map(|(c, &v)| {
                    (on as f64 * f64::from(u8::from(c == t as usize)) + off as f64) * v as f64
                })
                .sum();
            lse - target
        };
        correct += usize::from(argmax(z) == t as usize);
        if let Some(g) = grad.as_deref_mut() {
            let g = &mut g.data[i * classes..(i + 1) * classes];
            for (c, (g, &p)) in g.iter_mut().zip(p.iter()).enumerate() {
                *g = (p - (on * f32::from(c == t as usize) + off)) / n as f32;
            }
        }
    }
    BatchLoss {
        loss: (total / n as f64) as f32,
        correct,
    }
}
