//! Whatever the bytes, `Model::from_bytes` returns `Ok` or `Err` and never
//! panics or reads out of bounds; a model it accepts classifies without panic.

mod common;

use common::{raw_file, Shape, TestModel, L};
use infer::Model;
use proptest::prelude::*;
use std::sync::OnceLock;

/// A small but complete model: every layer kind (a residual add included),
/// every tensor kind.
fn valid_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        TestModel::random(
            Shape { h: 5, w: 4, c: 2 },
            vec![
                L::Conv {
                    filters: 3,
                    k: 3,
                    stride: 1,
                    same: true,
                },
                L::Bn { eps: 1e-3 },
                L::Relu,
                L::Add { from: 1 },
                L::MaxPool {
                    size: 2,
                    stride: 2,
                    same: true,
                },
                L::Dropout,
                L::Flatten,
                L::Dense { units: 3 },
            ],
            1,
        )
        .to_bytes()
    })
}

/// Loads `bytes`; if accepted, classifies an image with it, with Winograd
/// off and on.
fn exercise(bytes: &[u8]) {
    if let Ok(model) = Model::from_bytes(bytes) {
        let image = vec![128u8; model.input_len()];
        for winograd in [false, true] {
            let model = model.clone().with_winograd(winograd);
            let mut scratch = vec![0f32; model.scratch_len()];
            let mut probs = vec![0f32; model.num_classes()];
            let top = model.classify(&image, &mut scratch, &mut probs).unwrap();
            assert!(top.class < model.num_classes());
        }
        for i in 0..=model.num_classes() {
            let _ = model.class_name(i);
        }
    }
}

#[test]
fn the_base_file_is_valid() {
    assert!(Model::from_bytes(valid_file()).is_ok());
}

/// One edit of a file.
#[derive(Clone, Debug)]
enum Edit {
    Flip {
        at: usize,
        mask: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Replace a decimal digit with another: changes a shape, an offset or a
    /// length while keeping the JSON valid.
    Digit {
        nth: usize,
        digit: u8,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Edit::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set { at, byte }),
        any::<usize>().prop_map(|len| Edit::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Edit::Remove { at, len }),
        (any::<usize>(), b'0'..=b'9').prop_map(|(nth, digit)| Edit::Digit { nth, digit }),
    ]
}

fn apply(file: &mut Vec<u8>, e: &Edit) {
    let n = file.len();
    match e {
        Edit::Flip { at, mask } => file[at % n] ^= mask,
        Edit::Set { at, byte } => file[at % n] = *byte,
        Edit::Truncate { len } => file.truncate(len % n),
        Edit::Insert { at, bytes } => {
            let at = at % (n + 1);
            file.splice(at..at, bytes.iter().copied());
        }
        Edit::Remove { at, len } => {
            let at = at % n;
            file.drain(at..(at + len).min(n));
        }
        Edit::Digit { nth, digit } => {
            let header_end = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
            let digits: Vec<usize> = (8..header_end.min(n))
                .filter(|&i| file[i].is_ascii_digit())
                .collect();
            if !digits.is_empty() {
                file[digits[nth % digits.len()]] = *digit;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn random_headers_never_panic(header in proptest::collection::vec(any::<u8>(), 0..256),
                                  data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&header);
        file.extend_from_slice(&data);
        exercise(&file);
    }

    #[test]
    fn mutated_valid_files_never_panic(edits in proptest::collection::vec(edit(), 1..4)) {
        let mut file = valid_file().to_vec();
        for e in &edits {
            if file.len() < 8 { break; }
            apply(&mut file, e);
        }
        exercise(&file);
    }

    /// Mutations inside the header only, with the length prefix kept right.
    #[test]
    fn mutated_headers_never_panic(edits in proptest::collection::vec(edit(), 1..4)) {
        let file = valid_file();
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let mut header = file[8..8 + n].to_vec();
        let data = &file[8 + n..];
        for e in &edits {
            if header.is_empty() { break; }
            // Digit edits need the length prefix: apply them on a wrapped copy.
            if let Edit::Digit { .. } = e {
                let mut f = raw_file(std::str::from_utf8(&header).unwrap_or(""), &[]);
                if f.len() > 8 {
                    apply(&mut f, e);
                    header = f[8..].to_vec();
                }
            } else {
                apply(&mut header, e);
            }
        }
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(&header);
        f.extend_from_slice(data);
        exercise(&f);
    }
}
