//! The CIFAR-10 data set in its standard binary layout.
//!
//! Each record is 3,073 bytes: a label byte (0–9), then the 1,024 red, 1,024
//! green and 1,024 blue values of a 32×32 image, row-major. We keep pixels as
//! `u8` (about 184 MB for all 60,000 images), reordered to HWC so that a batch
//! converts straight into the network's NHWC input.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

pub const HEIGHT: usize = 32;
pub const WIDTH: usize = 32;
pub const CHANNELS: usize = 3;
/// Bytes of one image.
pub const IMAGE_LEN: usize = HEIGHT * WIDTH * CHANNELS;
/// Bytes of one record: label + image.
pub const RECORD_LEN: usize = 1 + IMAGE_LEN;
pub const NUM_CLASSES: usize = 10;

pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
pub const META_FILE: &str = "batches.meta.txt";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "{path}: missing ({source}); pass --data DIR, or let `trainer train` download the data set"
    )]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: size {size} bytes is not a multiple of the 3,073-byte record (truncated or not CIFAR-10?)")]
    BadSize { path: PathBuf, size: usize },
    #[error("{path}: record {record} has label {label}, but labels are 0–9")]
    BadLabel {
        path: PathBuf,
        record: usize,
        label: u8,
    },
    #[error("{path}: expected 10 class names, one per line, found {found}")]
    BadMeta { path: PathBuf, found: usize },
    #[error("subset of {asked} images asked, but the training set has only {available}")]
    SubsetTooLarge { asked: usize, available: usize },
    #[error("cannot hold out {asked} of the {available} training images (at least 1, and leave at least 1 to train on)")]
    BadHoldout { asked: usize, available: usize },
}

/// A set of labelled images: `images[i·3072..(i+1)·3072]` is image `i`, HWC.
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_LEN..(i + 1) * IMAGE_LEN]
    }

    /// The first `n` images (all of them if `n` is larger).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: self.images[..n * IMAGE_LEN].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Splits off the last `n` images: `(first len − n, last n)`. For a
    /// validation set held out of the training set.
    pub fn split_last(&self, n: usize) -> Result<(Split, Split), DataError> {
        if n == 0 || n >= self.len() {
            return Err(DataError::BadHoldout {
                asked: n,
                available: self.len(),
            });
        }
        let keep = self.len() - n;
        Ok((
            Split {
                images: self.images[..keep * IMAGE_LEN].to_vec(),
                labels: self.labels[..keep].to_vec(),
            },
            Split {
                images: self.images[keep * IMAGE_LEN..].to_vec(),
                labels: self.labels[keep..].to_vec(),
            },
        ))
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        let mut out = Split {
            images: Vec::with_capacity(indices.len() * IMAGE_LEN),
            labels: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            out.images.extend_from_slice(self.image(i));
            out.labels.push(self.labels[i]);
        }
        out
    }

    /// `n` images stratified by class: as equal a share of each class as
    /// possible, chosen at random with `seed`, kept in data-set order.
    pub fn stratified_subset(&self, n: usize, seed: u64) -> Result<Split, DataError> {
        if n > self.len() {
            return Err(DataError::SubsetTooLarge {
                asked: n,
                available: self.len(),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); NUM_CLASSES];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        for c in &mut by_class {
            c.shuffle(&mut rng);
        }
        // Deal one image per class in turn until n are taken.
        let mut chosen = Vec::with_capacity(n);
        let mut depth = 0;
        while chosen.len() < n {
            for c in &by_class {
                if chosen.len() < n && depth < c.len() {
                    chosen.push(c[depth]);
                }
            }
            depth += 1;
        }
        chosen.sort_unstable();
        Ok(self.select(&chosen))
    }

    /// Appends the records of one CIFAR-10 binary file, converting CHW to HWC.
    fn append_records(&mut self, path: &Path, bytes: &[u8]) -> Result<(), DataError> {
        if !bytes.len().is_multiple_of(RECORD_LEN) || bytes.is_empty() {
            return Err(DataError::BadSize {
                path: path.to_path_buf(),
                size: bytes.len(),
            });
        }
        let records = bytes.len() / RECORD_LEN;
        self.images.reserve(records * IMAGE_LEN);
        self.labels.reserve(records);
        let plane = HEIGHT * WIDTH;
        for (record, rec) in bytes.chunks_exact(RECORD_LEN).enumerate() {
            let label = rec[0];
            if label as usize >= NUM_CLASSES {
                return Err(DataError::BadLabel {
                    path: path.to_path_buf(),
                    record,
                    label,
                });
            }
            self.labels.push(label);
            let chw = &rec[1..];
            for p in 0..plane {
                self.images
                    .extend_from_slice(&[chw[p], chw[plane + p], chw[2 * plane + p]]);
            }
        }
        Ok(())
    }
}

/// The whole data set.
#[derive(Clone, Debug)]
pub struct Cifar10 {
    pub train: Split,
    pub test: Split,
    pub class_names: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: path.to_path_buf(),
            source,
        },
        _ => DataError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

impl Cifar10 {
    /// Reads `data_batch_1..5.bin`, `test_batch.bin` and `batches.meta.txt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        let mut train = Split::default();
        for name in TRAIN_FILES {
            let path = dir.join(name);
            train.append_records(&path, &read(&path)?)?;
        }
        Ok(Self {
            train,
            test: Self::load_test(dir)?,
            class_names: Self::load_class_names(dir)?,
        })
    }

    /// Only the test split (for evaluation).
    pub fn load_test(dir: &Path) -> Result<Split, DataError> {
        let path = dir.join(TEST_FILE);
        let mut test = Split::default();
        test.append_records(&path, &read(&path)?)?;
        Ok(test)
    }

    /// The class names from `batches.meta.txt`.
    pub fn load_class_names(dir: &Path) -> Result<Vec<String>, DataError> {
        let path = dir.join(META_FILE);
        let text = String::from_utf8_lossy(&read(&path)?).into_owned();
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if names.len() != NUM_CLASSES {
            return Err(DataError::BadMeta {
                path,
                found: names.len(),
            });
        }
        Ok(names)
    }

    /// Whether `dir` holds every file of the data set.
    pub fn is_present(dir: &Path) -> bool {
        TRAIN_FILES
            .iter()
            .chain([&TEST_FILE, &META_FILE])
            .all(|f| dir.join(f).is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, fill: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend((0..IMAGE_LEN).map(fill));
        r
    }

    #[test]
    fn converts_chw_to_hwc() {
        // Pixel value = its plane (0 = red, 1 = green, 2 = blue).
        let rec = record(3, |i| (i / 1024) as u8);
        let mut s = Split::default();
        s.append_records(Path::new("x.bin"), &rec).unwrap();
        assert_eq!(s.labels, [3]);
        assert_eq!(&s.images[..6], &[0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn bad_size_and_label_name_the_file() {
        let mut s = Split::default();
        let err = s
            .append_records(Path::new("a.bin"), &[0; 3072])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.bin") && err.contains("3,073"), "{err}");
        let err = s
            .append_records(Path::new("b.bin"), &record(10, |_| 0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.bin") && err.contains("label 10"), "{err}");
    }

    #[test]
    fn missing_directory_names_the_file() {
        let err = Cifar10::load(Path::new("/nonexistent/cifar"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/cifar/data_batch_1.bin") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn stratified_subset_balances_classes() {
        let mut s = Split::default();
        for i in 0..200u8 {
            s.append_records(Path::new("x"), &record(i % 10, |_| i))
                .unwrap();
        }
        let sub = s.stratified_subset(25, 1).unwrap();
        assert_eq!(sub.len(), 25);
        let mut counts = [0; 10];
        sub.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| c == 2 || c == 3), "{counts:?}");
        assert!(s.stratified_subset(201, 1).is_err());
    }

    #[test]
    fn split_last_holds_out_the_tail() {
        let mut s = Split::default();
        for i in 0..10u8 {
            s.append_records(Path::new("x"), &record(i, |_| i)).unwrap();
        }
        let (train, held) = s.split_last(3).unwrap();
        assert_eq!(train.labels, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(held.labels, [7, 8, 9]);
        assert_eq!(train.images, s.images[..7 * IMAGE_LEN]);
        assert_eq!(held.image(0), s.image(7));
        for bad in [0, 10, 11] {
            assert!(s.split_last(bad).is_err());
        }
    }
}
