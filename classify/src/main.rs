//! `classify`: classifies PNG and JPEG images with a model exported by the
//! trainer, using the `infer` crate.
//!
//! ```text
//! classify [--model FILE] [--top K] [--json | --csv] IMAGE|DIR|-...
//! ```
//!
//! Each image is decoded, converted to the model's channels (RGB for the
//! CIFAR-10 models; grayscale, palette, alpha and 16-bit images are converted),
//! resized to the model's input size when it differs (the output says so), and
//! classified. A folder stands for the PNG and JPEG files under it (recursively,
//! in path order); `-` reads one path per line from standard input. Files are
//! decoded and classified on all cores, and printed in input order. A file
//! that cannot be read or decoded gets a one-line error on stderr naming it;
//! the others are still classified, and the exit status is 1 if any failed.

use anyhow::{bail, Context, Result};
use clap::Parser;
use infer::Model;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use classify::{input, report};

/// The model shipped with the program: the residual network of
/// `models/fast.json` trained on CIFAR-10 (`trainer study --only fast-50`).
static DEFAULT_MODEL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/fast.safetensors"
));

/// Classify images with a CNN exported by the trainer.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Model file (safetensors from `trainer`); default: the built-in CIFAR-10 model (models/fast.safetensors).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,

    /// Show the K most probable classes for each image.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    top: u32,

    /// Print one JSON object per line instead of text.
    #[arg(long, conflicts_with = "csv")]
    json: bool,

    /// Print CSV (a header, then one row per image: file, class, index,
    /// probability, then the same for the 2nd to K-th class with --top K).
    #[arg(long)]
    csv: bool,

    /// Threads decoding and classifying (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,

    /// PNG or JPEG files (any size); a folder for every such file under it
    /// (recursively); `-` to read paths from standard input, one per line.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(n) = args.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
        {
            eprintln!("classify: error: cannot start {n} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("classify: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Classifies every image; `Ok(false)` when some could not be classified.
fn run(args: &Args) -> Result<bool> {
    let bytes;
    let (model, origin) = match &args.model {
        Some(path) => {
            bytes = std::fs::read(path)
                .with_context(|| format!("cannot read model {}", path.display()))?;
            if is_checkpoint(&bytes) {
                bail!(
                    "{} is a training checkpoint (what `trainer train` resumes from), not a model: \
                     give the .safetensors file that the run exported",
                    path.display()
                );
            }
            let model = Model::from_bytes(&bytes)
                .with_context(|| format!("invalid model {}", path.display()))?;
            (model, path.display().to_string())
        }
        None => (
            Model::from_bytes(DEFAULT_MODEL).context("the built-in model is invalid")?,
            "built-in model".to_string(),
        ),
    };
    // Winograd for the f32 models' 3×3 layers: faster, for under 1 MB more
    // scratch per thread (no effect on an int8 model).
    let model = model.with_winograd(true);
    let top = (args.top as usize).min(model.num_classes());
    let files = expand(&args.images)?;
    if args.csv {
        print_line(&report::csv_header(top))?;
    }
    let mut all_ok = true;
    // In chunks, so that output starts early and memory stays bounded on long
    // lists; within a chunk, files are classified in parallel and printed in order.
    for chunk in files.chunks(256) {
        let lines: Vec<Result<String>> = chunk
            .par_iter()
            .map_init(
                || {
                    let scratch = vec![0f32; model.scratch_len()];
                    let probs = vec![0f32; model.num_classes()];
                    (scratch, probs)
                },
                |(scratch, probs), path| {
                    let image = input::load(path, &model)?;
                    model
                        .classify(&image.pixels, scratch, probs)
                        .with_context(|| {
                            format!("cannot classify {} with {origin}", path.display())
                        })?;
                    let ranked = report::ranked(&model, probs, top);
                    Ok(if args.json {
                        report::json_line(path, &image, &ranked)
                    } else if args.csv {
                        report::csv_row(path, &ranked)
                    } else {
                        report::text(path, &image, &ranked)
                    })
                },
            )
            .collect();
        for line in lines {
            match line {
                Ok(line) => print_line(&line)?,
                Err(e) => {
                    eprintln!("classify: error: {e:#}");
                    all_ok = false;
                }
            }
        }
    }
    Ok(all_ok)
}

/// Whether `bytes` are a trainer checkpoint: a safetensors file whose
/// header's metadata has the checkpoint's `fingerprint` and `optimizer` keys.
fn is_checkpoint(bytes: &[u8]) -> bool {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    else {
        return false;
    };
    let header = usize::try_from(len)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?));
    let Some(Ok(header)) = header.map(serde_json::from_slice::<serde_json::Value>) else {
        return false;
    };
    let meta = &header["__metadata__"];
    meta.get("fingerprint").is_some() && meta.get("optimizer").is_some()
}

/// The image files the arguments stand for: a file as it is, a folder as the
/// PNG and JPEG files under it (recursively, sorted by path), `-` as the paths
/// read from standard input (one per line, blank lines skipped).
fn expand(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arg in args {
        if arg.as_os_str() == "-" {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                let line = line.context("cannot read paths from standard input")?;
                let line = line.trim_end_matches('\r');
                if !line.is_empty() {
                    files.push(PathBuf::from(line));
                }
            }
        } else if arg.is_dir() {
            let before = files.len();
            walk(arg, &mut files)?;
            if files.len() == before {
                bail!("{} holds no PNG or JPEG files", arg.display());
            }
        } else {
            files.push(arg.clone());
        }
    }
    Ok(files)
}

/// Appends the PNG and JPEG files under `dir`, in sorted path order.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files)?;
        } else if input::is_image_name(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// Writes one line to standard output. A closed pipe (`classify *.png | head
/// -1`) is a normal end: the process exits quietly with status 0.
fn print_line(line: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("cannot write to standard output"),
    }
}
