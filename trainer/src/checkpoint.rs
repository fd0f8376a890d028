//! Resumable training: after every epoch the whole training state (weights,
//! Adam moments, best weights so far, history, early-stopping counters) is
//! written atomically to one safetensors file. A run restarted with the same
//! checkpoint path continues from the last finished epoch; since each epoch's
//! shuffle and dropout masks depend only on `(seed, epoch)`, the resumed run
//! is the same as an uninterrupted one.

use crate::network::Network;
use crate::optim::Adam;
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
    opt: &Adam,
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
    for (i, (m, v)) in opt.moments.iter().enumerate() {
        tensors.push((format!("adam.m.{i}"), m.clone()));
        tensors.push((format!("adam.v.{i}"), v.clone()));
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
    let metadata = HashMap::from([
        ("architecture".to_string(), net.spec().to_json()),
        ("class_names".to_string(), net.class_names.join(",")),
        ("state".to_string(), json(state)),
        ("adam".to_string(), json(opt)),
        ("config".to_string(), json(cfg)),
    ]);
    let file = safetensors::serialize(views, Some(metadata)).map_err(|e| invalid(e.to_string()))?;
    crate::atomic::write_atomic(path, &file).map_err(|source| CheckpointError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// A loaded checkpoint.
pub struct Resumed {
    pub net: Network,
    pub opt: Adam,
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
    let mut opt: Adam = serde_json::from_str(get("adam")?).map_err(|e| invalid(e.to_string()))?;
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
    let mut i = 0;
    while let (Ok(m), Ok(v)) = (
        tensor(&format!("adam.m.{i}")),
        tensor(&format!("adam.v.{i}")),
    ) {
        opt.moments.push((m, v));
        i += 1;
    }
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
