//! Helpers shared by the fuzz targets (`fuzz_targets/*.rs`) and the seed
//! generator (`examples/make_seeds.rs`): valid files of each format, the
//! image-folder fixture, and the size gate for building networks.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};
use trainer::data::folder::{self, FolderOptions};
use trainer::data::{Dataset, Split};
use trainer::kernels::tensor::ImageShape;
use trainer::model::spec::{LayerSpec, ModelSpec};

/// Inputs larger than this are skipped (and kept out of the corpus).
pub const MAX_INPUT: usize = 1 << 20;

/// The structure-aware model targets' input as a model file: the first JSON
/// value of `data` (with the whitespace after it, as the exporter pads its
/// header) is the header; its length goes in front as 8 bytes.
pub fn model_file(data: &[u8]) -> Vec<u8> {
    let mut values =
        serde_json::Deserializer::from_slice(data).into_iter::<serde::de::IgnoredAny>();
    let end = match values.next() {
        Some(Ok(_)) => values.byte_offset(),
        _ => data.len(),
    };
    let end = end
        + data[end..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let mut file = (end as u64).to_le_bytes().to_vec();
    file.extend_from_slice(data);
    file
}

/// Writes `bytes` to `dir/name`, panicking on an I/O error (the harness's own
/// files: a failure here is the environment, not the code under test).
pub fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

/// A fresh temporary directory (under `$TMPDIR`, `/dev/shm` when there is one:
/// the targets write several files per run).
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("fuzz-").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("fuzz-")
        .tempdir()
        .expect("temp dir")
}

// ---------------------------------------------------------------- IDX

/// A valid IDX images file: `n` images of `rows`×`cols`, pixel `i` = `i`.
pub fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut b = trainer::data::idx::IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [n, rows, cols] {
        b.extend(d.to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|i| i as u8));
    b
}

/// A valid IDX labels file.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = trainer::data::idx::LABELS_MAGIC.to_be_bytes().to_vec();
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend(labels);
    b
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in memory");
    e.finish().expect("in memory")
}

// ---------------------------------------------------------------- CIFAR

/// One CIFAR-10 record (label, then CHW pixels).
pub fn cifar10_record(label: u8, salt: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072usize).map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt)));
    r
}

/// One CIFAR-100 record (coarse label, fine label, then CHW pixels).
pub fn cifar100_record(coarse: u8, fine: u8, salt: u8) -> Vec<u8> {
    let mut r = vec![coarse, fine];
    r.extend((0..3072usize).map(|i| (i as u8).wrapping_mul(5).wrapping_add(salt)));
    r
}

/// `n` class names, one per line.
pub fn names_file(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{prefix}{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// The images of a CIFAR file (records of `label_bytes` label bytes then a
/// 32×32×3 CHW image) in HWC order: the reference the readers must match.
pub fn cifar_hwc(bytes: &[u8], label_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for rec in bytes.chunks_exact(label_bytes + 3072) {
        let chw = &rec[label_bytes..];
        for p in 0..1024 {
            out.extend([chw[p], chw[1024 + p], chw[2048 + p]]);
        }
    }
    out
}

/// The structural invariants of any data set a reader returns.
pub fn check_dataset(d: &Dataset) {
    assert!(!d.class_names.is_empty(), "no class names");
    assert!(d.class_names.len() <= 256, "more classes than byte labels");
    for (name, s) in [("train", &d.train), ("test", &d.test)] {
        check_split(name, s, d.class_names.len());
    }
    assert_eq!(d.train.shape, d.test.shape, "splits of different shapes");
}

fn check_split(name: &str, s: &Split, classes: usize) {
    assert!(!s.shape.is_empty(), "{name}: empty image shape");
    assert_eq!(
        s.images.len(),
        s.labels.len() * s.shape.len(),
        "{name}: pixels do not match the labels"
    );
    assert!(
        s.labels.iter().all(|&l| (l as usize) < classes),
        "{name}: a label out of range"
    );
}

// ---------------------------------------------------------------- folders

/// The shape the image-folder fixture is read as.
pub const FOLDER_SHAPE: ImageShape = ImageShape::new(4, 4, 3);

/// The image-folder fixture: `train/{cat,dog}/{0,1}.png` and
/// `test/{cat,dog}/0.png`, 6×5 RGB PNGs (resized to [`FOLDER_SHAPE`]), with
/// fixed modification times so that the cache fingerprint is the same in
/// every process (and a cache file saved as a seed stays valid).
pub fn make_image_folder(root: &Path) {
    let mut salt = 0u8;
    for (split, count) in [("train", 2), ("test", 1)] {
        for class in ["cat", "dog"] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..count {
                salt = salt.wrapping_add(37);
                let img = image::RgbImage::from_fn(6, 5, |x, y| {
                    image::Rgb([salt ^ (x * 40) as u8, (y * 50) as u8, salt])
                });
                let path = dir.join(format!("{i}.png"));
                img.save(&path).expect("write png");
                let file = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .expect("open png");
                file.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
                    .expect("set mtime");
            }
        }
    }
}

/// How the fuzz target and the seed generator read the fixture.
pub fn folder_options() -> FolderOptions {
    FolderOptions::new(FOLDER_SHAPE)
}

pub fn load_folder(root: &Path) -> (Dataset, folder::FolderReport) {
    folder::load(root, &folder_options(), &|_, _| {})
        .unwrap_or_else(|e| panic!("the fixture folder must load: {e}"))
}

// ---------------------------------------------------------------- models

/// Whether a (validated) spec is small enough to build a network from in a
/// fuzz run: at most 16 layers, input sides and channels, filters, kernels,
/// pools and dense units at most 64, at most 2^20 parameters and 2^20 values
/// in any one activation. `false` when a size does not even fit in a `usize`.
pub fn small_enough(spec: &ModelSpec) -> bool {
    const DIM: usize = 64;
    const LIMIT: usize = 1 << 20;
    let s = spec.input;
    if spec.layers.len() > 16 || s.height > DIM || s.width > DIM || s.channels > DIM {
        return false;
    }
    let Ok(shapes) = spec.shapes() else {
        return false;
    };
    let mut input = s;
    let mut params = 0usize;
    for (layer, &out) in spec.layers.iter().zip(&shapes) {
        let Some(len) = out
            .height
            .checked_mul(out.width)
            .and_then(|p| p.checked_mul(out.channels))
        else {
            return false;
        };
        if len > LIMIT {
            return false;
        }
        let here = match *layer {
            LayerSpec::Conv2d {
                filters, kernel, ..
            } => {
                if filters > DIM || kernel > DIM {
                    return false;
                }
                (kernel * kernel * input.channels + 1) * filters
            }
            LayerSpec::MaxPool2d { size, .. } if size > DIM => return false,
            LayerSpec::Dense { units, .. } => {
                if units > DIM {
                    return false;
                }
                (len_of(input) + 1) * units
            }
            LayerSpec::BatchNorm { .. } => 4 * input.channels,
            _ => 0,
        };
        params = params.saturating_add(here);
        if params > LIMIT {
            return false;
        }
        input = out;
    }
    true
}

fn len_of(s: ImageShape) -> usize {
    s.height.saturating_mul(s.width).saturating_mul(s.channels)
}

/// Class names for a network of `n` outputs.
pub fn class_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}
