//! Resumable training: after every epoch the whole training state (weights,
//! optimiser state (Adam moments or SGD velocity), best weights so far, history, early-stopping counters) is
//! written atomically to one safetensors file. A run restarted with the same
//! checkpoint path continues from the last finished epoch; since each epoch's
//! shuffle and dropout masks depend only on `(seed, epoch)`, the resumed run
//! is the same as an uninterrupted one.

use crate::network::Network;
use crate::optim::{Adam, Optimizer};
use crate::train::{TrainConfig, TrainState};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {problem}")]
    Invalid { path: String, problem: String },
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Writes the checkpoint atomically.
pub fn save(
    path: &Path,
    net: &Network,
    opt: &Optimizer,
    state: &TrainState,
    cfg: &TrainConfig,
) -> Result<(), CheckpointError> {
    let invalid = |problem: String| CheckpointError::Invalid {
        path: path.display().to_string(),
        problem,
    };
    let mut tensors: Vec<(String, Vec<f32>)> = net
        .named_tensors()
        .into_iter()
        .map(|(n, _, d)| (n, d.to_vec()))
        .collect();
    for (name, values) in opt.state_tensors() {
        tensors.push((name, values.to_vec()));
    }
    if let Some(best) = &state.best_weights {
        for (i, w) in best.iter().enumerate() {
            tensors.push((format!("best.{i}"), w.clone()));
        }
    }
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, d)| to_bytes(d)).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, d), b)| {
            TensorView::new(Dtype::F32, vec![d.len()], b).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let json = |v: &dyn erased::Json| v.to_json();
    let mut metadata = HashMap::from([
        ("architecture".to_string(), net.spec().to_json()),
        ("class_names".to_string(), net.class_names.join(",")),
        ("state".to_string(), json(state)),
        ("optimizer".to_string(), json(opt)),
        ("config".to_string(), json(cfg)),
    ]);
    // Also under the old key, so that older trainers can still resume an Adam run.
    if let Optimizer::Adam(adam) = opt {
        metadata.insert("adam".to_string(), json(adam));
    }
    let file = safetensors::serialize(views, Some(metadata)).map_err(|e| invalid(e.to_string()))?;
    crate::atomic::write_atomic(path, &file).map_err(|source| CheckpointError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// A loaded checkpoint.
pub struct Resumed {
    pub net: Network,
    pub opt: Optimizer,
    pub state: TrainState,
    pub config: TrainConfig,
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Resumed, CheckpointError> {
    let shown = path.display().to_string();
    let invalid = |problem: String| CheckpointError::Invalid {
        path: shown.clone(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        path: shown.clone(),
        source,
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| invalid(format!("no {key:?} in the metadata")))
    };
    let spec = crate::spec::ModelSpec::from_json_str(get("architecture")?)
        .map_err(|e| invalid(e.to_string()))?;
    let mut net = Network::new(&spec, 0).map_err(|e| invalid(e.to_string()))?;
    net.class_names = get("class_names")?.split(',').map(str::to_string).collect();
    let mut state: TrainState =
        serde_json::from_str(get("state")?).map_err(|e| invalid(e.to_string()))?;
    // Checkpoints from before SGD hold only `adam`.
    let mut opt: Optimizer = match meta.get("optimizer") {
        Some(json) => serde_json::from_str(json),
        None => serde_json::from_str::<Adam>(get("adam")?).map(Optimizer::Adam),
    }
    .map_err(|e| invalid(e.to_string()))?;
    let config: TrainConfig =
        serde_json::from_str(get("config")?).map_err(|e| invalid(e.to_string()))?;

    let file = SafeTensors::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?;
    let tensor = |name: &str| {
        file.tensor(name)
            .map(|v| from_bytes(v.data()))
            .map_err(|_| invalid(format!("tensor {name} is missing")))
    };
    let expected: Vec<(String, usize)> = net
        .named_tensors()
        .into_iter()
        .map(|(n, _, d)| (n, d.len()))
        .collect();
    let mut weights = Vec::new();
    for (name, len) in &expected {
        let w = tensor(name)?;
        if w.len() != *len {
            return Err(invalid(format!(
                "tensor {name} has {} values, expected {len}",
                w.len()
            )));
        }
        weights.push(w);
    }
    net.restore(&weights);
    opt.restore_state(&mut |name| tensor(name).ok());
    if state.best.is_some() && file.names().iter().any(|n| n.starts_with("best.")) {
        state.best_weights = Some(
            (0..expected.len())
                .map(|i| tensor(&format!("best.{i}")))
                .collect::<Result<_, _>>()?,
        );
    }
    Ok(Resumed {
        net,
        opt,
        state,
        config,
    })
}

/// JSON for the metadata values (all these types serialise infallibly).
mod erased {
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("plain data serialises")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Sgd;
    use crate::spec::ModelSpec;

    fn trained(opt: &mut Optimizer) -> Network {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"t","input":{"height":2,"width":2,"channels":3},"layers":[
                {"type":"conv2d","filters":2,"kernel":2},{"type":"batchnorm"},
                {"type":"flatten"},{"type":"dense","units":3}]}"#,
        )
        .unwrap();
        let mut net = Network::new(&spec, 4).unwrap();
        let images: Vec<u8> = (0..4 * 12).map(|i| (i * 37 % 256) as u8).collect();
        for _ in 0..3 {
            net.set_input_u8(&images, 4);
            net.forward_backward(&[0, 1, 2, 1]);
            opt.step(&mut net, 1.0);
        }
        net
    }

    fn state() -> TrainState {
        TrainState {
            epochs_done: 1,
            ..TrainState::default()
        }
    }

    #[test]
    fn sgd_and_adam_state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut sgd = Sgd::new(0.1, 0.9, true);
        sgd.weight_decay = 5e-4;
        sgd.decay_bn_bias = false;
        for mut opt in [Optimizer::Sgd(sgd), Optimizer::default()] {
            let net = trained(&mut opt);
            let path = dir.path().join("c.ckpt");
            save(&path, &net, &opt, &state(), &TrainConfig::default()).unwrap();
            let r = load(&path).unwrap();
            assert_eq!(r.opt, opt);
            assert_eq!(r.opt.steps(), 3);
            assert_eq!(r.net.snapshot(), net.snapshot());
            assert_eq!(r.state.epochs_done, 1);
        }
    }

    /// A checkpoint written before SGD existed has its Adam under `adam` only.
    #[test]
    fn old_adam_only_checkpoint_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut opt = Optimizer::default();
        let net = trained(&mut opt);
        let path = dir.path().join("new.ckpt");
        save(&path, &net, &opt, &state(), &TrainConfig::default()).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = meta.metadata().clone().unwrap();
        assert!(meta.remove("optimizer").is_some());
        // The old trainer wrote the Adam fields it had, and a config without
        // the new training settings.
        let adam: serde_json::Value = serde_json::from_str(&meta["adam"]).unwrap();
        let mut adam = adam.as_object().unwrap().clone();
        adam.remove("weight_decay");
        adam.remove("decay_bn_bias");
        meta.insert("adam".into(), serde_json::to_string(&adam).unwrap());
        meta.insert(
            "config".into(),
            r#"{"epochs":35,"batch_size":32,"seed":1,"early_stopping":null,"progress":false}"#
                .into(),
        );
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let tensors: Vec<(String, TensorView)> = file.tensors();
        let old = safetensors::serialize(tensors, Some(meta)).unwrap();
        let old_path = dir.path().join("old.ckpt");
        std::fs::write(&old_path, old).unwrap();

        let r = load(&old_path).unwrap();
        assert_eq!(r.opt, opt);
        assert_eq!(r.config.batch_size, 32);
        assert_eq!(r.net.snapshot(), net.snapshot());
    }
}
