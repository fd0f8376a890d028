//! `Model::classify` against the naive `f64` reference of tests/common, on
//! hand-picked and random architectures, with both backends.

mod common;

use common::{model1, random_architecture, Rng, Shape, TestModel, L};
use infer::{Backend, Model};

/// Classifies `image` and checks it against the reference, within `tol` on every
/// probability; returns the probabilities.
fn check(tm: &TestModel, model: &Model<'_>, image: &[u8], tol: f64, what: &str) -> Vec<f32> {
    let mut scratch = vec![f32::NAN; model.scratch_len()];
    let mut probs = vec![0f32; model.num_classes()];
    let top = model.classify(image, &mut scratch, &mut probs).unwrap();
    let want = tm.forward(image);
    for (i, (&g, &w)) in probs.iter().zip(&want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "{what}: class {i}: got {g}, reference {w}\n{}",
            tm.arch_json()
        );
    }
    assert_eq!(top.probability, probs[top.class]);
    assert!(probs.iter().all(|&p| p <= probs[top.class]));
    probs
}

/// Every backend (those the CPU lacks fall back to the next one down).
const BACKENDS: [Backend; 4] = [
    Backend::Auto,
    Backend::Avx512,
    Backend::Avx2,
    Backend::Portable,
];

/// Checks every backend against the reference, and against each other.
fn run_all(tm: &TestModel, seed: u64, tol: f64) {
    let bytes = tm.to_bytes();
    let model = Model::from_bytes(&bytes).unwrap();
    let mut rng = Rng::new(seed);
    for _ in 0..2 {
        let image = rng.bytes(tm.input_len());
        let results: Vec<Vec<f32>> = BACKENDS
            .iter()
            .map(|&b| {
                let m = model.clone().with_backend(b);
                check(tm, &m, &image, tol, &format!("{b:?}"))
            })
            .collect();
        for r in &results[1..] {
            for (a, p) in results[0].iter().zip(r) {
                assert!((a - p).abs() <= 1e-5, "backends disagree: {a} vs {p}");
            }
        }
    }
}

#[test]
fn model1_matches_reference() {
    run_all(&model1(1), 7, 1e-5);
}

#[test]
fn every_layer_kind_and_padding() {
    let conv = |filters, k, stride, same| L::Conv {
        filters,
        k,
        stride,
        same,
    };
    let cases: Vec<(Shape, Vec<L>)> = vec![
        // Stride-2 valid conv, batchnorm, same maxpool on odd sizes, global average pool.
        (
            Shape { h: 15, w: 13, c: 3 },
            vec![
                conv(17, 3, 2, false),
                L::Bn { eps: 1e-3 },
                L::Relu,
                L::MaxPool {
                    size: 3,
                    stride: 2,
                    same: true,
                },
                conv(33, 5, 1, true),
                L::Bn { eps: 1e-5 },
                L::Gap,
                L::Dense { units: 7 },
            ],
        ),
        // Even kernel with same padding (padding after > before), stride 2 same.
        (
            Shape { h: 9, w: 11, c: 2 },
            vec![
                conv(16, 2, 1, true),
                L::Relu,
                conv(8, 4, 2, true),
                L::Dropout,
                L::Flatten,
                L::Dense { units: 20 },
                L::Relu,
                L::Dense { units: 3 },
            ],
        ),
        // 1×1 convs, a kernel as large as the input, a 1×1 image.
        (
            Shape { h: 5, w: 5, c: 4 },
            vec![
                conv(48, 1, 1, true),
                conv(5, 5, 1, false),
                conv(3, 3, 1, true),
                L::Flatten,
                L::Dense { units: 2 },
            ],
        ),
        (
            Shape { h: 1, w: 1, c: 1 },
            vec![conv(1, 3, 2, true), L::Flatten, L::Dense { units: 1 }],
        ),
    ];
    for (i, (input, layers)) in cases.into_iter().enumerate() {
        let tm = TestModel::random(input, layers, i as u64);
        run_all(&tm, i as u64, 1e-5);
    }
}

#[test]
fn random_architectures_match_reference() {
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let (input, layers) = random_architecture(&mut rng);
        let tm = TestModel::random(input, layers, seed);
        run_all(&tm, seed, 1e-5);
    }
}

#[test]
fn misaligned_buffer_gives_identical_results() {
    let tm = model1(3);
    let bytes = tm.to_bytes();
    // Copy the file to an odd address: its f32 data is then certainly unaligned.
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    let file = &shifted[1..];
    assert_eq!(file.as_ptr() as usize % 2, 1 - bytes.as_ptr() as usize % 2);
    let a = Model::from_bytes(&bytes).unwrap();
    let b = Model::from_bytes(file).unwrap();
    let image = Rng::new(5).bytes(tm.input_len());
    for backend in BACKENDS {
        let (a, b) = (
            a.clone().with_backend(backend),
            b.clone().with_backend(backend),
        );
        let mut scratch = vec![0f32; a.scratch_len()];
        let (mut pa, mut pb) = ([0f32; 10], [0f32; 10]);
        let ta = a.classify(&image, &mut scratch, &mut pa).unwrap();
        let tb = b.classify(&image, &mut scratch, &mut pb).unwrap();
        assert_eq!(ta, tb);
        assert_eq!(pa, pb, "bit-identical probabilities");
    }
}
