//! Softmax fused with categorical cross-entropy.
//!
//! For logits `z` and label `t`: `p = softmax(z)`, `L = −log p[t]`, averaged
//! over the batch, and `∂L/∂z = (p − onehot(t)) / n`, which is why the two
//! are fused: the gradient is simple and numerically safe.
//!
//! With label smoothing ε the target is `q = (1 − ε)·onehot(t) + ε/K` for `K`
//! classes: `L = −Σ_c q_c log p_c = logsumexp(z) − Σ_c q_c z_c` and
//! `∂L/∂z = (p − q) / n`. With ε = 0 both are exactly the plain ones.
//!
//! Distillation mixes a teacher's probabilities `r` into the target with
//! weight α ([`Targets::soft`]): `q = (1 − α)·((1 − ε)·onehot(t) + ε/K) + α·r`,
//! the same loss and gradient with that `q` (`r` sums to 1, so `q` does).

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

/// What a batch is trained towards: its labels, smoothed by ε, and
/// optionally mixed with a teacher's class probabilities.
#[derive(Clone, Copy, Debug)]
pub struct Targets<'a> {
    pub labels: &'a [u8],
    /// Label smoothing ε in `[0, 1)`.
    pub smoothing: f32,
    /// A teacher's probabilities, one row of K per image, and their weight α
    /// in `[0, 1]`.
    pub soft: Option<(&'a [f32], f32)>,
}

impl<'a> Targets<'a> {
    /// `labels`, smoothed by `smoothing`.
    pub fn smoothed(labels: &'a [u8], smoothing: f32) -> Self {
        Targets {
            labels,
            smoothing,
            soft: None,
        }
    }
}

/// [`softmax_cross_entropy`] against labels smoothed by `smoothing` (ε in `[0, 1)`).
pub fn softmax_cross_entropy_smoothed(
    logits: &Tensor,
    labels: &[u8],
    smoothing: f32,
    grad: Option<&mut Tensor>,
) -> BatchLoss {
    softmax_cross_entropy_targets(logits, Targets::smoothed(labels, smoothing), grad)
}

/// The loss of `logits` against `targets` (see the module's documentation);
/// `correct` counts the predictions equal to the labels.
pub fn softmax_cross_entropy_targets(
    logits: &Tensor,
    targets: Targets,
    grad: Option<&mut Tensor>,
) -> BatchLoss {
    let Targets {
        labels,
        smoothing,
        soft,
    } = targets;
    let classes = logits.image_len();
    let alpha = soft.map_or(0.0, |(_, a)| a);
    let (on, off) = (1.0 - smoothing, smoothing / classes as f32);
    // q_c = keep·(on·[c = t] + off) + α·r_c
    let keep = 1.0 - alpha;
    let n = logits.n;
    assert_eq!(labels.len(), n, "one label per image");
    if let Some((r, _)) = soft {
        assert_eq!(r.len(), n * classes, "one row of probabilities per image");
    }
    let mut probs = [0f32; 256];
    let mut total = 0.0f64;
    let mut correct = 0;
    let mut grad = grad;
    if let Some(g) = grad.as_deref_mut() {
        g.resize(n, logits.image_shape());
    }
    for (i, (z, &t)) in logits.data.chunks_exact(classes).zip(labels).enumerate() {
        let teacher = soft.map(|(r, _)| &r[i * classes..(i + 1) * classes]);
        let q = |c: usize| -> f32 {
            let label = on * f32::from(u8::from(c == t as usize)) + off;
            match teacher {
                None => label,
                Some(r) => keep * label + alpha * r[c],
            }
        };
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
        total += if smoothing == 0.0 && teacher.is_none() {
            lse - z[t as usize] as f64
        } else {
            // Σ q = 1, so −Σ q_c log p_c = lse − Σ q_c z_c.
            let target: f64 = z
                .iter()
                .enumerate()
                .map(|(c, &v)| q(c) as f64 * v as f64)
                .sum();
            lse - target
        };
        correct += usize::from(argmax(z) == t as usize);
        if let Some(g) = grad.as_deref_mut() {
            let g = &mut g.data[i * classes..(i + 1) * classes];
            for (c, (g, &p)) in g.iter_mut().zip(p.iter()).enumerate() {
                *g = (p - q(c)) / n as f32;
            }
        }
    }
    BatchLoss {
        loss: (total / n as f64) as f32,
        correct,
    }
}
