//! Evaluation of a network on a split: loss, accuracy and predictions, plain
//! or with test-time augmentation (flips, and airbench's flips and shifts).

use crate::data::Split;
use crate::model::network::Network;
use serde::{Deserialize, Serialize};

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

/// Test-time augmentation (TTA): the views of each image that are
/// classified, and the weights their class probabilities are averaged with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tta {
    /// The image and its mirror image, ½ each.
    #[default]
    Flip,
    /// airbench's six views: the image and its mirror image (¼ each), and
    /// both shifted by one pixel up-left and by one down-right, with
    /// reflected borders (⅛ each).
    FlipTranslate,
}

/// One view of an image: mirrored or not, shifted by `shift` pixels on both
/// axes (the content moves by `shift`: −1 up-left), with reflected borders.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub mirror: bool,
    pub shift: i8,
    pub weight: f32,
}

impl Tta {
    /// The views and their weights (which sum to 1).
    pub fn views(self) -> &'static [View] {
        const fn v(mirror: bool, shift: i8, weight: f32) -> View {
            View {
                mirror,
                shift,
                weight,
            }
        }
        const FLIP: [View; 2] = [v(false, 0, 0.5), v(true, 0, 0.5)];
        const FLIP_TRANSLATE: [View; 6] = [
            v(false, 0, 0.25),
            v(true, 0, 0.25),
            v(false, -1, 0.125),
            v(true, -1, 0.125),
            v(false, 1, 0.125),
            v(true, 1, 0.125),
        ];
        match self {
            Tta::Flip => &FLIP,
            Tta::FlipTranslate => &FLIP_TRANSLATE,
        }
    }

    /// `flips` or `flips and shifts`, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Tta::Flip => "flips",
            Tta::FlipTranslate => "flips and 1-pixel shifts",
        }
    }
}

impl View {
    /// Writes the view of `src` into `dst` (both HWC of `shape`).
    pub fn render(&self, src: &[u8], dst: &mut [u8], shape: crate::kernels::tensor::ImageShape) {
        use crate::data::augment::{augment_image, Augment, Draw, PadMode};
        if self.shift == 0 && !self.mirror {
            dst.copy_from_slice(src);
            return;
        }
        let pad = usize::from(self.shift != 0);
        let aug = Augment {
            crop_pad: pad,
            pad_mode: PadMode::Reflect,
            flip: self.mirror,
            ..Augment::default()
        };
        // out[y, x] = padded[y + o, x + o] = src[y + o − pad, x + o − pad].
        let o = (pad as isize - isize::from(self.shift)) as usize;
        let draw = Draw {
            oy: o,
            ox: o,
            flip: self.mirror,
            cutout_at: (0, 0),
        };
        augment_image(src, dst, shape, &aug, &draw);
    }
}

/// Evaluation with test-time augmentation: the class probabilities of the
/// views of `tta` (each through the network in evaluation mode) are averaged
/// with their weights, `p̄ = Σ wᵥ softmax(f(view x))` ([`probabilities`]); the
/// prediction is `argmax p̄` and the loss `−ln p̄[label]`. Costs one forward
/// pass per view.
pub fn evaluate_tta(net: &mut Network, split: &Split, batch: usize, tta: Tta) -> Evaluation {
    let probs = probabilities(net, split, batch, Some(tta));
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut predictions = Vec::with_capacity(split.len());
    let classes = probs.len() / split.len().max(1);
    for (p, &t) in probs.chunks_exact(classes.max(1)).zip(&split.labels) {
        let predicted = crate::model::loss::argmax(p);
        // Clamped so that a probability that underflows to 0 gives a
        // large finite loss rather than infinity.
        loss_sum -= f64::from(p[t as usize].max(f32::MIN_POSITIVE)).ln();
        correct += usize::from(predicted == t as usize);
        predictions.push(predicted as u8);
    }
    let n = split.len().max(1);
    Evaluation {
        loss: (loss_sum / n as f64) as f32,
        accuracy: correct as f32 / n as f32,
        predictions,
    }
}

/// The class probabilities of every image of `split` (evaluation mode), one
/// row per image: `softmax(f(x))`, or with `tta` the weighted mean over its
/// views, `Σ wᵥ softmax(f(view x))`. In batches of `batch` images.
pub fn probabilities(net: &mut Network, split: &Split, batch: usize, tta: Option<Tta>) -> Vec<f32> {
    const PLAIN: &[View] = &[View {
        mirror: false,
        shift: 0,
        weight: 1.0,
    }];
    let views = tta.map_or(PLAIN, Tta::views);
    let batch = batch.max(1);
    let image_len = split.image_len();
    let mut view_images = vec![0u8; batch.min(split.len()) * image_len];
    let mut all = Vec::new();
    for start in (0..split.len()).step_by(batch) {
        let n = (split.len() - start).min(batch);
        let images = &split.images[start * image_len..(start + n) * image_len];
        let at = all.len();
        for (k, view) in views.iter().enumerate() {
            for (src, dst) in images
                .chunks_exact(image_len)
                .zip(view_images.chunks_exact_mut(image_len))
            {
                view.render(src, dst, split.shape);
            }
            let p = net.predict_proba(&view_images[..n * image_len], n);
            if k == 0 {
                all.extend(p.iter().map(|q| view.weight * q));
            } else {
                for (acc, q) in all[at..].iter_mut().zip(&p) {
                    *acc += view.weight * q;
                }
            }
        }
    }
    all
}
