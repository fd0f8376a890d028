//! Distillation from a teacher: a trained (usually larger) model's class
//! probabilities for every training image, computed once before training,
//! become part of the student's target (Hinton et al., 2015, at temperature
//! 1 and with fixed targets):
//!
//! ```text
//! r(x) = Σ wᵥ softmax(teacher(view x))      (the views of a TTA, or x alone)
//! q    = (1 − α)·label_target + α·r(x)      (the loss is −Σ q log p)
//! ```
//!
//! A small network that cannot fit its labels any better learns more from
//! the teacher's "dark knowledge" (which wrong classes are plausible) than
//! from one-hot labels. The targets are computed on the un-augmented image
//! (with the teacher's own test-time views) and reused for every augmented
//! copy of it, so the teacher costs one pass over the training set, not one
//! per step.

use crate::data::Split;
use crate::model::network::Network;
use crate::train::evaluate::{probabilities, Tta, EVAL_BATCH};

/// A teacher's probabilities for every image of a training split, and the
/// weight α they get in the target.
#[derive(Clone, Debug, PartialEq)]
pub struct Distillation {
    /// `classes` probabilities per image, in the split's order.
    pub probs: Vec<f32>,
    pub classes: usize,
    /// α in `[0, 1]`.
    pub weight: f32,
    /// Where the probabilities come from (the teacher's path and digest, its
    /// views), which a checkpoint must match to be resumed.
    pub origin: String,
}

impl Distillation {
    /// Runs `teacher` over `train` (with the views of `tta`, if any) in
    /// evaluation mode. The teacher must take `train`'s images and have one
    /// output per class.
    pub fn from_teacher(
        teacher: &mut Network,
        train: &Split,
        tta: Option<Tta>,
        weight: f32,
        origin: String,
    ) -> Result<Distillation, String> {
        if !(0.0..=1.0).contains(&weight) {
            return Err(format!("teacher weight {weight} must be in [0, 1]"));
        }
        let input = teacher.input_shape();
        if input != train.shape {
            return Err(format!(
                "the teacher takes {}×{}×{} images, the data has {}×{}×{}",
                input.height,
                input.width,
                input.channels,
                train.shape.height,
                train.shape.width,
                train.shape.channels
            ));
        }
        let classes = teacher.num_classes();
        if let Some(&t) = train.labels.iter().max() {
            if usize::from(t) >= classes {
                return Err(format!(
                    "the teacher has {classes} outputs, the data has label {t}"
                ));
            }
        }
        let probs = probabilities(teacher, train, EVAL_BATCH, tta);
        if let Some(bad) = probs.iter().position(|p| !p.is_finite()) {
            return Err(format!(
                "the teacher's probabilities of training image {} are not finite",
                bad / classes
            ));
        }
        Ok(Distillation {
            probs,
            classes,
            weight,
            origin,
        })
    }

    /// Appends the rows of the images `indices` (of the split) to `out`.
    pub fn gather(&self, indices: &[usize], out: &mut Vec<f32>) {
        for &i in indices {
            out.extend_from_slice(&self.probs[i * self.classes..(i + 1) * self.classes]);
        }
    }

    /// How often the teacher's most probable class is the label.
    pub fn agreement(&self, labels: &[u8]) -> f32 {
        let right = self
            .probs
            .chunks_exact(self.classes)
            .zip(labels)
            .filter(|(p, &t)| crate::model::loss::argmax(p) == usize::from(t))
            .count();
        right as f32 / labels.len().max(1) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tensor::ImageShape;
    use crate::model::spec::ModelSpec;

    fn tiny(classes: usize) -> Network {
        let spec = ModelSpec::from_json_str(&format!(
            r#"{{"name":"t","input":{{"height":4,"width":4,"channels":3}},
              "layers":[{{"type":"conv2d","filters":4,"kernel":3}},{{"type":"relu"}},
                        {{"type":"global_avg_pool"}},{{"type":"dense","units":{classes}}}]}}"#
        ))
        .unwrap();
        Network::new(&spec, 7).unwrap()
    }

    fn split(n: usize) -> Split {
        let shape = ImageShape::new(4, 4, 3);
        Split {
            images: (0..n * shape.len()).map(|i| (i * 37 % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 3) as u8).collect(),
            shape,
        }
    }

    #[test]
    fn rows_are_the_teachers_probabilities() {
        let (mut teacher, train) = (tiny(3), split(5));
        let d = Distillation::from_teacher(&mut teacher, &train, None, 0.5, "t".into()).unwrap();
        assert_eq!(d.probs.len(), 15);
        let direct = teacher.predict_proba(&train.images, 5);
        assert_eq!(d.probs, direct);
        for row in d.probs.chunks_exact(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let mut out = vec![];
        d.gather(&[4, 1], &mut out);
        assert_eq!(out[..3], d.probs[12..15]);
        assert_eq!(out[3..], d.probs[3..6]);
        // With views: the weighted mean, which differs from the plain one.
        let f = Distillation::from_teacher(&mut teacher, &train, Some(Tta::Flip), 0.5, "t".into())
            .unwrap();
        assert_ne!(f.probs, d.probs);
        for row in f.probs.chunks_exact(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn a_mismatched_teacher_is_refused() {
        let train = split(4);
        let e = Distillation::from_teacher(&mut tiny(2), &train, None, 0.5, "t".into());
        assert!(e.unwrap_err().contains("2 outputs"));
        let e = Distillation::from_teacher(&mut tiny(3), &train, None, 1.5, "t".into());
        assert!(e.unwrap_err().contains("weight"));
        let other = Split {
            images: vec![0; 2 * 5 * 5 * 3],
            labels: vec![0, 1],
            shape: ImageShape::new(5, 5, 3),
        };
        let e = Distillation::from_teacher(&mut tiny(3), &other, None, 0.5, "t".into());
        assert!(e.unwrap_err().contains("4×4×3"));
    }
}
