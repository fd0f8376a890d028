//! `trainer::data::idx::load` on a directory whose training files come from
//! the input: Ok or Err, never a panic, and no allocation beyond what the
//! files really hold (libFuzzer's -malloc_limit_mb catches one).
//!
//! Input layout: byte 0 is a set of flags, bytes 1–2 (little-endian u16,
//! modulo the rest's length + 1) where the rest splits into the images file
//! (before) and the labels file (after).
//!
//! | flag | meaning |
//! |------|---------|
//! | 0x01 | images written as `…idx3-ubyte.gz`, the bytes as they are (the input is the gzip stream) |
//! | 0x02 | images gzip-compressed by the harness, written as `.gz` (wins over 0x01) |
//! | 0x04 | labels written as `.gz` as they are |
//! | 0x08 | labels gzip-compressed by the harness (wins over 0x04) |
//! | 0x10 | the t10k files are copies of the train files; otherwise a valid pair of one image, of the size the train header declares when that is small |
//! | 0x20 | the dotted spelling `train-images.idx3-ubyte` |
//! | 0x40 | a `classes.txt` of ten names |
//! | 0x80 | an empty `classes.txt` (wins over 0x40) |
#![no_main]

use libfuzzer_sys::{fuzz_target, Corpus};
use trainer::data::idx::{self, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use trainer_fuzz::{check_dataset, gzip, idx_images, idx_labels, put, scratch};

/// `name` (or its dotted spelling) with the file's bytes, plain or gzip.
fn write(
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
    raw_gz: bool,
    compress: bool,
    dotted: bool,
) {
    let name = if dotted {
        name.replacen("-idx", ".idx", 1)
    } else {
        name.to_string()
    };
    if compress {
        put(dir, &format!("{name}.gz"), &gzip(bytes));
    } else if raw_gz {
        put(dir, &format!("{name}.gz"), bytes);
    } else {
        put(dir, &name, bytes);
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() < 3 || data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let flags = data[0];
    let rest = &data[3..];
    let at = u16::from_le_bytes([data[1], data[2]]) as usize % (rest.len() + 1);
    let (images, labels) = rest.split_at(at);
    let dir = scratch();
    let d = dir.path();
    let dotted = flags & 0x20 != 0;
    write(
        d,
        TRAIN_IMAGES,
        images,
        flags & 0x01 != 0,
        flags & 0x02 != 0,
        dotted,
    );
    write(
        d,
        TRAIN_LABELS,
        labels,
        flags & 0x04 != 0,
        flags & 0x08 != 0,
        false,
    );
    if flags & 0x10 != 0 {
        write(
            d,
            TEST_IMAGES,
            images,
            flags & 0x01 != 0,
            flags & 0x02 != 0,
            dotted,
        );
        write(
            d,
            TEST_LABELS,
            labels,
            flags & 0x04 != 0,
            flags & 0x08 != 0,
            false,
        );
    } else {
        let (mut rows, mut cols) = (1, 1);
        if images.len() >= 16 {
            let (r, c) = (be_u32(&images[8..]), be_u32(&images[12..]));
            if r > 0 && c > 0 && (r as u64 * c as u64) <= 4096 {
                (rows, cols) = (r, c);
            }
        }
        put(d, TEST_IMAGES, &idx_images(1, rows, cols));
        put(d, TEST_LABELS, &idx_labels(&[0]));
    }
    if flags & 0x80 != 0 {
        put(d, idx::CLASSES_FILE, b"");
    } else if flags & 0x40 != 0 {
        put(d, idx::CLASSES_FILE, &trainer_fuzz::names_file("digit", 10));
    }
    if let Ok(data_set) = idx::load(d) {
        check_dataset(&data_set);
        assert_eq!(data_set.train.shape.channels, 1, "IDX images are grayscale");
        if flags & 0x03 == 0 {
            // Plain files: the pixels are the file after its 16-byte header.
            assert_eq!(data_set.train.images, images[16..], "train pixels");
        }
    }
    Corpus::Keep
});
