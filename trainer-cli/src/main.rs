//! `trainer`: train, evaluate and export CNNs from the command line (CIFAR-10,
//! CIFAR-100, MNIST-family IDX files, image folders).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;
use trainer::data::augment::PadMode;
use trainer::data::cifar10;
use trainer::model::network::{Network, NetworkError};
use trainer::model::quantize::{self, Calibration, Precision};
use trainer::optim::schedule::ScheduleKind;
use trainer::optim::OptimizerKind;
use trainer::train::metrics::ConfusionMatrix;
use trainer::train::recipe::TrainingSpec;
use trainer::train::replicas::{Alone, Replicas};
use trainer::train::spec_file::SpecFile;
use trainer::train::{self, EarlyStopping, Monitor, TrainConfig};
use trainer_cli::dataset::{self, DataArgs};
use trainer_cli::download;
use trainer_cli::run::{self, RunConfig, Validation};
use trainer_cli::study::{self, StudyArgs, StudyError};

/// A value parser for an engine setting, by the names spec files use for it
/// (its serde names): `--help` lists them and anything else is refused.
fn named<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).map(|name| {
        serde_json::from_value(serde_json::Value::String(name))
            .expect("each listed name is the setting's serde name (tested)")
    })
}

/// The `--tta` values (serde names of [`train::Tta`]).
const TTA_NAMES: &[&str] = &["flip", "flip_translate"];

/// `--teacher-views`: `plain` (no views but the image) or a `--tta` name.
fn teacher_views() -> impl clap::builder::TypedValueParser<Value = Option<train::Tta>> {
    use clap::builder::TypedValueParser;
    let names = std::iter::once(&"plain").chain(TTA_NAMES);
    clap::builder::PossibleValuesParser::new(names).map(|name| {
        (name != "plain").then(|| {
            serde_json::from_value(serde_json::Value::String(name))
                .expect("each listed name is the setting's serde name (tested)")
        })
    })
}

/// A count of at least 1 (`--subset 0` is refused, not a run on nothing).
fn positive() -> impl clap::builder::TypedValueParser<Value = usize> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(u64)
        .range(1..)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Train and evaluate small CNNs on the CPU: CIFAR-10, CIFAR-100, MNIST-family IDX files or your own image folders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads for training, evaluation and quantization [default: all cores,
    /// or RAYON_NUM_THREADS when set].
    #[arg(long, global = true, value_name = "N", value_parser = positive())]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model and export its weights as safetensors.
    Train(Box<TrainArgs>),
    /// Evaluate an exported model (f32 or int8) on the test set: loss, accuracy, per-class report, confusion matrix.
    Evaluate(EvaluateArgs),
    /// Quantize an f32 model to int8 (post-training, calibrated on training images).
    Quantize(QuantizeArgs),
    /// Export a model to ONNX (opset 17, NCHW float input = pixel / 255, logits out); an int8 file as QDQ.
    Export(ExportArgs),
    /// Draw the loss and accuracy charts of a run from its history CSV (what train writes beside the model).
    Plot(PlotArgs),
    /// Print a shell completion script: `trainer completions bash > /etc/bash_completion.d/trainer`.
    Completions(CompletionsArgs),
    /// Download, verify and unpack CIFAR-10 into --data.
    Download(DownloadArgs),
    /// Run the reference study and ours (resumable) and write its report, OUT_DIR/RESULTS.md.
    Study(StudyArgs),
}

#[derive(Args)]
struct DownloadArgs {
    /// Where to put the CIFAR-10 binary files.
    #[arg(long, default_value = "data/cifar-10-batches-bin")]
    data: PathBuf,
    /// Download from this address instead of the official one: a mirror, or
    /// a proxy's address for it (size and checksums are still checked).
    #[arg(long, env = "CIFAR10_URL", value_name = "URL")]
    url: Option<String>,
}

#[derive(Args)]
struct TrainArgs {
    /// Built-in model (model1, model2, model3, fast, resnet8, airbench, airbench-muon, mnist, cifar100) or a path to a JSON spec.
    /// A spec's "training" object sets the recipe; the flags below override it.
    /// [default: model1; with --init, the architecture of that file]
    #[arg(long, help_heading = "Model")]
    model: Option<String>,
    /// Start from the weights (and batch-norm statistics) of an exported f32
    /// model instead of a fresh initialisation, e.g. to fine-tune a shipped
    /// model on your own images. Its layers must have the names and shapes of
    /// --model's; the optimiser's state starts fresh.
    #[arg(long, value_name = "FILE", help_heading = "Model")]
    init: Option<PathBuf>,
    /// Do not train these parameter layers (comma-separated names, or a
    /// prefix ending in `*`: `--freeze 'conv*'`); a frozen batch norm keeps
    /// its running statistics. For fine-tuning only the last layers.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LAYERS",
        help_heading = "Model"
    )]
    freeze: Vec<String>,
    /// Distil from this trained f32 model: its class probabilities for each
    /// training image (computed once, before training, with the views of
    /// --teacher-views) are mixed into the targets with weight
    /// --teacher-weight. For training a small model (e.g. resnet8 for a
    /// microcontroller) from a larger, more accurate one.
    #[arg(long, value_name = "FILE", help_heading = "Model")]
    teacher: Option<PathBuf>,
    /// With --teacher: the weight α of the teacher's probabilities in the
    /// target, `(1 − α)·labels + α·teacher`.
    #[arg(
        long,
        value_name = "ALPHA",
        default_value_t = 0.5,
        help_heading = "Model"
    )]
    teacher_weight: f32,
    /// With --teacher: the views of each training image whose probabilities
    /// are averaged (`plain`: the image alone).
    #[arg(long, value_name = "VIEWS", default_value = "flip", help_heading = "Model",
          value_parser = teacher_views())]
    // Spelled out so that clap takes `None` for a value (`plain`), not for
    // an absent option.
    teacher_views: std::option::Option<train::Tta>,
    /// Maximum epochs [default: 35].
    #[arg(long, help_heading = "Training")]
    epochs: Option<usize>,
    /// Mini-batch size [default: 32].
    #[arg(long, help_heading = "Training")]
    batch_size: Option<usize>,
    /// Seed for initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 1, help_heading = "Training")]
    seed: u64,
    /// Under `mpirun`: batch norm normalises by the statistics of the whole
    /// global batch, summed over the processes at every batch-norm layer
    /// (PyTorch's SyncBatchNorm), instead of each process's shard.
    #[arg(long, help_heading = "Training")]
    sync_batch_norm: bool,
    /// Under `mpirun`: the gradients are summed over the processes in buckets
    /// of about this many KiB, each started as soon as backward has produced
    /// it, so that communication overlaps the rest of backward (as PyTorch's
    /// DDP); 0: one sum of everything once backward is done.
    #[arg(long, value_name = "KIB", default_value_t = trainer::train::BUCKET_BYTES >> 10, help_heading = "Training")]
    allreduce_bucket_kib: usize,
    /// Train on N images, stratified by class (default: all 50,000).
    #[arg(long, value_parser = positive(), help_heading = "Training")]
    subset: Option<usize>,
    #[command(flatten)]
    data: DataArgs,
    /// Validate on the first N test images only (default: all 10,000). For quick runs.
    #[arg(long, value_parser = positive(), help_heading = "Validation and early stopping")]
    val_subset: Option<usize>,
    /// Never download the data set; fail if it is missing.
    #[arg(long, help_heading = "Data")]
    offline: bool,
    /// The exported model (safetensors). Default: `runs/<model>.safetensors`
    #[arg(long, help_heading = "Output")]
    out: Option<PathBuf>,
    /// Per-epoch history as CSV. Default: the --out path with .csv
    #[arg(long, help_heading = "Output")]
    history: Option<PathBuf>,
    /// Also append one JSON line per training step to FILE (epoch, step,
    /// running loss and accuracy, images/s, seconds into the epoch), flushed
    /// as it comes: `tail -f FILE` follows the run.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    log_jsonl: Option<PathBuf>,
    /// Base (peak) learning rate [default: 0.001 for Adam, 0.01 for SGD].
    #[arg(long, help_heading = "Training")]
    lr: Option<f32>,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Validate (the per-epoch figures, early stopping, the best epoch) on
    /// this fraction of each class of the training set, drawn with
    /// --data-seed; the test set is evaluated once, at the end.
    #[arg(
        long,
        default_value_t = 0.1,
        value_name = "F",
        help_heading = "Validation and early stopping"
    )]
    val_fraction: f32,
    /// Validate on the last N training images instead (the previous
    /// protocol for choosing hyperparameters).
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "validate_on_test",
        help_heading = "Validation and early stopping"
    )]
    holdout: Option<usize>,
    /// Validate on the test set after every epoch, as the reference study
    /// does (`trainer study` reproduces it so); then the epoch figures and
    /// early stopping see the test set.
    #[arg(long, help_heading = "Validation and early stopping")]
    validate_on_test: bool,
    /// Stop when the monitored figure stops improving.
    #[arg(long, help_heading = "Validation and early stopping")]
    early_stopping: bool,
    #[arg(long, default_value = "val_loss", value_parser = named::<Monitor>(&["val_loss", "val_accuracy"]), help_heading = "Validation and early stopping")]
    monitor: Monitor,
    /// Epochs without improvement before stopping.
    #[arg(
        long,
        default_value_t = 5,
        help_heading = "Validation and early stopping"
    )]
    patience: usize,
    /// Smallest change that counts as an improvement.
    #[arg(
        long,
        default_value_t = 0.0,
        help_heading = "Validation and early stopping"
    )]
    min_delta: f32,
    /// Keep the last epoch's weights instead of restoring the best ones.
    #[arg(long, help_heading = "Validation and early stopping")]
    no_restore_best: bool,
    /// Checkpoint file, written after every epoch; if it exists, training resumes from it.
    /// Default: the --out path with .ckpt
    #[arg(long, help_heading = "Output")]
    checkpoint: Option<PathBuf>,
    /// Ignore an existing checkpoint and start over.
    #[arg(long, help_heading = "Output")]
    fresh: bool,
    /// No progress bar.
    #[arg(long, help_heading = "Output")]
    quiet: bool,
    /// Also report the saved weights' figures with test-time augmentation:
    /// `flip` averages each image with its mirror image; `flip_translate`
    /// adds both shifted by one pixel (airbench's six views)
    #[arg(long, help_heading = "Output", num_args = 0..=1, default_missing_value = "flip",
          value_parser = named::<train::Tta>(TTA_NAMES))]
    tta: Option<train::Tta>,
}

/// The training recipe (see trainer::train::recipe); each flag overrides the spec's
/// "training" object.
#[derive(Args)]
#[command(next_help_heading = "Training recipe (overrides the spec's \"training\" object)")]
struct RecipeArgs {
    /// Optimiser [default: adam].
    #[arg(long, value_parser = named::<OptimizerKind>(&["adam", "sgd"]))]
    optimizer: Option<OptimizerKind>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    momentum: Option<f32>,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// Decoupled weight decay λ (w ← w·(1 − lr·λ) each step) [default: 0].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// No weight decay on biases and batch-norm parameters.
    #[arg(long)]
    no_decay_bn_bias: bool,
    /// Learning-rate schedule [default: constant].
    #[arg(long, value_parser = named::<ScheduleKind>(&["constant", "onecycle", "cosine", "step"]))]
    schedule: Option<ScheduleKind>,
    /// Linear warm-up epochs (for onecycle: the rising side) [default: 0].
    #[arg(long)]
    warmup_epochs: Option<f32>,
    /// onecycle, cosine: learning-rate factor at the end [default: 0].
    #[arg(long)]
    final_lr_factor: Option<f32>,
    /// step: epochs between decays [default: 10].
    #[arg(long)]
    step_epochs: Option<f32>,
    /// step: factor of each decay [default: 0.1].
    #[arg(long)]
    step_gamma: Option<f32>,
    /// Label smoothing ε of the training loss [default: 0].
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// Standard augmentation: random crop with 4 pixels of padding and flip
    /// (the flags below adjust it).
    #[arg(long, conflicts_with = "no_augment")]
    augment: bool,
    /// No augmentation at all, whatever the spec says.
    #[arg(long)]
    no_augment: bool,
    /// Random crop with N pixels of padding (0–8; 0: none).
    #[arg(long)]
    crop_pad: Option<usize>,
    /// What the crop pads with [default: reflect].
    #[arg(long, value_parser = named::<PadMode>(&["reflect", "zero"]))]
    pad_mode: Option<PadMode>,
    /// Random horizontal flip.
    #[arg(long)]
    flip: bool,
    /// Cutout: zero a random N×N square (0: none).
    #[arg(long)]
    cutout: Option<usize>,
    /// The warm-up starts at this factor of the base rate [default: 0].
    #[arg(long, value_name = "F")]
    initial_lr_factor: Option<f32>,
    /// Batch norm's shifts train at this multiple of the learning rate [default: 1].
    #[arg(long, value_name = "F")]
    bn_bias_lr_scale: Option<f32>,
}

impl RecipeArgs {
    /// The flags as a TrainingSpec (None where a flag was not given).
    fn to_spec(
        &self,
        epochs: Option<usize>,
        batch_size: Option<usize>,
        lr: Option<f32>,
    ) -> TrainingSpec {
        let mut t = TrainingSpec {
            epochs,
            batch_size,
            lr,
            optimizer: self.optimizer,
            momentum: self.momentum,
            nesterov: self.nesterov.then_some(true),
            weight_decay: self.weight_decay,
            decay_bn_bias: self.no_decay_bn_bias.then_some(false),
            schedule: self.schedule,
            warmup_epochs: self.warmup_epochs,
            final_lr_factor: self.final_lr_factor,
            step_epochs: self.step_epochs,
            step_gamma: self.step_gamma,
            label_smoothing: self.label_smoothing,
            crop_pad: self.crop_pad,
            pad_mode: self.pad_mode,
            flip: self.flip.then_some(true),
            cutout: self.cutout,
            initial_lr_factor: self.initial_lr_factor,
            bn_bias_lr_scale: self.bn_bias_lr_scale,
            // Set in a spec's "training" object only (README, "Fast recipes use a few more settings").
            alternate_flip: None,
            bn_scale: None,
            lookahead: None,
            whitening: None,
            dirac: None,
            lr_scales: None,
            init_scales: None,
            muon: None,
        };
        if self.augment {
            t.crop_pad = t.crop_pad.or(Some(4));
            t.flip = Some(true);
        }
        if self.no_augment {
            t.crop_pad = Some(0);
            t.flip = Some(false);
            t.alternate_flip = Some(false);
            t.cutout = Some(0);
        }
        t
    }
}

#[derive(Args)]
struct QuantizeArgs {
    /// The f32 model to quantize (what `trainer train` wrote, or a shipped one).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Calibrate on N training images: the first N of a shuffle seeded by --seed.
    #[arg(long, default_value_t = 500, value_parser = positive())]
    calib: usize,
    /// How activation ranges are taken: min/max; each side of zero clipped
    /// at its 99.99th percentile; or the min/max range shrunk to the least
    /// mean squared quantization error.
    #[arg(long, default_value = "mse", value_parser = Calibration::NAMES)]
    calibration: String,
    /// Seed of the calibration images' shuffle.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The int8 model file to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct PlotArgs {
    /// The history CSV (`trainer train` writes it beside the model: --history).
    history: PathBuf,
    /// The PNG to write [default: the history's path with .png].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

#[derive(Args)]
struct ExportArgs {
    /// The model to export: f32 (what `trainer train` wrote, or a shipped
    /// one), or int8 (what `trainer quantize` wrote), written in QDQ form.
    #[arg(long)]
    model: PathBuf,
    /// The ONNX file to write: input `input` [N, C, H, W] float (pixel / 255),
    /// output `logits` [N, classes]; class names and the spec in its metadata.
    #[arg(long, value_name = "FILE")]
    onnx: PathBuf,
}

#[derive(Args)]
struct EvaluateArgs {
    /// The exported model (safetensors): what `trainer train` or `trainer
    /// quantize` wrote, or a shipped one such as models/model1.safetensors
    /// of this repository. Int8 files run through `infer`.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Evaluate on the first N test images only (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Write the report and confusion matrix as JSON to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the confusion matrix as CSV to this file (`-`: standard output).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also report loss and accuracy with test-time augmentation, beside the
    /// plain figures: `flip` averages each image with its mirror image;
    /// `flip_translate` adds both shifted by one pixel (airbench's six views)
    #[arg(long, num_args = 0..=1, default_missing_value = "flip",
          value_parser = named::<train::Tta>(TTA_NAMES))]
    tta: Option<train::Tta>,
}

/// Errors are printed as one chain of causes (`trainer: error: … : …`),
/// without the backtrace `anyhow` would add under `RUST_BACKTRACE`.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Under `mpirun` (built with `--features mpi`), `train` is one replica of
    // a data-parallel run; every other command runs alone.
    #[cfg(feature = "mpi")]
    let mpi = match &cli.command {
        Command::Train(_) => match trainer_cli::mpi::Mpi::start() {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("trainer: error: cannot start MPI: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    #[cfg(feature = "mpi")]
    let replicas: &dyn Replicas = match &mpi {
        Some(m) => m,
        None => &Alone,
    };
    #[cfg(not(feature = "mpi"))]
    let replicas: &dyn Replicas = &Alone;
    // The processes of a job on one machine share its cores.
    #[cfg(feature = "mpi")]
    let threads = cli.threads.or_else(|| {
        let local = mpi.as_ref().map_or(1, |m| m.local_size());
        (local > 1).then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / local).max(1)
        })
    });
    #[cfg(not(feature = "mpi"))]
    let threads = cli.threads;
    if let Some(n) = threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("trainer: error: cannot start {n} threads: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    match execute(cli.command, replicas) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let rank = replicas.rank();
            if replicas.size() > 1 {
                eprintln!(
                    "trainer: error (process {rank} of {}): {e:#}",
                    replicas.size()
                );
                // The other processes may be waiting for this one inside a
                // collective call: end the whole job instead of leaving them.
                #[cfg(feature = "mpi")]
                if let Some(m) = &mpi {
                    m.abort(1);
                }
            } else {
                eprintln!("trainer: error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn execute(command: Command, replicas: &dyn Replicas) -> Result<()> {
    match command {
        Command::Train(args) => train(*args, replicas),
        Command::Evaluate(args) => evaluate(args),
        Command::Quantize(args) => quantize_model(args),
        Command::Export(args) => export(args),
        Command::Plot(args) => plot_history(args),
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "trainer", &mut out);
            trainer_cli::out!("{}", String::from_utf8_lossy(&out).trim_end());
            Ok(())
        }
        Command::Study(args) => study(args),
        Command::Download(args) => {
            let fetched = download::ensure_dataset(
                &args.data,
                &download::Source::official().from_url(args.url.as_deref()),
                &download::Options::default(),
            )
            .with_context(|| format!("cannot download CIFAR-10 into {}", args.data.display()))?;
            if fetched {
                eprintln!("CIFAR-10 is ready in {}", args.data.display());
            } else {
                eprintln!("CIFAR-10 is already in {}", args.data.display());
            }
            Ok(())
        }
    }
}

fn train(mut args: TrainArgs, replicas: &dyn Replicas) -> Result<()> {
    let lead = replicas.rank() == 0;
    if !lead {
        // Replica 0 reports for all.
        args.quiet = true;
    }
    let init = match &args.init {
        Some(path) => Some(run::WarmStart::load(path).context("bad --init")?),
        None => None,
    };
    let teacher = match &args.teacher {
        Some(path) => Some(run::Teacher {
            model: run::WarmStart::load(path).context("bad --teacher")?,
            weight: args.teacher_weight,
            views: args.teacher_views,
        }),
        None => None,
    };
    if !(0.0..=1.0).contains(&args.teacher_weight) {
        bail!("--teacher-weight {} must be in [0, 1]", args.teacher_weight);
    }
    let mut spec_file = match (&args.model, &init) {
        (Some(model), _) => SpecFile::resolve(model).context("bad --model")?,
        (None, Some(w)) => SpecFile {
            model: w.net.spec().clone(),
            training: None,
            units_from_classes: Vec::new(),
        },
        (None, None) => SpecFile::resolve("model1").context("bad --model")?,
    };
    if args.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    let from_spec = spec_file.training.take().unwrap_or_default();
    let recipe = args
        .recipe
        .to_spec(args.epochs, args.batch_size, args.lr)
        .or(&from_spec)
        .resolve()
        .map_err(|e| anyhow::anyhow!("bad training settings: {e}"))?;
    // Replica 0 finds (or downloads) the data set first; the others then read it.
    let data = if lead {
        let data = dataset::load(&args.data, spec_file.model.input, args.offline, args.quiet);
        replicas.barrier();
        data?
    } else {
        replicas.barrier();
        dataset::load(&args.data, spec_file.model.input, true, true)?
    };
    spec_file
        .set_classes(data.num_classes())
        .context("bad --model")?;
    let spec = spec_file.model;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}.safetensors", spec.name)));
    let cfg = RunConfig {
        train: TrainConfig {
            sync_batch_norm: args.sync_batch_norm,
            bucket_bytes: args.allreduce_bucket_kib << 10,
            ..TrainConfig::from_recipe(
                &recipe,
                args.seed,
                args.early_stopping.then_some(EarlyStopping {
                    monitor: args.monitor,
                    patience: args.patience,
                    min_delta: args.min_delta,
                    restore_best: !args.no_restore_best,
                }),
            )
        },
        progress: !args.quiet,
        optimizer: recipe.optimizer.clone(),
        subset: args.subset,
        val_subset: args.val_subset,
        validation: match (args.validate_on_test, args.holdout) {
            (true, _) => Validation::TestSet,
            (false, Some(n)) => Validation::Last(n),
            (false, None) => Validation::Stratified {
                fraction: args.val_fraction,
                seed: args.data.data_seed,
            },
        },
        history: args
            .history
            .clone()
            .unwrap_or_else(|| out.with_extension("csv")),
        checkpoint: args
            .checkpoint
            .clone()
            .unwrap_or_else(|| out.with_extension("ckpt")),
        fresh: args.fresh,
        tta: args.tta,
        out,
        spec,
        init: init.map(std::sync::Arc::new),
        teacher: teacher.map(std::sync::Arc::new),
        freeze: args.freeze.clone(),
        log_jsonl: args.log_jsonl.clone(),
    };
    dataset::check_fits(&cfg.spec, &data, &args.data.data)?;
    recipe
        .augment
        .check_fits(data.shape())
        .map_err(|e| anyhow::anyhow!("bad augmentation for this data set: {e}"))?;
    if lead {
        describe_run(&cfg, &recipe, replicas);
    }
    let epochs = cfg.train.epochs;
    on_interrupt_say_how_to_resume(&cfg.checkpoint);
    let result = run::run_replicated(&cfg, std::borrow::Cow::Owned(data), replicas, &mut |r| {
        trainer_cli::out!("{}", r.keras_line(epochs))
    })?;
    if !lead {
        return Ok(());
    }
    if let Some((n, c)) = result.communication {
        // A step's wall time, from the last epoch (training and validation).
        let steps = result.train_images.div_ceil(cfg.train.batch_size).max(1);
        let step = result.history.last().map_or(0.0, |r| f64::from(r.seconds)) / steps as f64;
        eprintln!(
            "MPI over {n} processes: {:.2} MB all-reduced per step in {} all-reduces, {:.2} ms per step waiting for them after backward (a step takes {:.1} ms)",
            c.bytes_per_step as f64 / 1e6,
            c.buckets,
            c.seconds / c.steps.max(1) as f64 * 1e3,
            step * 1e3
        );
    }
    if result.stopped_early {
        eprintln!("Early stopping after epoch {}", result.epochs_run);
    }
    if result.final_epoch != result.epochs_run {
        eprintln!(
            "Restored the weights of epoch {} (best {})",
            result.final_epoch,
            match args.monitor {
                Monitor::ValLoss => "val_loss",
                Monitor::ValAccuracy => "val_accuracy",
            }
        );
    }
    let (what, images) = if result.held_out {
        ("validation", "held-out training images")
    } else {
        ("test", "test images")
    };
    trainer_cli::out!(
        "Saved {} (epoch {}): {what} loss {:.4}, {what} accuracy {:.4} on {} {images}",
        cfg.out.display(),
        result.final_epoch,
        result.test_loss,
        result.test_accuracy,
        result.test_images
    );
    if let Some(t) = result.test_set {
        trainer_cli::out!(
            "Test set, evaluated once: test loss {:.4}, test accuracy {:.4} on {} test images",
            t.loss,
            t.accuracy,
            t.images
        );
    }
    if let (Some(t), Some(views)) = (result.tta, cfg.tta) {
        trainer_cli::out!(
            "With test-time augmentation ({}): test loss {:.4}, test accuracy {:.4}",
            views.describe(),
            t.loss,
            t.accuracy
        );
    }
    trainer_cli::out!("History: {}", cfg.history.display());
    Ok(())
}

/// What `train` says before it starts: the model, the recipe, the validation.
fn describe_run(cfg: &RunConfig, recipe: &trainer::train::recipe::Recipe, replicas: &dyn Replicas) {
    eprintln!(
        "Training {}, batch {}, {} epochs max, {} threads",
        cfg.spec.name,
        cfg.train.batch_size,
        cfg.train.epochs,
        rayon::current_num_threads()
    );
    if replicas.size() > 1 {
        eprintln!(
            "Data-parallel over {} processes: each takes 1/{} of every batch of {}; batch norm {}",
            replicas.size(),
            replicas.size(),
            cfg.train.batch_size,
            if cfg.train.sync_batch_norm {
                "by the whole batch's statistics (--sync-batch-norm)"
            } else {
                "by each process's shard (--sync-batch-norm: by the whole batch)"
            }
        );
    }
    eprintln!("Recipe: {}", recipe.describe());
    match cfg.validation {
        Validation::Stratified { fraction, seed } => eprintln!(
            "Validating on {:.0} % of each class of the training set (held out, --data-seed {seed}); the test set is evaluated once, at the end",
            100.0 * fraction
        ),
        Validation::Last(n) => eprintln!(
            "Validating on the last {n} training images (held out); the test set is evaluated once, at the end"
        ),
        Validation::TestSet => {
            eprintln!("Validating on the test set after every epoch (--validate-on-test)")
        }
    }
}

/// Reads a model file whole, with the error `Network::load` gives.
fn read_model(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        NetworkError::Read {
            path: path.display().to_string(),
            source,
        }
        .into()
    })
}

/// What `evaluate` runs: the trainer's network (f32 files) or `infer`
/// (int8 files). One per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Evaluated<'a> {
    F32(Network),
    Int8(infer::Model<'a>),
}

impl Evaluated<'_> {
    fn evaluate(
        &mut self,
        split: &trainer::data::Split,
        tta: Option<train::Tta>,
    ) -> train::Evaluation {
        match (self, tta) {
            (Evaluated::F32(net), Some(views)) => {
                train::evaluate_tta(net, split, train::EVAL_BATCH, views)
            }
            (Evaluated::F32(net), None) => train::evaluate(net, split, train::EVAL_BATCH),
            (Evaluated::Int8(model), tta) => evaluate_infer(model, split, tta),
        }
    }
}

/// [`train::evaluate()`] (or [`train::evaluate_tta`] with `tta`) through
/// `infer`: each image classified on its own, in parallel, each thread with
/// its own scratch; the loss is `−ln p[label]` of the probabilities.
fn evaluate_infer(
    model: &infer::Model<'_>,
    split: &trainer::data::Split,
    tta: Option<train::Tta>,
) -> train::Evaluation {
    use rayon::prelude::*;
    let classes = model.num_classes();
    let per_image: Vec<(f64, u8)> = (0..split.len())
        .into_par_iter()
        .map_init(
            || {
                (
                    vec![0f32; model.scratch_len()],
                    vec![0f32; classes],
                    vec![0f32; classes],
                    vec![0u8; split.image_len()],
                )
            },
            |(scratch, probs, view_probs, view_image), i| {
                let image = split.image(i);
                match tta {
                    None => {
                        model
                            .classify(image, scratch, probs)
                            .expect("image, scratch and output sizes are the model's");
                    }
                    Some(views) => {
                        probs.fill(0.0);
                        for view in views.views() {
                            view.render(image, view_image, split.shape);
                            model
                                .classify(view_image, scratch, view_probs)
                                .expect("image, scratch and output sizes are the model's");
                            for (p, q) in probs.iter_mut().zip(view_probs.iter()) {
                                *p += view.weight * q;
                            }
                        }
                    }
                }
                let p = &probs[..classes];
                let label = usize::from(split.labels[i]);
                // Clamped as evaluate_tta does: a probability that underflows
                // to 0 gives a large finite loss.
                let loss = -f64::from(p[label].max(f32::MIN_POSITIVE)).ln();
                (loss, trainer::model::loss::argmax(p) as u8)
            },
        )
        .collect();
    let n = split.len().max(1);
    let loss: f64 = per_image.iter().map(|(l, _)| l).sum();
    let predictions: Vec<u8> = per_image.iter().map(|&(_, p)| p).collect();
    let correct = predictions
        .iter()
        .zip(&split.labels)
        .filter(|(p, l)| p == l)
        .count();
    train::Evaluation {
        loss: (loss / n as f64) as f32,
        accuracy: correct as f32 / n as f32,
        predictions,
    }
}

fn evaluate(args: EvaluateArgs) -> Result<()> {
    let bytes = read_model(&args.model)?;
    let origin = args.model.display().to_string();
    let precision = quantize::precision_of(&bytes, &origin)?;
    let (mut evaluated, spec_name, input, classes) = match precision {
        Precision::F32 => {
            let net = Network::from_safetensors_bytes(&bytes, &origin)?;
            let (name, input, classes) = (
                net.spec().name.clone(),
                net.input_shape(),
                net.num_classes(),
            );
            (Evaluated::F32(net), name, input, classes)
        }
        Precision::Int8 => {
            let spec = quantize::architecture_of(&bytes, &origin)?;
            let model = infer::Model::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("model file {origin}: {e}"))?;
            let (h, w, c) = model.input_shape();
            let classes = model.num_classes();
            (
                Evaluated::Int8(model),
                format!("{}, int8", spec.name),
                trainer::kernels::tensor::ImageShape::new(h, w, c),
                classes,
            )
        }
    };
    let data = dataset::load(&args.data, input, true, true)?;
    if data.num_classes() != classes {
        bail!(
            "model {} has {} outputs, but the data set in {} has {} classes",
            args.model.display(),
            classes,
            args.data.data.display(),
            data.num_classes()
        );
    }
    let mut test = data.test;
    if let Some(n) = args.limit {
        test = test.head(n);
    }
    let names = data.class_names;
    let started = Instant::now();
    let e = evaluated.evaluate(&test, None);
    let seconds = started.elapsed().as_secs_f32();
    let matrix = ConfusionMatrix::from_predictions(classes, &test.labels, &e.predictions);
    let report = matrix.report(&names);
    // With `--json -` or `--csv -` standard output carries that file alone,
    // and the readable report goes to standard error.
    let dash = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str() == "-");
    let to_stderr = dash(&args.json) || dash(&args.csv);
    let say = |line: std::fmt::Arguments<'_>| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            trainer_cli::print_line(line);
        }
    };
    say(format_args!(
        "Model {} ({spec_name}) on {} test images ({seconds:.1}s)",
        args.model.display(),
        test.len()
    ));
    say(format_args!(
        "test loss: {:.4} - test accuracy: {:.4}",
        e.loss, e.accuracy
    ));
    let tta = args.tta.map(|views| {
        let t = evaluated.evaluate(&test, Some(views));
        say(format_args!(
            "with test-time augmentation ({}): test loss: {:.4} - test accuracy: {:.4}",
            views.describe(),
            t.loss,
            t.accuracy
        ));
        t
    });
    say(format_args!(
        "\nPer-class report and confusion matrix without test-time augmentation:\n"
    ));
    say(format_args!("{report}"));
    say(format_args!(
        "Confusion matrix (rows: true class, columns: predicted):"
    ));
    say(format_args!("{}", matrix.to_text(&names)));
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "model": args.model.display().to_string(),
            "loss": tidy(e.loss),
            "accuracy": tidy(e.accuracy),
            "tta": tta.as_ref().map(|t| serde_json::json!({"loss": tidy(t.loss), "accuracy": tidy(t.accuracy)})),
            "report": report,
            "confusion_matrix": matrix,
            "class_names": names,
        });
        let text = serde_json::to_string_pretty(&json)?;
        if path.as_os_str() == "-" {
            trainer_cli::out!("{text}");
        } else {
            trainer::atomic::write_atomic(path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    if let Some(path) = &args.csv {
        let csv = matrix.to_csv(&names);
        if path.as_os_str() == "-" {
            trainer_cli::out!("{}", csv.trim_end());
        } else {
            trainer::atomic::write_atomic(path, csv.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

/// `trainer quantize`: the f32 model, folded and calibrated on training
/// images, written as an int8 model file (atomically).
fn plot_history(args: PlotArgs) -> Result<()> {
    let path = &args.history;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let records = trainer::train::parse_history_csv(&text)
        .map_err(|problem| anyhow::anyhow!("{}: {problem}", path.display()))?;
    if records.is_empty() {
        bail!("{} has no epochs", path.display());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| path.with_extension("png"));
    let title = path
        .file_stem()
        .map_or_else(|| "history".into(), |s| s.to_string_lossy().into_owned());
    trainer_cli::plot::history(&out, &title, &records)?;
    trainer_cli::out!("{} epochs: {}", records.len(), out.display());
    Ok(())
}

/// On Ctrl-C (SIGINT, or SIGTERM), says where the last finished epoch is and
/// how to resume, then exits with status 130. Every file is written to a
/// temporary name and renamed, so none is left half-written.
fn on_interrupt_say_how_to_resume(checkpoint: &std::path::Path) {
    let checkpoint = checkpoint.to_path_buf();
    let command: Vec<String> = std::env::args().collect();
    let result = ctrlc::set_handler(move || {
        if checkpoint.exists() {
            eprintln!(
                "\nInterrupted. The last finished epoch is saved in {}; run the same command again to resume:\n  {}",
                checkpoint.display(),
                command.join(" ")
            );
        } else {
            eprintln!("\nInterrupted before the first epoch finished: nothing to resume.");
        }
        std::process::exit(130);
    });
    if let Err(e) = result {
        eprintln!("warning: cannot catch Ctrl-C ({e}); an interrupted run still resumes from its checkpoint");
    }
}

fn export(args: ExportArgs) -> Result<()> {
    let bytes = read_model(&args.model)?;
    let origin = args.model.display().to_string();
    let (onnx, spec, form) = if quantize::precision_of(&bytes, &origin)? == Precision::Int8 {
        let model = quantize::Int8Reference::from_bytes(&bytes, &origin)?;
        let onnx = trainer::model::onnx::to_onnx_int8(&model);
        (onnx, model.spec().clone(), "int8 as QDQ")
    } else {
        let net = Network::from_safetensors_bytes(&bytes, &origin)?;
        (
            trainer::model::onnx::to_onnx(&net),
            net.spec().clone(),
            "f32",
        )
    };
    trainer::atomic::write_atomic(&args.onnx, &onnx)
        .with_context(|| format!("cannot write {}", args.onnx.display()))?;
    let s = spec.input;
    let classes = spec.shapes()?.last().map_or(0, |s| s.len());
    trainer_cli::out!(
        "Exported {origin} ({}, {form}) to ONNX (opset {}): {}, {} bytes; input `input` [N, {}, {}, {}] float = pixel / 255, output `logits` [N, {classes}]",
        spec.name,
        trainer::model::onnx::OPSET,
        args.onnx.display(),
        onnx.len(),
        s.channels,
        s.height,
        s.width,
    );
    Ok(())
}

fn quantize_model(args: QuantizeArgs) -> Result<()> {
    let bytes = read_model(&args.model)?;
    let origin = args.model.display().to_string();
    if quantize::precision_of(&bytes, &origin)? == Precision::Int8 {
        bail!("{origin} is already an int8 model");
    }
    let net = Network::from_safetensors_bytes(&bytes, &origin)?;
    let method =
        Calibration::from_name(&args.calibration).expect("clap offers Calibration::NAMES only");
    let data = dataset::load(&args.data, net.input_shape(), true, true)?;
    if data.num_classes() != net.num_classes() {
        bail!(
            "model {} has {} outputs, but the data set in {} has {} classes",
            args.model.display(),
            net.num_classes(),
            args.data.data.display(),
            data.num_classes()
        );
    }
    let calib = data.train.select(&quantize::calibration_indices(
        data.train.len(),
        args.calib,
        args.seed,
    ));
    let started = Instant::now();
    let int8 = quantize::quantize(&net, &calib.images, method)
        .with_context(|| format!("cannot quantize {origin}"))?;
    trainer::atomic::write_atomic(&args.out, &int8)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    trainer_cli::out!(
        "Quantized {} ({}) to int8 with {} calibration on {} training images in {:.1}s: {}",
        args.model.display(),
        net.spec().name,
        method.describe(),
        calib.len(),
        started.elapsed().as_secs_f32(),
        args.out.display()
    );
    trainer_cli::out!(
        "Size: {} bytes (f32) → {} bytes (int8), {:.3}× the f32 file",
        bytes.len(),
        int8.len(),
        int8.len() as f64 / bytes.len() as f64
    );
    Ok(())
}

/// An `f32` as the `f64` of its shortest decimal form, for JSON: 0.318, not
/// the 0.3179999887943268 that widening the bits gives.
fn tidy(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// `trainer study`: the data set is loaded only if some run has to train.
fn study(args: StudyArgs) -> Result<()> {
    let data_args = DataArgs::at(&args.data);
    let mut load = || {
        dataset::load(&data_args, cifar10::SHAPE, args.offline, args.quiet)
            .map_err(|e| StudyError::Data(format!("{e:#}")))
    };
    study::execute(&args, &mut load)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every name offered on the command line is one the engine's settings
    /// parse (the `expect` in [`named`] never fires).
    #[test]
    fn every_listed_setting_name_parses() {
        Cli::command().debug_assert();
        for args in [
            "--monitor val_loss",
            "--monitor val_accuracy",
            "--optimizer adam",
            "--optimizer sgd",
            "--schedule constant",
            "--schedule onecycle",
            "--schedule cosine",
            "--schedule step",
            "--pad-mode reflect",
            "--pad-mode zero",
        ] {
            let argv = ["trainer", "train"]
                .into_iter()
                .chain(args.split(' '))
                .collect::<Vec<_>>();
            assert!(Cli::try_parse_from(&argv).is_ok(), "{args}");
        }
        assert!(Cli::try_parse_from(["trainer", "train", "--optimizer", "lion"]).is_err());
        // Every calibration name parses, and the default is the engine's.
        for name in Calibration::NAMES {
            assert!(Calibration::from_name(name).is_some(), "{name}");
        }
        let Command::Quantize(q) =
            Cli::try_parse_from(["trainer", "quantize", "--model", "m", "--out", "o"])
                .unwrap()
                .command
        else {
            panic!("quantize parses");
        };
        assert_eq!(
            Calibration::from_name(&q.calibration),
            Some(Calibration::DEFAULT)
        );
        assert_eq!(q.calib, 500);
    }
}
