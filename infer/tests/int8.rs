//! Int8 models: `Model::classify` against the plain integer reference of
//! tests/common/int8.rs (i64 accumulators, every tap visited), on hand-picked
//! and random architectures, with every backend; and the int8-specific checks
//! of model loading.
//!
//! The comparison is on the probabilities to 1e-6: the logits are `u8` levels,
//! so one level's difference moves a probability by far more than that, and
//! agreement means the integer outputs are identical. The backends must agree
//! bit for bit.

mod common;

use common::int8::{without_batchnorm, Int8Model};
use common::{
    model1, random_architecture, random_residual_architecture, Entry, Rng, Shape, TestModel, L,
};
use infer::{Backend, Error, Model, Param, Precision, TensorProblem};

const BACKENDS: [Backend; 4] = [
    Backend::Auto,
    Backend::Avx512,
    Backend::Avx2,
    Backend::Portable,
];

fn calibration(tm: &TestModel, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..4).map(|_| rng.bytes(tm.input_len())).collect()
}

/// Every backend against the reference, and bit-identical to each other.
fn run_all(q: &Int8Model, seed: u64) {
    let bytes = q.to_bytes();
    let model = Model::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}\n{}", q.f32.arch_json()));
    assert_eq!(model.precision(), Precision::Int8);
    let mut rng = Rng::new(seed);
    for _ in 0..3 {
        let image = rng.bytes(q.f32.input_len());
        let want = q.probabilities(&image);
        let mut first: Option<Vec<f32>> = None;
        for b in BACKENDS {
            let m = model.clone().with_backend(b);
            let mut scratch = vec![f32::NAN; m.scratch_len()];
            let mut probs = vec![0f32; m.num_classes()];
            let top = m.classify(&image, &mut scratch, &mut probs).unwrap();
            for (i, (&g, &w)) in probs.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(g) - w).abs() <= 1e-6,
                    "{b:?}: class {i}: got {g}, reference {w}\n{}",
                    q.f32.arch_json()
                );
            }
            assert_eq!(top.probability, probs[top.class]);
            match &first {
                None => first = Some(probs),
                Some(f) => assert_eq!(f, &probs, "{b:?} differs from Auto"),
            }
        }
    }
}

fn quantized(input: Shape, layers: Vec<L>, seed: u64, fuse: bool) -> Int8Model {
    let tm = TestModel::random(input, without_batchnorm(layers), seed);
    let calib = calibration(&tm, &mut Rng::new(seed ^ 0x5eed));
    Int8Model::quantize(&tm, &calib, fuse)
}

#[test]
fn model1_matches_the_integer_reference() {
    let tm = model1(3);
    let calib = calibration(&tm, &mut Rng::new(4));
    run_all(&Int8Model::quantize(&tm, &calib, true), 5);
}

#[test]
fn random_architectures_match_the_integer_reference() {
    let mut rng = Rng::new(21);
    for case in 0..40 {
        let (input, layers) = random_architecture(&mut rng);
        // Half the cases keep pre-relu ranges: zero points above 0 feed the
        // next layer (the portable path for every backend).
        run_all(&quantized(input, layers, case, case % 2 == 0), case);
    }
}

#[test]
fn random_residual_architectures_match_the_integer_reference() {
    let mut rng = Rng::new(22);
    for case in 0..40 {
        let (input, layers) = random_residual_architecture(&mut rng);
        run_all(&quantized(input, layers, case + 100, case % 2 == 0), case);
    }
}

/// Wide layers with channel counts that are not multiples of the kernels'
/// blocks (16, 32) or of the weight groups (4), strides and both paddings.
#[test]
fn odd_channel_counts_and_strides() {
    for (seed, (ci, filters, k, stride, same)) in [
        (3, 37, 3, 1, true),
        (5, 33, 3, 2, true),
        (8, 64, 1, 1, false),
        (13, 17, 5, 2, false),
        (64, 70, 3, 1, true),
    ]
    .into_iter()
    .enumerate()
    {
        let layers = vec![
            L::Conv {
                filters,
                k,
                stride,
                same,
            },
            L::Relu,
            L::Conv {
                filters: 40,
                k: 3,
                stride: 1,
                same: true,
            },
            L::Relu,
            L::Gap,
            L::Dense { units: 10 },
        ];
        let input = Shape { h: 11, w: 9, c: ci };
        run_all(&quantized(input, layers, seed as u64, true), seed as u64);
    }
}

#[test]
fn scratch_is_a_quarter_of_the_f32_figure() {
    let tm = model1(3);
    let calib = calibration(&tm, &mut Rng::new(4));
    let q = Int8Model::quantize(&tm, &calib, true);
    let (f32_bytes, int8_bytes) = (tm.to_bytes(), q.to_bytes());
    let f = Model::from_bytes(&f32_bytes).unwrap();
    let i = Model::from_bytes(&int8_bytes).unwrap();
    assert_eq!(i.scratch_len(), f.scratch_len().div_ceil(4));
    assert!(i.scratch_bytes() * 3 <= f.scratch_bytes());
    assert!(int8_bytes.len() * 10 <= f32_bytes.len() * 3);
}

/// A small int8 model whose conv has 3 input channels (a padded weight group).
fn small() -> Int8Model {
    quantized(
        Shape { h: 6, w: 6, c: 3 },
        vec![
            L::Conv {
                filters: 8,
                k: 3,
                stride: 1,
                same: true,
            },
            L::Relu,
            L::MaxPool {
                size: 2,
                stride: 2,
                same: false,
            },
            L::Flatten,
            L::Dense { units: 4 },
        ],
        9,
        true,
    )
}

fn load_err(q: &Int8Model, edit: impl FnOnce(&mut common::SafeTensors)) -> Error {
    let mut st = q.safetensors();
    edit(&mut st);
    Model::from_bytes(&st.to_bytes()).unwrap_err()
}

fn entry<'a>(st: &'a mut common::SafeTensors, name: &str) -> &'a mut Entry {
    st.tensors.iter_mut().find(|t| t.name == name).unwrap()
}

fn set_meta(st: &mut common::SafeTensors, key: &str, value: String) {
    st.metadata.iter_mut().find(|m| m.0 == key).unwrap().1 = value;
}

#[test]
fn malformed_int8_files_are_refused() {
    let q = small();
    Model::from_bytes(&q.to_bytes()).unwrap();
    let tensor = |layer, param, problem| Error::Tensor {
        layer,
        param,
        problem,
    };
    // An f32 weight where I8 belongs.
    let e = load_err(&q, |st| entry(st, "conv1.weight").dtype = "F32".into());
    assert_eq!(e, tensor(0, Param::Weight, TensorProblem::Dtype));
    // The f32 layout's shape.
    let e = load_err(&q, |st| entry(st, "conv1.weight").shape = vec![3, 3, 3, 8]);
    assert_eq!(e, tensor(0, Param::Weight, TensorProblem::Shape));
    // A missing weight scale.
    let e = load_err(&q, |st| {
        st.tensors.retain(|t| t.name != "dense1.weight_scale")
    });
    assert_eq!(e, tensor(4, Param::WeightScale, TensorProblem::Missing));
    // A zero, a negative and a NaN weight scale.
    for bad in [0f32, -1.0, f32::NAN, 1e-40] {
        let e = load_err(&q, |st| {
            entry(st, "conv1.weight_scale").data[..4].copy_from_slice(&bad.to_le_bytes())
        });
        assert_eq!(
            e,
            tensor(0, Param::WeightScale, TensorProblem::Values),
            "{bad}"
        );
    }
    // A weight in the padding of the last group (input channel 3 of 3).
    let e = load_err(&q, |st| entry(st, "conv1.weight").data[3] = 1);
    assert_eq!(e, tensor(0, Param::Weight, TensorProblem::Values));
    // A bias that could overflow the accumulator.
    let e = load_err(&q, |st| {
        entry(st, "dense1.bias").data[..4].copy_from_slice(&(1i32 << 30).to_le_bytes())
    });
    assert_eq!(e, tensor(4, Param::Bias, TensorProblem::Values));
    // Quantization metadata: too few pairs, a wrong input pair, a pooling
    // that changes the quantization, a zero point above 255, an unknown
    // scheme, a bad scale.
    let acts = |q: &Int8Model| q.acts.clone();
    let json = |pairs: &[(String, String)], scheme: &str| {
        let p: Vec<String> = pairs.iter().map(|(s, z)| format!("[{s},{z}]")).collect();
        format!(r#"{{"scheme":"{scheme}","activations":[{}]}}"#, p.join(","))
    };
    let pairs: Vec<(String, String)> = acts(&q)
        .iter()
        .map(|a| (a.scale.to_string(), a.zero_point.to_string()))
        .collect();
    type Pairs = Vec<(String, String)>;
    let with = |f: &dyn Fn(&mut Pairs), scheme: &str| {
        let mut p = pairs.clone();
        f(&mut p);
        load_err(&q, |st| set_meta(st, "quantization", json(&p, scheme)))
    };
    assert!(matches!(
        with(
            &|p| {
                p.pop();
            },
            "int8/1"
        ),
        Error::Metadata(_)
    ));
    assert!(matches!(
        with(&|p| p[0].1 = "1".into(), "int8/1"),
        Error::Metadata(_)
    ));
    assert!(matches!(
        with(&|p| p[3].0 = "0.5".into(), "int8/1"),
        Error::Layer { index: 2, .. }
    ));
    assert!(matches!(
        with(&|p| p[1].1 = "256".into(), "int8/1"),
        Error::Quantization { .. }
    ));
    assert!(matches!(
        with(&|_| {}, "int8/2"),
        Error::Quantization { .. }
    ));
    assert!(matches!(
        with(&|p| p[2].0 = "0".into(), "int8/1"),
        Error::Quantization { .. }
    ));
    assert!(matches!(
        with(&|p| p[2].0 = "-1".into(), "int8/1"),
        Error::Quantization { .. }
    ));
    // A batchnorm in an int8 architecture.
    let mut tm = TestModel::random(
        Shape { h: 4, w: 4, c: 1 },
        vec![L::Bn { eps: 1e-3 }, L::Flatten, L::Dense { units: 2 }],
        1,
    );
    tm.layers[0] = L::Bn { eps: 1e-3 };
    let mut st = small().safetensors();
    set_meta(&mut st, "architecture", tm.arch_json());
    assert!(matches!(
        Model::from_bytes(&st.to_bytes()).unwrap_err(),
        Error::Layer { index: 0, .. }
    ));
}

/// Random byte flips in an int8 file: an error or a model, never a panic, and
/// a model that loads still classifies.
#[test]
fn corrupted_int8_files_never_panic() {
    let bytes = small().to_bytes();
    let mut rng = Rng::new(77);
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..rng.range(1, 4) {
            let i = rng.range(0, b.len() - 1);
            b[i] = rng.next_u64() as u8;
        }
        if let Ok(m) = Model::from_bytes(&b) {
            let mut scratch = vec![0f32; m.scratch_len()];
            let mut probs = vec![0f32; m.num_classes()];
            let image = vec![7u8; m.input_len()];
            m.classify(&image, &mut scratch, &mut probs).unwrap();
        }
    }
}
