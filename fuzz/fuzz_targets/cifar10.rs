//! `trainer::data::cifar10::load` on a directory whose files come from the
//! input: Ok or Err, never a panic; a data set that loads has exactly the
//! records of the files, converted from CHW to HWC.
//!
//! Input layout: byte 0 is a set of flags, the rest is the payload, written
//! as `data_batch_1.bin`.
//!
//! | flag | meaning |
//! |------|---------|
//! | 0x01 | `data_batch_2..5.bin` are the payload too (else one valid record each) |
//! | 0x02 | `test_batch.bin` is the payload (else one valid record) |
//! | 0x04 | `batches.meta.txt` is the payload (else ten valid names) |
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use trainer::data::cifar10::{self, META_FILE, TEST_FILE, TRAIN_FILES};
use trainer_fuzz::{check_dataset, cifar10_record, cifar_hwc, names_file, put, scratch};

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.is_empty() || data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let (flags, payload) = (data[0], &data[1..]);
    let dir = scratch();
    let d = dir.path();
    let valid = cifar10_record(3, 1);
    let mut train_bytes = Vec::new();
    for (i, name) in TRAIN_FILES.iter().enumerate() {
        let bytes = if i == 0 || flags & 0x01 != 0 {
            payload
        } else {
            &valid[..]
        };
        put(d, name, bytes);
        train_bytes.extend_from_slice(bytes);
    }
    let test_bytes = if flags & 0x02 != 0 {
        payload
    } else {
        &valid[..]
    };
    put(d, TEST_FILE, test_bytes);
    let meta = if flags & 0x04 != 0 {
        payload.to_vec()
    } else {
        names_file("class", 10)
    };
    put(d, META_FILE, &meta);
    if let Ok(set) = cifar10::load(d) {
        check_dataset(&set);
        assert_eq!(set.class_names.len(), 10);
        assert!(set.train.labels.iter().all(|&l| l < 10));
        let labels = |b: &[u8]| b.chunks_exact(3073).map(|r| r[0]).collect::<Vec<u8>>();
        assert_eq!(set.train.labels, labels(&train_bytes), "train labels");
        assert_eq!(set.train.images, cifar_hwc(&train_bytes, 1), "train pixels");
        assert_eq!(set.test.labels, labels(test_bytes), "test labels");
        assert_eq!(set.test.images, cifar_hwc(test_bytes, 1), "test pixels");
    }
    Corpus::Keep
});
