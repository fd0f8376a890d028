//! The CIFAR-10 data set in its standard binary layout.
//!
//! Each record is 3,073 bytes: a label byte (0–9), then the 1,024 red, 1,024
//! green and 1,024 blue values of a 32×32 image, row-major. We reorder them
//! to HWC so that a batch converts straight into the network's NHWC input.

use super::{read, DataError, Dataset, Split};
use crate::kernels::tensor::ImageShape;
use std::path::Path;

pub const SHAPE: ImageShape = ImageShape::new(32, 32, 3);
/// Bytes of one image.
pub const IMAGE_LEN: usize = SHAPE.len();
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

/// Appends the records of one CIFAR-10 binary file, converting CHW to HWC.
fn append_records(split: &mut Split, path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    if !bytes.len().is_multiple_of(RECORD_LEN) || bytes.is_empty() {
        return Err(DataError::BadSize {
            path: path.to_path_buf(),
            size: bytes.len(),
            record: RECORD_LEN,
            format: "CIFAR-10",
        });
    }
    let records = bytes.len() / RECORD_LEN;
    split.images.reserve(records * IMAGE_LEN);
    split.labels.reserve(records);
    let plane = SHAPE.pixels();
    for (record, rec) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        let label = rec[0];
        if label as usize >= NUM_CLASSES {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                record,
                label,
                classes: NUM_CLASSES,
            });
        }
        split.labels.push(label);
        let chw = &rec[1..];
        for p in 0..plane {
            split
                .images
                .extend_from_slice(&[chw[p], chw[plane + p], chw[2 * plane + p]]);
        }
    }
    Ok(())
}

/// What [`load`] reports the data set as.
pub const DESCRIPTION: &str = "CIFAR-10 binary";

/// Reads `data_batch_1..5.bin`, `test_batch.bin` and `batches.meta.txt` from `dir`.
pub fn load(dir: &Path) -> Result<Dataset, DataError> {
    let mut train = Split::new(SHAPE);
    for name in TRAIN_FILES {
        let path = dir.join(name);
        append_records(&mut train, &path, &read(&path)?)?;
    }
    Ok(Dataset {
        train,
        test: load_test(dir)?,
        class_names: load_class_names(dir)?,
        description: DESCRIPTION.to_string(),
    })
}

/// Only the test split (for evaluation).
pub fn load_test(dir: &Path) -> Result<Split, DataError> {
    let path = dir.join(TEST_FILE);
    let mut test = Split::new(SHAPE);
    append_records(&mut test, &path, &read(&path)?)?;
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
            expected: NUM_CLASSES,
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
        let mut s = Split::new(SHAPE);
        append_records(&mut s, Path::new("x.bin"), &rec).unwrap();
        assert_eq!(s.labels, [3]);
        assert_eq!(&s.images[..6], &[0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn bad_size_and_label_name_the_file() {
        let mut s = Split::new(SHAPE);
        let err = append_records(&mut s, Path::new("a.bin"), &[0; 3072])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.bin") && err.contains("3073"), "{err}");
        let err = append_records(&mut s, Path::new("b.bin"), &record(10, |_| 0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.bin") && err.contains("label 10"), "{err}");
    }

    #[test]
    fn missing_directory_names_the_file() {
        let err = load(Path::new("/nonexistent/cifar"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/cifar/data_batch_1.bin") && err.contains("missing"),
            "{err}"
        );
    }
}
