//! Image folders, laid out as for torchvision's `ImageFolder` or Keras's
//! `image_dataset_from_directory`: one sub-folder of images per class.
//!
//! Two layouts:
//!
//! - `ROOT/train/<class>/…` and `ROOT/test/<class>/…` (or `ROOT/val/<class>/…`
//!   when there is no `test/`): the test classes must be the training classes;
//! - `ROOT/<class>/…`, a single tree, split by [`FolderOptions::val_split`]:
//!   that fraction of each class (rounded, at most all but one image) is held
//!   out as the test set, drawn at random with [`FolderOptions::seed`].
//!   (`ROOT/train/` alone can be split the same way.)
//!
//! The classes are the sorted names of the class folders (of `train/`), label
//! `i` being the `i`-th. Images are the `.png`, `.jpg` and `.jpeg` files (any
//! case) anywhere under a class folder; names starting with `.` are ignored,
//! and the format is read from the file's content, not its name.
//!
//! **Decoding.** Every image is decoded in parallel with the `image` crate,
//! converted to the target channels (8-bit grayscale for 1 channel, 8-bit RGB
//! for 3; alpha is dropped), then fitted to the target size keeping its aspect
//! ratio: centre-cropped to the target's aspect ratio, then resized with
//! `resize_exact` and `FilterType::Triangle` (bilinear). An image already of
//! the target size is kept byte for byte. Pixels are stored `u8`, HWC.
//!
//! **Bad images.** An unreadable or corrupt image is an error naming it,
//! unless [`FolderOptions::skip_bad`]: then it is left out and listed in
//! [`FolderReport::skipped`].
//!
//! **Cache.** The decoded images are kept in one file,
//! `ROOT/.trainer-cache-{h}x{w}x{c}.bin` (see [`cache_path`]), written
//! atomically (a temporary file in `ROOT`, then a rename). Its header holds a
//! magic string, a version, the shape and a 64-bit fingerprint of the sorted
//! list of image files with their sizes and modification times and of the
//! options that change the result (`val_split`, `seed`, `skip_bad`); then come
//! the class names, the skipped files, both splits' labels and pixels. It is
//! used only when all of that matches and its length is exact; otherwise the
//! images are decoded again and the cache rewritten. When `ROOT` cannot be
//! written, there is simply no cache.

use super::{DataError, Dataset, Split};
use crate::kernels::tensor::ImageShape;
use image::imageops::FilterType;
use image::DynamicImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The file extensions of images (compared without regard to case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
/// The largest height or width an image can be resized to.
pub const MAX_SIDE: usize = 4096;
/// Labels are bytes.
const MAX_CLASSES: usize = 256;

/// How to read an image folder.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FolderOptions {
    /// The shape every image is converted to (channels 1 or 3).
    pub shape: ImageShape,
    /// With a single tree of classes: the fraction of each class held out as
    /// the test set, strictly between 0 and 1.
    pub val_split: Option<f32>,
    /// Seed of the `val_split` draw.
    pub seed: u64,
    /// Leave out unreadable images (listed in the report) instead of failing.
    pub skip_bad: bool,
    /// Read and write the cache file.
    pub cache: bool,
}

impl FolderOptions {
    /// Images of `shape`, no split, seed 1, no skipping, cached.
    pub fn new(shape: ImageShape) -> Self {
        Self {
            shape,
            val_split: None,
            seed: 1,
            skip_bad: false,
            cache: true,
        }
    }
}

/// What happened while loading a folder.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FolderReport {
    /// The images left out (with `skip_bad`) and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Whether the images came from the cache file.
    pub from_cache: bool,
    /// Images loaded, both splits.
    pub images: usize,
}

/// One image file found by the scan.
#[derive(Clone, Debug)]
struct Entry {
    path: PathBuf,
    label: u8,
    size: u64,
    /// Modification time, nanoseconds since the epoch (0 when unknown).
    mtime: i128,
}

/// The images found under a root, assigned to splits.
#[derive(Debug)]
struct Scan {
    class_names: Vec<String>,
    train: Vec<Entry>,
    test: Vec<Entry>,
    /// How the splits were made, for the description.
    layout: String,
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn read_dir_error(path: &Path, source: std::io::Error) -> DataError {
    match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: path.to_path_buf(),
            source,
        },
        _ => DataError::Read {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// The non-hidden sub-folders of `dir` (following links), sorted by name.
fn sub_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_dir_error(dir, e))? {
        let entry = entry.map_err(|e| read_dir_error(dir, e))?;
        let path = entry.path();
        if is_hidden(&entry.file_name()) || !path.is_dir() {
            continue;
        }
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| DataError::Invalid {
                path: path.clone(),
                problem: "class folder name is not valid UTF-8".into(),
            })?;
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

/// The classes of a split folder: its sub-folders, 1 to 256 of them.
fn class_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let classes = sub_folders(dir)?;
    if classes.is_empty() || classes.len() > MAX_CLASSES {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            problem: format!(
                "{} class folders: expected 1 to {MAX_CLASSES} sub-folders of images",
                classes.len()
            ),
        });
    }
    Ok(classes)
}

/// The image files under `dir` (recursively, not following linked folders).
fn image_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(|e| read_dir_error(dir, e))? {
        let entry = entry.map_err(|e| read_dir_error(dir, e))?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| read_dir_error(&path, e))?;
        if kind.is_dir() {
            image_files(&path, out)?;
        } else if is_image_name(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn mtime_nanos(meta: &std::fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The sorted image files of one class folder, with sizes and times.
fn class_entries(dir: &Path, label: u8) -> Result<Vec<Entry>, DataError> {
    let mut paths = Vec::new();
    image_files(dir, &mut paths)?;
    if paths.is_empty() {
        return Err(DataError::EmptyClass {
            path: dir.to_path_buf(),
        });
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).map_err(|e| read_dir_error(&path, e))?;
            Ok(Entry {
                size: meta.len(),
                mtime: mtime_nanos(&meta),
                path,
                label,
            })
        })
        .collect()
}

/// Every image of the classes, class by class (classes scanned in parallel).
fn entries(classes: &[(String, PathBuf)]) -> Result<Vec<Entry>, DataError> {
    let per_class: Vec<Vec<Entry>> = classes
        .par_iter()
        .enumerate()
        .map(|(label, (_, dir))| class_entries(dir, label as u8))
        .collect::<Result<_, _>>()?;
    Ok(per_class.into_iter().flatten().collect())
}

fn names(classes: &[(String, PathBuf)]) -> Vec<String> {
    classes.iter().map(|(n, _)| n.clone()).collect()
}

/// Holds out `fraction` of each class of `all` (sorted by class), drawn with
/// `seed`: `(kept, held out)`, each in the original order.
fn stratified_split(all: Vec<Entry>, fraction: f32, seed: u64) -> (Vec<Entry>, Vec<Entry>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut held = vec![false; all.len()];
    let mut start = 0;
    while start < all.len() {
        let label = all[start].label;
        let end = start + all[start..].iter().take_while(|e| e.label == label).count();
        let n = end - start;
        let take = ((n as f64 * fraction as f64).round() as usize).min(n - 1);
        let mut order: Vec<usize> = (start..end).collect();
        order.shuffle(&mut rng);
        order[..take].iter().for_each(|&i| held[i] = true);
        start = end;
    }
    let (test, train): (Vec<_>, Vec<_>) = all.into_iter().zip(held).partition(|(_, held)| *held);
    (
        train.into_iter().map(|(e, _)| e).collect(),
        test.into_iter().map(|(e, _)| e).collect(),
    )
}

fn percent(f: f32) -> String {
    format!("{}%", (f as f64 * 100.0 * 100.0).round() / 100.0)
}

/// Splits `all` by `val_split`, which must hold something out.
fn split_by_fraction(
    root: &Path,
    all: Vec<Entry>,
    opts: &FolderOptions,
    fraction: f32,
) -> Result<(Vec<Entry>, Vec<Entry>), DataError> {
    let (train, test) = stratified_split(all, fraction, opts.seed);
    if test.is_empty() {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            problem: format!(
                "a validation fraction of {} holds out no image of any class: raise it",
                percent(fraction)
            ),
        });
    }
    Ok((train, test))
}

/// `ROOT/train/` with `ROOT/test/` or `ROOT/val/` (or split by `val_split`).
fn scan_split_layout(root: &Path, opts: &FolderOptions) -> Result<Scan, DataError> {
    let train_dir = root.join("train");
    let test_dir = ["test", "val"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir());
    let classes = class_folders(&train_dir)?;
    let class_names = names(&classes);
    let (train, test, layout) = match (test_dir, opts.val_split) {
        (Some(test_dir), None) => {
            let test_classes = class_folders(&test_dir)?;
            if names(&test_classes) != class_names {
                return Err(DataError::ClassMismatch {
                    train_dir,
                    test_dir,
                    train: class_names,
                    test: names(&test_classes),
                });
            }
            let dir_name = test_dir.file_name().unwrap_or_default().to_string_lossy();
            let layout = format!("train/ and {dir_name}/");
            (entries(&classes)?, entries(&test_classes)?, layout)
        }
        (None, Some(f)) => {
            let (train, test) = split_by_fraction(root, entries(&classes)?, opts, f)?;
            let layout = format!("train/, {} held out, seed {}", percent(f), opts.seed);
            (train, test, layout)
        }
        (Some(test_dir), Some(_)) => {
            return Err(DataError::Invalid {
                path: test_dir,
                problem: "there is a test folder already: a validation fraction applies only to a single tree of class folders".into(),
            })
        }
        (None, None) => {
            return Err(DataError::Invalid {
                path: root.to_path_buf(),
                problem: "has train/ but no test/ or val/ beside it: add one, or hold out a validation fraction (--val-split)".into(),
            })
        }
    };
    Ok(Scan {
        class_names,
        train,
        test,
        layout,
    })
}

/// `ROOT/<class>/…`, split by `val_split`.
fn scan_single_tree(root: &Path, opts: &FolderOptions) -> Result<Scan, DataError> {
    let Some(f) = opts.val_split else {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            problem: "a single tree of class folders has no test set: hold out a validation fraction (--val-split), or use train/ and test/ folders".into(),
        });
    };
    let classes = class_folders(root)?;
    let (train, test) = split_by_fraction(root, entries(&classes)?, opts, f)?;
    Ok(Scan {
        class_names: names(&classes),
        train,
        test,
        layout: format!("one tree, {} held out, seed {}", percent(f), opts.seed),
    })
}

/// Finds the images under `root` and assigns them to splits.
fn scan(root: &Path, opts: &FolderOptions) -> Result<Scan, DataError> {
    if root.join("train").is_dir() {
        scan_split_layout(root, opts)
    } else {
        scan_single_tree(root, opts)
    }
}

/// Checks the target shape and the validation fraction.
fn check_options(root: &Path, opts: &FolderOptions) -> Result<(), DataError> {
    let s = opts.shape;
    let problem = if !(1..=MAX_SIDE).contains(&s.height) || !(1..=MAX_SIDE).contains(&s.width) {
        Some(format!(
            "cannot resize images to {s}: height and width must be 1 to {MAX_SIDE}"
        ))
    } else if s.channels != 1 && s.channels != 3 {
        Some(format!(
            "cannot convert images to {s}: channels must be 1 (grayscale) or 3 (RGB)"
        ))
    } else {
        match opts.val_split {
            Some(f) if !(f > 0.0 && f < 1.0) => Some(format!(
                "validation fraction {f} must be strictly between 0 and 1"
            )),
            _ => None,
        }
    };
    match problem {
        Some(problem) => Err(DataError::Invalid {
            path: root.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

/// The part of a `w`×`h` image with the aspect ratio of `tw`×`th`, centred:
/// `(x, y, width, height)`.
fn centre_crop(w: u32, h: u32, tw: u32, th: u32) -> (u32, u32, u32, u32) {
    let (w64, h64, tw64, th64) = (w as u64, h as u64, tw as u64, th as u64);
    if w64 * th64 > h64 * tw64 {
        let cw = ((h64 * tw64 + th64 / 2) / th64).clamp(1, w64) as u32;
        ((w - cw) / 2, 0, cw, h)
    } else if w64 * th64 < h64 * tw64 {
        let ch = ((w64 * th64 + tw64 / 2) / tw64).clamp(1, h64) as u32;
        (0, (h - ch) / 2, w, ch)
    } else {
        (0, 0, w, h)
    }
}

/// Converts to the channels of `shape`, crops to its aspect ratio and resizes
/// to its size. (`classify` prepares its images the same way, with its own
/// copy of this rule, tested against this one in `classify/tests/cli.rs`.)
pub fn fit(img: DynamicImage, shape: ImageShape) -> Result<DynamicImage, String> {
    let img = match shape.channels {
        1 => DynamicImage::ImageLuma8(img.into_luma8()),
        _ => DynamicImage::ImageRgb8(img.into_rgb8()),
    };
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(format!("image of {w}×{h} pixels"));
    }
    let (tw, th) = (shape.width as u32, shape.height as u32);
    if (w, h) == (tw, th) {
        return Ok(img);
    }
    let (x, y, cw, ch) = centre_crop(w, h, tw, th);
    Ok(img
        .crop_imm(x, y, cw, ch)
        .resize_exact(tw, th, FilterType::Triangle))
}

/// Decodes the image at `path` into `dst` (exactly `shape.len()` bytes).
fn decode_into(path: &Path, shape: ImageShape, dst: &mut [u8]) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let img = fit(img, shape)?;
    let raw = img.as_bytes();
    if raw.len() != dst.len() {
        return Err(format!(
            "decoded to {} bytes, expected {}",
            raw.len(),
            dst.len()
        ));
    }
    dst.copy_from_slice(raw);
    Ok(())
}

/// Decodes every entry in parallel into one buffer: the buffer and, per
/// entry, why it was skipped (`None` when decoded). Without `skip_bad`, the
/// first bad image is an error.
fn decode_all(
    root: &Path,
    entries: &[&Entry],
    opts: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Vec<u8>, Vec<Option<String>>), DataError> {
    let len = opts.shape.len();
    let total = entries.len();
    let bytes = total.checked_mul(len).ok_or_else(|| DataError::Invalid {
        path: root.to_path_buf(),
        problem: format!("{total} images of {} do not fit in memory", opts.shape),
    })?;
    let mut pixels = vec![0u8; bytes];
    let done = AtomicUsize::new(0);
    progress(0, total);
    let outcomes = pixels
        .par_chunks_mut(len)
        .zip(entries.par_iter())
        .map(|(dst, entry)| {
            let outcome = decode_into(&entry.path, opts.shape, dst);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            match outcome {
                Ok(()) => Ok(None),
                Err(why) if opts.skip_bad => Ok(Some(why)),
                Err(problem) => Err(DataError::BadImage {
                    path: entry.path.clone(),
                    problem,
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((pixels, outcomes))
}

/// Moves the kept images of `pixels` together: the split of entries
/// `range`, and the skipped ones with their reasons.
fn compact(
    pixels: &[u8],
    entries: &[&Entry],
    outcomes: &[Option<String>],
    range: std::ops::Range<usize>,
    shape: ImageShape,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Split {
    let len = shape.len();
    let mut split = Split::new(shape);
    split.images.reserve(range.len() * len);
    for i in range {
        match &outcomes[i] {
            None => {
                split
                    .images
                    .extend_from_slice(&pixels[i * len..(i + 1) * len]);
                split.labels.push(entries[i].label);
            }
            Some(why) => skipped.push((entries[i].path.clone(), why.clone())),
        }
    }
    split
}

/// Decodes a scan into a data set.
fn decode_scan(
    root: &Path,
    scan: &Scan,
    opts: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Dataset, Vec<(PathBuf, String)>), DataError> {
    let entries: Vec<&Entry> = scan.train.iter().chain(&scan.test).collect();
    let (mut pixels, outcomes) = decode_all(root, &entries, opts, progress)?;
    let n = scan.train.len();
    let mut skipped = Vec::new();
    let (train, test) = if outcomes.iter().all(Option::is_none) {
        // Nothing skipped: split the buffer rather than copy it.
        let labels = |e: &[Entry]| e.iter().map(|e| e.label).collect();
        let test_images = pixels.split_off(n * opts.shape.len());
        (
            Split {
                shape: opts.shape,
                images: pixels,
                labels: labels(&scan.train),
            },
            Split {
                shape: opts.shape,
                images: test_images,
                labels: labels(&scan.test),
            },
        )
    } else {
        let shape = opts.shape;
        (
            compact(&pixels, &entries, &outcomes, 0..n, shape, &mut skipped),
            compact(
                &pixels,
                &entries,
                &outcomes,
                n..entries.len(),
                shape,
                &mut skipped,
            ),
        )
    };
    for (split, name) in [(&train, "training"), (&test, "test")] {
        if split.is_empty() {
            return Err(DataError::Invalid {
                path: root.to_path_buf(),
                problem: format!("no readable image in the {name} set"),
            });
        }
    }
    let dataset = Dataset {
        train,
        test,
        class_names: scan.class_names.clone(),
        description: format!("image folder ({})", scan.layout),
    };
    Ok((dataset, skipped))
}

/// Reads the image folder at `root`, from its cache file when that is valid
/// (see the module documentation), calling `progress(done, total)` as images
/// are decoded (from several threads, possibly out of order).
pub fn load(
    root: &Path,
    opts: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Dataset, FolderReport), DataError> {
    check_options(root, opts)?;
    let scan = scan(root, opts)?;
    let fingerprint = cache::fingerprint(root, &scan, opts);
    let path = cache_path(root, opts.shape);
    if opts.cache {
        if let Some((dataset, skipped)) =
            cache::read(&path, root, opts.shape, fingerprint, &scan, opts.skip_bad)
        {
            let report = FolderReport {
                images: dataset.train.len() + dataset.test.len(),
                skipped,
                from_cache: true,
            };
            return Ok((dataset, report));
        }
    }
    let (dataset, skipped) = decode_scan(root, &scan, opts, progress)?;
    if opts.cache {
        // No cache when it cannot be written (a read-only folder): not an error.
        let _ = cache::write(&path, root, fingerprint, &dataset, &skipped);
    }
    let report = FolderReport {
        images: dataset.train.len() + dataset.test.len(),
        skipped,
        from_cache: false,
    };
    Ok((dataset, report))
}

/// The cache file of images of `shape` under `root`.
pub fn cache_path(root: &Path, shape: ImageShape) -> PathBuf {
    root.join(format!(
        ".trainer-cache-{}x{}x{}.bin",
        shape.height, shape.width, shape.channels
    ))
}

/// Whether some non-hidden sub-folder of `dir` holds an image file directly.
fn has_class_with_images(dir: &Path) -> bool {
    let Ok(classes) = sub_folders(dir) else {
        return false;
    };
    classes.iter().any(|(_, class)| {
        std::fs::read_dir(class).is_ok_and(|mut it| {
            it.any(|e| e.is_ok_and(|e| !is_hidden(&e.file_name()) && is_image_name(&e.path())))
        })
    })
}

/// Whether `root` looks like an image folder: `root/train/<class>/` or
/// `root/<class>/` with images directly in at least one class folder.
pub fn is_folder_dataset(root: &Path) -> bool {
    let train = root.join("train");
    if train.is_dir() {
        has_class_with_images(&train)
    } else {
        has_class_with_images(root)
    }
}

/// The cache file: layout, fingerprint, reading (validated) and writing.
mod cache {
    use super::{Entry, FolderOptions, Scan};
    use crate::data::{Dataset, Split};
    use crate::kernels::tensor::ImageShape;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    const MAGIC: &[u8; 8] = b"TRNRCACH";
    const VERSION: u32 = 1;

    /// FNV-1a, 64 bits: stable across builds and platforms.
    struct Fnv(u64);

    impl Fnv {
        fn new() -> Self {
            Fnv(0xcbf2_9ce4_8422_2325)
        }

        fn bytes(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }

        /// A length-prefixed field, so that fields cannot run together.
        fn field(&mut self, bytes: &[u8]) {
            self.bytes(&(bytes.len() as u64).to_le_bytes());
            self.bytes(bytes);
        }
    }

    fn relative(root: &Path, path: &Path) -> String {
        path.strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Hashes the options that change the result and every file's relative
    /// path, size, modification time, label and split.
    pub(super) fn fingerprint(root: &Path, scan: &Scan, opts: &FolderOptions) -> u64 {
        let mut h = Fnv::new();
        h.field(&VERSION.to_le_bytes());
        for d in [opts.shape.height, opts.shape.width, opts.shape.channels] {
            h.field(&(d as u64).to_le_bytes());
        }
        match opts.val_split {
            Some(f) => {
                h.field(&f.to_bits().to_le_bytes());
                h.field(&opts.seed.to_le_bytes());
            }
            None => h.field(b"no split"),
        }
        h.field(&[opts.skip_bad as u8]);
        h.field(scan.layout.as_bytes());
        for name in &scan.class_names {
            h.field(name.as_bytes());
        }
        for (split, entries) in [(0u8, &scan.train), (1, &scan.test)] {
            for e in entries.iter() {
                hash_entry(&mut h, root, split, e);
            }
        }
        h.0
    }

    fn hash_entry(h: &mut Fnv, root: &Path, split: u8, e: &Entry) {
        h.field(relative(root, &e.path).as_bytes());
        h.field(&[split, e.label]);
        h.field(&e.size.to_le_bytes());
        h.field(&e.mtime.to_le_bytes());
    }

    fn put_str(out: &mut impl Write, s: &str) -> std::io::Result<()> {
        out.write_all(&(s.len() as u32).to_le_bytes())?;
        out.write_all(s.as_bytes())
    }

    /// The header through the two counts.
    fn write_header(
        out: &mut impl Write,
        root: &Path,
        fingerprint: u64,
        data: &Dataset,
        skipped: &[(PathBuf, String)],
    ) -> std::io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        let s = data.shape();
        for d in [s.height, s.width, s.channels] {
            out.write_all(&(d as u32).to_le_bytes())?;
        }
        out.write_all(&fingerprint.to_le_bytes())?;
        out.write_all(&(data.class_names.len() as u32).to_le_bytes())?;
        for name in &data.class_names {
            put_str(out, name)?;
        }
        out.write_all(&(skipped.len() as u32).to_le_bytes())?;
        for (path, why) in skipped {
            put_str(out, &relative(root, path))?;
            put_str(out, why)?;
        }
        out.write_all(&(data.train.len() as u64).to_le_bytes())?;
        out.write_all(&(data.test.len() as u64).to_le_bytes())
    }

    /// Writes the cache atomically: a temporary file beside it, then a rename.
    pub(super) fn write(
        path: &Path,
        root: &Path,
        fingerprint: u64,
        data: &Dataset,
        skipped: &[(PathBuf, String)],
    ) -> std::io::Result<()> {
        let tmp = tempfile::Builder::new()
            .prefix(".trainer-cache-")
            .suffix(".partial")
            .tempfile_in(root)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp);
        write_header(&mut out, root, fingerprint, data, skipped)?;
        out.write_all(&data.train.labels)?;
        out.write_all(&data.test.labels)?;
        out.write_all(&data.train.images)?;
        out.write_all(&data.test.images)?;
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// A cursor over the cache's bytes: every read is checked.
    struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let end = self.at.checked_add(n)?;
            let out = self.bytes.get(self.at..end)?;
            self.at = end;
            Some(out)
        }

        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }

        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }

        fn string(&mut self) -> Option<String> {
            let len = self.u32()? as usize;
            String::from_utf8(self.take(len)?.to_vec()).ok()
        }

        fn rest(&self) -> usize {
            self.bytes.len() - self.at
        }
    }

    /// Reads the cache if it is valid for this scan: the same magic,
    /// version, shape, fingerprint and class names, labels in range and
    /// exactly the length the counts imply. `None` otherwise.
    pub(super) fn read(
        path: &Path,
        root: &Path,
        shape: ImageShape,
        fingerprint: u64,
        scan: &Scan,
        skip_bad: bool,
    ) -> Option<(Dataset, Vec<(PathBuf, String)>)> {
        let bytes = std::fs::read(path).ok()?;
        let mut r = Reader {
            bytes: &bytes,
            at: 0,
        };
        let header_ok = r.take(8)? == MAGIC
            && r.u32()? == VERSION
            && [r.u32()?, r.u32()?, r.u32()?]
                == [shape.height, shape.width, shape.channels].map(|d| d as u32)
            && r.u64()? == fingerprint;
        if !header_ok {
            return None;
        }
        let classes = r.u32()? as usize;
        let class_names: Vec<String> = (0..classes).map(|_| r.string()).collect::<Option<_>>()?;
        if class_names != scan.class_names {
            return None;
        }
        let skipped = (0..r.u32()?)
            .map(|_| Some((root.join(r.string()?), r.string()?)))
            .collect::<Option<Vec<_>>>()?;
        let (train, test) = (r.u64()? as usize, r.u64()? as usize);
        // The counts must be the scan's: every file decoded or (with
        // skip_bad only) listed as skipped, and something to train on.
        let scanned = scan.train.len() + scan.test.len();
        let counts_ok = train > 0
            && train <= scan.train.len()
            && test <= scan.test.len()
            && (skip_bad || skipped.is_empty())
            && train.checked_add(test)?.checked_add(skipped.len())? == scanned;
        if !counts_ok {
            return None;
        }
        let images = train.checked_add(test)?;
        let expected = images.checked_mul(shape.len())?.checked_add(images)?;
        if r.rest() != expected {
            return None;
        }
        let labels = r.take(images)?;
        if labels.iter().any(|&l| l as usize >= classes) {
            return None;
        }
        let pixels = r.take(images * shape.len())?;
        let (train_px, test_px) = pixels.split_at(train * shape.len());
        let split = |labels: &[u8], images: &[u8]| Split {
            shape,
            labels: labels.to_vec(),
            images: images.to_vec(),
        };
        let dataset = Dataset {
            train: split(&labels[..train], train_px),
            test: split(&labels[train..], test_px),
            class_names,
            description: format!("image folder ({})", scan.layout),
        };
        Some((dataset, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_crop_keeps_the_target_aspect() {
        // Wider than the target: crop the width.
        assert_eq!(centre_crop(100, 50, 32, 32), (25, 0, 50, 50));
        // Taller: crop the height.
        assert_eq!(centre_crop(40, 100, 32, 32), (0, 30, 40, 40));
        // Same aspect: all of it.
        assert_eq!(centre_crop(64, 32, 16, 8), (0, 0, 64, 32));
        // Extreme: never an empty crop.
        assert_eq!(centre_crop(1, 1000, 1000, 1), (0, 499, 1, 1));
    }

    #[test]
    fn fit_resizes_and_converts() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            60,
            30,
            image::Rgb([200, 100, 50]),
        ));
        let out = fit(img.clone(), ImageShape::new(8, 8, 3)).unwrap();
        assert_eq!((out.width(), out.height()), (8, 8));
        assert!(out.as_bytes().chunks(3).all(|p| p == [200, 100, 50]));
        let gray = fit(img, ImageShape::new(4, 6, 1)).unwrap();
        assert_eq!(gray.as_bytes().len(), 24);
    }

    fn entry(label: u8, i: usize) -> Entry {
        Entry {
            path: PathBuf::from(format!("{label}/{i:03}.png")),
            label,
            size: 0,
            mtime: 0,
        }
    }

    #[test]
    fn stratified_split_holds_out_each_class() {
        let all: Vec<Entry> = (0..3u8)
            .flat_map(|c| (0..10 * (c as usize + 1)).map(move |i| entry(c, i)))
            .collect();
        let (train, test) = stratified_split(all.clone(), 0.2, 7);
        let count = |v: &[Entry], c: u8| v.iter().filter(|e| e.label == c).count();
        assert_eq!(
            [count(&test, 0), count(&test, 1), count(&test, 2)],
            [2, 4, 6]
        );
        assert_eq!(train.len() + test.len(), all.len());
        // Order kept, and the draw repeats with the seed.
        assert!(test
            .windows(2)
            .all(|w| (w[0].label, &w[0].path) < (w[1].label, &w[1].path)));
        let again = stratified_split(all.clone(), 0.2, 7).1;
        assert!(again.iter().zip(&test).all(|(a, b)| a.path == b.path));
        let other = stratified_split(all, 0.2, 8).1;
        assert!(other.iter().zip(&test).any(|(a, b)| a.path != b.path));
        // A class of one image keeps it.
        let (train, test) = stratified_split(vec![entry(0, 0)], 0.9, 1);
        assert_eq!((train.len(), test.len()), (1, 0));
    }

    #[test]
    fn bad_options_are_refused() {
        let root = Path::new("r");
        let mut opts = FolderOptions::new(ImageShape::new(32, 32, 2));
        assert!(check_options(root, &opts).is_err());
        opts.shape = ImageShape::new(0, 32, 3);
        assert!(check_options(root, &opts).is_err());
        opts.shape = ImageShape::new(32, 32, 3);
        assert!(check_options(root, &opts).is_ok());
        for bad in [0.0, 1.0, -0.5, f32::NAN] {
            opts.val_split = Some(bad);
            assert!(check_options(root, &opts).is_err(), "{bad}");
        }
    }
}
