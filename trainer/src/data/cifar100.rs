//! The CIFAR-100 data set in its standard binary layout (`cifar-100-binary/`).
//!
//! `train.bin` (50,000 records) and `test.bin` (10,000 records) hold 3,074-byte
//! records: the coarse label byte (0–19), the fine label byte (0–99), then the
//! 1,024 red, 1,024 green and 1,024 blue values of a 32×32 image, row-major.
//! Like [`super::cifar10`] we reorder them to HWC. Either label can be trained
//! on ([`Label`]); its class names come from `fine_label_names.txt` or
//! `coarse_label_names.txt` (one name per line), found beside the `.bin` files
//! (as in the official archive) or in a `meta/` sub-folder.

use super::{DataError, Dataset, Split};
use crate::kernels::tensor::ImageShape;
use std::path::{Path, PathBuf};

pub const SHAPE: ImageShape = ImageShape::new(32, 32, 3);
/// Bytes of one image.
pub const IMAGE_LEN: usize = SHAPE.len();
/// Bytes of one record: coarse label, fine label, image.
pub const RECORD_LEN: usize = 2 + IMAGE_LEN;
pub const NUM_FINE: usize = 100;
pub const NUM_COARSE: usize = 20;

pub const TRAIN_FILE: &str = "train.bin";
pub const TEST_FILE: &str = "test.bin";
pub const FINE_NAMES: &str = "fine_label_names.txt";
pub const COARSE_NAMES: &str = "coarse_label_names.txt";
/// The sub-folder that may hold the class-name files instead of `dir` itself.
pub const META_DIR: &str = "meta";

const FORMAT: &str = "CIFAR-100";

/// Which of the two labels of each record to train on.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// The 100 classes (`apple`, `aquarium_fish`, …).
    #[default]
    Fine,
    /// The 20 superclasses (`aquatic_mammals`, `fish`, …).
    Coarse,
}

impl Label {
    /// Number of classes.
    pub const fn classes(self) -> usize {
        match self {
            Label::Fine => NUM_FINE,
            Label::Coarse => NUM_COARSE,
        }
    }

    /// The file of class names.
    pub const fn names_file(self) -> &'static str {
        match self {
            Label::Fine => FINE_NAMES,
            Label::Coarse => COARSE_NAMES,
        }
    }

    /// Offset of this label's byte in a record.
    const fn offset(self) -> usize {
        match self {
            Label::Coarse => 0,
            Label::Fine => 1,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Label::Fine => "fine",
            Label::Coarse => "coarse",
        }
    }
}

/// Reads a whole data-set file; a missing one is named as part of CIFAR-100.
fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingFile {
            path: path.to_path_buf(),
            what: "a CIFAR-100 data set needs this file",
        },
        _ => DataError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Checks both labels of every record, then appends the chosen label and the
/// image (CHW → HWC) of each.
fn append_records(
    split: &mut Split,
    path: &Path,
    bytes: &[u8],
    label: Label,
) -> Result<(), DataError> {
    if !bytes.len().is_multiple_of(RECORD_LEN) || bytes.is_empty() {
        return Err(DataError::BadSize {
            path: path.to_path_buf(),
            size: bytes.len(),
            record: RECORD_LEN,
            format: FORMAT,
        });
    }
    let records = bytes.len() / RECORD_LEN;
    split.images.reserve(records * IMAGE_LEN);
    split.labels.reserve(records);
    let plane = SHAPE.pixels();
    for (record, rec) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        for (byte, classes) in [(rec[0], NUM_COARSE), (rec[1], NUM_FINE)] {
            if byte as usize >= classes {
                return Err(DataError::BadLabel {
                    path: path.to_path_buf(),
                    record,
                    label: byte,
                    classes,
                });
            }
        }
        split.labels.push(rec[label.offset()]);
        let chw = &rec[2..];
        for p in 0..plane {
            split
                .images
                .extend_from_slice(&[chw[p], chw[plane + p], chw[2 * plane + p]]);
        }
    }
    Ok(())
}

/// What [`load`] reports the data set as.
pub fn description(label: Label) -> String {
    format!("CIFAR-100 binary ({} labels)", label.name())
}

/// Reads `train.bin`, `test.bin` and the class names of `label` from `dir`.
pub fn load(dir: &Path, label: Label) -> Result<Dataset, DataError> {
    Ok(Dataset {
        train: load_split(&dir.join(TRAIN_FILE), label)?,
        test: load_test(dir, label)?,
        class_names: load_class_names(dir, label)?,
        description: description(label),
    })
}

/// Only the test split (for evaluation).
pub fn load_test(dir: &Path, label: Label) -> Result<Split, DataError> {
    load_split(&dir.join(TEST_FILE), label)
}

fn load_split(path: &Path, label: Label) -> Result<Split, DataError> {
    let mut split = Split::new(SHAPE);
    append_records(&mut split, path, &read_file(path)?, label)?;
    Ok(split)
}

/// Where the class names of `label` are: `dir/<file>` or `dir/meta/<file>`
/// (the first that exists; `dir/<file>` when neither does).
pub fn names_path(dir: &Path, label: Label) -> PathBuf {
    let beside = dir.join(label.names_file());
    let in_meta = dir.join(META_DIR).join(label.names_file());
    if !beside.is_file() && in_meta.is_file() {
        in_meta
    } else {
        beside
    }
}

/// The class names of `label`: exactly 100 (fine) or 20 (coarse) non-empty lines.
pub fn load_class_names(dir: &Path, label: Label) -> Result<Vec<String>, DataError> {
    let path = names_path(dir, label);
    let bytes = std::fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Invalid {
            path: dir.to_path_buf(),
            problem: format!(
                "no {} here or in {META_DIR}/ (the {} class names of CIFAR-100, one per line)",
                label.names_file(),
                label.name()
            ),
        },
        _ => DataError::Read {
            path: path.clone(),
            source,
        },
    })?;
    let names: Vec<String> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != label.classes() {
        return Err(DataError::BadMeta {
            path,
            expected: label.classes(),
            found: names.len(),
        });
    }
    Ok(names)
}

/// Whether `dir` looks like CIFAR-100 binary: `train.bin` and `test.bin` are
/// there (a missing class-name file is then reported by [`load`]).
pub fn is_present(dir: &Path) -> bool {
    [TRAIN_FILE, TEST_FILE]
        .iter()
        .all(|f| dir.join(f).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(coarse: u8, fine: u8, fill: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut r = vec![coarse, fine];
        r.extend((0..IMAGE_LEN).map(fill));
        r
    }

    #[test]
    fn converts_chw_to_hwc_and_picks_the_label() {
        let rec = record(7, 42, |i| (i / 1024) as u8 * 10);
        for (label, want) in [(Label::Fine, 42), (Label::Coarse, 7)] {
            let mut s = Split::new(SHAPE);
            append_records(&mut s, Path::new("x.bin"), &rec, label).unwrap();
            assert_eq!(s.labels, [want]);
            assert_eq!(&s.images[..6], &[0, 10, 20, 0, 10, 20]);
            assert_eq!(s.images.len(), IMAGE_LEN);
        }
    }

    #[test]
    fn bad_size_and_labels_name_the_file_and_record() {
        let mut s = Split::new(SHAPE);
        let err = append_records(&mut s, Path::new("a.bin"), &[0; 3073], Label::Fine)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.bin") && err.contains("3074"), "{err}");
        let mut two = record(0, 0, |_| 0);
        two.extend(record(0, 100, |_| 0));
        // A bad fine label is an error even when training on coarse labels.
        let err = append_records(&mut s, Path::new("b.bin"), &two, Label::Coarse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b.bin") && err.contains("record 1") && err.contains("label 100"),
            "{err}"
        );
        let err = append_records(
            &mut s,
            Path::new("c.bin"),
            &record(20, 0, |_| 0),
            Label::Fine,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("c.bin") && err.contains("label 20"), "{err}");
    }

    #[test]
    fn label_serde_names() {
        assert_eq!(serde_json::to_string(&Label::Coarse).unwrap(), "\"coarse\"");
        assert_eq!(
            serde_json::from_str::<Label>("\"fine\"").unwrap(),
            Label::Fine
        );
        assert_eq!(Label::default(), Label::Fine);
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), Label::Fine).unwrap_err().to_string();
        assert!(
            err.contains("train.bin") && err.contains("CIFAR-100"),
            "{err}"
        );
        std::fs::write(dir.path().join(TRAIN_FILE), record(1, 2, |_| 3)).unwrap();
        std::fs::write(dir.path().join(TEST_FILE), record(1, 2, |_| 3)).unwrap();
        let err = load(dir.path(), Label::Coarse).unwrap_err().to_string();
        assert!(
            err.contains("coarse_label_names.txt") && err.contains("meta/"),
            "{err}"
        );
    }
}
