//! `trainer study`: the reference Keras study — five training runs of the
//! three models — and our runs beyond it (the residual `fast` network with its
//! own recipe), as one resumable command that writes `docs/RESULTS.md`.
//!
//! Each run lives in `<dir>/<id>/`: `model.safetensors` (the saved weights),
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

use crate::data::{Cifar10, Split};
use crate::metrics::ConfusionMatrix;
use crate::network::{Network, NetworkError};
use crate::optim::OptimizerKind;
use crate::plot::{self, PlotError};
use crate::recipe::{Recipe, TrainingSpec};
use crate::run::{self, RunConfig, RunError, RunResult, EVAL_BATCH};
use crate::spec::{ModelSpec, SpecError};
use crate::train::{self, EarlyStopping, EpochRecord, Monitor, TrainConfig};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Batch size, learning rate and seed of every run of the study.
pub const BATCH_SIZE: usize = 32;
pub const LEARNING_RATE: f32 = 1e-3;
pub const SEED: u64 = 1;
/// Early stopping of the study's `-es` runs: Keras'
/// `EarlyStopping(monitor="val_loss", patience=7, restore_best_weights=True)`.
pub const PATIENCE: usize = 7;

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
    pub early_stopping: bool,
    /// Train on this many images, stratified by class (else all 50,000).
    pub subset: Option<usize>,
    /// Train with the spec's own `training` recipe (optimiser, schedule,
    /// augmentation, batch size; `epochs` above still applies) instead of the
    /// study's Adam 0.001 at batch 32, and also report the test figures with
    /// test-time augmentation.
    pub own_recipe: bool,
    /// The Keras study's figures; `None` for our runs beyond the study.
    pub reference: Option<Reference>,
}

/// The five runs of the reference study, then ours beyond it. The reference
/// figures (accuracy, loss, note) are those reported by the Keras study these
/// models come from (TensorFlow/Keras, trained on a Google Colab GPU, batch
/// 32, Adam 1e-3, evaluated on the 10,000 CIFAR-10 test images); they are the
/// only hand-typed numbers in the generated report.
pub const RUNS: [StudyRun; 8] = [
    StudyRun {
        id: "model1-35",
        model: "model1",
        epochs: 35,
        early_stopping: false,
        subset: None,
        own_recipe: false,
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
        early_stopping: true,
        subset: None,
        own_recipe: false,
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
        early_stopping: false,
        subset: None,
        own_recipe: false,
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
        early_stopping: true,
        subset: None,
        own_recipe: false,
        reference: Some(Reference {
            accuracy: 0.7407,
            loss: 0.770,
            note: "",
        }),
    },
    StudyRun {
        id: "model3-10k",
        model: "model3",
        epochs: 50,
        early_stopping: true,
        subset: Some(10_000),
        own_recipe: false,
        reference: Some(Reference {
            accuracy: 0.7378,
            loss: 0.853,
            note: "",
        }),
    },
    // Beyond the study: the residual network of models/fast.json with its
    // own recipe (SGD + Nesterov, one-cycle, augmentation, label smoothing),
    // for the two time budgets: 2 hours (`fast-50`; `fast`, 30 epochs, was
    // the first, shorter try) and 30 minutes (`fast-12`).
    StudyRun {
        id: "fast",
        model: "fast",
        epochs: 30,
        early_stopping: false,
        subset: None,
        own_recipe: true,
        reference: None,
    },
    StudyRun {
        id: "fast-50",
        model: "fast",
        epochs: 50,
        early_stopping: false,
        subset: None,
        own_recipe: true,
        reference: None,
    },
    StudyRun {
        id: "fast-12",
        model: "fast",
        epochs: 12,
        early_stopping: false,
        subset: None,
        own_recipe: true,
        reference: None,
    },
];

/// Options of `trainer study`.
#[derive(Clone, Debug, clap::Args)]
pub struct StudyArgs {
    /// Folder holding one sub-folder per run.
    #[arg(long, default_value = "runs/study")]
    pub dir: PathBuf,
    /// The generated report; its charts go into img/ beside it.
    #[arg(long, default_value = "docs/RESULTS.md")]
    pub results: PathBuf,
    /// Run only these runs (comma-separated ids: model1-35, model1-es, model2-50, model3-es, model3-10k, fast, fast-50, fast-12).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Redo runs from scratch even if they have finished (or have a checkpoint).
    #[arg(long, conflicts_with = "report_only")]
    pub force: bool,
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
}

impl Settings {
    /// The settings of `run` with `overrides` applied.
    pub fn new(run: &StudyRun, overrides: &Overrides) -> Result<Self, StudyError> {
        let epochs = overrides
            .epochs_cap
            .map_or(run.epochs, |cap| cap.min(run.epochs));
        let recipe = if run.own_recipe {
            let spec = ModelSpec::builtin(run.model)?;
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
            seed: SEED,
            early_stopping: run.early_stopping.then_some(EarlyStopping {
                monitor: Monitor::ValLoss,
                patience: PATIENCE,
                min_delta: 0.0,
                restore_best: true,
            }),
            subset: overrides.subset.or(run.subset),
            val_subset: overrides.val_subset,
            overrides: overrides.clone(),
            recipe,
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

/// Where and how a run was computed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo, if readable.
    pub cpu: Option<String>,
    /// Logical cores available to the process.
    pub cores: usize,
}

impl Machine {
    pub fn this() -> Self {
        Machine {
            cpu: cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{}, {} logical cores",
            self.cpu.as_deref().unwrap_or("unknown CPU"),
            self.cores
        )
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
    #[error("cannot load CIFAR-10: {0}")]
    Data(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("run {id}: {source}")]
    Run { id: String, source: RunError },
    #[error("run {id}: {path} was made with {found}, not {asked}: pass --force to redo it, or use another --dir")]
    OtherSettings {
        id: String,
        path: PathBuf,
        found: String,
        asked: String,
    },
    #[error("run {id}: cannot reload the saved weights: {source}")]
    Reload { id: String, source: NetworkError },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}: {source}")]
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
    load_data: &mut dyn FnMut() -> Result<Cifar10, StudyError>,
) -> Result<(), StudyError> {
    let selected = select(&args.only)?;
    let overrides = Overrides {
        epochs_cap: args.epochs_cap,
        subset: args.subset,
        val_subset: args.val_subset,
    };
    let command = command_line();
    if !args.report_only {
        let mut data: Option<Cifar10> = None;
        for run in selected {
            let paths = RunPaths::new(&args.dir, run.id);
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
            write_report(&args.dir, &args.results, &command)?;
        }
    }
    write_report(&args.dir, &args.results, &command)?;
    eprintln!("Report: {}", args.results.display());
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
    data: &Cifar10,
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
    write_json(&paths.settings, settings)?;
    let recipe = settings.recipe(run.id)?;
    let cfg = RunConfig {
        spec: ModelSpec::builtin(run.model)?.without_training(),
        train: TrainConfig {
            epochs: recipe.epochs,
            batch_size: recipe.batch_size,
            seed: settings.seed,
            early_stopping: settings.early_stopping.clone(),
            progress: !args.quiet,
            augment: recipe.augment.clone(),
            schedule: recipe.schedule.clone(),
            label_smoothing: recipe.label_smoothing,
            ..TrainConfig::default()
        },
        optimizer: recipe.optimizer.clone(),
        subset: settings.subset,
        val_subset: settings.val_subset,
        holdout: None,
        out: paths.model.clone(),
        history: paths.history.clone(),
        checkpoint: paths.checkpoint.clone(),
        fresh,
        tta: run.own_recipe,
    };
    eprintln!("Run {}: {} — {}", run.id, run.model, settings.describe());
    if !settings.overrides.is_empty() {
        eprintln!("  smoke-test overrides: {}", settings.overrides.describe());
    }
    let epochs = cfg.train.epochs;
    let result =
        run::run(&cfg, data, &mut |r| println!("{}", r.keras_line(epochs))).map_err(|source| {
            StudyError::Run {
                id: run.id.to_string(),
                source,
            }
        })?;
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
    data: &Cifar10,
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

/// Reads the `result.json` of every run of the study that has one.
pub fn load_results(study_dir: &Path) -> Result<Vec<StudyResult>, StudyError> {
    let mut out = Vec::new();
    for run in &RUNS {
        let path = RunPaths::new(study_dir, run.id).result;
        if path.exists() {
            out.push(read_result(&path)?);
        }
    }
    Ok(out)
}

/// Reads one `result.json`.
pub fn read_result(path: &Path) -> Result<StudyResult, StudyError> {
    let bytes = std::fs::read(path).map_err(|source| StudyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StudyError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Regenerates the report at `results` and its charts in `img/` beside it.
pub fn write_report(study_dir: &Path, results: &Path, command: &str) -> Result<(), StudyError> {
    let finished = load_results(study_dir)?;
    let img_dir = results
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("img");
    let charts = draw_charts(&finished, &img_dir)?;
    let md = render_markdown(&finished, &charts, command, &utc_now(), &Machine::this());
    crate::atomic::write_atomic(results, md.as_bytes()).map_err(|source| StudyError::Write {
        path: results.to_path_buf(),
        source,
    })
}

/// File names (relative to the report's `img/` folder) of the charts drawn.
#[derive(Clone, Debug, Default)]
struct Charts {
    compare: Option<String>,
    time: Option<String>,
}

/// Draws each finished run's history and confusion matrix, and the two
/// comparison charts.
fn draw_charts(finished: &[StudyResult], img_dir: &Path) -> Result<Charts, StudyError> {
    for r in finished {
        let title = format!("{} — {}", r.id, r.settings.describe_short());
        plot::history(&img_dir.join(history_png(&r.id)), &title, &r.run.history)?;
        let title = format!(
            "{} — confusion matrix, {} test images",
            r.id,
            thousands(r.run.test_images)
        );
        let names = &r.class_names;
        plot::confusion(
            &img_dir.join(confusion_png(&r.id)),
            &title,
            &r.confusion_matrix(),
            names,
        )?;
    }
    let mut charts = Charts::default();
    let per_model = one_run_per_model(finished);
    if !per_model.is_empty() {
        let name = "compare-models.png".to_string();
        plot::compare(
            &img_dir.join(&name),
            "Validation accuracy per epoch, models 1, 2 and 3",
            &per_model,
        )?;
        charts.compare = Some(name);
    }
    if !finished.is_empty() {
        let name = "accuracy-vs-time.png".to_string();
        let all: Vec<(String, Vec<EpochRecord>)> = finished
            .iter()
            .map(|r| (r.id.clone(), r.run.history.clone()))
            .collect();
        plot::accuracy_vs_time(
            &img_dir.join(&name),
            "Validation accuracy against wall-clock time",
            &all,
        )?;
        charts.time = Some(name);
    }
    Ok(charts)
}

/// For models 1, 2 and 3, the first finished run in study order
/// (model1-35, model2-50, model3-es when all have finished).
fn one_run_per_model(finished: &[StudyResult]) -> Vec<(String, Vec<EpochRecord>)> {
    ["model1", "model2", "model3"]
        .iter()
        .filter_map(|m| finished.iter().find(|r| r.settings.model == *m))
        .map(|r| (r.id.clone(), r.run.history.clone()))
        .collect()
}

fn history_png(id: &str) -> String {
    format!("{id}-history.png")
}

fn confusion_png(id: &str) -> String {
    format!("{id}-confusion.png")
}

/// The whole report as Markdown.
fn render_markdown(
    finished: &[StudyResult],
    charts: &Charts,
    command: &str,
    date: &str,
    machine: &Machine,
) -> String {
    let mut md = String::new();
    header(&mut md, finished, command, date, machine);
    table(&mut md, finished);
    if let Some(c) = &charts.compare {
        md += "\n## Validation accuracy per epoch, models 1, 2 and 3\n\n";
        md += "One run per model: the first finished of model1-35/model1-es, model2-50, model3-es/model3-10k.\n\n";
        writeln!(md, "![Validation accuracy per epoch](img/{c})").unwrap();
    }
    if let Some(c) = &charts.time {
        md += "\n## Validation accuracy against wall-clock time\n\n";
        md += "Cumulative time of training and validation per epoch, on the machine each run ran on.\n\n";
        writeln!(md, "![Validation accuracy against time](img/{c})").unwrap();
    }
    for r in finished {
        run_section(&mut md, r);
    }
    md
}

fn header(md: &mut String, finished: &[StudyResult], command: &str, date: &str, m: &Machine) {
    md.push_str("# Results of the reference study, and beyond it\n\n");
    md.push_str("<!-- Generated by `trainer study`; do not edit by hand. -->\n\n");
    writeln!(md, "- Generated by: `{command}`").unwrap();
    writeln!(md, "- Date: {date}").unwrap();
    writeln!(md, "- Machine: {}", m.describe()).unwrap();
    md.push_str(
        "- Reference figures: the Keras study of the same models (TensorFlow/Keras on a \
         Google Colab GPU), test set of 10,000 images. All other figures are computed by \
         this crate (pure Rust, CPU) and read from each run's `result.json`.\n",
    );
    md.push_str(
        "- Every run of the reference study: batch 32, Adam (learning rate 0.001), seed 1, \
         validation on the test set. The runs beyond the study (`fast`, `fast-50`, `fast-12`) train \
         with their spec's own recipe (`models/fast.json`), given in their sections.\n",
    );
    let smoke: Vec<&StudyResult> = finished
        .iter()
        .filter(|r| !r.settings.overrides.is_empty())
        .collect();
    if !smoke.is_empty() {
        md.push_str("\n> **Warning — smoke-test runs.** These runs did not use the study's settings, so their figures are not comparable with the reference:\n");
        for r in smoke {
            writeln!(md, "> - {}: {}", r.id, r.settings.overrides.describe()).unwrap();
        }
    }
}

/// The comparison table: a row for every run of the study.
fn table(md: &mut String, finished: &[StudyResult]) {
    md.push_str("\n## Test accuracy and loss\n\n");
    md.push_str("| run | reference test acc | reference test loss | our test acc | our test loss | epochs run | best epoch | s/epoch (this machine, threads) |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for run in &RUNS {
        let ours = finished.iter().find(|r| r.id == run.id);
        md.push_str(&table_row(run, ours));
    }
    let notes: Vec<String> = RUNS
        .iter()
        .filter_map(|r| Some((r.id, r.reference?.note)))
        .filter(|(_, note)| !note.is_empty())
        .map(|(id, note)| format!("{id}: {note}"))
        .collect();
    if !notes.is_empty() {
        writeln!(md, "\nReference details: {}.", notes.join("; ")).unwrap();
    }
    md.push_str("\nThe runs:\n\n");
    for r in &RUNS {
        match Settings::new(r, &Overrides::default()) {
            Ok(s) => writeln!(md, "- {}: {}, {}", r.id, r.model, s.describe_run_specific()),
            Err(e) => writeln!(md, "- {}: {}, {e}", r.id, r.model),
        }
        .unwrap();
    }
    md.push_str(
        "\nThe runs beyond the study have no reference figures (—). Their \"TTA\" figure is the \
         test accuracy with test-time augmentation (each image averaged with its mirror \
         image), reported beside the plain one.\n",
    );
}

fn table_row(run: &StudyRun, ours: Option<&StudyResult>) -> String {
    // A smoke-test run is marked in the run column, so it cannot pass for a real one.
    let smoke = ours.is_some_and(|r| !r.settings.overrides.is_empty());
    let (ref_acc, ref_loss) = match run.reference {
        Some(r) => (percent(r.accuracy), format!("{:.3}", r.loss)),
        None => ("—".to_string(), "—".to_string()),
    };
    let reference = format!(
        "| {}{} | {ref_acc} | {ref_loss} |",
        run.id,
        if smoke { " ⚠ smoke test" } else { "" },
    );
    let Some(r) = ours else {
        return format!("{reference} not run yet | | | | |\n");
    };
    let mut test_note = if r.run.test_images == 10_000 {
        String::new()
    } else {
        format!(" (on {} test images)", thousands(r.run.test_images))
    };
    if let Some(t) = r.run.tta {
        write!(test_note, "; TTA {}", percent(t.accuracy)).unwrap();
    }
    let epochs = if r.run.stopped_early {
        format!("{} (stopped early)", r.run.epochs_run)
    } else {
        r.run.epochs_run.to_string()
    };
    let best = r.run.best_epoch.map_or("—".to_string(), |b| b.to_string());
    format!(
        "{reference} {}{test_note} | {:.3} | {epochs} | {best} | {:.1} s ({} threads) |\n",
        percent(r.run.test_accuracy),
        r.run.test_loss,
        r.run.seconds_per_epoch,
        r.run.threads
    )
}

/// 10000 → "10,000".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 0.7678 → "76.78 %".
pub fn percent(fraction: f32) -> String {
    format!("{:.2} %", fraction * 100.0)
}

/// A finished run's section: settings, charts, per-class report.
fn run_section(md: &mut String, r: &StudyResult) {
    writeln!(md, "\n## {}\n", r.id).unwrap();
    writeln!(
        md,
        "- Model: `{}`; {}",
        r.settings.model,
        r.settings.describe()
    )
    .unwrap();
    if !r.settings.overrides.is_empty() {
        writeln!(
            md,
            "- **Smoke-test overrides: {}**",
            r.settings.overrides.describe()
        )
        .unwrap();
    }
    let stop = if r.run.stopped_early {
        format!("stopped early after epoch {}", r.run.epochs_run)
    } else {
        format!("ran {} epochs", r.run.epochs_run)
    };
    writeln!(
        md,
        "- Trained on {} images, {stop}; saved weights of epoch {}.",
        thousands(r.run.train_images),
        r.run.final_epoch
    )
    .unwrap();
    writeln!(
        md,
        "- Test loss {:.4}, test accuracy {} on {} test images.",
        r.run.test_loss,
        percent(r.run.test_accuracy),
        thousands(r.run.test_images)
    )
    .unwrap();
    if let Some(t) = r.run.tta {
        writeln!(
            md,
            "- With test-time augmentation (each image averaged with its mirror image): \
             test loss {:.4}, test accuracy {}.",
            t.loss,
            percent(t.accuracy)
        )
        .unwrap();
    }
    writeln!(
        md,
        "- {:.1} s per epoch with {} threads on {}; finished {}.",
        r.run.seconds_per_epoch,
        r.run.threads,
        r.machine.describe(),
        r.finished
    )
    .unwrap();
    if let Some(w) = r.wall_seconds {
        writeln!(
            md,
            "- Wall time of the whole run (data loading, training, validation after every \
             epoch, final evaluations): {} ({w:.0} s).",
            minutes(w)
        )
        .unwrap();
    }
    writeln!(md, "- Command: `{}`", r.command).unwrap();
    writeln!(md, "![{} history](img/{})\n", r.id, history_png(&r.id)).unwrap();
    writeln!(
        md,
        "![{} confusion matrix](img/{})\n",
        r.id,
        confusion_png(&r.id)
    )
    .unwrap();
    match first_reached(&r.run.history, 0.75) {
        Some((epoch, t)) => writeln!(
            md,
            "- Time to 75 % validation accuracy: {} (after epoch {epoch}; training and \
             validation time of the epochs).",
            minutes(t)
        ),
        None => {
            let best = r
                .run
                .history
                .iter()
                .max_by(|a, b| a.val_accuracy.total_cmp(&b.val_accuracy));
            match best {
                Some(b) => writeln!(
                    md,
                    "- 75 % validation accuracy not reached (best {} after epoch {}).",
                    percent(b.val_accuracy),
                    b.epoch
                ),
                None => Ok(()),
            }
        }
    }
    .unwrap();
    md.push('\n');
    if r.settings.recipe.is_some() {
        accuracy_vs_time(md, r);
    }
    let report = r.confusion_matrix().report(&r.class_names);
    writeln!(md, "Per-class report (saved weights, test images):\n").unwrap();
    writeln!(md, "```text\n{report}```").unwrap();
}

/// The first epoch whose validation accuracy is at least `threshold`, and
/// the cumulative time (training and validation) at its end.
fn first_reached(history: &[EpochRecord], threshold: f32) -> Option<(usize, f32)> {
    let mut elapsed = 0.0;
    for e in history {
        elapsed += e.seconds;
        if e.val_accuracy >= threshold {
            return Some((e.epoch, elapsed));
        }
    }
    None
}

/// "12 min 05 s".
fn minutes(seconds: f32) -> String {
    let s = seconds.round() as u64;
    format!("{} min {:02} s", s / 60, s % 60)
}

/// The accuracy-against-time table of a run: after every epoch, the
/// cumulative wall time and the accuracy of the weights at that point on the
/// validation images (the test set: these runs have no early stopping and
/// nothing is chosen on these figures), then the first time each threshold
/// was reached.
fn accuracy_vs_time(md: &mut String, r: &StudyResult) {
    md.push_str("Accuracy against wall-clock time (cumulative training and validation time; \
                 the accuracy of the weights at the end of each epoch on the validation images):\n\n");
    md.push_str("| epoch | elapsed | learning rate | train loss | val accuracy |\n");
    md.push_str("|---:|---:|---:|---:|---:|\n");
    let mut elapsed = 0.0;
    for e in &r.run.history {
        elapsed += e.seconds;
        writeln!(
            md,
            "| {} | {} | {:.4} | {:.4} | {} |",
            e.epoch,
            minutes(elapsed),
            e.lr,
            e.loss,
            percent(e.val_accuracy)
        )
        .unwrap();
    }
    md.push('\n');
    for threshold in [0.80, 0.85, 0.90, 0.93] {
        match first_reached(&r.run.history, threshold) {
            Some((epoch, t)) => writeln!(
                md,
                "- {} first reached after epoch {epoch}, at {}.",
                percent(threshold),
                minutes(t)
            ),
            None => writeln!(md, "- {} not reached.", percent(threshold)),
        }
        .unwrap();
    }
    md.push('\n');
}

/// Writes `value` as pretty JSON, atomically.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StudyError> {
    let json = serde_json::to_string_pretty(value).map_err(|source| StudyError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    crate::atomic::write_atomic(path, json.as_bytes()).map_err(|source| StudyError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The command line of this process, the program shown by its file name.
fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map_or(p.clone(), |f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "trainer".into());
    std::iter::once(program)
        .chain(args.map(|a| shell_quote(&a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `a` as a shell word: unchanged when plain, else in single quotes.
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@+%".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// The `model name` of the first CPU in /proc/cpuinfo.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// "2026-11-30 04:05 UTC".
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_date_time(secs)
}

/// Formats seconds since the Unix epoch as "YYYY-MM-DD hh:mm UTC".
fn utc_date_time(secs: u64) -> String {
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Adam, Optimizer};

    #[test]
    fn dates() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34 UTC (a leap day)
        assert_eq!(utc_date_time(951_827_640), "2000-02-29 12:34 UTC");
        // 2026-11-30 04:05 UTC
        assert_eq!(utc_date_time(1_796_011_500), "2026-11-30 04:05 UTC");
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
        assert_eq!(real.early_stopping.as_ref().unwrap().patience, 7);
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
        let spec = ModelSpec::builtin("fast").unwrap().training.unwrap();
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
                None => assert!(row.starts_with(&format!("| {} | — | — |", run.id)), "{row}"),
            }
        }
        assert!(md.contains("Test CPU, 2 logical cores"));
        assert!(md.contains("`trainer study`"));
    }
}
