//! Data sets: labelled `u8` images in memory, and the readers that fill them.
//!
//! Every reader returns a [`Dataset`]: a training and a test [`Split`] of
//! HWC `u8` images of one [`ImageShape`], and the class names. Pixels stay `u8`
//! (a quarter of the memory of `f32`); a batch converts to the network's input
//! as it is gathered ([`augment::gather_batch`]).

pub mod augment;
pub mod cifar10;
pub mod cifar100;
pub mod detect;
pub mod folder;
pub mod idx;

pub use detect::{detect, load, Format, LoadOptions};

use crate::kernels::tensor::ImageShape;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    // The io error is the `source`: printed after this message by error chains, not in it.
    #[error("{path}: missing; pass --data DIR, or let `trainer train` download the data set")]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: size {size} bytes is not a multiple of the {record}-byte record (truncated or not {format}?)")]
    BadSize {
        path: PathBuf,
        size: usize,
        record: usize,
        format: &'static str,
    },
    #[error("{path}: record {record} has label {label}, but there are {classes} classes (0–{})", classes - 1)]
    BadLabel {
        path: PathBuf,
        record: usize,
        label: u8,
        classes: usize,
    },
    #[error("{path}: expected {expected} class names, one per line, found {found}")]
    BadMeta {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("subset of {asked} images asked, but the training set has only {available}")]
    SubsetTooLarge { asked: usize, available: usize },
    #[error("cannot hold out {asked} of the {available} training images (at least 1, and leave at least 1 to train on)")]
    BadHoldout { asked: usize, available: usize },
    #[error("cannot hold out {fraction} of each class for validation: give a fraction in (0, 1) of a training set with at least two images of some class, or --validate-on-test")]
    BadValidationFraction { fraction: f32 },
    #[error("{path}: missing ({what})")]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("{path}: {problem}")]
    BadIdx {
        path: PathBuf,
        problem: idx::IdxProblem,
    },
    #[error("{path}: cannot decode the image ({problem}); skip unreadable images with --skip-bad")]
    BadImage { path: PathBuf, problem: String },
    #[error("{path}: class folder has no images (.png, .jpg or .jpeg)")]
    EmptyClass { path: PathBuf },
    #[error(
        "{test_dir} has classes {test:?} but {train_dir} has {train:?}: the test classes must be the training classes"
    )]
    ClassMismatch {
        train_dir: PathBuf,
        test_dir: PathBuf,
        train: Vec<String>,
        test: Vec<String>,
    },
    #[error("{path}: {}", detect::describe_unrecognised(suggestion, partial))]
    Unrecognised {
        path: PathBuf,
        /// A sub-folder that is a data set, and its format.
        suggestion: Option<(PathBuf, Format)>,
        /// What was almost recognised (some files of a format, not all).
        partial: Option<String>,
    },
    #[error("unknown data set format {0:?} (expected cifar10, cifar100, idx or folder)")]
    UnknownFormat(String),
}

/// Reads a whole file, telling a missing file from an unreadable one.
pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>, DataError> {
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

/// A data set: training and test images of one shape, and the class names
/// (label `i` is `class_names[i]`).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
    pub class_names: Vec<String>,
    /// What it is, for logs and for a checkpoint's identity (`CIFAR-10 binary`).
    pub description: String,
}

impl Dataset {
    /// The shape of every image.
    pub fn shape(&self) -> ImageShape {
        self.train.shape
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }
}

/// A set of labelled images: `images[i·len..(i+1)·len]` is image `i`, HWC,
/// `len = shape.len()`.
#[derive(Clone, Debug)]
pub struct Split {
    pub shape: ImageShape,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    /// An empty split of images of `shape`.
    pub fn new(shape: ImageShape) -> Self {
        Self {
            shape,
            images: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.shape.len()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// The first `n` images (all of them if `n` is larger).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            shape: self.shape,
            images: self.images[..n * self.image_len()].to_vec(),
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
        let at = keep * self.image_len();
        Ok((
            Split {
                shape: self.shape,
                images: self.images[..at].to_vec(),
                labels: self.labels[..keep].to_vec(),
            },
            Split {
                shape: self.shape,
                images: self.images[at..].to_vec(),
                labels: self.labels[keep..].to_vec(),
            },
        ))
    }

    /// The indices of each class's images (by label), each list shuffled
    /// with `seed`: the draw behind the stratified selections.
    fn shuffled_by_class(&self, seed: u64) -> Vec<Vec<usize>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let classes = self
            .labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        for c in &mut by_class {
            c.shuffle(&mut rng);
        }
        by_class
    }

    /// Holds out `fraction` of each class, chosen at random with `seed`:
    /// `(the rest, the held out)`, both in data-set order. A class of `n`
    /// images gives `round(fraction · n)` of them, at least one when it has
    /// two or more, and always keeps one for training. For a validation set
    /// that is not the test set.
    pub fn stratified_split(&self, fraction: f32, seed: u64) -> Result<(Split, Split), DataError> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(DataError::BadValidationFraction { fraction });
        }
        let by_class = self.shuffled_by_class(seed);
        let mut held = vec![false; self.len()];
        for c in &by_class {
            let n = c.len();
            let take = ((fraction * n as f32).round() as usize)
                .max(usize::from(n >= 2))
                .min(n.saturating_sub(1));
            for &i in &c[..take] {
                held[i] = true;
            }
        }
        let (val, train): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&i| held[i]);
        if val.is_empty() {
            return Err(DataError::BadValidationFraction { fraction });
        }
        Ok((self.select(&train), self.select(&val)))
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        let mut out = Split {
            shape: self.shape,
            images: Vec::with_capacity(indices.len() * self.image_len()),
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
        let by_class = self.shuffled_by_class(seed);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_of(labels: impl IntoIterator<Item = u8>) -> Split {
        let mut s = Split::new(ImageShape::new(2, 1, 3));
        for l in labels {
            s.images.extend([l; 6]);
            s.labels.push(l);
        }
        s
    }

    #[test]
    fn stratified_subset_balances_classes() {
        let s = split_of((0..200u8).map(|i| i % 10));
        let sub = s.stratified_subset(25, 1).unwrap();
        assert_eq!(sub.len(), 25);
        let mut counts = [0; 10];
        sub.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| c == 2 || c == 3), "{counts:?}");
        assert!(sub
            .labels
            .iter()
            .zip(sub.images.chunks(6))
            .all(|(&l, im)| im == [l; 6]));
        assert!(s.stratified_subset(201, 1).is_err());
    }

    /// 10 % of each class, the rest for training, disjoint, images with
    /// their labels, the same draw for the same seed and another for
    /// another; a class of one image stays in training.
    #[test]
    fn stratified_split_holds_out_each_class() {
        // Classes 0–3 with 50 images each (tagged by position), class 4 with one.
        let mut s = Split::new(ImageShape::new(2, 1, 3));
        for i in 0..201u32 {
            let label = if i == 200 { 4 } else { (i % 4) as u8 };
            s.images
                .extend([label, (i % 256) as u8, (i / 256) as u8, 0, 0, 0]);
            s.labels.push(label);
        }
        let (train, val) = s.stratified_split(0.1, 7).unwrap();
        assert_eq!((train.len(), val.len()), (181, 20));
        let mut counts = [0; 5];
        val.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [5, 5, 5, 5, 0]);
        let tag = |im: &[u8]| (im[0], u32::from(im[1]) + 256 * u32::from(im[2]));
        let mut seen: Vec<(u8, u32)> = train
            .images
            .chunks(6)
            .chain(val.images.chunks(6))
            .map(tag)
            .collect();
        assert!(train
            .labels
            .iter()
            .zip(train.images.chunks(6))
            .all(|(&l, im)| im[0] == l));
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 201, "every image once");
        assert_eq!(s.stratified_split(0.1, 7).unwrap().1.images, val.images);
        assert_ne!(s.stratified_split(0.1, 8).unwrap().1.images, val.images);
        assert!(s.stratified_split(0.0, 7).is_err());
        assert!(s.stratified_split(1.0, 7).is_err());
        assert!(
            split_of([3]).stratified_split(0.5, 1).is_err(),
            "nothing to hold out"
        );
    }

    #[test]
    fn split_last_holds_out_the_tail() {
        let s = split_of(0..10u8);
        let (train, held) = s.split_last(3).unwrap();
        assert_eq!(train.labels, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(held.labels, [7, 8, 9]);
        assert_eq!(train.images, s.images[..7 * 6]);
        assert_eq!(held.image(0), s.image(7));
        for bad in [0, 10, 11] {
            assert!(s.split_last(bad).is_err());
        }
    }
}
