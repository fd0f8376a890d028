//! The image-folder cache file from arbitrary bytes. Once per process an
//! image folder is made (2 classes × 2 training PNGs + 1 test PNG each, fixed
//! modification times) and read once to get the reference data set and the
//! valid cache file; then each input overwrites the cache file and
//! `trainer::data::folder::load` (cache on) reads the folder again.
//!
//! Checked: the load never fails or panics (the folder is fine, whatever the
//! cache holds); a rejected cache is rebuilt, byte for byte the valid one;
//! a cache that is used has the reference's class names, shape, split
//! sizes and no skipped files (without `skip_bad` nothing may be skipped).
//!
//! Not checked: the pixel and label *values* of a cache that is used. The
//! cache's header fingerprints the image files (paths, sizes, times) and the
//! options, not its own payload, so a payload changed in place, at the same
//! length, is read as it is (see README.md). The target counts those inputs
//! and prints the first.
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use trainer::data::folder::cache_path;
use trainer::data::Dataset;
use trainer_fuzz::{check_dataset, load_folder, make_image_folder, FOLDER_SHAPE};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
    reference: Dataset,
    valid_cache: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = trainer_fuzz::scratch();
        let root = dir.path().to_path_buf();
        make_image_folder(&root);
        let (reference, report) = load_folder(&root);
        assert!(!report.from_cache && report.skipped.is_empty());
        let cache = cache_path(&root, FOLDER_SHAPE);
        let valid_cache = std::fs::read(&cache).expect("the first load writes the cache");
        Fixture {
            _dir: dir,
            root,
            cache,
            reference,
            valid_cache,
        }
    })
}

static CONTENT_TRUSTED: AtomicUsize = AtomicUsize::new(0);

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let f = fixture();
    std::fs::write(&f.cache, data).expect("overwrite the cache");
    let (set, report) = load_folder(&f.root);
    check_dataset(&set);
    let r = &f.reference;
    assert_eq!(set.class_names, r.class_names, "class names");
    assert_eq!(set.train.shape, FOLDER_SHAPE, "shape");
    assert!(
        report.skipped.is_empty(),
        "skipped files read from a cache: {:?}",
        report.skipped
    );
    assert_eq!(
        set.train.labels.len(),
        r.train.labels.len(),
        "training images"
    );
    assert_eq!(set.test.labels.len(), r.test.labels.len(), "test images");
    let same = set.train.images == r.train.images
        && set.train.labels == r.train.labels
        && set.test.images == r.test.images
        && set.test.labels == r.test.labels;
    if report.from_cache {
        if data == f.valid_cache.as_slice() {
            assert!(same, "the valid cache read back different images");
        } else if !same && CONTENT_TRUSTED.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!(
                "folder_cache: a cache with changed pixels or labels was used ({} bytes)",
                data.len()
            );
        }
    } else {
        assert!(same, "images decoded again differ from the reference");
        let rebuilt = std::fs::read(&f.cache).expect("the cache is rewritten");
        assert!(
            rebuilt == f.valid_cache,
            "the rebuilt cache differs from the valid one"
        );
    }
    Corpus::Keep
});
