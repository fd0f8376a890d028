//! `trainer::data::cifar100::load` on a directory whose files come from the
//! input: Ok or Err, never a panic; a data set that loads has exactly the
//! records of the files (both labels in range), converted from CHW to HWC.
//!
//! Input layout: byte 0 is a set of flags, the rest is the payload, written
//! as `train.bin`.
//!
//! | flag | meaning |
//! |------|---------|
//! | 0x01 | `test.bin` is the payload too (else one valid record) |
//! | 0x02 | train on the coarse labels (else the fine ones) |
//! | 0x04 | the class-name files are in `meta/` (else beside the `.bin` files) |
//! | 0x08 | the class-name file of the chosen label is the payload (else valid names) |
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use trainer::data::cifar100::{
    self, Label, COARSE_NAMES, FINE_NAMES, META_DIR, TEST_FILE, TRAIN_FILE,
};
use trainer_fuzz::{check_dataset, cifar100_record, cifar_hwc, names_file, put, scratch};

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.is_empty() || data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let (flags, payload) = (data[0], &data[1..]);
    let label = if flags & 0x02 != 0 {
        Label::Coarse
    } else {
        Label::Fine
    };
    let dir = scratch();
    let d = dir.path();
    put(d, TRAIN_FILE, payload);
    let valid = cifar100_record(4, 42, 9);
    let test_bytes = if flags & 0x01 != 0 {
        payload
    } else {
        &valid[..]
    };
    put(d, TEST_FILE, test_bytes);
    let names_dir = if flags & 0x04 != 0 {
        let m = d.join(META_DIR);
        std::fs::create_dir(&m).expect("mkdir meta");
        m
    } else {
        d.to_path_buf()
    };
    for (l, file, prefix) in [
        (Label::Fine, FINE_NAMES, "fine"),
        (Label::Coarse, COARSE_NAMES, "coarse"),
    ] {
        let bytes = if flags & 0x08 != 0 && l == label {
            payload.to_vec()
        } else {
            names_file(prefix, l.classes())
        };
        put(&names_dir, file, &bytes);
    }
    if let Ok(set) = cifar100::load(d, label) {
        check_dataset(&set);
        assert_eq!(set.class_names.len(), label.classes());
        let offset = if label == Label::Coarse { 0 } else { 1 };
        let labels = |b: &[u8]| {
            b.chunks_exact(3074)
                .inspect(|r| assert!(r[0] < 20 && r[1] < 100, "a label out of range was accepted"))
                .map(|r| r[offset])
                .collect::<Vec<u8>>()
        };
        assert_eq!(set.train.labels, labels(payload), "train labels");
        assert_eq!(set.train.images, cifar_hwc(payload, 2), "train pixels");
        assert_eq!(set.test.labels, labels(test_bytes), "test labels");
        assert_eq!(set.test.images, cifar_hwc(test_bytes, 2), "test pixels");
    }
    Corpus::Keep
});
