//! `trainer`: train, evaluate and export CNNs on CIFAR-10 from the command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Instant;
use trainer::data::Cifar10;
use trainer::download;
use trainer::metrics::ConfusionMatrix;
use trainer::network::Network;
use trainer::optim::{Adam, Optimizer};
use trainer::run::{self, RunConfig};
use trainer::spec::ModelSpec;
use trainer::study::{self, StudyArgs, StudyError};
use trainer::train::{self, EarlyStopping, Monitor, TrainConfig};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Train and evaluate small CNNs on CIFAR-10, on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model and export its weights as safetensors.
    Train(TrainArgs),
    /// Evaluate an exported model on the test set: loss, accuracy, per-class report, confusion matrix.
    Evaluate(EvaluateArgs),
    /// Download, verify and unpack CIFAR-10 into --data.
    Download(DataArgs),
    /// Run the reference study (five runs, resumable) and write docs/RESULTS.md.
    Study(StudyArgs),
}

#[derive(Args)]
struct DataArgs {
    /// Folder with the CIFAR-10 binary files (data_batch_1.bin … test_batch.bin, batches.meta.txt).
    #[arg(long, default_value = "data/cifar-10-batches-bin")]
    data: PathBuf,
}

#[derive(Args)]
struct TrainArgs {
    /// Built-in model (model1, model2, model3) or a path to a JSON spec.
    #[arg(long, default_value = "model1")]
    model: String,
    #[arg(long, default_value_t = 35)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Seed for initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Train on N images, stratified by class (default: all 50,000).
    #[arg(long)]
    subset: Option<usize>,
    #[command(flatten)]
    data: DataArgs,
    /// Validate on the first N test images only (default: all 10,000). For quick runs.
    #[arg(long)]
    val_subset: Option<usize>,
    /// Never download the data set; fail if it is missing.
    #[arg(long)]
    offline: bool,
    /// The exported model (safetensors). Default: runs/<model>.safetensors
    #[arg(long)]
    out: Option<PathBuf>,
    /// Per-epoch history as CSV. Default: the --out path with .csv
    #[arg(long)]
    history: Option<PathBuf>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Stop when the monitored figure stops improving.
    #[arg(long)]
    early_stopping: bool,
    #[arg(long, value_enum, default_value = "val_loss")]
    monitor: Monitor,
    /// Epochs without improvement before stopping.
    #[arg(long, default_value_t = 5)]
    patience: usize,
    /// Smallest change that counts as an improvement.
    #[arg(long, default_value_t = 0.0)]
    min_delta: f32,
    /// Keep the last epoch's weights instead of restoring the best ones.
    #[arg(long)]
    no_restore_best: bool,
    /// Checkpoint file, written after every epoch; if it exists, training resumes from it.
    /// Default: the --out path with .ckpt
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Ignore an existing checkpoint and start over.
    #[arg(long)]
    fresh: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct EvaluateArgs {
    /// The exported model (safetensors).
    #[arg(long, default_value = "models/model1.safetensors")]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Evaluate on the first N test images only (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Write the report and confusion matrix as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the confusion matrix as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train(args) => train(args),
        Command::Evaluate(args) => evaluate(args),
        Command::Study(args) => study(args),
        Command::Download(args) => {
            let fetched = download::ensure_dataset(
                &args.data,
                &download::Source::official(),
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

/// Loads the data set, downloading it first when missing (unless `offline`).
fn load_data(dir: &Path, offline: bool) -> Result<Cifar10> {
    if !Cifar10::is_present(dir) && !offline {
        eprintln!(
            "CIFAR-10 not found in {}: downloading it (use --offline to turn this off)",
            dir.display()
        );
        download::ensure_dataset(
            dir,
            &download::Source::official(),
            &download::Options::default(),
        )
        .with_context(|| format!("cannot download CIFAR-10 into {}", dir.display()))?;
    }
    let started = Instant::now();
    let data = Cifar10::load(dir).context("cannot load CIFAR-10")?;
    eprintln!(
        "Loaded CIFAR-10 from {} ({} training, {} test images) in {:.1}s",
        dir.display(),
        data.train.len(),
        data.test.len(),
        started.elapsed().as_secs_f32()
    );
    Ok(data)
}

fn train(args: TrainArgs) -> Result<()> {
    let spec = ModelSpec::resolve(&args.model).context("bad --model")?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}.safetensors", spec.name)));
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let cfg = RunConfig {
        train: TrainConfig {
            epochs: args.epochs,
            batch_size: args.batch_size,
            seed: args.seed,
            early_stopping: args.early_stopping.then_some(EarlyStopping {
                monitor: args.monitor,
                patience: args.patience,
                min_delta: args.min_delta,
                restore_best: !args.no_restore_best,
            }),
            progress: !args.quiet,
            ..TrainConfig::default()
        },
        optimizer: Optimizer::Adam(Adam::new(args.lr)),
        subset: args.subset,
        val_subset: args.val_subset,
        history: args
            .history
            .clone()
            .unwrap_or_else(|| out.with_extension("csv")),
        checkpoint: args
            .checkpoint
            .clone()
            .unwrap_or_else(|| out.with_extension("ckpt")),
        fresh: args.fresh,
        out,
        spec,
    };
    let data = load_data(&args.data.data, args.offline)?;
    eprintln!(
        "Training {} on {} images, batch {}, {} epochs max, {} threads",
        cfg.spec.name,
        args.subset.unwrap_or(data.train.len()),
        cfg.train.batch_size,
        cfg.train.epochs,
        rayon::current_num_threads()
    );
    let epochs = cfg.train.epochs;
    let result = run::run(&cfg, &data, &mut |r| println!("{}", r.keras_line(epochs)))?;
    if result.stopped_early {
        eprintln!("Early stopping after epoch {}", result.epochs_run);
    }
    if result.final_epoch != result.epochs_run {
        eprintln!(
            "Restored the weights of epoch {} (best {:?})",
            result.final_epoch, args.monitor
        );
    }
    println!(
        "Saved {} (epoch {}): test loss {:.4}, test accuracy {:.4} on {} test images",
        cfg.out.display(),
        result.final_epoch,
        result.test_loss,
        result.test_accuracy,
        result.test_images
    );
    println!("History: {}", cfg.history.display());
    Ok(())
}

fn evaluate(args: EvaluateArgs) -> Result<()> {
    let mut net = Network::load(&args.model)?;
    let mut test =
        Cifar10::load_test(&args.data.data).context("cannot load the CIFAR-10 test set")?;
    if let Some(n) = args.limit {
        test = test.head(n);
    }
    let names = match Cifar10::load_class_names(&args.data.data) {
        Ok(n) => n,
        Err(_) => net.class_names.clone(),
    };
    let started = Instant::now();
    let e = train::evaluate(&mut net, &test, run::EVAL_BATCH);
    let seconds = started.elapsed().as_secs_f32();
    let matrix = ConfusionMatrix::from_predictions(net.num_classes(), &test.labels, &e.predictions);
    let report = matrix.report(&names);
    println!(
        "Model {} ({}) on {} test images ({seconds:.1}s)",
        args.model.display(),
        net.spec().name,
        test.len()
    );
    println!(
        "test loss: {:.4} - test accuracy: {:.4}\n",
        e.loss, e.accuracy
    );
    println!("{report}");
    println!("Confusion matrix (rows: true class, columns: predicted):");
    println!("{}", matrix.to_text(&names));
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "model": args.model.display().to_string(),
            "loss": e.loss,
            "accuracy": e.accuracy,
            "report": report,
            "confusion_matrix": matrix,
            "class_names": names,
        });
        trainer::atomic::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.csv {
        trainer::atomic::write_atomic(path, matrix.to_csv(&names).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `trainer study`: the data set is loaded only if some run has to train.
fn study(args: StudyArgs) -> Result<()> {
    let mut load =
        || load_data(&args.data, args.offline).map_err(|e| StudyError::Data(format!("{e:#}")));
    study::execute(&args, &mut load)?;
    Ok(())
}
