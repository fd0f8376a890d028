//! `Model::classify` against the naive `f64` reference of tests/common, on
//! hand-picked and random architectures, with both backends.

mod common;

use common::{model1, random_architecture, random_residual_architecture, Rng, Shape, TestModel, L};
use infer::{Backend, Error, Model};

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

/// Checks every backend, with and without Winograd, against the reference,
/// and against each other.
fn run_all(tm: &TestModel, seed: u64, tol: f64) {
    let bytes = tm.to_bytes();
    let model = Model::from_bytes(&bytes).unwrap();
    let mut rng = Rng::new(seed);
    for _ in 0..2 {
        let image = rng.bytes(tm.input_len());
        let results: Vec<Vec<f32>> = BACKENDS
            .iter()
            .flat_map(|&b| [(b, false), (b, true)])
            .map(|(b, winograd)| {
                let m = model.clone().with_backend(b).with_winograd(winograd);
                check(tm, &m, &image, tol, &format!("{b:?}, Winograd {winograd}"))
            })
            .collect();
        for r in &results[1..] {
            for (a, p) in results[0].iter().zip(r) {
                assert!((a - p).abs() <= 1e-5, "backends disagree: {a} vs {p}");
            }
        }
    }
}

/// Winograd workspace that switching it on adds to the scratch: zero when no
/// layer runs by Winograd (then `run_all`'s Winograd half tests nothing new).
fn winograd_workspace(tm: &TestModel) -> usize {
    let bytes = tm.to_bytes();
    let model = Model::from_bytes(&bytes).unwrap();
    model.clone().with_winograd(true).scratch_len() - model.scratch_len()
}

#[test]
fn model1_matches_reference() {
    let tm = model1(1);
    // conv2–conv4 (32×32 and 16×16 outputs, 32 or 64 inputs) run by Winograd.
    assert!(winograd_workspace(&tm) > 0);
    run_all(&tm, 7, 1e-5);
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
                L::Gelu,
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

/// `models/fast.json`'s shape (a ResNet-9-like net: conv/batchnorm/relu blocks,
/// two residual adds), scaled down to a 16×16 input and fewer filters.
fn small_fast() -> (Shape, Vec<L>) {
    let block = |filters| {
        [
            L::Conv {
                filters,
                k: 3,
                stride: 1,
                same: true,
            },
            L::Bn { eps: 1e-3 },
            L::Relu,
        ]
    };
    let pool = L::MaxPool {
        size: 2,
        stride: 2,
        same: false,
    };
    let mut layers = vec![];
    layers.extend(block(8));
    layers.extend(block(16));
    layers.push(pool.clone()); // 6: "pool1"
    layers.extend(block(16));
    layers.extend(block(16));
    layers.push(L::Add { from: 6 });
    layers.extend(block(32));
    layers.push(pool.clone());
    layers.extend(block(48));
    layers.push(pool); // 21: "pool3"
    layers.extend(block(48));
    layers.extend(block(48));
    layers.push(L::Add { from: 21 });
    layers.push(L::Gap);
    layers.push(L::Dense { units: 10 });
    (Shape { h: 16, w: 16, c: 3 }, layers)
}

#[test]
fn fast_shaped_residual_net_matches_reference() {
    let (input, layers) = small_fast();
    let tm = TestModel::random(input, layers, 4);
    // The convolutions at 16×16 after the first run by Winograd.
    assert!(winograd_workspace(&tm) > 0);
    run_all(&tm, 4, 1e-5);
}

/// Adds whose outputs feed the next add (a ResNet chain): the stash an add
/// reads is given back as the add's own output is stashed, in its place. With
/// one or two convs between the adds the activation is at either end of the
/// working region then.
#[test]
fn chained_residual_blocks() {
    let conv = || L::Conv {
        filters: 4,
        k: 3,
        stride: 1,
        same: true,
    };
    let layers = vec![
        conv(),
        conv(),
        L::Add { from: 0 },
        conv(),
        conv(),
        L::Add { from: 2 },
        conv(),
        L::Add { from: 5 },
        L::Relu,
        conv(),
        L::Bn { eps: 1e-3 },
        conv(),
        L::Add { from: 7 },
        L::Add { from: 5 },
        L::Gap,
        L::Dense { units: 5 },
    ];
    let tm = TestModel::random(Shape { h: 6, w: 5, c: 4 }, layers, 8);
    run_all(&tm, 8, 1e-5);
}

#[test]
fn random_residual_architectures_match_reference() {
    for seed in 0..300 {
        let mut rng = Rng::new(1000 + seed);
        let (input, layers) = random_residual_architecture(&mut rng);
        let tm = TestModel::random(input, layers, seed);
        run_all(&tm, seed, 1e-5);
    }
}

/// A residual net small enough to check by hand, with a scratch of exactly
/// `scratch_len` values (one less is refused).
#[test]
fn add_by_hand() {
    // x (1×1×2) → dense1 → relu → dense2 → add dense1 (its pre-relu output).
    let mut tm = TestModel::random(
        Shape { h: 1, w: 1, c: 2 },
        vec![
            L::Dense { units: 2 },
            L::Relu,
            L::Dense { units: 2 },
            L::Add { from: 0 },
        ],
        0,
    );
    let set = |tm: &mut TestModel, name: &str, values: &[f32]| {
        let t = tm.tensors.iter_mut().find(|t| t.0 == name).unwrap();
        t.2 = values.to_vec();
    };
    // Weights are [in, units]: w[i][o].
    set(&mut tm, "dense1.weight", &[1.0, 2.0, 3.0, -4.0]);
    set(&mut tm, "dense1.bias", &[0.5, -1.5]);
    set(&mut tm, "dense2.weight", &[1.0, 0.0, 0.0, 1.0]);
    set(&mut tm, "dense2.bias", &[0.0, 1.0]);
    assert!(tm.arch_json().contains(r#"{"type":"add","from":"dense1"}"#));
    let bytes = tm.to_bytes();
    let model = Model::from_bytes(&bytes).unwrap();
    // x = (1, 0.2); dense1 = (0.5 + 1 + 0.6, −1.5 + 2 − 0.8) = (2.1, −0.3);
    // relu = (2.1, 0); dense2 = (2.1, 1); add = (2.1 + 2.1, 1 − 0.3) = (4.2, 0.7).
    let image = [255u8, 51];
    // Scratch: dense2's input and output (2 + 2) beside dense1's stash (2).
    assert_eq!(model.scratch_len(), 6);
    let mut scratch = [f32::NAN; 6];
    let mut probs = [0f32; 2];
    let top = model.classify(&image, &mut scratch, &mut probs).unwrap();
    let p1 = 1.0 / (1.0 + (4.2f64 - 0.7).exp());
    assert_eq!(top.class, 0);
    assert!(
        (f64::from(probs[1]) - p1).abs() < 1e-6,
        "{probs:?}, want {p1}"
    );
    assert!((f64::from(probs[0]) - (1.0 - p1)).abs() < 1e-6);
    assert_eq!(
        model.classify(&image, &mut scratch[..5], &mut probs),
        Err(Error::ScratchTooSmall {
            needed: 6,
            actual: 5
        })
    );
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

/// A `Model` with a capacity that just fits (here 31 layers) gives the
/// default capacity's answers bit for bit and is smaller; one layer too few
/// is `TooManyLayers`.
#[test]
fn capacity_just_fitting_the_model() {
    let (input, layers) = small_fast();
    let tm = TestModel::random(input, layers, 31);
    let bytes = tm.to_bytes();
    let wide = Model::from_bytes(&bytes).unwrap();
    assert_eq!(wide.num_layers(), 31, "small_fast's layers");
    let snug = Model::<'_, 31>::load(&bytes).unwrap();
    assert!(std::mem::size_of_val(&snug) * 2 < std::mem::size_of_val(&wide));
    assert_eq!(
        Model::<'_, 30>::load(&bytes).err(),
        Some(infer::Error::TooManyLayers)
    );
    let mut rng = Rng::new(32);
    for _ in 0..5 {
        let image = rng.bytes(tm.input_len());
        let mut out = [
            vec![0f32; wide.scratch_len()],
            vec![0f32; snug.scratch_len()],
        ];
        let (mut pa, mut pb) = (vec![0f32; 10], vec![0f32; 10]);
        let [sa, sb] = &mut out;
        let a = wide.classify(&image, sa, &mut pa).unwrap();
        let b = snug.classify(&image, sb, &mut pb).unwrap();
        assert_eq!((a, &pa), (b, &pb));
    }
}
