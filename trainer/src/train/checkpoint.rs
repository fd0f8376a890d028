//! Resumable training: after every epoch the whole training state (weights,
//! optimiser state (Adam moments or SGD velocity), best weights so far,
//! history, early-stopping counters) is written atomically to one safetensors
//! file, with the [`RunFingerprint`] of the run that wrote it. A run restarted
//! with the same checkpoint path continues from the last finished epoch; since
//! each epoch's shuffle and dropout masks depend only on `(seed, epoch)`, the
//! resumed run is the same as an uninterrupted one.
//!
//! Tensors are keyed by parameter name: `conv1.weight` (the weights, as in the
//! model file), `conv1.weight.adam_m`, `conv1.weight.adam_v` or
//! `conv1.weight.sgd_v` (optimiser state), `conv1.weight.best` (early
//! stopping's best weights; every saved tensor, running statistics included).
//!
//! The metadata's `checksum` is the SHA-256 of every tensor (by name) and
//! every other metadata entry (`checksum`): a file damaged after it was
//! written (a bad disk, a copy cut short) is refused at load instead of
//! resuming from wrong numbers.

use crate::data::augment::Augment;
use crate::model::network::{decode_class_names, encode_class_names, Network};
use crate::model::spec::ModelSpec;
use crate::optim::schedule::Schedule;
use crate::optim::Optimizer;
use crate::train::groups::ParamGroups;
use crate::train::lookahead::Lookahead;
use crate::train::whitening::Whitening;
use crate::train::TrainState;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Everything that makes two runs the same run: a checkpoint is resumed only
/// by a run with an equal fingerprint (compared with `==`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFingerprint {
    /// The architecture.
    pub spec: ModelSpec,
    /// Which images train and validate.
    pub data: DataSelection,
    pub batch_size: usize,
    pub seed: u64,
    /// The optimiser's settings (its state cleared: [`Optimizer::settings`]).
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub augment: Augment,
    pub label_smoothing: f32,
    /// The planned epochs, when the learning-rate schedule's curve is drawn
    /// over them (one-cycle, cosine): resuming with other `--epochs` would
    /// continue on another curve.
    pub schedule_epochs: Option<usize>,
    /// The model whose weights training started from ([`super::warm_start`]),
    /// as the caller identifies it (its path and a digest of its bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// The model distilled from, its weight and views ([`super::distill`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    /// The layers not trained (`Network::freeze` patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
    /// Batch norm by the whole batch's statistics in a data-parallel run
    /// ([`super::TrainConfig::sync_batch_norm`]): another computation.
    #[serde(default)]
    pub sync_batch_norm: bool,
    /// Per-parameter learning-rate multipliers.
    #[serde(default, skip_serializing_if = "ParamGroups::is_default")]
    pub groups: ParamGroups,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<Lookahead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitening: Option<Whitening>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dirac: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub init_scales: BTreeMap<String, f32>,
}

impl RunFingerprint {
    /// What differs from `other`, one `setting: this → other` per leaf
    /// (`data.subset: null → 1000`), in a stable order.
    pub fn differences(&self, other: &RunFingerprint) -> Vec<String> {
        fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&key, v, out);
                    }
                }
                _ => out.push((prefix.to_string(), v.to_string())),
            }
        }
        let flat = |f: &RunFingerprint| {
            let mut out = Vec::new();
            let value = serde_json::to_value(f).expect("plain data serialises");
            leaves("", &value, &mut out);
            out.into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let (a, b) = (flat(self), flat(other));
        let none = "(none)".to_string();
        a.keys()
            .chain(b.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|k| {
                let (x, y) = (a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none));
                (x != y).then(|| format!("{k}: {x} → {y}"))
            })
            .collect()
    }
}

/// The images of a run: the data set, the training images that remain once
/// the validation images are held out (`validation`; with `holdout`, the last
/// ones), then a stratified `subset` of those.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSelection {
    /// The data set's identity (its format and class names, say), as the
    /// caller describes it.
    pub dataset: String,
    pub subset: Option<usize>,
    pub holdout: Option<usize>,
    pub val_subset: Option<usize>,
    /// Where validation comes from (the caller's description); empty in
    /// checkpoints from before it was recorded.
    #[serde(default)]
    pub validation: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint {path}")]
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

/// The key of the checksum in the metadata.
const CHECKSUM: &str = "checksum";

/// `sha256:` and the hex SHA-256 of the tensors (name-sorted: name, byte
/// length, bytes) and of the metadata entries other than the checksum
/// (key-sorted: key, length, value).
fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [u8])>,
    metadata: &HashMap<String, String>,
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut feed = |name: &str, bytes: &[u8]| {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let mut tensors: Vec<(&str, &[u8])> = tensors.collect();
    tensors.sort_unstable_by_key(|(name, _)| *name);
    for (name, bytes) in tensors {
        feed(name, bytes);
    }
    let mut meta: Vec<(&String, &String)> =
        metadata.iter().filter(|(k, _)| *k != CHECKSUM).collect();
    meta.sort_unstable();
    for (k, v) in meta {
        feed(k, v.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Writes the checkpoint atomically.
pub fn save(
    path: &Path,
    net: &Network,
    opt: &Optimizer,
    state: &TrainState,
    run: &RunFingerprint,
) -> Result<(), CheckpointError> {
    let invalid = |problem: String| CheckpointError::Invalid {
        path: path.display().to_string(),
        problem,
    };
    let named = net.named_tensors();
    let mut tensors: Vec<(String, &[f32])> =
        named.iter().map(|(n, _, d)| (n.clone(), *d)).collect();
    tensors.extend(opt.state_tensors());
    if let Some(best) = &state.best_weights {
        for ((name, _, _), w) in named.iter().zip(best) {
            tensors.push((format!("{name}.best"), w));
        }
    }
    for ((name, _, _), a) in named.iter().zip(&state.lookahead) {
        tensors.push((format!("{name}.lookahead"), a));
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
        (
            "class_names".to_string(),
            encode_class_names(&net.class_names),
        ),
        ("state".to_string(), json(state)),
        ("optimizer".to_string(), json(opt)),
        ("fingerprint".to_string(), json(run)),
    ]);
    let sum = checksum(
        tensors
            .iter()
            .zip(&bytes)
            .map(|((name, _), b)| (name.as_str(), b.as_slice())),
        &metadata,
    );
    metadata.insert(CHECKSUM.to_string(), sum);
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
    /// The run that wrote it.
    pub fingerprint: RunFingerprint,
}

/// Reads a checkpoint written by [`save`], checking its checksum (a file from
/// before checksums has none, and is read as it is). One written by an older
/// trainer (tensors keyed by position) is refused with a message saying so.
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
    if !meta.contains_key("fingerprint") && meta.contains_key("state") {
        return Err(invalid(
            "written by an older trainer (optimiser state keyed by position); it cannot be resumed: pass --fresh to start over".into(),
        ));
    }
    let get = |key: &str| {
        meta.get(key)
            .ok_or_else(|| invalid(format!("no {key:?} in the metadata")))
    };
    let spec =
        ModelSpec::from_json_str(get("architecture")?).map_err(|e| invalid(e.to_string()))?;
    let mut net = Network::new(&spec, 0).map_err(|e| invalid(e.to_string()))?;
    net.class_names = decode_class_names(get("class_names")?).map_err(invalid)?;
    let parse_err = |key: &str, e: serde_json::Error| invalid(format!("{key}: {e}"));
    let mut state: TrainState =
        serde_json::from_str(get("state")?).map_err(|e| parse_err("state", e))?;
    let mut opt: Optimizer =
        serde_json::from_str(get("optimizer")?).map_err(|e| parse_err("optimizer", e))?;
    let fingerprint: RunFingerprint =
        serde_json::from_str(get("fingerprint")?).map_err(|e| parse_err("fingerprint", e))?;

    let file = SafeTensors::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?;
    if let Some(stored) = meta.get(CHECKSUM) {
        let names = file.names();
        let found = checksum(
            names
                .iter()
                .filter_map(|n| Some((*n, file.tensor(n).ok()?.data()))),
            &meta,
        );
        if *stored != found {
            return Err(invalid(
                "its contents do not match its checksum (the file was damaged after it was written)"
                    .into(),
            ));
        }
    }
    let tensor = |name: &str, len: usize| match file.tensor(name) {
        Ok(v) if v.dtype() == Dtype::F32 && v.data().len() == 4 * len => Ok(from_bytes(v.data())),
        Ok(_) => Err(invalid(format!("tensor {name} is not {len} f32 values"))),
        Err(_) => Err(invalid(format!("tensor {name} is missing"))),
    };
    let expected: Vec<(String, usize)> = net
        .named_tensors()
        .into_iter()
        .map(|(n, _, d)| (n, d.len()))
        .collect();
    let weights = expected
        .iter()
        .map(|(name, len)| tensor(name, *len))
        .collect::<Result<Vec<_>, _>>()?;
    net.restore(&weights);
    // The optimiser has state only for the layers the run trains.
    if !fingerprint.frozen.is_empty() {
        net.freeze(&fingerprint.frozen)
            .map_err(|e| invalid(e.to_string()))?;
    }
    opt.restore_state(&mut net, &mut |name| {
        file.tensor(name).ok().map(|v| from_bytes(v.data()))
    })
    .map_err(invalid)?;
    if state.best.is_some() && file.names().iter().any(|n| n.ends_with(".best")) {
        state.best_weights = Some(
            expected
                .iter()
                .map(|(name, len)| tensor(&format!("{name}.best"), *len))
                .collect::<Result<_, _>>()?,
        );
    }
    if file.names().iter().any(|n| n.ends_with(".lookahead")) {
        state.lookahead = expected
            .iter()
            .map(|(name, len)| tensor(&format!("{name}.lookahead"), *len))
            .collect::<Result<_, _>>()?;
    }
    Ok(Resumed {
        net,
        opt,
        state,
        fingerprint,
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

    fn state(net: &Network) -> TrainState {
        TrainState {
            epochs_done: 1,
            best: Some((0.5, 1)),
            best_weights: Some(net.snapshot()),
            lookahead: net
                .snapshot()
                .into_iter()
                .map(|t| t.iter().map(|v| v * 0.5).collect())
                .collect(),
            ..TrainState::default()
        }
    }

    fn fingerprint(net: &Network, opt: &Optimizer) -> RunFingerprint {
        RunFingerprint {
            spec: net.spec().clone(),
            data: DataSelection {
                dataset: "test".into(),
                ..DataSelection::default()
            },
            batch_size: 4,
            seed: 1,
            optimizer: opt.settings(),
            schedule: Schedule::default(),
            augment: Augment::default(),
            label_smoothing: 0.0,
            schedule_epochs: None,
            init: None,
            teacher: None,
            frozen: Vec::new(),
            sync_batch_norm: false,
            groups: ParamGroups::default(),
            lookahead: None,
            whitening: None,
            dirac: false,
            init_scales: BTreeMap::new(),
        }
    }

    #[test]
    fn sgd_and_adam_state_round_trip_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut sgd = Sgd::new(0.1, 0.9, true);
        sgd.weight_decay = 5e-4;
        sgd.decay_bn_bias = false;
        for mut opt in [Optimizer::Sgd(sgd), Optimizer::default()] {
            let net = trained(&mut opt);
            let path = dir.path().join("c.ckpt");
            let run = fingerprint(&net, &opt);
            save(&path, &net, &opt, &state(&net), &run).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let names = SafeTensors::deserialize(&bytes).unwrap().names().len();
            let state_suffix = if opt.describe().starts_with("SGD") {
                "sgd_v"
            } else {
                "adam_m"
            };
            let file = SafeTensors::deserialize(&bytes).unwrap();
            for name in ["conv1.weight", "bn1.moving_mean.best"] {
                assert!(file.tensor(name).is_ok(), "{name} of {names}");
            }
            assert!(file.tensor(&format!("dense1.bias.{state_suffix}")).is_ok());
            let r = load(&path).unwrap();
            assert_eq!(r.opt, opt);
            assert_eq!(r.opt.steps(), 3);
            assert_eq!(r.net.snapshot(), net.snapshot());
            assert_eq!(r.state.epochs_done, 1);
            assert_eq!(r.state.best_weights, Some(net.snapshot()));
            assert_eq!(r.state.lookahead, state(&net).lookahead);
            assert_eq!(r.fingerprint, run);
            let other = RunFingerprint {
                seed: 2,
                ..run.clone()
            };
            assert_ne!(r.fingerprint, other);
            assert_eq!(r.fingerprint.differences(&other), ["seed: 1 → 2"]);
            let synchronised = RunFingerprint {
                sync_batch_norm: true,
                ..run.clone()
            };
            assert_eq!(
                r.fingerprint.differences(&synchronised),
                ["sync_batch_norm: false → true"]
            );
        }
    }

    /// A checkpoint of an older trainer (positional keys, no fingerprint) is
    /// refused with a clear message, never loaded wrongly.
    #[test]
    fn old_positional_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut opt = Optimizer::default();
        let net = trained(&mut opt);
        let path = dir.path().join("new.ckpt");
        save(&path, &net, &opt, &state(&net), &fingerprint(&net, &opt)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = meta.metadata().clone().unwrap();
        meta.remove("fingerprint");
        meta.insert(
            "config".into(),
            r#"{"epochs":35,"batch_size":32,"seed":1}"#.into(),
        );
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let old = safetensors::serialize(file.tensors(), Some(meta)).unwrap();
        let old_path = dir.path().join("old.ckpt");
        std::fs::write(&old_path, old).unwrap();
        let err = load(&old_path).err().expect("refused").to_string();
        assert!(
            err.contains("older trainer") && err.contains("--fresh"),
            "{err}"
        );
        assert!(err.contains("old.ckpt"), "{err}");
    }
}
