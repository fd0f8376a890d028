//! Which reader a folder needs, found from the files in it, and one
//! [`load`] for every format.
//!
//! The formats are tried in order: CIFAR-10 binary ([`super::cifar10`]),
//! CIFAR-100 binary ([`super::cifar100`]), MNIST-family IDX ([`super::idx`]),
//! image folders ([`super::folder`]). A folder that is none of them gets one
//! error listing what was looked for, and naming a sub-folder that is a data
//! set, if there is one (such as `cifar-10-batches-bin/` inside `data/`).

use super::folder::{FolderOptions, FolderReport};
use super::{cifar10, cifar100, folder, idx, DataError, Dataset};
use crate::kernels::tensor::ImageShape;
use std::path::{Path, PathBuf};

/// A data-set format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// CIFAR-10 binary: `data_batch_1..5.bin`, `test_batch.bin`, `batches.meta.txt`.
    Cifar10,
    /// CIFAR-100 binary: `train.bin`, `test.bin`, `fine_label_names.txt`, …
    Cifar100,
    /// MNIST-family IDX files, plain or gzip.
    Idx,
    /// A folder of images, one sub-folder per class.
    Folder,
}

impl Format {
    /// Every format, in the order [`detect`] tries them.
    pub const ALL: [Format; 4] = [
        Format::Cifar10,
        Format::Cifar100,
        Format::Idx,
        Format::Folder,
    ];

    /// The name used on the command line and in serde: `cifar10`, …
    pub const fn name(self) -> &'static str {
        match self {
            Format::Cifar10 => "cifar10",
            Format::Cifar100 => "cifar100",
            Format::Idx => "idx",
            Format::Folder => "folder",
        }
    }

    /// Whether `dir` looks like a data set of this format.
    pub fn is_present(self, dir: &Path) -> bool {
        match self {
            Format::Cifar10 => cifar10::is_present(dir),
            Format::Cifar100 => cifar100::is_present(dir),
            Format::Idx => idx::is_present(dir),
            Format::Folder => folder::is_folder_dataset(dir),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = DataError;

    /// `cifar10`, `cifar100`, `idx` or `folder` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| DataError::UnknownFormat(s.to_string()))
    }
}

/// What [`detect`] looks for, for its error.
const LOOKED_FOR: &str = "looked for CIFAR-10 binary (data_batch_1.bin … data_batch_5.bin, test_batch.bin, batches.meta.txt), \
CIFAR-100 binary (train.bin, test.bin), \
MNIST-family IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz), \
and image folders (train/<class>/ with test/<class>/ or val/<class>/, or <class>/ folders of .png/.jpg/.jpeg images)";

/// The message of [`DataError::Unrecognised`].
pub(crate) fn describe_unrecognised(
    suggestion: &Option<(PathBuf, Format)>,
    partial: &Option<String>,
) -> String {
    let mut text = format!("no data set recognised: {LOOKED_FOR}");
    if let Some(partial) = partial {
        text += &format!("; {partial}");
    }
    if let Some((sub, format)) = suggestion {
        text += &format!(
            "; its sub-folder {} holds a data set ({format}): pass that folder instead",
            sub.display()
        );
    }
    text
}

/// The first non-hidden sub-folder of `dir` (in name order) that is a data set.
fn data_set_below(dir: &Path) -> Option<(PathBuf, Format)> {
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_encoded_bytes().first() != Some(&b'.'))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    subs.into_iter().find_map(|sub| {
        Format::ALL
            .into_iter()
            .find(|f| f.is_present(&sub))
            .map(|f| (sub, f))
    })
}

/// Some but not all of the CIFAR-10 files: which are missing.
fn partial_cifar10(dir: &Path) -> Option<String> {
    let files: Vec<&str> = cifar10::TRAIN_FILES
        .iter()
        .chain([&cifar10::TEST_FILE, &cifar10::META_FILE])
        .copied()
        .collect();
    let missing: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    (!missing.is_empty() && missing.len() < files.len())
        .then(|| format!("it has CIFAR-10 files but not {}", missing.join(", ")))
}

/// The format of the data set in the folder `path`.
pub fn detect(path: &Path) -> Result<Format, DataError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: path.to_path_buf(),
            source,
        },
        _ => DataError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    if !meta.is_dir() {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            problem:
                "is a file: pass the folder that holds the data set (extract an archive first)"
                    .into(),
        });
    }
    if let Some(format) = Format::ALL.into_iter().find(|f| f.is_present(path)) {
        return Ok(format);
    }
    Err(DataError::Unrecognised {
        path: path.to_path_buf(),
        suggestion: data_set_below(path),
        partial: partial_cifar10(path),
    })
}

/// How to load a data set of any format.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadOptions {
    /// The format, or `None` to [`detect`] it.
    pub format: Option<Format>,
    /// CIFAR-100: which label to train on.
    pub label: cifar100::Label,
    /// Image folders: the target shape, split, cache, …
    pub folder: FolderOptions,
}

impl LoadOptions {
    /// Detected format, fine labels, image folders read as `shape`
    /// ([`FolderOptions::new`]).
    pub fn new(shape: ImageShape) -> Self {
        Self {
            format: None,
            label: cifar100::Label::default(),
            folder: FolderOptions::new(shape),
        }
    }
}

/// Loads the data set at `path` in the format of `opts` (detected when not
/// given). `progress(done, total)` is called as an image folder decodes; the
/// report is `Some` for image folders only.
pub fn load(
    path: &Path,
    opts: &LoadOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Dataset, Option<FolderReport>), DataError> {
    let format = match opts.format {
        Some(f) => f,
        None => detect(path)?,
    };
    match format {
        Format::Cifar10 => Ok((cifar10::load(path)?, None)),
        Format::Cifar100 => Ok((cifar100::load(path, opts.label)?, None)),
        Format::Idx => Ok((idx::load(path)?, None)),
        Format::Folder => {
            let (data, report) = folder::load(path, &opts.folder, progress)?;
            Ok((data, Some(report)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.name())
            );
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("CIFAR100".parse::<Format>().unwrap(), Format::Cifar100);
        let err = "mnist".parse::<Format>().unwrap_err().to_string();
        assert!(err.contains("mnist") && err.contains("cifar10"), "{err}");
    }

    #[test]
    fn missing_and_file_paths_are_named() {
        let err = detect(Path::new("/nonexistent/data")).unwrap_err();
        assert!(matches!(err, DataError::Missing { .. }), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = detect(file.path()).unwrap_err().to_string();
        assert!(err.contains("is a file"), "{err}");
    }

    #[test]
    fn partial_cifar10_names_the_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data_batch_1.bin"), b"").unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("not data_batch_2.bin") && err.contains("batches.meta.txt"),
            "{err}"
        );
    }
}
