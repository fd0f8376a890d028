//! Warm start: a network begins training from an exported model's weights
//! and batch-norm running statistics instead of a fresh initialisation (for
//! fine-tuning a trained model, e.g. a shipped one on one's own images).
//!
//! The two architectures must have the same tensors: the same names and
//! shapes in the same order. The optimiser's state is not in a model file, so
//! it starts fresh.

use crate::model::network::Network;

#[derive(Debug, thiserror::Error)]
pub enum WarmStartError {
    #[error(
        "{origin} does not fit the architecture: {problem} (the architecture must have the same layer names and shapes)"
    )]
    Mismatch { origin: String, problem: String },
}

/// Copies every tensor of `from` (loaded from `origin`) into `net`; on a
/// mismatch, names the first tensor that differs and leaves `net` unchanged.
pub fn warm_start(net: &mut Network, from: &Network, origin: &str) -> Result<(), WarmStartError> {
    let ours = net.named_tensors();
    let theirs = from.named_tensors();
    let mismatch = |problem: String| WarmStartError::Mismatch {
        origin: origin.to_string(),
        problem,
    };
    for i in 0..ours.len().max(theirs.len()) {
        match (ours.get(i), theirs.get(i)) {
            (Some((a, sa, _)), Some((b, sb, _))) if a != b || sa != sb => {
                return Err(mismatch(format!(
                    "tensor {} is `{b}` {sb:?} in the file, `{a}` {sa:?} in the architecture",
                    i + 1
                )));
            }
            (Some((a, sa, _)), None) => {
                return Err(mismatch(format!(
                    "the file has no `{a}` {sa:?} ({} tensors, the architecture {})",
                    theirs.len(),
                    ours.len()
                )));
            }
            (None, Some((b, sb, _))) => {
                return Err(mismatch(format!(
                    "the file has `{b}` {sb:?}, which the architecture has not ({} tensors, the architecture {})",
                    theirs.len(),
                    ours.len()
                )));
            }
            _ => {}
        }
    }
    net.restore(&from.snapshot());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Mode;
    use crate::train::spec_file::SpecFile;

    fn net(name: &str, seed: u64) -> Network {
        Network::new(&SpecFile::builtin(name).unwrap().model, seed).unwrap()
    }

    #[test]
    fn weights_and_running_statistics_are_copied() {
        // `fast` has batch norm: its running statistics travel too.
        let mut trained = net("fast", 1);
        let images: Vec<u8> = (0..4 * 3072).map(|i| (i * 7 % 251) as u8).collect();
        trained.set_input_u8(&images, 4);
        trained.forward(Mode::Train); // moves the running statistics
        let mut fresh = net("fast", 2);
        warm_start(&mut fresh, &trained, "trained.safetensors").unwrap();
        assert_eq!(fresh.snapshot(), trained.snapshot());
        let a = fresh.predict_proba(&images, 4);
        let b = trained.predict_proba(&images, 4);
        assert_eq!(a, b);
    }

    #[test]
    fn a_different_architecture_is_refused_naming_the_tensor() {
        let mut m1 = net("model1", 1);
        let before = m1.snapshot();
        let err = warm_start(&mut m1, &net("model3", 1), "m3.safetensors").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("m3.safetensors does not fit"), "{text}");
        assert!(text.contains("tensor "), "{text}");
        assert_eq!(m1.snapshot(), before, "unchanged on error");
        let err = warm_start(&mut m1, &net("fast", 1), "fast.safetensors").unwrap_err();
        // conv1 has the same shape in both: the first difference is named.
        assert!(
            err.to_string()
                .contains("tensor 3 is `bn1.gamma` [32] in the file"),
            "{err}"
        );
    }
}
