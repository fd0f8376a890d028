//! `trainer study`: the reference Keras study — five training runs of the
//! three models — and our runs beyond it (the residual `fast` network with its
//! own recipe), as one resumable command that writes a report,
//! `OUT_DIR/RESULTS.md` (`--out-dir`, default `runs/study`; the repository's
//! `docs/RESULTS.md` is written with `--results docs/RESULTS.md`).
//!
//! Each run lives in `OUT_DIR/<id>/`: `model.safetensors` (the saved weights),
//! `history.csv` (one row per epoch), `model.ckpt` (checkpoint after every
//! epoch; an interrupted run resumes from it), `settings.json` (what the run
//! was started with) and, once it has finished, `result.json` ([`StudyResult`]:
//! the [`RunResult`] plus the confusion matrix of the saved weights on the
//! test set). A run whose `result.json` exists is skipped unless `--force`.
//!
//! After every finished run the report is regenerated from the `result.json`
//! files: a Markdown file with the comparison table, charts ([`crate::plot`])
//! and per-class reports. Every figure in it is computed; the only typed-in
//! numbers are the reference figures in [`RUNS`].

use crate::plot::{self, PlotError};
use crate::run::{self, RunConfig, RunError, RunResult, Validation};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use trainer::data::{Dataset, Split};
use trainer::model::network::{Network, NetworkError};
use trainer::model::spec::SpecError;
use trainer::optim::OptimizerKind;
use trainer::train::metrics::ConfusionMatrix;
use trainer::train::recipe::{Recipe, TrainingSpec};
use trainer::train::spec_file::SpecFile;
use trainer::train::EVAL_BATCH;
use trainer::train::{self, EarlyStopping, EpochRecord, Monitor, TrainConfig, Tta};

mod machine;
mod report;

pub use machine::Machine;
use machine::{command_line, utc_now};
pub use report::{load_results, percent, read_result, thousands, write_report};

/// Batch size, learning rate and seed of every run of the study.
pub const BATCH_SIZE: usize = 32;
pub const LEARNING_RATE: f32 = 1e-3;
pub const SEED: u64 = 1;
/// Early stopping of the study's model 1 runs: Keras'
/// `EarlyStopping(monitor="val_loss", patience=7, restore_best_weights=True)`
/// (its log: best epoch 6, stopped after epoch 13).
pub const PATIENCE_MODEL1: usize = 7;
/// Early stopping of the study's model 3 runs: patience 10 (its log: best
/// epoch 11, stopped after epoch 21).
pub const PATIENCE_MODEL3: usize = 10;

/// What the Keras study reported for one of its runs.
#[derive(Clone, Copy, Debug)]
pub struct Reference {
    /// Test accuracy (fraction) and test loss on the 10,000 test images.
    pub accuracy: f32,
    pub loss: f32,
    /// What else the Keras study reported about the run, if anything.
    pub note: &'static str,
}

/// One run of the study and the figures the Keras study reported for it.
#[derive(Clone, Copy, Debug)]
pub struct StudyRun {
    pub id: &'static str,
    /// Built-in model spec (`models/<model>.json`).
    pub model: &'static str,
    /// Epochs, or the most epochs with early stopping.
    pub epochs: usize,
    /// Early stopping on `val_loss` with this patience (best weights
    /// restored); `None`: all the epochs.
    pub patience: Option<usize>,
    /// Start from the saved weights of this earlier run
    /// (`<dir>/<id>/model.safetensors`) instead of a fresh initialisation, as
    /// the reference continued training its model 3 on the subset.
    pub init_from: Option<&'static str>,
    /// Train on this many images, stratified by class (else all 50,000).
    pub subset: Option<usize>,
    /// Train with the spec's own `training` recipe (optimiser, schedule,
    /// augmentation, batch size; `epochs` above still applies) instead of the
    /// study's Adam 0.001 at batch 32.
    pub own_recipe: bool,
    /// Also report the test figures with these test-time augmentation views.
    pub tta: Option<Tta>,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// The Keras study's figures; `None` for our runs beyond the study.
    pub reference: Option<Reference>,
}

/// The five runs of the reference study, then ours beyond it. The reference
/// figures (accuracy, loss, note) are those reported by the Keras study these
/// models come from (TensorFlow/Keras, trained on a Google Colab GPU, batch
/// 32, Adam 1e-3, evaluated on the 10,000 CIFAR-10 test images); they are the
/// only hand-typed numbers in the generated report.
pub const RUNS: [StudyRun; 18] = [
    StudyRun {
        id: "model1-35",
        model: "model1",
        epochs: 35,
        patience: None,
        init_from: None,
        subset: None,
        own_recipe: false,
        tta: None,
        seed: SEED,
        reference: Some(Reference {
            accuracy: 0.7678,
            loss: 1.208,
            note: "",
        }),
    },
    StudyRun {
        id: "model1-es",
        model: "model1",
        epochs: 35,
        patience: Some(PATIENCE_MODEL1),
        init_from: None,
        subset: None,
        own_recipe: false,
        tta: None,
        seed: SEED,
        reference: Some(Reference {
            accuracy: 0.7711,
            loss: 0.683,
            note: "best epoch 6, stopped after epoch 13",
        }),
    },
    StudyRun {
        id: "model2-50",
        model: "model2",
        epochs: 50,
        patience: None,
        init_from: None,
        subset: None,
        own_recipe: false,
        tta: None,
        seed: SEED,
        reference: Some(Reference {
            accuracy: 0.7324,
            loss: 1.843,
            note: "",
        }),
    },
    StudyRun {
        id: "model3-es",
        model: "model3",
        epochs: 50,
        patience: Some(PATIENCE_MODEL3),
        init_from: None,
        subset: None,
        own_recipe: false,
        tta: None,
        seed: SEED,
        reference: Some(Reference {
            accuracy: 0.7407,
            loss: 0.770,
            note: "best epoch 11, stopped after epoch 21",
        }),
    },
    // The reference's subset run continued training its trained model 3 on
    // 10,000 images: its first epoch already scores 83.5 % on the training
    // images, and the figures it reports are that first epoch's, restored by
    // early stopping.
    StudyRun {
        id: "model3-10k",
        model: "model3",
        epochs: 50,
        patience: Some(PATIENCE_MODEL3),
        init_from: Some("model3-es"),
        subset: Some(10_000),
        own_recipe: false,
        tta: None,
        seed: SEED,
        reference: Some(Reference {
            accuracy: 0.7378,
            loss: 0.853,
            note: "continued from its trained model 3; best epoch 1",
        }),
    },
    // The same subset trained from a fresh initialisation (our first reading
    // of the reference's subset run): no reference figures of its own.
    StudyRun {
        id: "model3-10k-scratch",
        model: "model3",
        epochs: 50,
        patience: Some(PATIENCE_MODEL3),
        init_from: None,
        subset: Some(10_000),
        own_recipe: false,
        tta: None,
        seed: SEED,
        reference: None,
    },
    // Beyond the study: the residual network of models/fast.json with its
    // own recipe (SGD + Nesterov, one-cycle, augmentation, label smoothing),
    // for the two time budgets: 2 hours (`fast-50`; `fast`, 30 epochs, was
    // the first, shorter try) and 30 minutes (`fast-12`).
    StudyRun {
        id: "fast",
        model: "fast",
        epochs: 30,
        patience: None,
        init_from: None,
        subset: None,
        own_recipe: true,
        tta: Some(Tta::Flip),
        seed: SEED,
        reference: None,
    },
    StudyRun {
        id: "fast-50",
        model: "fast",
        epochs: 50,
        patience: None,
        init_from: None,
        subset: None,
        own_recipe: true,
        tta: Some(Tta::Flip),
        seed: SEED,
        reference: None,
    },
    StudyRun {
        id: "fast-12",
        model: "fast",
        epochs: 12,
        patience: None,
        init_from: None,
        subset: None,
        own_recipe: true,
        tta: Some(Tta::Flip),
        seed: SEED,
        reference: None,
    },
    // airbench's recipe (Keller Jordan, 2024) in models/airbench.json: 10
    // epochs, its six-view test-time augmentation, three seeds.
    airbench("airbench", "airbench", 10, SEED),
    airbench("airbench-s2", "airbench", 10, 2),
    airbench("airbench-s3", "airbench", 10, 3),
    // airbench94_muon's in models/airbench-muon.json: GELU, Muon for the
    // filters, batch 2,000, 8 epochs; three seeds.
    airbench("airbench-muon", "airbench-muon", 8, SEED),
    airbench("airbench-muon-s2", "airbench-muon", 8, 2),
    airbench("airbench-muon-s3", "airbench-muon", 8, 3),
    // The same for 15 epochs, the most that fit 20 minutes here (8 epochs
    // take 10.4 min); 16 epochs gave 90.00 % against 89.26 % on the held-out
    // split (runs/tune/airbench-muon-gelu-e16.log).
    airbench("airbench-muon-15", "airbench-muon", 15, SEED),
    airbench("airbench-muon-15-s2", "airbench-muon", 15, 2),
    airbench("airbench-muon-15-s3", "airbench-muon", 15, 3),
];

/// A run of one of the airbench specs (`model`) with its own recipe for
/// `epochs`, seeded `seed`.
const fn airbench(id: &'static str, model: &'static str, epochs: usize, seed: u64) -> StudyRun {
    StudyRun {
        id,
        model,
        epochs,
        patience: None,
        init_from: None,
        subset: None,
        own_recipe: true,
        tta: Some(Tta::FlipTranslate),
        seed,
        reference: None,
    }
}

/// Options of `trainer study`.
#[derive(Clone, Debug, clap::Args)]
pub struct StudyArgs {
    /// Where the study writes: one sub-folder per run, the report
    /// (RESULTS.md) and its charts (img/).
    #[arg(long, visible_alias = "dir", default_value = "runs/study")]
    pub out_dir: PathBuf,
    /// Write the report here instead of OUT_DIR/RESULTS.md (its charts go
    /// into img/ beside it); the repository's is `--results docs/RESULTS.md`.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Run only these runs (comma-separated ids: model1-35, model1-es, model2-50, model3-es, model3-10k, model3-10k-scratch, fast, fast-50, fast-12, airbench, airbench-s2, airbench-s3, airbench-muon, airbench-muon-s2, airbench-muon-s3, airbench-muon-15, airbench-muon-15-s2, airbench-muon-15-s3).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Redo runs from scratch even if they have finished (or have a checkpoint).
    #[arg(long, conflicts_with = "report_only")]
    pub force: bool,
    /// Results of `benches/reference/keras_study.py` (the reference's Keras
    /// code on our data), shown beside ours when the file exists.
    #[arg(long, default_value = "runs/keras/results.json")]
    pub keras: PathBuf,
    /// Only regenerate the report and charts from the existing result.json files.
    #[arg(long)]
    pub report_only: bool,
    /// Smoke test: at most N epochs per run (recorded and shown in the report).
    #[arg(long)]
    pub epochs_cap: Option<usize>,
    /// Smoke test: train on N images, stratified (recorded and shown in the report).
    #[arg(long)]
    pub subset: Option<usize>,
    /// Smoke test: validate and test on the first N test images (recorded and shown in the report).
    #[arg(long)]
    pub val_subset: Option<usize>,
    /// Folder with the CIFAR-10 binary files.
    #[arg(long, default_value = "data/cifar-10-batches-bin")]
    pub data: PathBuf,
    /// Never download the data set; fail if it is missing.
    #[arg(long)]
    pub offline: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl StudyArgs {
    /// The report's path: `--results`, else `OUT_DIR/RESULTS.md`.
    pub fn results_path(&self) -> PathBuf {
        self.results
            .clone()
            .unwrap_or_else(|| self.out_dir.join("RESULTS.md"))
    }
}

/// Overrides of the study's settings given on the command line (smoke tests).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    pub epochs_cap: Option<usize>,
    pub subset: Option<usize>,
    pub val_subset: Option<usize>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// "epochs capped at 2, subset 300, validation on 200 test images".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.epochs_cap {
            parts.push(format!("epochs capped at {n}"));
        }
        if let Some(n) = self.subset {
            parts.push(format!("training subset {n}"));
        }
        if let Some(n) = self.val_subset {
            parts.push(format!("validation/test on the first {n} test images"));
        }
        parts.join(", ")
    }
}

/// The settings a run was started with (`settings.json`, and part of `result.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub model: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub seed: u64,
    pub early_stopping: Option<EarlyStopping>,
    pub subset: Option<usize>,
    pub val_subset: Option<usize>,
    pub overrides: Overrides,
    /// The whole recipe of a run that trains with its spec's own
    /// ([`StudyRun::own_recipe`]); `None` for the study's Adam at batch 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<TrainingSpec>,
    /// The run whose saved weights this one starts from
    /// ([`StudyRun::init_from`]); `None` for a fresh initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
}

impl Settings {
    /// Whether `other` is this run again with another seed only (the runs
    /// whose figures are averaged together, and drawn once in a chart).
    pub fn same_but_seed(&self, other: &Settings) -> bool {
        Settings {
            seed: self.seed,
            ..other.clone()
        } == *self
    }

    /// The settings of `run` with `overrides` applied.
    pub fn new(run: &StudyRun, overrides: &Overrides) -> Result<Self, StudyError> {
        let epochs = overrides
            .epochs_cap
            .map_or(run.epochs, |cap| cap.min(run.epochs));
        let recipe = if run.own_recipe {
            let spec = SpecFile::builtin(run.model)?;
            Some(TrainingSpec {
                epochs: Some(epochs),
                ..spec.training.unwrap_or_default()
            })
        } else {
            None
        };
        let (batch_size, learning_rate) = match &recipe {
            Some(t) => {
                let r = resolve_recipe(run.id, t)?;
                (r.batch_size, r.optimizer.learning_rate())
            }
            None => (BATCH_SIZE, LEARNING_RATE),
        };
        Ok(Settings {
            model: run.model.to_string(),
            epochs,
            batch_size,
            learning_rate,
            seed: run.seed,
            early_stopping: run.patience.map(|patience| EarlyStopping {
                monitor: Monitor::ValLoss,
                patience,
                min_delta: 0.0,
                restore_best: true,
            }),
            subset: overrides.subset.or(run.subset),
            val_subset: overrides.val_subset,
            overrides: overrides.clone(),
            recipe,
            init_from: run.init_from.map(str::to_string),
        })
    }

    /// The complete training recipe: the run's own, or the study's (Adam at
    /// batch 32, constant rate, no augmentation).
    pub fn recipe(&self, id: &str) -> Result<Recipe, StudyError> {
        let study = TrainingSpec {
            epochs: Some(self.epochs),
            batch_size: Some(self.batch_size),
            lr: Some(self.learning_rate),
            optimizer: Some(OptimizerKind::Adam),
            ..TrainingSpec::default()
        };
        resolve_recipe(id, self.recipe.as_ref().unwrap_or(&study))
    }

    /// "35 epochs" or "early stopping on val_loss (patience 7, best weights restored), at most 35 epochs".
    pub fn describe(&self) -> String {
        let mut s = match &self.early_stopping {
            Some(es) => format!(
                "early stopping on {} (patience {}{}), at most {} epochs",
                monitor_name(es.monitor),
                es.patience,
                if es.restore_best {
                    ", best weights restored"
                } else {
                    ""
                },
                self.epochs
            ),
            None => format!("{} epochs", self.epochs),
        };
        match self.subset {
            Some(n) => write!(s, ", {} training images (stratified)", thousands(n)).unwrap(),
            None => s += ", all 50,000 training images",
        }
        if let Some(from) = &self.init_from {
            write!(s, ", starting from the saved weights of {from}").unwrap();
        }
        match self.recipe.as_ref().map(|t| t.resolve()) {
            Some(Ok(r)) => write!(
                s,
                ", batch {}, {}, seed {}",
                self.batch_size,
                r.describe(),
                self.seed
            ),
            _ => write!(
                s,
                ", batch {}, Adam {}, seed {}",
                self.batch_size, self.learning_rate, self.seed
            ),
        }
        .unwrap();
        s
    }

    /// "35 epochs" or "early stopping, at most 35 epochs", plus a smoke-test mark.
    pub fn describe_short(&self) -> String {
        let mut s = match self.early_stopping {
            Some(_) => format!("early stopping, at most {} epochs", self.epochs),
            None => format!("{} epochs", self.epochs),
        };
        if !self.overrides.is_empty() {
            s += " (smoke test)";
        }
        s
    }

    /// [`Settings::describe`] without the hyper-parameters every run shares.
    fn describe_run_specific(&self) -> String {
        let d = self.describe();
        d.split(", batch ").next().unwrap_or(&d).to_string()
    }
}

/// `t` resolved, or an error naming the run.
fn resolve_recipe(id: &str, t: &TrainingSpec) -> Result<Recipe, StudyError> {
    t.resolve().map_err(|problem| StudyError::Recipe {
        id: id.to_string(),
        problem,
    })
}

fn monitor_name(m: Monitor) -> &'static str {
    match m {
        Monitor::ValLoss => "val_loss",
        Monitor::ValAccuracy => "val_accuracy",
    }
}

/// What `result.json` holds: everything the report shows about a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyResult {
    pub id: String,
    pub settings: Settings,
    pub run: RunResult,
    /// Confusion matrix of the saved weights on the test images,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub class_names: Vec<String>,
    /// The command that produced the run, and when it finished (UTC).
    pub command: String,
    pub finished: String,
    pub machine: Machine,
    /// Wall time of the whole run: loading the data (when this run loaded
    /// it), training, validation after every epoch, the final evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f32>,
}

impl StudyResult {
    pub fn confusion_matrix(&self) -> ConfusionMatrix {
        ConfusionMatrix {
            classes: self.confusion.len(),
            counts: self.confusion.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error("unknown run {0:?} in --only (runs: {runs})", runs = run_ids())]
    UnknownRun(String),
    #[error("run {id}: bad training recipe: {problem}")]
    Recipe { id: String, problem: String },
    #[error("cannot load the data set: {0}")]
    Data(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("run {id}")]
    Run { id: String, source: Box<RunError> },
    #[error("run {id}: {path} was made with {found}, not {asked}: pass --force to redo it, or use another --dir")]
    OtherSettings {
        id: String,
        path: PathBuf,
        found: String,
        asked: String,
    },
    #[error("run {id} starts from the weights of {from}, and {path} does not exist: run `trainer study --only {from}` first (with --force if its result.json is there but not its weights)")]
    MissingInit {
        id: String,
        from: String,
        path: PathBuf,
    },
    #[error("run {id}: cannot load the weights of {from}")]
    Init {
        id: String,
        from: String,
        source: Box<RunError>,
    },
    #[error("run {id}: cannot reload the saved weights")]
    Reload { id: String, source: NetworkError },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// "model1-35, model1-es, …": the ids of [`RUNS`].
fn run_ids() -> String {
    RUNS.iter().map(|r| r.id).collect::<Vec<_>>().join(", ")
}

/// The files of one run.
#[derive(Clone, Debug)]
pub struct RunPaths {
    pub dir: PathBuf,
    pub model: PathBuf,
    pub history: PathBuf,
    pub checkpoint: PathBuf,
    pub settings: PathBuf,
    pub result: PathBuf,
}

impl RunPaths {
    pub fn new(study_dir: &Path, id: &str) -> Self {
        let dir = study_dir.join(id);
        RunPaths {
            model: dir.join("model.safetensors"),
            history: dir.join("history.csv"),
            checkpoint: dir.join("model.ckpt"),
            settings: dir.join("settings.json"),
            result: dir.join("result.json"),
            dir,
        }
    }
}

/// Runs the study as `args` says. `load_data` is called once, and only when
/// some run has to be trained.
pub fn execute(
    args: &StudyArgs,
    load_data: &mut dyn FnMut() -> Result<Dataset, StudyError>,
) -> Result<(), StudyError> {
    let selected = select(&args.only)?;
    let overrides = Overrides {
        epochs_cap: args.epochs_cap,
        subset: args.subset,
        val_subset: args.val_subset,
    };
    let command = command_line();
    let results = args.results_path();
    if !args.report_only {
        let mut data: Option<Dataset> = None;
        for run in selected {
            let paths = RunPaths::new(&args.out_dir, run.id);
            let settings = Settings::new(run, &overrides)?;
            if paths.result.exists() && !args.force {
                check_finished_settings(run, &paths, &settings)?;
                eprintln!(
                    "skipping {}: {} exists (--force redoes it)",
                    run.id,
                    paths.result.display()
                );
                continue;
            }
            let started = Instant::now();
            if data.is_none() {
                data = Some(load_data()?);
            }
            let data = data.as_ref().expect("loaded above");
            train_one(run, &settings, &paths, data, args, &command, started)?;
            write_report(&args.out_dir, &results, &args.keras, &command)?;
        }
    }
    write_report(&args.out_dir, &results, &args.keras, &command)?;
    eprintln!("Report: {}", results.display());
    Ok(())
}

/// A finished run is skipped only if it was made with the settings asked for
/// now: a smoke-test result must not stand in for a real run (nor the other
/// way round), and is never overwritten without `--force`.
fn check_finished_settings(
    run: &StudyRun,
    paths: &RunPaths,
    settings: &Settings,
) -> Result<(), StudyError> {
    let done = read_result(&paths.result)?;
    if done.settings == *settings {
        return Ok(());
    }
    let describe = |o: &Overrides| {
        if o.is_empty() {
            "the study's settings".to_string()
        } else {
            format!("smoke-test overrides ({})", o.describe())
        }
    };
    let (mut found, mut asked) = (
        describe(&done.settings.overrides),
        describe(&settings.overrides),
    );
    if found == asked {
        // Same overrides, yet other settings (the study itself changed).
        (found, asked) = (done.settings.describe(), settings.describe());
    }
    Err(StudyError::OtherSettings {
        id: run.id.to_string(),
        path: paths.result.clone(),
        found,
        asked,
    })
}

/// The runs `--only` names, in study order (all of them when empty).
fn select(only: &[String]) -> Result<Vec<&'static StudyRun>, StudyError> {
    if let Some(bad) = only.iter().find(|id| !RUNS.iter().any(|r| r.id == *id)) {
        return Err(StudyError::UnknownRun(bad.clone()));
    }
    Ok(RUNS
        .iter()
        .filter(|r| only.is_empty() || only.iter().any(|id| id == r.id))
        .collect())
}

/// Trains one run (resuming from its checkpoint when it was started with the
/// same settings), evaluates the saved weights and writes `result.json`.
fn train_one(
    run: &StudyRun,
    settings: &Settings,
    paths: &RunPaths,
    data: &Dataset,
    args: &StudyArgs,
    command: &str,
    started: Instant,
) -> Result<StudyResult, StudyError> {
    let fresh = args.force || !same_settings(&paths.settings, settings);
    if fresh && paths.checkpoint.exists() {
        eprintln!(
            "{}: starting over (ignoring {})",
            run.id,
            paths.checkpoint.display()
        );
    }
    let init = match &settings.init_from {
        Some(from) => Some(warm_start(run.id, from, args)?),
        None => None,
    };
    write_json(&paths.settings, settings)?;
    let recipe = settings.recipe(run.id)?;
    let cfg = RunConfig {
        spec: SpecFile::builtin(run.model)?.model,
        train: TrainConfig::from_recipe(&recipe, settings.seed, settings.early_stopping.clone()),
        progress: !args.quiet,
        optimizer: recipe.optimizer.clone(),
        subset: settings.subset,
        val_subset: settings.val_subset,
        // The reference study's protocol: validate on the test set.
        validation: Validation::TestSet,
        out: paths.model.clone(),
        history: paths.history.clone(),
        checkpoint: paths.checkpoint.clone(),
        fresh,
        tta: run.tta,
        init: init.map(std::sync::Arc::new),
        teacher: None,
        freeze: Vec::new(),
        log_jsonl: None,
    };
    eprintln!("Run {}: {} — {}", run.id, run.model, settings.describe());
    if !settings.overrides.is_empty() {
        eprintln!("  smoke-test overrides: {}", settings.overrides.describe());
    }
    let epochs = cfg.train.epochs;
    let result = run::run(&cfg, data, &mut |r| crate::out!("{}", r.keras_line(epochs))).map_err(
        |source| StudyError::Run {
            id: run.id.to_string(),
            source: Box::new(source),
        },
    )?;
    let confusion = confusion_of_saved(run.id, &paths.model, data, settings, &result)?;
    let study_result = StudyResult {
        id: run.id.to_string(),
        settings: settings.clone(),
        run: result,
        confusion: confusion.counts,
        class_names: data.class_names.clone(),
        command: command.to_string(),
        finished: utc_now(),
        machine: Machine::this(),
        wall_seconds: Some(started.elapsed().as_secs_f32()),
    };
    write_json(&paths.result, &study_result)?;
    eprintln!(
        "Run {} finished: test accuracy {:.4}, test loss {:.4} → {}",
        run.id,
        study_result.run.test_accuracy,
        study_result.run.test_loss,
        paths.result.display()
    );
    Ok(study_result)
}

/// The saved weights of run `from`, which run `id` starts from.
fn warm_start(id: &str, from: &str, args: &StudyArgs) -> Result<run::WarmStart, StudyError> {
    let path = RunPaths::new(&args.out_dir, from).model;
    if !path.exists() {
        return Err(StudyError::MissingInit {
            id: id.to_string(),
            from: from.to_string(),
            path,
        });
    }
    run::WarmStart::load(&path).map_err(|source| StudyError::Init {
        id: id.to_string(),
        from: from.to_string(),
        source: Box::new(source),
    })
}

/// Whether `path` holds these very settings (so its checkpoint may be resumed).
fn same_settings(path: &Path, settings: &Settings) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Settings>(&b).ok())
        .is_some_and(|s| s == *settings)
}

/// Reloads the exported weights and evaluates them on the test images, so the
/// confusion matrix is that of the file on disk.
fn confusion_of_saved(
    id: &str,
    model: &Path,
    data: &Dataset,
    settings: &Settings,
    result: &RunResult,
) -> Result<ConfusionMatrix, StudyError> {
    let mut net = Network::load(model).map_err(|source| StudyError::Reload {
        id: id.to_string(),
        source,
    })?;
    let test: Split = match settings.val_subset {
        Some(n) => data.test.head(n),
        None => data.test.clone(),
    };
    let e = train::evaluate(&mut net, &test, EVAL_BATCH);
    if (e.accuracy - result.test_accuracy).abs() > 1e-6 {
        eprintln!(
            "warning: {id}: the saved weights score {:.4}, training reported {:.4}",
            e.accuracy, result.test_accuracy
        );
    }
    Ok(ConfusionMatrix::from_predictions(
        net.num_classes(),
        &test.labels,
        &e.predictions,
    ))
}

/// Writes `value` as pretty JSON, atomically.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StudyError> {
    let json = serde_json::to_string_pretty(value).map_err(|source| StudyError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    trainer::atomic::write_atomic(path, json.as_bytes()).map_err(|source| StudyError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::machine::{shell_quote, utc_date_time};
    use super::report::*;
    use super::*;
    use trainer::optim::{Adam, Optimizer};

    #[test]
    fn dates() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34 UTC (a leap day)
        assert_eq!(utc_date_time(951_827_640), "2000-02-29 12:34 UTC");
        // 2026-11-30 04:05 UTC
        assert_eq!(utc_date_time(1_796_011_500), "2026-11-30 04:05 UTC");
    }

    #[test]
    fn seed_variants_are_told_apart() {
        let settings = |id: &str| {
            let run = RUNS.iter().find(|r| r.id == id).unwrap();
            Settings::new(run, &Overrides::default()).unwrap()
        };
        let muon = settings("airbench-muon");
        assert!(muon.same_but_seed(&settings("airbench-muon-s2")));
        assert!(settings("airbench-muon-15-s3").same_but_seed(&settings("airbench-muon-15")));
        assert!(!muon.same_but_seed(&settings("airbench-muon-15")));
        assert!(!muon.same_but_seed(&settings("airbench")));
        // Same model, subset and seed, but one starts from saved weights.
        assert!(!settings("model3-10k").same_but_seed(&settings("model3-10k-scratch")));
    }

    #[test]
    fn selection_and_settings() {
        assert_eq!(select(&[]).unwrap().len(), RUNS.len());
        let only = select(&["model3-10k".into(), "model1-35".into()]).unwrap();
        let ids: Vec<&str> = only.iter().map(|r| r.id).collect();
        assert_eq!(ids, ["model1-35", "model3-10k"]);
        assert!(matches!(
            select(&["model9".into()]),
            Err(StudyError::UnknownRun(_))
        ));

        let run = &RUNS[4];
        let real = Settings::new(run, &Overrides::default()).unwrap();
        assert_eq!(real.epochs, 50);
        assert_eq!(real.subset, Some(10_000));
        assert_eq!(real.early_stopping.as_ref().unwrap().patience, 10);
        assert_eq!(real.init_from.as_deref(), Some("model3-es"));
        assert!(real
            .describe()
            .contains("starting from the saved weights of model3-es"));
        let scratch = Settings::new(&RUNS[5], &Overrides::default()).unwrap();
        assert_eq!(scratch.init_from, None);
        assert_eq!(
            (scratch.subset, scratch.early_stopping),
            (real.subset, real.early_stopping.clone())
        );
        let model1 = Settings::new(&RUNS[1], &Overrides::default()).unwrap();
        assert_eq!(model1.early_stopping.unwrap().patience, 7);
        let smoke = Overrides {
            epochs_cap: Some(2),
            subset: Some(300),
            val_subset: Some(200),
        };
        let s = Settings::new(run, &smoke).unwrap();
        assert_eq!(
            (s.epochs, s.subset, s.val_subset),
            (2, Some(300), Some(200))
        );
        assert_ne!(s, real);
        assert!(s.overrides.describe().contains("epochs capped at 2"));
    }

    /// The study's runs train with Adam 0.001 at batch 32 as before (their
    /// settings carry no recipe, so finished runs stay valid); the `fast`
    /// run trains with its spec's recipe, with the run's epochs.
    #[test]
    fn own_recipe_runs_take_the_spec_recipe() {
        let study = Settings::new(&RUNS[0], &Overrides::default()).unwrap();
        assert!(study.recipe.is_none());
        let r = study.recipe("model1-35").unwrap();
        assert_eq!((r.batch_size, r.epochs), (32, 35));
        assert_eq!(r.optimizer, Optimizer::Adam(Adam::new(1e-3)));
        assert!(r.augment.is_identity());

        let run = RUNS.iter().find(|r| r.id == "fast").unwrap();
        let spec = SpecFile::builtin("fast").unwrap().training.unwrap();
        let capped = Overrides {
            epochs_cap: Some(3),
            ..Overrides::default()
        };
        let s = Settings::new(run, &capped).unwrap();
        let r = s.recipe("fast").unwrap();
        assert_eq!(r.epochs, 3);
        assert_eq!(Some(r.batch_size), spec.batch_size);
        assert_eq!(s.batch_size, r.batch_size);
        assert_eq!(Some(s.learning_rate), spec.lr);
        assert!(matches!(r.optimizer, Optimizer::Sgd(_)));
        assert!(!r.augment.is_identity());
        assert!(s.describe().contains("Nesterov"), "{}", s.describe());
        // Settings without a recipe (all finished runs so far) still parse.
        let mut json: serde_json::Value = serde_json::to_value(&study).unwrap();
        json.as_object_mut().unwrap().remove("recipe");
        let back: Settings = serde_json::from_value(json).unwrap();
        assert_eq!(back, study);
    }

    #[test]
    fn first_epoch_reaching_a_threshold() {
        let h: Vec<EpochRecord> = [(0.5, 10.0), (0.76, 20.0), (0.74, 30.0), (0.8, 40.0)]
            .iter()
            .enumerate()
            .map(|(i, &(val_accuracy, seconds))| EpochRecord {
                epoch: i + 1,
                loss: 1.0,
                accuracy: 0.5,
                val_loss: 1.0,
                val_accuracy,
                seconds,
                lr: 0.0,
            })
            .collect();
        assert_eq!(first_reached(&h, 0.75), Some((2, 30.0)));
        assert_eq!(first_reached(&h, 0.8), Some((4, 100.0)));
        assert_eq!(first_reached(&h, 0.9), None);
        assert_eq!(minutes(125.4), "2 min 05 s");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(300), "300");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--dir"), "--dir");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn report_without_results_lists_every_run() {
        let md = render_markdown(
            &[],
            &[],
            &Charts::default(),
            "trainer study",
            "2026-11-30 04:05 UTC",
            &Machine {
                cpu: Some("Test CPU".into()),
                cores: 2,
            },
        );
        for run in &RUNS {
            let row = md
                .lines()
                .find(|l| l.starts_with(&format!("| {} |", run.id)))
                .unwrap();
            assert!(row.contains("not run yet"), "{row}");
            match run.reference {
                Some(r) => assert!(row.contains(&percent(r.accuracy)), "{row}"),
                None => assert!(
                    row.starts_with(&format!("| {} | — | — | — |", run.id)),
                    "{row}"
                ),
            }
        }
        assert!(md.contains("Test CPU, 2 logical cores"));
        assert!(md.contains("`trainer study`"));
    }
}
