//! One training run from start to saved weights, as `trainer train` and
//! `trainer study` both do it: subset, resume from checkpoint, fit, restore the
//! best weights, final evaluation, export, history CSV.

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::PathBuf;
use trainer::data::{DataError, Dataset, Split};
use trainer::model::network::{Network, NetworkError};
use trainer::model::spec::ModelSpec;
use trainer::optim::schedule::ScheduleKind;
use trainer::optim::Optimizer;
use trainer::train::checkpoint::{self, CheckpointError, DataSelection, RunFingerprint};
use trainer::train::replicas::{Alone, Replicas};
use trainer::train::{
    self, Communication, EpochRecord, TrainConfig, TrainError, TrainState, EVAL_BATCH,
};

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub spec: ModelSpec,
    pub train: TrainConfig,
    /// The optimiser and its settings, for a fresh run (a resumed run takes
    /// the checkpoint's, which must have the same settings).
    pub optimizer: Optimizer,
    /// Train on this many images, stratified by class.
    pub subset: Option<usize>,
    /// Validate on the first this-many images of the validation set.
    pub val_subset: Option<usize>,
    /// Where the per-epoch validation figures (early stopping, the best
    /// epoch) come from.
    pub validation: Validation,
    pub out: PathBuf,
    pub history: PathBuf,
    pub checkpoint: PathBuf,
    /// Ignore an existing checkpoint.
    pub fresh: bool,
    /// Also evaluate the saved weights with test-time augmentation
    /// ([`train::evaluate_tta`]), reported beside the plain figures.
    pub tta: Option<train::Tta>,
    /// Draw a progress bar during each epoch.
    pub progress: bool,
    /// Start from this model's weights instead of a fresh initialisation.
    pub init: Option<std::sync::Arc<WarmStart>>,
    /// Distil from this model ([`trainer::train::distill`]).
    pub teacher: Option<std::sync::Arc<Teacher>>,
    /// Layers not to train ([`Network::freeze`] patterns).
    pub freeze: Vec<String>,
    /// Append one JSON line per training step here (epoch, step, running
    /// loss and accuracy, images/s), for live monitoring.
    pub log_jsonl: Option<PathBuf>,
}

/// The images the per-epoch validation figures come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Validation {
    /// `fraction` of each class of the training set, drawn with `seed`
    /// (`trainer train`'s default: 10 %); the test set is evaluated once, at
    /// the end.
    Stratified { fraction: f32, seed: u64 },
    /// The last `n` training images (`--holdout N`); the test set is
    /// evaluated once, at the end.
    Last(usize),
    /// The test set itself (`--validate-on-test`): the reference study's
    /// protocol, which `trainer study` reproduces.
    TestSet,
}

impl Validation {
    /// What the fingerprint of a checkpoint records.
    fn describe(&self) -> String {
        match *self {
            Validation::Stratified { fraction, seed } => {
                format!("{fraction} of each class of the training set (seed {seed})")
            }
            Validation::Last(n) => format!("the last {n} training images"),
            Validation::TestSet => "the test set".into(),
        }
    }
}

/// A model file to start training from ([`trainer::train::warm_start`]).
pub struct WarmStart {
    pub path: PathBuf,
    pub net: Network,
    /// SHA-256 of the file, so that a checkpoint remembers which one.
    pub sha256: String,
}

impl std::fmt::Debug for WarmStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmStart")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl WarmStart {
    /// Loads `path` (an exported f32 model).
    pub fn load(path: &std::path::Path) -> Result<WarmStart, RunError> {
        use sha2::Digest;
        let bytes = std::fs::read(path).map_err(|source| RunError::ReadInit {
            path: path.display().to_string(),
            source,
        })?;
        let net = Network::from_safetensors_bytes(&bytes, &path.display().to_string())?;
        let digest = sha2::Sha256::digest(&bytes);
        Ok(WarmStart {
            path: path.to_path_buf(),
            net,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

/// A model to distil from, and how.
#[derive(Debug)]
pub struct Teacher {
    pub model: WarmStart,
    /// α, the weight of its probabilities in the targets.
    pub weight: f32,
    /// The views of each training image its probabilities are averaged
    /// over (`None`: the image alone).
    pub views: Option<train::Tta>,
}

impl Teacher {
    /// What a checkpoint records of it.
    fn describe(&self) -> String {
        format!(
            "{} (sha256 {}), weight {}, views {}",
            self.model.path.display(),
            self.model.sha256,
            self.weight,
            self.views_name()
        )
    }

    /// `Plain`, `Flip` or `FlipTranslate` (as checkpoints have recorded them).
    fn views_name(&self) -> String {
        match self.views {
            None => "Plain".to_string(),
            Some(tta) => format!("{tta:?}"),
        }
    }
}

impl RunConfig {
    /// The identity of this run on `data`, which a checkpoint must match to be resumed.
    pub fn fingerprint(&self, data: &Dataset) -> RunFingerprint {
        RunFingerprint {
            spec: self.spec.clone(),
            data: DataSelection {
                dataset: format!("{} ({})", data.description, data.class_names.join(",")),
                subset: self.subset,
                holdout: match self.validation {
                    Validation::Last(n) => Some(n),
                    _ => None,
                },
                validation: self.validation.describe(),
                val_subset: self.val_subset,
            },
            batch_size: self.train.batch_size,
            seed: self.train.seed,
            optimizer: self.optimizer.settings(),
            schedule: self.train.schedule.clone(),
            augment: self.train.augment.clone(),
            label_smoothing: self.train.label_smoothing,
            // One-cycle and cosine curves are drawn over the planned epochs,
            // and so is lookahead's decay.
            schedule_epochs: (matches!(
                self.train.schedule.kind,
                ScheduleKind::OneCycle | ScheduleKind::Cosine
            ) || self.train.lookahead.is_some())
            .then_some(self.train.epochs),
            init: self
                .init
                .as_ref()
                .map(|w| format!("{} (sha256 {})", w.path.display(), w.sha256)),
            teacher: self.teacher.as_ref().map(|t| t.describe()),
            frozen: self.freeze.clone(),
            sync_batch_norm: self.train.sync_batch_norm,
            groups: self.train.groups.clone(),
            lookahead: self.train.lookahead,
            whitening: self.train.whitening.clone(),
            dirac: self.train.dirac,
            init_scales: self.train.init_scales.clone(),
        }
    }
}

/// What a finished run reports (also saved as JSON by the study).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub model: String,
    pub history: Vec<EpochRecord>,
    pub epochs_run: usize,
    /// Epoch whose weights were saved.
    pub final_epoch: usize,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    /// Loss and accuracy of the saved weights on the validation set: the
    /// test set, or the held-out training images when `held_out`.
    pub test_loss: f32,
    pub test_accuracy: f32,
    pub test_images: usize,
    /// Validated on images held out of the training set, not on the test set.
    #[serde(default)]
    pub held_out: bool,
    /// When `held_out`: the saved weights on the test set, evaluated once,
    /// after training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_set: Option<TestFigures>,
    /// Loss and accuracy of the saved weights on the test set (the
    /// validation set's images when they are the test set's) with test-time
    /// augmentation (image and mirror image averaged), when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tta: Option<TtaFigures>,
    pub train_images: usize,
    /// Mean wall time of an epoch (training + validation).
    pub seconds_per_epoch: f32,
    pub threads: usize,
    /// Data-parallel runs: the all-reduce traffic (not saved).
    #[serde(skip)]
    pub communication: Option<(usize, Communication)>,
}

/// The saved weights on the test set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestFigures {
    pub loss: f32,
    pub accuracy: f32,
    pub images: usize,
}

/// Figures with test-time augmentation by horizontal flips.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TtaFigures {
    pub loss: f32,
    pub accuracy: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("cannot open the step log {path}")]
    Log {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The checkpoint cannot be read back (damaged, truncated, unreadable):
    /// `problem` is the whole cause, so the hint comes last.
    #[error("{problem}; pass --fresh to start over (trainer study: --force)")]
    Resume { path: String, problem: String },
    #[error("checkpoint {path} belongs to another run ({}): pass --fresh to start over, or the same settings to resume", changed.join("; "))]
    ForeignCheckpoint { path: String, changed: Vec<String> },
    #[error("cannot read {path}")]
    ReadInit {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("teacher {path}: {problem}")]
    Teacher { path: String, problem: String },
    #[error(transparent)]
    WarmStart(#[from] trainer::train::warm_start::WarmStartError),
    /// The recipe's initialisation (whitening) cannot be applied.
    #[error("{0}")]
    Recipe(String),
    #[error("another run is writing {out} (it holds {lock}): wait for it to finish, or pass another --out")]
    Busy { out: String, lock: String },
    #[error("cannot create the lock file {path}")]
    Lock {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A file of the run's state (history, checkpoint) that could not be written
/// after an epoch: `problem` is the whole cause, so the hint comes last.
#[derive(Debug, thiserror::Error)]
#[error("{problem} (the previous files are intact: once it can be written, rerun the same command to resume from the last checkpoint)")]
pub struct SaveError {
    pub problem: String,
}

/// An exclusive lock on a run's outputs, so that two runs started with the
/// same `--out` do not both write them: an OS file lock on `OUT.lock`, which
/// the OS releases if the process dies (no stale lock after `kill -9`). The
/// file is removed when the run ends.
struct OutputLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl OutputLock {
    fn acquire(out: &std::path::Path) -> Result<OutputLock, RunError> {
        let mut name = out.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let error = |source| RunError::Lock {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(error)?;
        match file.try_lock() {
            Ok(()) => Ok(OutputLock { path, _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(RunError::Busy {
                out: out.display().to_string(),
                lock: path.display().to_string(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(error(e)),
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked, so a later run creates a new lock file.
        // (A run that opened the old file in the very instant before could
        // still lock it once this process exits.)
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `cfg` on `data`; `on_epoch` sees each epoch's record as it finishes.
pub fn run(
    cfg: &RunConfig,
    data: &Dataset,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<RunResult, RunError> {
    run_replicated(cfg, Cow::Borrowed(data), &Alone, on_epoch)
}

/// [`run`] as one of the `replicas` of a data-parallel run: every replica
/// trains ([`train::fit_replicated`]); replica 0 alone shows progress, calls
/// `on_epoch`, writes the history, the checkpoints and the model, and
/// evaluates the test set.
///
/// Given the data set to keep (`Cow::Owned`), it takes it apart: the training
/// images a held-out validation set is split from are dropped once split, so
/// the run holds one copy of them, not two.
pub fn run_replicated(
    cfg: &RunConfig,
    data: Cow<'_, Dataset>,
    replicas: &dyn Replicas,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<RunResult, RunError> {
    let lead = replicas.rank() == 0;
    let _lock = if lead {
        let lock = OutputLock::acquire(&cfg.out)?;
        // Holding the lock, the run owns its outputs: what a killed run left
        // half-written beside them goes.
        for path in [&cfg.out, &cfg.history, &cfg.checkpoint] {
            match trainer::atomic::remove_stale_partials(path) {
                Ok(0) => {}
                Ok(n) => eprintln!(
                    "Removed {n} temporary file(s) of {} left by an interrupted run",
                    path.display()
                ),
                Err(e) => eprintln!(
                    "warning: cannot remove the temporary files of {}: {e}",
                    path.display()
                ),
            }
        }
        Some(lock)
    } else {
        None
    };
    let fingerprint = cfg.fingerprint(&data);
    let class_names = data.class_names.clone();
    let Splits {
        train: train_all,
        validation: val_all,
        test,
    } = splits(cfg.validation, data)?;
    let held_out = cfg.validation != Validation::TestSet;
    let train_split: Cow<Split> = match cfg.subset {
        Some(n) => Cow::Owned(train_all.stratified_subset(n, cfg.train.seed)?),
        None => train_all,
    };
    let val_split: Cow<Split> = match cfg.val_subset {
        Some(n) => Cow::Owned(val_all.head(n)),
        None => val_all,
    };

    if lead {
        eprintln!(
            "{} training images, {} validation images",
            train_split.len(),
            val_split.len()
        );
    }
    // The teacher's probabilities, for the images this run trains on.
    let train_cfg = match &cfg.teacher {
        None => Cow::Borrowed(&cfg.train),
        Some(t) => {
            let started = std::time::Instant::now();
            let origin = t.describe();
            // A working copy: running a network needs its activation buffers.
            let mut teacher = Network::new(t.model.net.spec(), 0)?;
            teacher.restore(&t.model.net.snapshot());
            let path = t.model.path.display().to_string();
            let d = trainer::train::distill::Distillation::from_teacher(
                &mut teacher,
                &train_split,
                t.views,
                t.weight,
                origin,
            )
            .map_err(|problem| RunError::Teacher {
                path: path.clone(),
                problem,
            })?;
            if lead {
                eprintln!(
                    "Distilling from {path} (weight {}, views {}): its most probable class is the label of {:.2} % of the training images ({:.1}s)",
                    t.weight,
                    t.views_name(),
                    100.0 * d.agreement(&train_split.labels),
                    started.elapsed().as_secs_f32()
                );
            }
            let mut train = cfg.train.clone();
            train.distill = Some(std::sync::Arc::new(d));
            Cow::Owned(train)
        }
    };
    let (mut net, mut opt, mut state) = if !cfg.fresh && cfg.checkpoint.exists() {
        let r = checkpoint::load(&cfg.checkpoint).map_err(|e| RunError::Resume {
            path: cfg.checkpoint.display().to_string(),
            problem: crate::error_chain(&e),
        })?;
        if r.fingerprint != fingerprint {
            return Err(RunError::ForeignCheckpoint {
                path: cfg.checkpoint.display().to_string(),
                changed: r.fingerprint.differences(&fingerprint),
            });
        }
        if lead {
            eprintln!(
                "Resuming from {} after epoch {}",
                cfg.checkpoint.display(),
                r.state.epochs_done
            );
        }
        (r.net, r.opt, r.state)
    } else {
        let mut net = Network::new(&cfg.spec, cfg.train.seed)?;
        trainer::train::whitening::initialise(&mut net, &cfg.train, &train_split)
            .map_err(RunError::Recipe)?;
        if let Some(w) = &cfg.init {
            let origin = w.path.display().to_string();
            trainer::train::warm_start::warm_start(&mut net, &w.net, &origin)?;
            if lead {
                eprintln!(
                    "Starting from the weights of {origin} (the optimiser's state starts fresh)"
                );
            }
        }
        (net, cfg.optimizer.clone(), TrainState::default())
    };
    net.class_names = class_names;
    if !cfg.freeze.is_empty() {
        net.freeze(&cfg.freeze)?;
    }

    let log = match &cfg.log_jsonl {
        Some(path) if lead => Some(StepLog::open(path)?),
        _ => None,
    };
    let mut saver = Saver {
        cfg,
        fingerprint: &fingerprint,
        on_epoch,
        bar: None,
        log,
        epoch: 0,
        epoch_started: std::time::Instant::now(),
    };
    let observer: &mut dyn train::Observer = if lead { &mut saver } else { &mut () };
    let outcome = train::fit_replicated(
        replicas,
        &mut net,
        &mut opt,
        &train_split,
        &val_split,
        &train_cfg,
        &mut state,
        observer,
    )?;

    let final_eval = train::evaluate(&mut net, &val_split, EVAL_BATCH);
    // The test set, once, when it was not the validation set.
    let test_set = (lead && held_out && !test.is_empty()).then(|| {
        let e = train::evaluate(&mut net, &test, EVAL_BATCH);
        TestFigures {
            loss: e.loss,
            accuracy: e.accuracy,
            images: test.len(),
        }
    });
    let tta = cfg.tta.filter(|_| lead).map(|views| {
        let images = if held_out { &*test } else { &*val_split };
        let e = train::evaluate_tta(&mut net, images, EVAL_BATCH, views);
        TtaFigures {
            loss: e.loss,
            accuracy: e.accuracy,
        }
    });
    if lead {
        net.save_with_classes(&cfg.out)?;
    }
    let history = outcome.history;
    let seconds = history.iter().map(|r| r.seconds).sum::<f32>() / history.len().max(1) as f32;
    Ok(RunResult {
        model: cfg.spec.name.clone(),
        epochs_run: history.len(),
        history,
        final_epoch: outcome.final_epoch,
        best_epoch: outcome.best_epoch,
        stopped_early: outcome.stopped_early,
        test_loss: final_eval.loss,
        test_accuracy: final_eval.accuracy,
        test_images: val_split.len(),
        held_out,
        test_set,
        tta,
        train_images: train_split.len(),
        seconds_per_epoch: seconds,
        threads: rayon::current_num_threads(),
        communication: outcome.communication.map(|c| (replicas.size(), c)),
    })
}

/// The images a run reads.
struct Splits<'d> {
    train: Cow<'d, Split>,
    validation: Cow<'d, Split>,
    /// Empty with [`Validation::TestSet`] (the test set validates).
    test: Cow<'d, Split>,
}

/// `data`'s splits for `validation`. An owned data set's training split is
/// dropped once the training and validation sets are split from it.
fn splits(validation: Validation, data: Cow<'_, Dataset>) -> Result<Splits<'_>, DataError> {
    let (all, test) = match data {
        Cow::Borrowed(d) => (Cow::Borrowed(&d.train), Cow::Borrowed(&d.test)),
        Cow::Owned(d) => (Cow::Owned(d.train), Cow::Owned(d.test)),
    };
    let (train, validation, test) = match validation {
        Validation::Stratified { fraction, seed } => {
            let (train, held) = all.stratified_split(fraction, seed)?;
            (Cow::Owned(train), Cow::Owned(held), test)
        }
        Validation::Last(n) => {
            let (train, held) = all.split_last(n)?;
            (Cow::Owned(train), Cow::Owned(held), test)
        }
        Validation::TestSet => {
            let none = Cow::Owned(Split::new(all.shape));
            (all, test, none)
        }
    };
    Ok(Splits {
        train,
        validation,
        test,
    })
}

/// What [`run`] does as training goes: a progress bar per epoch, then the
/// caller's `on_epoch`, the history CSV and the checkpoint after each.
struct Saver<'a> {
    cfg: &'a RunConfig,
    fingerprint: &'a RunFingerprint,
    on_epoch: &'a mut dyn FnMut(&EpochRecord),
    bar: Option<ProgressBar>,
    log: Option<StepLog>,
    epoch: usize,
    epoch_started: std::time::Instant,
}

/// `--log-jsonl`: one line per step, appended and flushed as it comes (so
/// that `tail -f` follows a run, and a resumed run continues the file).
struct StepLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl StepLog {
    fn open(path: &std::path::Path) -> Result<StepLog, RunError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| RunError::Log {
                path: path.display().to_string(),
                source,
            })?;
        Ok(StepLog {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    fn write(&mut self, line: &serde_json::Value) {
        use std::io::Write;
        let result = writeln!(self.file, "{line}").and_then(|()| self.file.flush());
        if let Err(e) = result {
            eprintln!("warning: cannot write {}: {e}", self.path.display());
        }
    }
}

impl train::Observer for Saver<'_> {
    fn epoch_started(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.epoch = epoch;
        self.epoch_started = std::time::Instant::now();
        if !self.cfg.progress {
            return;
        }
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} steps {elapsed}<{eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("Epoch {epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn step_done(&mut self, step: usize, loss: f64, accuracy: f64) {
        if let Some(log) = &mut self.log {
            let seconds = self.epoch_started.elapsed().as_secs_f64();
            let images = ((step + 1) * self.cfg.train.batch_size) as f64;
            log.write(&serde_json::json!({
                "epoch": self.epoch,
                "step": step + 1,
                "loss": loss,
                "accuracy": accuracy,
                "images_per_second": if seconds > 0.0 { (images / seconds).round() } else { 0.0 },
                "seconds": (seconds * 1e3).round() / 1e3,
            }));
        }
        if let Some(bar) = &self.bar {
            if step.is_multiple_of(20) || step + 1 == bar.length().unwrap_or(0) as usize {
                let seconds = bar.elapsed().as_secs_f64();
                let images = ((step + 1) * self.cfg.train.batch_size) as f64;
                let rate = if seconds > 0.0 { images / seconds } else { 0.0 };
                bar.set_message(format!(
                    "{rate:.0} images/s · loss {} acc {accuracy:.4}",
                    train::loss_text(loss)
                ));
            }
            bar.inc(1);
        }
    }

    fn epoch_failed(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }

    fn epoch_done(
        &mut self,
        record: &EpochRecord,
        net: &Network,
        opt: &Optimizer,
        state: &TrainState,
    ) -> Result<(), train::ObserverError> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        (self.on_epoch)(record);
        // A history or checkpoint that cannot be written (a full disk) stops
        // the run: the previous files are intact, and once there is room the
        // same command resumes from the last checkpoint, having lost at most
        // this epoch, instead of training on for hours it could not save.
        let cfg = self.cfg;
        let csv = train::history_csv(&state.history);
        trainer::atomic::write_atomic(&cfg.history, csv.as_bytes()).map_err(|e| SaveError {
            problem: format!("cannot write the history {}: {e}", cfg.history.display()),
        })?;
        checkpoint::save(&cfg.checkpoint, net, opt, state, self.fingerprint).map_err(|e| {
            SaveError {
                problem: crate::error_chain(&e),
            }
        })?;
        Ok(())
    }
}
