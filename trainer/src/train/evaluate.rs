//! Evaluation of a network on a split: loss, accuracy and predictions, plain
//! or with test-time augmentation by horizontal flips.

use crate::data::Split;
use crate::model::network::Network;

/// Batch size of evaluation passes (bounded so activations stay small).
pub const EVAL_BATCH: usize = 100;

/// Loss, accuracy and predictions of a network on a split (evaluation mode).
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
    pub predictions: Vec<u8>,
}

/// Evaluates `net` on `split` in batches of `batch` images.
pub fn evaluate(net: &mut Network, split: &Split, batch: usize) -> Evaluation {
    let image_len = split.image_len();
    let mut loss_sum = 0.0f64;
    let mut correct = 0;
    let mut predictions = Vec::with_capacity(split.len());
    for start in (0..split.len()).step_by(batch.max(1)) {
        let n = (split.len() - start).min(batch);
        let labels = &split.labels[start..start + n];
        net.set_input_u8(&split.images[start * image_len..(start + n) * image_len], n);
        let logits = net.forward(crate::layers::Mode::Eval);
        let b = crate::model::loss::softmax_cross_entropy(logits, labels, None);
        loss_sum += b.loss as f64 * n as f64;
        correct += b.correct;
        let classes = logits.image_len();
        predictions.extend(
            logits
                .data
                .chunks_exact(classes)
                .map(|z| crate::model::loss::argmax(z) as u8),
        );
    }
    let n = split.len().max(1);
    Evaluation {
        loss: (loss_sum / n as f64) as f32,
        accuracy: correct as f32 / n as f32,
        predictions,
    }
}

/// Evaluation with test-time augmentation (TTA) by horizontal flips: each
/// image and its mirror image go through the network (evaluation mode) and
/// their class probabilities are averaged,
/// `p̄ = ½ (softmax(f(x)) + softmax(f(mirror x)))`; the prediction is
/// `argmax p̄` and the loss `−ln p̄[label]`. Costs two forward passes.
pub fn evaluate_tta(net: &mut Network, split: &Split, batch: usize) -> Evaluation {
    let batch = batch.max(1);
    let image_len = split.image_len();
    let mut mirrored = vec![0u8; batch.min(split.len()) * image_len];
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut predictions = Vec::with_capacity(split.len());
    for start in (0..split.len()).step_by(batch) {
        let n = (split.len() - start).min(batch);
        let images = &split.images[start * image_len..(start + n) * image_len];
        let labels = &split.labels[start..start + n];
        for (src, dst) in images
            .chunks_exact(image_len)
            .zip(mirrored.chunks_exact_mut(image_len))
        {
            crate::data::augment::mirror_image(src, dst, split.shape);
        }
        let mut probs = net.predict_proba(images, n);
        let flipped = net.predict_proba(&mirrored[..n * image_len], n);
        for (p, q) in probs.iter_mut().zip(&flipped) {
            *p = 0.5 * (*p + q);
        }
        let classes = probs.len() / n;
        for (p, &t) in probs.chunks_exact(classes).zip(labels) {
            let predicted = crate::model::loss::argmax(p);
            // Clamped so that a probability that underflows to 0 gives a
            // large finite loss rather than infinity.
            loss_sum -= f64::from(p[t as usize].max(f32::MIN_POSITIVE)).ln();
            correct += usize::from(predicted == t as usize);
            predictions.push(predicted as u8);
        }
    }
    let n = split.len().max(1);
    Evaluation {
        loss: (loss_sum / n as f64) as f32,
        accuracy: correct as f32 / n as f32,
        predictions,
    }
}
