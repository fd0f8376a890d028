//! The data set of a command: found where `--data` points (downloaded first
//! when it is the default CIFAR-10 folder and missing), read by the engine's
//! readers ([`trainer::data::load`]) with a progress bar while an image
//! folder decodes, and checked against the model before anything trains.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;
use trainer::data::folder::FolderOptions;
use trainer::data::{cifar100, Dataset, Format, LoadOptions};
use trainer::kernels::tensor::ImageShape;
use trainer::model::spec::ModelSpec;

/// Where the data set is and how to read it.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Data")]
pub struct DataArgs {
    /// The data set: a CIFAR-10 or CIFAR-100 binary folder, MNIST-family IDX
    /// files, or an image folder (`ROOT/train/<class>/*.png` and `ROOT/test/…`, or
    /// `ROOT/<class>/…` with --val-split). The format is detected.
    #[arg(long, default_value = "data/cifar-10-batches-bin")]
    pub data: PathBuf,
    /// Force the format instead of detecting it.
    #[arg(long, value_parser = ["cifar10", "cifar100", "idx", "folder"])]
    pub format: Option<String>,
    /// CIFAR-100: train on the 100 fine or the 20 coarse labels.
    #[arg(long, default_value = "fine", value_parser = ["fine", "coarse"])]
    pub label: String,
    /// Image folder with one tree of classes: hold out this fraction of each
    /// class as the test set (stratified, seeded by --data-seed).
    #[arg(long)]
    pub val_split: Option<f32>,
    /// Where to download CIFAR-10 from when it is missing, instead of the
    /// official address: a mirror, or a proxy's address for it (the archive
    /// must be the same: its size and checksums are checked).
    #[arg(long, env = "CIFAR10_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Seed of the --val-split draw, and of `train`'s validation hold-out
    /// (--val-fraction).
    #[arg(long, default_value_t = 1)]
    pub data_seed: u64,
    /// Image folder: skip unreadable or corrupt images (counted and listed)
    /// instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Image folder: decode every time instead of keeping a cache file.
    #[arg(long)]
    pub no_cache: bool,
}

impl DataArgs {
    /// The defaults, reading `dir`.
    pub fn at(dir: &Path) -> Self {
        Self {
            data: dir.to_path_buf(),
            format: None,
            label: "fine".into(),
            val_split: None,
            data_seed: 1,
            url: None,
            skip_bad: false,
            no_cache: false,
        }
    }

    fn options(&self, shape: ImageShape) -> Result<LoadOptions> {
        if let Some(f) = self.val_split {
            if !(f > 0.0 && f < 1.0) {
                bail!("--val-split {f} must be between 0 and 1");
            }
        }
        Ok(LoadOptions {
            format: self
                .format
                .as_deref()
                .map(str::parse::<Format>)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--format: {e}"))?,
            label: match self.label.as_str() {
                "coarse" => cifar100::Label::Coarse,
                _ => cifar100::Label::Fine,
            },
            folder: FolderOptions {
                shape,
                val_split: self.val_split,
                seed: self.data_seed,
                skip_bad: self.skip_bad,
                cache: !self.no_cache,
            },
        })
    }

    /// Whether `--data` is the CIFAR-10 folder this command may download.
    fn is_downloadable(&self) -> bool {
        matches!(self.format.as_deref(), None | Some("cifar10"))
            && !self.data.exists()
            && self.data.file_name() == Some("cifar-10-batches-bin".as_ref())
    }
}

/// Loads the data set for a model whose input is `shape` (image folders are
/// resized to it), downloading CIFAR-10 first when `--data` is the default
/// folder, missing, and `offline` is off.
pub fn load(args: &DataArgs, shape: ImageShape, offline: bool, quiet: bool) -> Result<Dataset> {
    let dir = &args.data;
    if args.is_downloadable() && !offline {
        eprintln!(
            "CIFAR-10 not found in {}: downloading it (use --offline to turn this off)",
            dir.display()
        );
        crate::download::ensure_dataset(
            dir,
            &crate::download::Source::official().from_url(args.url.as_deref()),
            &crate::download::Options::default(),
        )
        .with_context(|| format!("cannot download CIFAR-10 into {}", dir.display()))?;
    }
    let started = Instant::now();
    let bar = progress_bar(quiet);
    let progress = |done: usize, total: usize| {
        if bar.length() != Some(total as u64) {
            bar.set_length(total as u64);
        }
        bar.set_position(done as u64);
    };
    let (data, report) = trainer::data::load(dir, &args.options(shape)?, &progress)
        .context("cannot load the data set")?;
    bar.finish_and_clear();
    eprintln!(
        "Loaded {} from {} ({} classes, {} training, {} test images of {}) in {:.1}s{}",
        data.description,
        dir.display(),
        data.num_classes(),
        data.train.len(),
        data.test.len(),
        data.shape(),
        started.elapsed().as_secs_f32(),
        match &report {
            Some(r) if r.from_cache => " (decoded images from the cache)",
            Some(_) => " (decoded and cached)",
            None => "",
        }
    );
    if let Some(r) = &report {
        if !r.skipped.is_empty() {
            eprintln!("Skipped {} unreadable images:", r.skipped.len());
            for (path, why) in r.skipped.iter().take(10) {
                eprintln!("  {}: {why}", path.display());
            }
            if r.skipped.len() > 10 {
                eprintln!("  … and {} more", r.skipped.len() - 10);
            }
        }
    }
    Ok(data)
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("Decoding images [{bar:30}] {pos}/{len} {elapsed}<{eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Checks that a model fits a data set: the same input shape, and one output
/// per class. One error saying what differs and what to change.
pub fn check_fits(spec: &ModelSpec, data: &Dataset, data_dir: &Path) -> Result<()> {
    if spec.input != data.shape() {
        bail!(
            "model {:?} takes {} images, but the data set in {} has {} images: set \"input\" in the spec to {{\"height\": {}, \"width\": {}, \"channels\": {}}}",
            spec.name,
            spec.input,
            data_dir.display(),
            data.shape(),
            data.shape().height,
            data.shape().width,
            data.shape().channels
        );
    }
    if spec.num_classes() != data.num_classes() {
        bail!(
            "model {:?} has {} outputs, but the data set in {} has {} classes: set the last dense layer's \"units\" to {} (or to \"classes\")",
            spec.name,
            spec.num_classes(),
            data_dir.display(),
            data.num_classes(),
            data.num_classes()
        );
    }
    Ok(())
}
