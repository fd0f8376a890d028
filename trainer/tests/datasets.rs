//! The data-set readers on generated files: IDX (plain and gzip), CIFAR-100
//! binary, image folders (both layouts, bad images, the cache), format
//! detection, and an image folder made of CIFAR-10 test images read back
//! exactly as the binary reader reads them.

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use trainer::data::folder::{self, FolderOptions, FolderReport};
use trainer::data::idx::{self, IdxProblem};
use trainer::data::{cifar10, cifar100, detect, DataError, Dataset, Format, LoadOptions};
use trainer::kernels::tensor::ImageShape;

// ---------------------------------------------------------------- IDX ----

fn idx_images(n: u32, rows: u32, cols: u32, seed: u8) -> Vec<u8> {
    let mut b = idx::IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [n, rows, cols] {
        b.extend(d.to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = idx::LABELS_MAGIC.to_be_bytes().to_vec();
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes `name` (gzipped to `name.gz` when `gz`), returning its path.
fn put(dir: &Path, name: &str, bytes: &[u8], gz: bool) -> PathBuf {
    let (path, bytes) = if gz {
        (dir.join(format!("{name}.gz")), gzip(bytes))
    } else {
        (dir.join(name), bytes.to_vec())
    };
    std::fs::write(&path, bytes).unwrap();
    path
}

const TRAIN_LABELS: [u8; 6] = [0, 1, 2, 3, 9, 4];
const TEST_LABELS: [u8; 3] = [5, 6, 7];

/// A small IDX set: 6 training and 3 test images of 5×4.
fn write_idx(dir: &Path, gz: bool) {
    put(dir, idx::TRAIN_IMAGES, &idx_images(6, 5, 4, 1), gz);
    put(dir, idx::TRAIN_LABELS, &idx_labels(&TRAIN_LABELS), gz);
    put(dir, idx::TEST_IMAGES, &idx_images(3, 5, 4, 2), gz);
    put(dir, idx::TEST_LABELS, &idx_labels(&TEST_LABELS), gz);
}

#[test]
fn idx_round_trip_plain_and_gzip() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_idx(dir.path(), gz);
        assert!(idx::is_present(dir.path()));
        assert_eq!(detect(dir.path()).unwrap(), Format::Idx);
        let data = idx::load(dir.path()).unwrap();
        assert_eq!(data.shape(), ImageShape::new(5, 4, 1));
        assert_eq!(data.train.images, idx_images(6, 5, 4, 1)[16..]);
        assert_eq!(data.test.images, idx_images(3, 5, 4, 2)[16..]);
        assert_eq!(data.train.labels, TRAIN_LABELS);
        assert_eq!(data.test.labels, TEST_LABELS);
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(data.class_names, names, "gz {gz}");
    }
}

#[test]
fn idx_class_names_from_classes_txt_or_the_largest_label() {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), false);
    put(
        dir.path(),
        idx::TEST_LABELS,
        &idx_labels(&[5, 6, 11]),
        false,
    );
    assert_eq!(idx::load(dir.path()).unwrap().num_classes(), 12);
    let names = "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\neleven\n";
    std::fs::write(dir.path().join(idx::CLASSES_FILE), names).unwrap();
    let data = idx::load(dir.path()).unwrap();
    assert_eq!(data.class_names[11], "eleven");
    // A label beyond classes.txt names the labels file and the record.
    std::fs::write(
        dir.path().join(idx::CLASSES_FILE),
        "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n",
    )
    .unwrap();
    let err = idx::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::BadLabel { path, record: 2, label: 11, classes: 10 }
            if path.ends_with(idx::TEST_LABELS)),
        "{err}"
    );
}

/// Loads a good IDX set with one file replaced, expecting an IDX problem in it.
fn idx_problem(name: &str, bytes: &[u8], gz: bool) -> (PathBuf, IdxProblem, String) {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), gz);
    let path = put(dir.path(), name, bytes, gz);
    let err = idx::load(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    match err {
        DataError::BadIdx { path: p, problem } => (p, problem, text),
        other => panic!("expected an IDX problem, got {other}"),
    }
}

#[test]
fn idx_malformed_files_get_named_errors() {
    for gz in [false, true] {
        // Bad magic: a labels file where the images should be.
        let (_, p, _) = idx_problem(idx::TRAIN_IMAGES, &idx_labels(&[1, 2]), gz);
        assert!(
            matches!(p, IdxProblem::BadMagic { found: 0x801, .. }),
            "{p}"
        );
        // Wrong dimensions: the header says 7 images, the data holds 6.
        let mut wrong = idx_images(6, 5, 4, 1);
        wrong[4..8].copy_from_slice(&7u32.to_be_bytes());
        let (_, p, text) = idx_problem(idx::TRAIN_IMAGES, &wrong, gz);
        assert!(
            matches!(
                p,
                IdxProblem::BadLength {
                    declared: 156,
                    actual: 136,
                    ..
                }
            ),
            "{p}"
        );
        assert!(text.contains("7×5×4"), "{text}");
        // Truncated: a byte short, then shorter than the header.
        let full = idx_images(3, 5, 4, 2);
        let (_, p, _) = idx_problem(idx::TEST_IMAGES, &full[..full.len() - 1], gz);
        assert!(matches!(p, IdxProblem::BadLength { .. }), "{p}");
        let (_, p, _) = idx_problem(idx::TEST_LABELS, &idx_labels(&TEST_LABELS)[..5], gz);
        assert!(
            matches!(p, IdxProblem::ShortHeader { len: 5, header: 8 }),
            "{p}"
        );
        // An empty file.
        let (_, p, _) = idx_problem(idx::TEST_LABELS, &[], gz);
        assert!(matches!(p, IdxProblem::ShortHeader { len: 0, .. }), "{p}");
        // Counts of images and labels disagree: named on the images file.
        let (path, p, text) = idx_problem(idx::TEST_LABELS, &idx_labels(&[1, 2]), gz);
        assert!(path.to_str().unwrap().contains(idx::TEST_IMAGES), "{text}");
        assert!(
            matches!(
                p,
                IdxProblem::CountMismatch {
                    images: 3,
                    labels: 2,
                    ..
                }
            ),
            "{p}"
        );
        assert!(text.contains(idx::TEST_LABELS), "{text}");
        // Test images of another size.
        let (_, p, _) = idx_problem(idx::TEST_IMAGES, &idx_images(3, 4, 5, 2), gz);
        assert!(matches!(p, IdxProblem::ShapeMismatch { .. }), "{p}");
    }
}

#[test]
fn idx_gzip_bomb_and_corrupt_gzip_are_refused() {
    // The header declares one 2×2 image; the stream inflates to 64 MiB.
    let mut bomb = idx_images(1, 2, 2, 0);
    bomb.resize(64 << 20, 0);
    let (_, p, _) = idx_problem(idx::TRAIN_IMAGES, &bomb, true);
    assert!(matches!(p, IdxProblem::Inflates { limit: 20 }), "{p}");
    // Not gzip at all, under a .gz name.
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), true);
    let path = put(dir.path(), idx::TRAIN_LABELS, b"not gzip", false);
    std::fs::rename(&path, dir.path().join(format!("{}.gz", idx::TRAIN_LABELS))).unwrap();
    let err = idx::load(dir.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::BadIdx {
                problem: IdxProblem::Gzip(_),
                ..
            }
        ),
        "{err}"
    );
    // A missing file is named.
    put(
        dir.path(),
        idx::TRAIN_LABELS,
        &idx_labels(&TRAIN_LABELS),
        true,
    );
    std::fs::remove_file(dir.path().join(format!("{}.gz", idx::TEST_LABELS))).unwrap();
    let err = idx::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(idx::TEST_LABELS) && err.contains("missing"),
        "{err}"
    );
}

// ---------------------------------------------------------- CIFAR-100 ----

/// A record whose red, green and blue planes are `r`, `g`, `b` plus the pixel index.
fn cifar100_record(coarse: u8, fine: u8, base: u8) -> Vec<u8> {
    let mut rec = vec![coarse, fine];
    for plane in 0..3u8 {
        rec.extend((0..1024).map(|p| (p as u8).wrapping_add(base).wrapping_add(plane * 80)));
    }
    rec
}

fn names(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix}{i}\n")).collect()
}

/// 4 training and 2 test records; the class names beside or in `meta/`.
fn write_cifar100(dir: &Path, names_in_meta: bool) {
    let train: Vec<u8> = [(0, 5, 1), (19, 99, 2), (3, 0, 3), (7, 42, 4)]
        .iter()
        .flat_map(|&(c, f, b)| cifar100_record(c, f, b))
        .collect();
    let test: Vec<u8> = [(1, 1, 5), (2, 2, 6)]
        .iter()
        .flat_map(|&(c, f, b)| cifar100_record(c, f, b))
        .collect();
    std::fs::write(dir.join(cifar100::TRAIN_FILE), train).unwrap();
    std::fs::write(dir.join(cifar100::TEST_FILE), test).unwrap();
    let names_dir = if names_in_meta {
        dir.join(cifar100::META_DIR)
    } else {
        dir.to_path_buf()
    };
    std::fs::create_dir_all(&names_dir).unwrap();
    std::fs::write(names_dir.join(cifar100::FINE_NAMES), names("fine", 100)).unwrap();
    std::fs::write(names_dir.join(cifar100::COARSE_NAMES), names("coarse", 20)).unwrap();
}

#[test]
fn cifar100_round_trip_fine_and_coarse() {
    for in_meta in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_cifar100(dir.path(), in_meta);
        assert_eq!(detect(dir.path()).unwrap(), Format::Cifar100);
        let fine = cifar100::load(dir.path(), cifar100::Label::Fine).unwrap();
        assert_eq!(fine.train.labels, [5, 99, 0, 42]);
        assert_eq!(fine.test.labels, [1, 2]);
        assert_eq!(fine.num_classes(), 100);
        assert_eq!(fine.class_names[99], "fine99");
        assert_eq!(fine.shape(), ImageShape::new(32, 32, 3));
        // HWC: pixel p of record 1 (base 2) is (p+2, p+82, p+162).
        let img = fine.train.image(1);
        assert_eq!(&img[..6], &[2, 82, 162, 3, 83, 163]);
        let coarse = cifar100::load(dir.path(), cifar100::Label::Coarse).unwrap();
        assert_eq!(coarse.train.labels, [0, 19, 3, 7]);
        assert_eq!(coarse.class_names[19], "coarse19");
        assert_eq!(coarse.train.images, fine.train.images);
        assert_ne!(coarse.description, fine.description);
    }
}

#[test]
fn cifar100_errors_name_the_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar100(dir.path(), false);
    let mut test = cifar100_record(1, 1, 0);
    test.extend(cifar100_record(4, 100, 0));
    std::fs::write(dir.path().join(cifar100::TEST_FILE), &test).unwrap();
    let err = cifar100::load(dir.path(), cifar100::Label::Fine).unwrap_err();
    assert!(
        matches!(&err, DataError::BadLabel { path, record: 1, label: 100, classes: 100 }
            if path.ends_with(cifar100::TEST_FILE)),
        "{err}"
    );
    test.truncate(test.len() - 1);
    std::fs::write(dir.path().join(cifar100::TEST_FILE), &test).unwrap();
    let err = cifar100::load(dir.path(), cifar100::Label::Fine).unwrap_err();
    assert!(
        matches!(err, DataError::BadSize { record: 3074, .. }),
        "{err}"
    );
    write_cifar100(dir.path(), false);
    std::fs::write(dir.path().join(cifar100::COARSE_NAMES), names("c", 19)).unwrap();
    let err = cifar100::load(dir.path(), cifar100::Label::Coarse).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadMeta {
                expected: 20,
                found: 19,
                ..
            }
        ),
        "{err}"
    );
}

// ------------------------------------------------------ image folders ----

const CLASSES: [&str; 3] = ["circle", "square", "stripes"];

/// A `w`×`h` picture of class `class` (0 circle, 1 square, 2 stripes) in
/// random colours.
fn draw(class: usize, w: u32, h: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let bg = Rgb([rng.random(), rng.random(), rng.random()]);
    let fg = Rgb([rng.random(), rng.random(), rng.random()]);
    let (cx, cy, r) = (w as f32 / 2.0, h as f32 / 2.0, w.min(h) as f32 / 3.0);
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let inside = match class {
            0 => dx * dx + dy * dy <= r * r,
            1 => dx.abs() <= r && dy.abs() <= r,
            _ => (y / 3) % 2 == 0,
        };
        if inside {
            fg
        } else {
            bg
        }
    })
}

/// Writes `per_class` images of each class into `dir/<class>/`, alternately
/// PNG and JPEG, of assorted sizes and aspect ratios.
fn write_class_images(dir: &Path, per_class: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (c, class) in CLASSES.iter().enumerate() {
        let class_dir = dir.join(class);
        std::fs::create_dir_all(&class_dir).unwrap();
        for i in 0..per_class {
            let (w, h) = (rng.random_range(12..40), rng.random_range(12..40));
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            draw(c, w, h, &mut rng)
                .save(class_dir.join(format!("{i:03}.{ext}")))
                .unwrap();
        }
    }
}

fn options(h: usize, w: usize, c: usize) -> FolderOptions {
    FolderOptions {
        shape: ImageShape::new(h, w, c),
        val_split: None,
        seed: 1,
        skip_bad: false,
        cache: true,
    }
}

fn load_folder(root: &Path, opts: &FolderOptions) -> Result<(Dataset, FolderReport), DataError> {
    folder::load(root, opts, &|_, _| {})
}

fn class_counts(labels: &[u8]) -> Vec<usize> {
    (0..CLASSES.len())
        .map(|c| labels.iter().filter(|&&l| l as usize == c).count())
        .collect()
}

/// `root/train/<class>/` (8 each) and `root/test/<class>/` (3 each).
fn train_test_folder() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    write_class_images(&root.path().join("train"), 8, 1);
    write_class_images(&root.path().join("test"), 3, 2);
    root
}

#[test]
fn folder_train_test_layout_loads_classes_and_counts() {
    let root = train_test_folder();
    assert!(folder::is_folder_dataset(root.path()));
    assert_eq!(detect(root.path()).unwrap(), Format::Folder);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let progress = |done: usize, total: usize| {
        assert!(done <= total && total == 33);
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let opts = FolderOptions {
        cache: false,
        ..options(16, 20, 3)
    };
    let (data, report) = folder::load(root.path(), &opts, &progress).unwrap();
    assert_eq!(data.class_names, CLASSES);
    assert_eq!(data.shape(), ImageShape::new(16, 20, 3));
    assert_eq!(class_counts(&data.train.labels), [8, 8, 8]);
    assert_eq!(class_counts(&data.test.labels), [3, 3, 3]);
    assert_eq!(data.train.images.len(), 24 * 16 * 20 * 3);
    assert_eq!(report.images, 33);
    assert!(report.skipped.is_empty() && !report.from_cache);
    assert!(calls.into_inner() >= 33);
    assert!(!folder::cache_path(root.path(), opts.shape).exists());
    // Grayscale.
    let (gray, _) = load_folder(
        root.path(),
        &FolderOptions {
            cache: false,
            ..options(8, 8, 1)
        },
    )
    .unwrap();
    assert_eq!(gray.train.images.len(), 24 * 64);
    // val/ stands in for test/.
    std::fs::rename(root.path().join("test"), root.path().join("val")).unwrap();
    let (data, _) = load_folder(root.path(), &opts).unwrap();
    assert_eq!(data.test.len(), 9);
}

#[test]
fn folder_single_tree_is_split_by_class() {
    let root = tempfile::tempdir().unwrap();
    write_class_images(root.path(), 12, 3);
    assert_eq!(detect(root.path()).unwrap(), Format::Folder);
    let err = load_folder(root.path(), &options(10, 10, 3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("validation fraction"), "{err}");
    let opts = FolderOptions {
        val_split: Some(0.25),
        ..options(10, 10, 3)
    };
    let (data, _) = load_folder(root.path(), &opts).unwrap();
    assert_eq!(data.class_names, CLASSES);
    assert_eq!(class_counts(&data.train.labels), [9, 9, 9]);
    assert_eq!(class_counts(&data.test.labels), [3, 3, 3]);
    // The same draw with the same seed (from the cache or not), another with another.
    let (again, report) = load_folder(root.path(), &opts).unwrap();
    assert!(report.from_cache);
    assert_eq!(again.test.images, data.test.images);
    let (fresh, report) = load_folder(
        root.path(),
        &FolderOptions {
            cache: false,
            ..opts.clone()
        },
    )
    .unwrap();
    assert!(!report.from_cache);
    assert_eq!(fresh.test.images, data.test.images);
    let (other, report) = load_folder(root.path(), &FolderOptions { seed: 2, ..opts }).unwrap();
    assert!(!report.from_cache, "another seed must not hit the cache");
    assert_ne!(other.test.images, data.test.images);
}

#[test]
fn folder_layout_errors_name_the_folders() {
    let root = train_test_folder();
    let opts = FolderOptions {
        cache: false,
        ..options(8, 8, 3)
    };
    // A test class that is not a training class.
    std::fs::rename(
        root.path().join("test/stripes"),
        root.path().join("test/lines"),
    )
    .unwrap();
    let err = load_folder(root.path(), &opts).unwrap_err();
    assert!(matches!(err, DataError::ClassMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("lines") && text.contains("stripes"), "{text}");
    std::fs::rename(
        root.path().join("test/lines"),
        root.path().join("test/stripes"),
    )
    .unwrap();
    // An empty class folder.
    std::fs::create_dir(root.path().join("test/triangle")).unwrap();
    std::fs::create_dir(root.path().join("train/triangle")).unwrap();
    std::fs::write(root.path().join("train/triangle/notes.txt"), "none yet").unwrap();
    let err = load_folder(root.path(), &opts).unwrap_err();
    assert!(
        matches!(&err, DataError::EmptyClass { path } if path.ends_with("train/triangle")),
        "{err}"
    );
    std::fs::remove_dir_all(root.path().join("train/triangle")).unwrap();
    std::fs::remove_dir_all(root.path().join("test/triangle")).unwrap();
    // A class name with a comma is a class name like any other (model files
    // list the names as a JSON array).
    for dir in ["train", "test"] {
        let d = root.path().join(dir);
        std::fs::rename(d.join("stripes"), d.join("stripes,wide")).unwrap();
    }
    let (data, _) = load_folder(root.path(), &opts).unwrap();
    assert_eq!(data.class_names, ["circle", "square", "stripes,wide"]);
    for dir in ["train", "test"] {
        let d = root.path().join(dir);
        std::fs::rename(d.join("stripes,wide"), d.join("stripes")).unwrap();
    }
    // A validation fraction with a test folder, and no test folder without one.
    let split = FolderOptions {
        val_split: Some(0.2),
        ..opts.clone()
    };
    assert!(load_folder(root.path(), &split)
        .unwrap_err()
        .to_string()
        .contains("test folder"));
    std::fs::remove_dir_all(root.path().join("test")).unwrap();
    let err = load_folder(root.path(), &opts).unwrap_err().to_string();
    assert!(err.contains("no test/ or val/"), "{err}");
    let (data, _) = load_folder(root.path(), &split).unwrap();
    assert_eq!(data.train.len() + data.test.len(), 24);
}

#[test]
fn folder_skip_bad_lists_a_corrupt_image() {
    let root = train_test_folder();
    let bad = root.path().join("train/square/zz-broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let opts = options(12, 12, 3);
    let err = load_folder(root.path(), &opts).unwrap_err();
    assert!(
        matches!(&err, DataError::BadImage { path, .. } if path == &bad),
        "{err}"
    );
    assert!(!folder::cache_path(root.path(), opts.shape).exists());
    let skip = FolderOptions {
        skip_bad: true,
        ..opts
    };
    let (data, report) = load_folder(root.path(), &skip).unwrap();
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, bad);
    assert_eq!(class_counts(&data.train.labels), [8, 8, 8]);
    assert_eq!(report.images, 33);
    // The cache remembers what was skipped.
    let (cached, report) = load_folder(root.path(), &skip).unwrap();
    assert!(report.from_cache);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, bad);
    assert_eq!(cached.train.images, data.train.images);
}

fn assert_same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.class_names, b.class_names);
    assert_eq!(a.train.labels, b.train.labels);
    assert_eq!(a.test.labels, b.test.labels);
    assert!(a.train.images == b.train.images && a.test.images == b.test.images);
}

#[test]
fn folder_cache_hits_and_rebuilds() {
    let root = train_test_folder();
    let opts = options(16, 16, 3);
    let cache = folder::cache_path(root.path(), opts.shape);
    assert!(cache.ends_with(".trainer-cache-16x16x3.bin"));
    let (cold, report) = load_folder(root.path(), &opts).unwrap();
    assert!(!report.from_cache && cache.is_file());
    let (warm, report) = load_folder(root.path(), &opts).unwrap();
    assert!(report.from_cache);
    assert_eq!(report.images, 33);
    assert_same(&cold, &warm);
    // No stray temporary files.
    let stray: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // A changed image: rebuilt, with its new pixels.
    let changed = root.path().join("train/circle/000.png");
    RgbImage::from_pixel(16, 16, Rgb([1, 2, 3]))
        .save(&changed)
        .unwrap();
    let (rebuilt, report) = load_folder(root.path(), &opts).unwrap();
    assert!(!report.from_cache, "a changed file must rebuild the cache");
    assert_eq!(rebuilt.train.image(0), [1, 2, 3].repeat(256));
    assert!(load_folder(root.path(), &opts).unwrap().1.from_cache);

    // A truncated cache, a corrupted one, an empty one: rebuilt, never trusted.
    let len = std::fs::metadata(&cache).unwrap().len();
    for damage in ["truncate", "flip", "empty"] {
        let mut bytes = std::fs::read(&cache).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() - 100),
            "flip" => bytes[20] ^= 0xff,
            _ => bytes.clear(),
        }
        std::fs::write(&cache, bytes).unwrap();
        let (data, report) = load_folder(root.path(), &opts).unwrap();
        assert!(!report.from_cache, "{damage}");
        assert_same(&data, &rebuilt);
        assert_eq!(std::fs::metadata(&cache).unwrap().len(), len, "{damage}");
    }

    // Another shape has its own cache.
    let small = options(8, 8, 1);
    assert!(!load_folder(root.path(), &small).unwrap().1.from_cache);
    assert!(load_folder(root.path(), &small).unwrap().1.from_cache);
    assert!(load_folder(root.path(), &opts).unwrap().1.from_cache);
}

#[test]
fn folder_without_a_writable_cache_still_loads() {
    let root = train_test_folder();
    let opts = options(8, 8, 3);
    // The cache's name taken by a folder: it can be neither read nor written.
    std::fs::create_dir(folder::cache_path(root.path(), opts.shape)).unwrap();
    let (a, report) = load_folder(root.path(), &opts).unwrap();
    assert!(!report.from_cache);
    let (b, report) = load_folder(root.path(), &opts).unwrap();
    assert!(!report.from_cache);
    assert_same(&a, &b);
    // A read-only root (meaningless when running as root, who writes anyway).
    let other = FolderOptions {
        seed: 3,
        ..options(6, 6, 3)
    };
    let mut perms = std::fs::metadata(root.path()).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(root.path(), perms.clone()).unwrap();
    let writable = std::fs::write(root.path().join("probe"), b"").is_ok();
    let result = load_folder(root.path(), &other);
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(root.path(), perms).unwrap();
    let (_, report) = result.unwrap();
    assert!(!report.from_cache);
    if !writable {
        assert!(!folder::cache_path(root.path(), other.shape).exists());
    }
}

// ---------------------------------------------------------- CIFAR-10 ----

/// The CIFAR-10 folder, or `None` after saying the test is skipped.
fn cifar10_dir(test: &str) -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/cifar10/cifar-10-batches-bin");
    if cifar10::is_present(&dir) {
        Some(dir)
    } else {
        eprintln!("SKIPPED {test}: CIFAR-10 not found");
        None
    }
}

#[test]
fn folder_of_cifar10_pngs_matches_the_binary_reader() {
    let Some(dir) = cifar10_dir("folder_of_cifar10_pngs_matches_the_binary_reader") else {
        return;
    };
    let names = cifar10::load_class_names(&dir).unwrap();
    let batch = cifar10::load_test(&dir).unwrap().head(600);
    let root = tempfile::tempdir().unwrap();
    // The first 500 images for training, the next 100 for testing.
    for i in 0..batch.len() {
        let split = if i < 500 { "train" } else { "test" };
        let class_dir = root
            .path()
            .join(split)
            .join(&names[batch.labels[i] as usize]);
        std::fs::create_dir_all(&class_dir).unwrap();
        RgbImage::from_raw(32, 32, batch.image(i).to_vec())
            .unwrap()
            .save(class_dir.join(format!("{i:04}.png")))
            .unwrap();
    }
    let opts = LoadOptions {
        folder: FolderOptions {
            cache: false,
            ..options(32, 32, 3)
        },
        ..LoadOptions::new(ImageShape::new(32, 32, 3))
    };
    let (data, report) = trainer::data::load(root.path(), &opts, &|_, _| {}).unwrap();
    assert_eq!(report.unwrap().images, 600);
    // CIFAR-10's class names are in alphabetical order: the labels agree.
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, names);
    assert_eq!(data.class_names, names);
    // The folder reader orders images by class, then file name.
    let by_class = |range: std::ops::Range<usize>| {
        let mut order: Vec<usize> = range.collect();
        order.sort_by_key(|&i| (batch.labels[i], i));
        batch.select(&order)
    };
    let (train, test) = (by_class(0..500), by_class(500..600));
    assert_eq!(data.train.labels, train.labels);
    assert!(data.train.images == train.images, "training pixels differ");
    assert_eq!(data.test.labels, test.labels);
    assert!(data.test.images == test.images, "test pixels differ");
}

// ---------------------------------------------------------- detection ----

#[test]
fn detect_recognises_each_layout() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&cifar).unwrap();
    for f in cifar10::TRAIN_FILES
        .iter()
        .chain([&cifar10::TEST_FILE, &cifar10::META_FILE])
    {
        std::fs::write(cifar.join(f), b"").unwrap();
    }
    assert_eq!(detect(&cifar).unwrap(), Format::Cifar10);
    let c100 = dir.path().join("cifar-100-binary");
    std::fs::create_dir(&c100).unwrap();
    write_cifar100(&c100, false);
    assert_eq!(detect(&c100).unwrap(), Format::Cifar100);
    let mnist = dir.path().join("mnist");
    std::fs::create_dir(&mnist).unwrap();
    write_idx(&mnist, true);
    assert_eq!(detect(&mnist).unwrap(), Format::Idx);
    let (data, report) = trainer::data::load(
        &mnist,
        &LoadOptions::new(ImageShape::new(1, 1, 1)),
        &|_, _| {},
    )
    .unwrap();
    assert!(report.is_none());
    assert_eq!(data.shape(), ImageShape::new(5, 4, 1));
    // A forced format that does not fit names what is missing.
    let forced = LoadOptions {
        format: Some(Format::Cifar100),
        ..LoadOptions::new(ImageShape::new(1, 1, 1))
    };
    let err = trainer::data::load(&mnist, &forced, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.bin"), "{err}");
}

#[test]
fn detect_explains_an_unrecognised_folder() {
    let dir = tempfile::tempdir().unwrap();
    let err = detect(dir.path()).unwrap_err();
    let text = err.to_string();
    for wanted in [
        "data_batch_1.bin",
        "train.bin",
        "train-images-idx3-ubyte",
        "train/<class>/",
        "<class>/",
    ] {
        assert!(text.contains(wanted), "{wanted} not in: {text}");
    }
    assert!(
        matches!(
            &err,
            DataError::Unrecognised {
                suggestion: None,
                ..
            }
        ),
        "{err}"
    );
    // A data set one level down is suggested.
    let mnist = dir.path().join("fashion-mnist");
    std::fs::create_dir(&mnist).unwrap();
    write_idx(&mnist, false);
    std::fs::write(dir.path().join("README.txt"), "data").unwrap();
    let err = detect(dir.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::Unrecognised { suggestion: Some((p, Format::Idx)), .. } if p == &mnist),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("fashion-mnist") && !text.contains("delete"),
        "{text}"
    );
    // A folder of class folders without images is not an image folder.
    let empty_classes = dir.path().join("empty");
    std::fs::create_dir_all(empty_classes.join("cat")).unwrap();
    assert!(!folder::is_folder_dataset(&empty_classes));
}
