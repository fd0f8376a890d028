//! `classify`: classifies PNG and JPEG images with a model exported by the
//! trainer, using the `infer` crate.
//!
//! ```text
//! classify [--model FILE] [--top K] [--json] IMAGE...
//! ```
//!
//! Each image is decoded, converted to the model's channels (RGB for the
//! CIFAR-10 models; grayscale, palette, alpha and 16-bit images are converted),
//! resized to the model's input size when it differs (the output says so), and
//! classified. A file that cannot be read or decoded gets a one-line error on
//! stderr naming it; the others are still classified, and the exit status is 1
//! if any failed.

mod input;
mod report;

use anyhow::{Context, Result};
use clap::Parser;
use infer::Model;
use std::path::PathBuf;
use std::process::ExitCode;

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
    #[arg(long)]
    json: bool,

    /// PNG or JPEG files (any size).
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
            let model = Model::from_bytes(&bytes)
                .with_context(|| format!("invalid model {}", path.display()))?;
            (model, path.display().to_string())
        }
        None => (
            Model::from_bytes(DEFAULT_MODEL).context("the built-in model is invalid")?,
            "built-in model".to_string(),
        ),
    };
    let mut scratch = vec![0f32; model.scratch_len()];
    let mut probs = vec![0f32; model.num_classes()];
    let top = (args.top as usize).min(model.num_classes());
    let mut all_ok = true;
    for path in &args.images {
        let result = input::load(path, &model).and_then(|image| {
            model
                .classify(&image.pixels, &mut scratch, &mut probs)
                .with_context(|| format!("cannot classify {} with {origin}", path.display()))?;
            Ok(image)
        });
        match result {
            Ok(image) => {
                let ranked = report::ranked(&model, &probs, top);
                let line = if args.json {
                    report::json_line(path, &image, &ranked)
                } else {
                    report::text(path, &image, &ranked)
                };
                print_line(&line)?;
            }
            Err(e) => {
                eprintln!("classify: error: {e:#}");
                all_ok = false;
            }
        }
    }
    Ok(all_ok)
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
