//! MNIST-family data sets (MNIST, Fashion-MNIST, KMNIST, …) in the IDX format.
//!
//! Four files, each plain or gzip-compressed (`.gz`; the dotted spelling
//! `train-images.idx3-ubyte` is accepted too):
//!
//! | file                      | magic        | dimensions (big-endian u32) |
//! |---------------------------|--------------|-----------------------------|
//! | `train-images-idx3-ubyte` | `0x00000803` | count, rows, columns        |
//! | `train-labels-idx1-ubyte` | `0x00000801` | count                       |
//! | `t10k-images-idx3-ubyte`  | `0x00000803` | count, rows, columns        |
//! | `t10k-labels-idx1-ubyte`  | `0x00000801` | count                       |
//!
//! The header (magic, then the dimensions) is followed by the data, one
//! unsigned byte per pixel or label; the file's length must be exactly what the
//! header declares, and a gzip file may not decompress to more than that (a
//! gzip bomb is refused after reading at most one byte too many). Images are
//! grayscale: shape (rows, columns, 1). Class names come from `classes.txt`
//! beside the files (one per line) when it is there, else they are `0`, `1`, …
//! up to the largest label (at least ten classes).

use super::{DataError, Dataset, Split};
use crate::kernels::tensor::ImageShape;
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
pub const CLASSES_FILE: &str = "classes.txt";
/// IDX, unsigned bytes, three dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX, unsigned bytes, one dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// What [`load`] reports the data set as.
pub const DESCRIPTION: &str = "MNIST-family IDX";

/// What is wrong with an IDX file ([`DataError::BadIdx`] names the file).
#[derive(Debug, thiserror::Error)]
pub enum IdxProblem {
    #[error("only {len} bytes, shorter than the {header}-byte IDX header (truncated, or not IDX)")]
    ShortHeader { len: usize, header: usize },
    #[error("magic number 0x{found:08x}, expected 0x{expected:08x}: not an IDX file of {kind}")]
    BadMagic {
        found: u32,
        expected: u32,
        kind: &'static str,
    },
    #[error("the header declares {dims} = {declared} bytes, but the data is {actual} bytes (truncated, or wrong dimensions)")]
    BadLength {
        dims: String,
        declared: u128,
        actual: usize,
    },
    #[error("the header declares no {0}")]
    Empty(&'static str),
    #[error("{images} images, but {labels_path} has {labels} labels")]
    CountMismatch {
        images: usize,
        labels: usize,
        labels_path: PathBuf,
    },
    #[error("images are {rows}×{cols}, but those of {other} are {other_rows}×{other_cols}")]
    ShapeMismatch {
        rows: usize,
        cols: usize,
        other: PathBuf,
        other_rows: usize,
        other_cols: usize,
    },
    #[error("not a readable gzip stream ({0})")]
    Gzip(String),
    #[error(
        "decompresses to more than the {limit} bytes its header declares (corrupt, or a gzip bomb)"
    )]
    Inflates { limit: u128 },
}

/// The two kinds of IDX file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Images,
    Labels,
}

impl Kind {
    const fn magic(self) -> u32 {
        match self {
            Kind::Images => IMAGES_MAGIC,
            Kind::Labels => LABELS_MAGIC,
        }
    }

    const fn dims(self) -> usize {
        match self {
            Kind::Images => 3,
            Kind::Labels => 1,
        }
    }

    /// Bytes of the header: magic and dimensions.
    const fn header_len(self) -> usize {
        4 + 4 * self.dims()
    }

    const fn name(self) -> &'static str {
        match self {
            Kind::Images => "images (3 dimensions of unsigned bytes)",
            Kind::Labels => "labels (1 dimension of unsigned bytes)",
        }
    }
}

/// A parsed IDX file: its dimensions and the data after the header.
#[derive(Debug)]
struct IdxFile {
    path: PathBuf,
    dims: Vec<usize>,
    data: Vec<u8>,
}

fn bad(path: &Path, problem: IdxProblem) -> DataError {
    DataError::BadIdx {
        path: path.to_path_buf(),
        problem,
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks the magic number at the start of `bytes`, if it is long enough to
/// have one, then that the whole header is there.
fn check_header(path: &Path, bytes: &[u8], kind: Kind) -> Result<(), DataError> {
    if bytes.len() >= 4 && be_u32(bytes) != kind.magic() {
        return Err(bad(
            path,
            IdxProblem::BadMagic {
                found: be_u32(bytes),
                expected: kind.magic(),
                kind: kind.name(),
            },
        ));
    }
    if bytes.len() < kind.header_len() {
        return Err(bad(
            path,
            IdxProblem::ShortHeader {
                len: bytes.len(),
                header: kind.header_len(),
            },
        ));
    }
    Ok(())
}

/// Checks the header at the start of `bytes` and returns its dimensions and
/// the total file length they declare.
fn parse_header(path: &Path, bytes: &[u8], kind: Kind) -> Result<(Vec<usize>, u128), DataError> {
    check_header(path, bytes, kind)?;
    let header = &bytes[..kind.header_len()];
    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|d| be_u32(d) as usize)
        .collect();
    // At most three u32 dimensions: the product fits in a u128.
    let data: u128 = dims.iter().map(|&d| d as u128).product();
    Ok((dims, kind.header_len() as u128 + data))
}

/// `60000×28×28`.
fn dims_text(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("×")
}

/// Parses a whole (decompressed) IDX file of `kind`.
fn parse(path: &Path, mut bytes: Vec<u8>, kind: Kind) -> Result<IdxFile, DataError> {
    let (dims, declared) = parse_header(path, &bytes, kind)?;
    if declared != bytes.len() as u128 {
        return Err(bad(
            path,
            IdxProblem::BadLength {
                dims: dims_text(&dims),
                declared,
                actual: bytes.len(),
            },
        ));
    }
    if dims[0] == 0 {
        return Err(bad(path, IdxProblem::Empty(kind_plural(kind))));
    }
    if kind == Kind::Images && (dims[1] == 0 || dims[2] == 0) {
        return Err(bad(path, IdxProblem::Empty("pixels (an image size of 0)")));
    }
    bytes.drain(..kind.header_len());
    Ok(IdxFile {
        path: path.to_path_buf(),
        dims,
        data: bytes,
    })
}

const fn kind_plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Images => "images",
        Kind::Labels => "labels",
    }
}

/// Decompresses a gzip IDX file, reading no more than its header declares
/// (plus one byte, to tell "exactly" from "too much").
fn gunzip(path: &Path, file: std::fs::File, kind: Kind) -> Result<Vec<u8>, DataError> {
    let gzip = |e: std::io::Error| bad(path, IdxProblem::Gzip(e.to_string()));
    let mut decoder = MultiGzDecoder::new(std::io::BufReader::new(file));
    let mut bytes = Vec::new();
    (&mut decoder)
        .take(kind.header_len() as u64)
        .read_to_end(&mut bytes)
        .map_err(gzip)?;
    let (_, declared) = parse_header(path, &bytes, kind)?;
    let rest = declared - kind.header_len() as u128;
    // Grow as data arrives rather than trusting the header with an allocation.
    bytes.reserve(rest.min(64 << 20) as usize);
    let limit = u64::try_from(rest).unwrap_or(u64::MAX).saturating_add(1);
    (&mut decoder)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(gzip)?;
    if bytes.len() as u128 > declared {
        return Err(bad(path, IdxProblem::Inflates { limit: declared }));
    }
    Ok(bytes)
}

/// Reads and parses an IDX file, decompressing it when its name ends in `.gz`.
fn read_idx(path: &Path, kind: Kind) -> Result<IdxFile, DataError> {
    let read_err = |source| DataError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        gunzip(path, std::fs::File::open(path).map_err(read_err)?, kind)?
    } else {
        std::fs::read(path).map_err(read_err)?
    };
    parse(path, bytes, kind)
}

/// The spellings a file may have, in order of preference.
fn candidates(name: &str) -> [String; 4] {
    let dotted = name.replacen("-idx", ".idx", 1);
    [
        name.to_string(),
        format!("{name}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
}

/// The file `name` in `dir`, plain or `.gz`, if it is there.
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    candidates(name)
        .into_iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_file())
}

fn require(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    find(dir, name).ok_or_else(|| DataError::MissingFile {
        path: dir.join(name),
        what: "an IDX data set needs this file, plain or .gz",
    })
}

/// Reads one split: its images and labels, whose counts must agree.
fn load_split(dir: &Path, images: &str, labels: &str) -> Result<(IdxFile, IdxFile), DataError> {
    let images = read_idx(&require(dir, images)?, Kind::Images)?;
    let labels = read_idx(&require(dir, labels)?, Kind::Labels)?;
    if images.dims[0] != labels.dims[0] {
        return Err(bad(
            &images.path,
            IdxProblem::CountMismatch {
                images: images.dims[0],
                labels: labels.dims[0],
                labels_path: labels.path,
            },
        ));
    }
    Ok((images, labels))
}

/// The class names from `classes.txt`, if it is there.
fn read_class_file(dir: &Path) -> Result<Option<Vec<String>>, DataError> {
    let path = dir.join(CLASSES_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DataError::Read { path, source }),
    };
    let names: Vec<String> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() || names.len() > 256 {
        return Err(DataError::Invalid {
            path,
            problem: format!(
                "{} class names: expected 1 to 256, one per line",
                names.len()
            ),
        });
    }
    Ok(Some(names))
}

/// Checks every label against `classes` names.
fn check_labels(labels: &IdxFile, classes: usize) -> Result<(), DataError> {
    match labels.data.iter().position(|&l| l as usize >= classes) {
        Some(record) => Err(DataError::BadLabel {
            path: labels.path.clone(),
            record,
            label: labels.data[record],
            classes,
        }),
        None => Ok(()),
    }
}

fn split_of(images: IdxFile, labels: IdxFile) -> Split {
    Split {
        shape: ImageShape::new(images.dims[1], images.dims[2], 1),
        images: images.data,
        labels: labels.data,
    }
}

/// Reads the four IDX files (and `classes.txt`, if any) from `dir`.
pub fn load(dir: &Path) -> Result<Dataset, DataError> {
    let (train_images, train_labels) = load_split(dir, TRAIN_IMAGES, TRAIN_LABELS)?;
    let (test_images, test_labels) = load_split(dir, TEST_IMAGES, TEST_LABELS)?;
    if test_images.dims[1..] != train_images.dims[1..] {
        return Err(bad(
            &test_images.path,
            IdxProblem::ShapeMismatch {
                rows: test_images.dims[1],
                cols: test_images.dims[2],
                other: train_images.path.clone(),
                other_rows: train_images.dims[1],
                other_cols: train_images.dims[2],
            },
        ));
    }
    let class_names = match read_class_file(dir)? {
        Some(names) => names,
        None => {
            let max = train_labels
                .data
                .iter()
                .chain(&test_labels.data)
                .map(|&l| l as usize + 1)
                .max()
                .unwrap_or(0);
            (0..max.max(10)).map(|i| i.to_string()).collect()
        }
    };
    check_labels(&train_labels, class_names.len())?;
    check_labels(&test_labels, class_names.len())?;
    Ok(Dataset {
        train: split_of(train_images, train_labels),
        test: split_of(test_images, test_labels),
        class_names,
        description: DESCRIPTION.to_string(),
    })
}

/// Whether `dir` looks like an IDX data set: its training images are there
/// (plain or `.gz`); [`load`] names any other file that is missing.
pub fn is_present(dir: &Path) -> bool {
    find(dir, TRAIN_IMAGES).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [n, rows, cols] {
            b.extend(d.to_be_bytes());
        }
        b.extend((0..n * rows * cols).map(|i| i as u8));
        b
    }

    fn problem(r: Result<IdxFile, DataError>) -> IdxProblem {
        match r {
            Err(DataError::BadIdx { problem, .. }) => problem,
            other => panic!("expected BadIdx, got {other:?}"),
        }
    }

    #[test]
    fn parses_images() {
        let f = parse(Path::new("i"), images(2, 3, 4), Kind::Images).unwrap();
        assert_eq!(f.dims, [2, 3, 4]);
        assert_eq!(f.data, (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn malformed_headers_are_named() {
        let p = Path::new("i");
        assert!(matches!(
            problem(parse(p, vec![0, 0, 8], Kind::Images)),
            IdxProblem::ShortHeader { len: 3, header: 16 }
        ));
        assert!(matches!(
            problem(parse(p, images(2, 3, 4), Kind::Labels)),
            IdxProblem::BadMagic {
                found: 0x803,
                expected: 0x801,
                ..
            }
        ));
        let mut long = images(2, 3, 4);
        long.push(0);
        let err = problem(parse(p, long, Kind::Images));
        assert!(
            matches!(
                err,
                IdxProblem::BadLength {
                    declared: 40,
                    actual: 41,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("2×3×4"), "{err}");
        assert!(matches!(
            problem(parse(p, images(0, 3, 4), Kind::Images)),
            IdxProblem::Empty("images")
        ));
    }

    #[test]
    fn huge_declared_dimensions_do_not_overflow() {
        let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
        b.extend([0xff; 12]);
        assert!(matches!(
            problem(parse(Path::new("i"), b, Kind::Images)),
            IdxProblem::BadLength { .. }
        ));
    }

    #[test]
    fn accepts_every_spelling() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_present(dir.path()));
        std::fs::write(dir.path().join("train-images.idx3-ubyte.gz"), b"").unwrap();
        assert!(is_present(dir.path()));
        std::fs::write(dir.path().join(TRAIN_IMAGES), b"").unwrap();
        assert_eq!(
            find(dir.path(), TRAIN_IMAGES).unwrap(),
            dir.path().join(TRAIN_IMAGES)
        );
    }
}
