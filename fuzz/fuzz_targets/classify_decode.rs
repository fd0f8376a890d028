//! `classify`'s decode-and-resize path (`classify::input::decode`) on
//! arbitrary bytes: Ok or Err, never a panic, never an allocation over the
//! limits (run with `-malloc_limit_mb=512`: a decompression bomb that got past
//! `MAX_SIDE`/`MAX_ALLOC` would be reported as out-of-memory). What decodes is
//! the model's input: exactly `h × w × c` bytes, with its original size within
//! the limits and `resized` telling whether it differed.
//!
//! Input layout: byte 0 picks the model's input shape (of [`SHAPES`]), the
//! rest is the file.
#![no_main]

use classify::input::{decode, MAX_SIDE};
use libfuzzer_sys::{fuzz_target, Corpus};

/// `(h, w, c)`: CIFAR, MNIST, a non-square RGBA input, a tiny odd one.
const SHAPES: [(usize, usize, usize); 4] = [(32, 32, 3), (28, 28, 1), (24, 40, 4), (7, 5, 3)];

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.is_empty() || data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let shape @ (h, w, c) = SHAPES[usize::from(data[0]) % SHAPES.len()];
    if let Ok(input) = decode(&data[1..], "fuzz", shape) {
        assert_eq!(input.pixels.len(), h * w * c);
        assert_eq!(input.size, (w as u32, h as u32));
        let (ow, oh) = input.original;
        assert!((1..=MAX_SIDE).contains(&ow) && (1..=MAX_SIDE).contains(&oh));
        assert_eq!(input.resized, input.original != input.size);
    }
    Corpus::Keep
});
