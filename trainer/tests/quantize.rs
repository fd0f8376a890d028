//! Post-training quantization (`trainer::model::quantize`): batch-norm
//! folding is exact, refusals name the layer, the int8 file follows
//! docs/FORMAT.md, and the int8 network (run by the plain integer reference)
//! agrees with the f32 one on real CIFAR-10 images.

use model_format::quant::{self as q, ActQuant};
use model_format::Precision;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use trainer::data::{cifar10, Split};
use trainer::layers::Mode;
use trainer::model::loss::argmax;
use trainer::model::quantize::{
    self, calibrate, calibration_indices, fold_batchnorms, Calibration, Int8Reference,
    QuantizeError,
};
use trainer::model::spec::ModelSpec;
use trainer::Network;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The CIFAR-10 folder (`$CIFAR10_DIR`, `../shared/cifar10/…`,
/// `data/cifar-10-batches-bin`), or `None` with a `SKIPPED` note.
fn cifar10_dir(test: &str) -> Option<PathBuf> {
    let candidates = std::env::var_os("CIFAR10_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            root().join("../shared/cifar10/cifar-10-batches-bin"),
            root().join("data/cifar-10-batches-bin"),
        ]);
    for dir in candidates {
        if cifar10::is_present(&dir) {
            return Some(dir);
        }
    }
    eprintln!("SKIPPED {test}: CIFAR-10 not found (set CIFAR10_DIR or put it in ../shared/cifar10/cifar-10-batches-bin)");
    None
}

fn shipped(name: &str) -> Network {
    Network::load(&root().join("models").join(name)).expect("shipped model loads")
}

fn random_images(n: usize, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * len).map(|_| rng.random()).collect()
}

/// Logits of `n` images, evaluation mode.
fn logits(net: &mut Network, images: &[u8], n: usize) -> Vec<f32> {
    net.set_input_u8(images, n);
    net.forward(Mode::Eval).data.clone()
}

/// The folded network's evaluation-mode logits are the original's within 1e-4.
fn assert_same_logits(net: &mut Network, folded: &mut Network, images: &[u8], n: usize) {
    let (a, b) = (logits(net, images, n), logits(folded, images, n));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-4, "folded logits differ by {worst}");
}

/// A network of `spec` with random weights and batch-norm statistics far from
/// the identity (so that folding has something to do).
fn random_net(spec: &str, seed: u64) -> Network {
    let spec = ModelSpec::from_json_str(spec).unwrap();
    let mut net = Network::new(&spec, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<Vec<f32>> = net
        .named_tensors()
        .into_iter()
        .map(|(name, _, d)| {
            d.iter()
                .map(|_| {
                    let u: f32 = rng.random_range(-1.0..1.0);
                    if name.ends_with("moving_variance") {
                        0.2 + u * u * 3.0
                    } else if name.ends_with("gamma") {
                        0.5 + u.abs()
                    } else if name.ends_with("weight") {
                        u * 0.4
                    } else {
                        u * 0.5
                    }
                })
                .collect()
        })
        .collect();
    net.restore(&values);
    net.class_names = (0..net.num_classes()).map(|i| format!("c{i}")).collect();
    net
}

const SMALL: &str = r#"{"name":"small","input":{"height":8,"width":8,"channels":3},"layers":[
    {"type":"conv2d","filters":6,"kernel":3},{"type":"batchnorm"},{"type":"relu","name":"r1"},
    {"type":"conv2d","filters":6,"kernel":3,"stride":2,"padding":"valid"},{"type":"batchnorm","name":"skip"},
    {"type":"relu"},{"type":"conv2d","filters":6,"kernel":1},{"type":"add","from":"skip"},
    {"type":"maxpool2d","padding":"same"},{"type":"flatten"},{"type":"dropout","rate":0.3},
    {"type":"dense","units":9},{"type":"batchnorm"},{"type":"relu"},{"type":"dense","units":5}]}"#;

/// Folding batch norms (after convolutions and a dense layer, one read by an
/// add) keeps the evaluation-mode logits.
#[test]
fn folding_keeps_the_logits() {
    let mut net = random_net(SMALL, 7);
    let mut folded = fold_batchnorms(&net).unwrap();
    assert!(folded.spec().layers.iter().all(|l| l.kind() != "batchnorm"));
    // The add that read batchnorm "skip" now reads its convolution.
    assert!(
        folded.spec().to_json().contains(r#""from":"conv2""#),
        "{}",
        folded.spec().to_json()
    );
    let images = random_images(16, 8 * 8 * 3, 1);
    assert_same_logits(&mut net, &mut folded, &images, 16);
}

/// airbench's blocks, conv → max-pool → batch norm → relu, with an add
/// reading one such batch norm by name: the batch norms fold through the
/// pools, the add reads the pool (named after the batch norm), and the
/// logits stay.
const THROUGH_POOL: &str = r#"{"name":"pooled","input":{"height":12,"width":12,"channels":3},"layers":[
    {"type":"conv2d","filters":8,"kernel":3},{"type":"maxpool2d"},{"type":"batchnorm","name":"bn_a"},
    {"type":"relu"},{"type":"conv2d","filters":8,"kernel":3},{"type":"batchnorm"},{"type":"relu"},
    {"type":"add","from":"bn_a"},
    {"type":"conv2d","filters":6,"kernel":3},{"type":"maxpool2d","name":"p2"},{"type":"batchnorm"},
    {"type":"relu"},{"type":"flatten"},{"type":"dense","units":4}]}"#;

#[test]
fn folding_through_a_max_pool_keeps_the_logits() {
    let mut net = random_net(THROUGH_POOL, 9);
    let mut folded = fold_batchnorms(&net).unwrap();
    let json = folded.spec().to_json();
    assert!(
        folded.spec().layers.iter().all(|l| l.kind() != "batchnorm"),
        "{json}"
    );
    assert!(
        json.contains(r#""type":"maxpool2d","name":"bn_a""#),
        "{json}"
    );
    assert!(json.contains(r#""from":"bn_a""#), "{json}");
    // The other block's pool keeps its name; an unread pool gets none.
    assert!(json.contains(r#""type":"maxpool2d","name":"p2""#), "{json}");
    let unread = random_net(
        r#"{"name":"u","input":{"height":6,"width":6,"channels":1},"layers":[
        {"type":"conv2d","filters":2,"kernel":3},{"type":"maxpool2d"},{"type":"batchnorm"},
        {"type":"flatten"},{"type":"dense","units":2}]}"#,
        3,
    );
    let unread = fold_batchnorms(&unread).unwrap().spec().to_json();
    assert!(unread.contains(r#"{"type":"maxpool2d","size""#), "{unread}");
    let images = random_images(16, 12 * 12 * 3, 2);
    assert_same_logits(&mut net, &mut folded, &images, 16);
    // And it quantizes. Folded: conv, pool bn_a, relu, conv, relu, add, conv,
    // pool p2, relu, flatten, dense. The last block's relu gives its
    // convolution (layer 6, activation 7) zero point 0; the first block's
    // pool is read by the add too, so its convolution keeps its own range.
    let int8 = quantize::quantize(&net, &images, Calibration::MinMax).unwrap();
    let reference = Int8Reference::from_bytes(&int8, "pooled").unwrap();
    let quant = header(&int8)["__metadata__"]["quantization"]
        .as_str()
        .unwrap()
        .to_string();
    let acts: serde_json::Value = serde_json::from_str(&quant).unwrap();
    assert_eq!(acts["activations"][7][1], 0, "{quant}");
    assert_ne!(acts["activations"][1][1], 0, "{quant}");
    let probs = reference.probabilities(&images[..12 * 12 * 3]);
    assert_eq!(probs.len(), 4);
}

/// A negative batch-norm scale does not commute with the max-pool before it.
#[test]
fn a_negative_scale_is_not_folded_through_a_pool() {
    let mut net = random_net(THROUGH_POOL, 9);
    let names: Vec<String> = net.named_tensors().into_iter().map(|(n, _, _)| n).collect();
    let mut values = net.snapshot();
    let gamma = names.iter().position(|n| n == "bn_a.gamma").unwrap();
    values[gamma][3] = -0.5;
    net.restore(&values);
    let e = fold_batchnorms(&net).map(|_| ()).unwrap_err();
    assert!(
        matches!(&e, QuantizeError::NegativeScaleThroughPool { index: 2, name, channel: 3, .. } if name == "bn_a"),
        "{e:?}"
    );
    assert!(e.to_string().contains("channel 3"), "{e}");
}

/// The shipped residual network with batch norms: folded logits within 1e-4.
#[test]
fn folding_fast_is_exact() {
    let mut net = shipped("fast.safetensors");
    let mut folded = fold_batchnorms(&net).unwrap();
    assert_eq!(folded.spec().layers.len(), net.spec().layers.len() - 8);
    let n = 8;
    let images = random_images(n, 32 * 32 * 3, 2);
    assert_same_logits(&mut net, &mut folded, &images, n);
}

/// `Network::layer_outputs` gives each layer's output, also where a relu is
/// fused into the convolution before it (whose only output is then the
/// post-relu one) and where an add reads a convolution (pre-relu).
#[test]
fn layer_outputs_hold_each_layers_output() {
    let mut net = random_net(
        r#"{"name":"t","input":{"height":5,"width":5,"channels":2},"layers":[
        {"type":"conv2d","filters":3,"kernel":3},{"type":"relu"},
        {"type":"conv2d","name":"c","filters":3,"kernel":3},{"type":"relu"},{"type":"add","from":"c"},
        {"type":"flatten"},{"type":"dense","units":6},{"type":"relu"},{"type":"dense","units":2}]}"#,
        3,
    );
    net.set_input_u8(&random_images(4, 50, 5), 4);
    net.forward(Mode::Eval);
    let outs: Vec<Vec<f32>> = net.layer_outputs().iter().map(|t| t.data.clone()).collect();
    let relu = |v: &[f32]| v.iter().map(|x| x.max(0.0)).collect::<Vec<f32>>();
    assert_eq!(
        outs[0], outs[1],
        "fused: the convolution's output is post-relu"
    );
    assert!(outs[0].iter().all(|&x| x >= 0.0));
    assert!(
        outs[2].iter().any(|&x| x < 0.0),
        "read by the add: pre-relu"
    );
    assert_eq!(outs[3], relu(&outs[2]));
    let sum: Vec<f32> = outs[3].iter().zip(&outs[2]).map(|(a, b)| a + b).collect();
    assert_eq!(outs[4], sum);
    assert_eq!(outs[5], outs[4]);
    assert!(
        outs[6].iter().any(|&x| x < 0.0),
        "dense relus are not fused"
    );
    assert_eq!(outs[7], relu(&outs[6]));
    assert_eq!(outs[8].len(), 8);
}

fn refusal(spec: &str) -> QuantizeError {
    let net = random_net(spec, 1);
    let images = random_images(2, net.input_shape().len(), 3);
    quantize::quantize(&net, &images, Calibration::MinMax).expect_err("refused")
}

#[test]
fn unfoldable_batch_norms_are_refused_by_name() {
    let e = refusal(
        r#"{"name":"t","input":{"height":4,"width":4,"channels":1},"layers":[
        {"type":"conv2d","filters":2,"kernel":3},{"type":"relu"},{"type":"batchnorm","name":"late"},
        {"type":"flatten"},{"type":"dense","units":2}]}"#,
    );
    assert!(
        matches!(&e, QuantizeError::UnfoldableBatchNorm { index: 2, name, previous: "relu" } if name == "late"),
        "{e:?}"
    );
    assert!(e.to_string().contains("\"late\""), "{e}");
    let e = refusal(
        r#"{"name":"t","input":{"height":4,"width":4,"channels":1},"layers":[
        {"type":"batchnorm"},{"type":"flatten"},{"type":"dense","units":2}]}"#,
    );
    assert!(
        matches!(
            &e,
            QuantizeError::UnfoldableBatchNorm {
                index: 0,
                previous: "nothing",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn an_add_reading_a_folded_convolution_is_refused() {
    let e = refusal(
        r#"{"name":"t","input":{"height":4,"width":4,"channels":2},"layers":[
        {"type":"conv2d","name":"c","filters":2,"kernel":3},{"type":"batchnorm"},{"type":"relu"},
        {"type":"add","from":"c"},{"type":"flatten"},{"type":"dense","units":2}]}"#,
    );
    assert!(
        matches!(&e, QuantizeError::ReadsFoldedLayer { index: 3, from, batchnorm } if from == "c" && batchnorm == "bn1"),
        "{e:?}"
    );
    assert!(e.to_string().contains("\"c\""), "{e}");
}

#[test]
fn calibration_needs_whole_images() {
    let net = random_net(SMALL, 1);
    let e = quantize::quantize(&net, &[], Calibration::MinMax).unwrap_err();
    assert!(matches!(e, QuantizeError::NoCalibrationImages), "{e:?}");
    let e = quantize::quantize(&net, &[0; 100], Calibration::MinMax).unwrap_err();
    assert!(
        matches!(e, QuantizeError::CalibrationSize { bytes: 100, .. }),
        "{e:?}"
    );
}

/// The header of a safetensors file, parsed.
fn header(bytes: &[u8]) -> serde_json::Value {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

/// The file is what FORMAT.md says: metadata, activation pairs (repeats
/// where the format wants them), tensor dtypes and shapes, weights within
/// half a step of the folded ones, biases in input × weight scale units;
/// the same bytes every time.
#[test]
fn the_int8_file_follows_the_format() {
    let net = random_net(SMALL, 5);
    let images = random_images(40, 8 * 8 * 3, 4);
    let bytes = quantize::quantize(&net, &images, Calibration::DEFAULT).unwrap();
    assert_eq!(
        bytes,
        quantize::quantize(&net, &images, Calibration::DEFAULT).unwrap()
    );
    assert_eq!(
        quantize::precision_of(&bytes, "t").unwrap(),
        Precision::Int8
    );
    let f32_bytes = net
        .to_safetensors_bytes(&["a", "b", "c", "d", "e"])
        .unwrap();
    assert_eq!(
        quantize::precision_of(&f32_bytes, "t").unwrap(),
        Precision::F32
    );

    let h = header(&bytes);
    let meta = &h["__metadata__"];
    assert_eq!(meta["format"], model_format::FORMAT);
    assert_eq!(meta["class_names"], r#"["c0","c1","c2","c3","c4"]"#);
    let mut folded = fold_batchnorms(&net).unwrap();
    assert_eq!(meta["architecture"], folded.spec().to_json());
    let quant_text = meta["quantization"].as_str().unwrap();
    assert!(
        quant_text.starts_with(r#"{"scheme":"int8/1","activations":[[0.003921569,0],"#),
        "{quant_text}"
    );
    let reference = Int8Reference::from_bytes(&bytes, "t").unwrap();
    let acts = reference.activations().to_vec();
    let spec = folded.spec().clone();
    assert_eq!(acts.len(), spec.layers.len() + 1);
    assert_eq!(acts[0], ActQuant::INPUT);
    assert_eq!(
        acts,
        calibrate(&mut folded, &images, Calibration::DEFAULT).unwrap()
    );
    let kinds: Vec<&str> = spec.layers.iter().map(|l| l.kind()).collect();
    // conv1 relu(fused) conv2(read by the add: pre-relu) relu conv3 add pool flatten dropout dense1 relu dense2
    assert_eq!(
        kinds,
        [
            "conv2d",
            "relu",
            "conv2d",
            "relu",
            "conv2d",
            "add",
            "maxpool2d",
            "flatten",
            "dropout",
            "dense",
            "relu",
            "dense"
        ]
    );
    for (i, k) in kinds.iter().enumerate() {
        if ["relu", "maxpool2d", "flatten", "dropout"].contains(k) {
            assert_eq!(acts[i + 1], acts[i], "layer {i} repeats its input's pair");
        }
    }
    // Fused relus: post-relu ranges (zero point 0); conv2 read by the add: signed.
    assert_eq!(acts[1].zero_point, 0);
    assert_eq!(acts[10].zero_point, 0);
    assert!(acts[3].zero_point > 0, "{:?}", acts[3]);

    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32_tensors: std::collections::HashMap<String, Vec<f32>> = folded
        .named_tensors()
        .into_iter()
        .map(|(n, _, d)| (n, d.to_vec()))
        .collect();
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    assert_eq!(
        names,
        ["conv1", "conv2", "conv3", "dense1", "dense2"]
            .iter()
            .flat_map(|l| ["bias", "weight", "weight_scale"].map(|s| format!("{l}.{s}")))
            .collect::<Vec<_>>()
    );
    // conv2: 3×3, 6 → 6 channels, input activation 2 (after conv1's relu).
    let w = file.tensor("conv2.weight").unwrap();
    assert_eq!(
        (w.dtype(), w.shape()),
        (safetensors::Dtype::I8, &[3, 3, 2, 6, 4][..])
    );
    let b = file.tensor("conv2.bias").unwrap();
    assert_eq!((b.dtype(), b.shape()), (safetensors::Dtype::I32, &[6][..]));
    let s = file.tensor("conv2.weight_scale").unwrap();
    assert_eq!((s.dtype(), s.shape()), (safetensors::Dtype::F32, &[6][..]));
    let d = file.tensor("dense1.weight").unwrap();
    assert_eq!(d.shape(), &[6, 9, 4]); // 2×2×6 = 24 features
    let scales: Vec<f32> = s
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let fw = &f32_tensors["conv2.weight"];
    for t in 0..9 {
        for c in 0..8 {
            for o in 0..6 {
                let qv = w.data()[((t * 2 + c / 4) * 6 + o) * 4 + c % 4] as i8;
                if c >= 6 {
                    assert_eq!(qv, 0, "padding channel");
                    continue;
                }
                let real = fw[(t * 6 + c) * 6 + o];
                assert!((f32::from(qv) * scales[o] - real).abs() <= scales[o] * 0.5001);
            }
        }
    }
    for o in 0..6 {
        let max = (0..54).map(|r| fw[r * 6 + o].abs()).fold(0.0, f32::max);
        assert_eq!(scales[o], q::weight_scale(max));
    }
    let fb = &f32_tensors["conv2.bias"];
    for (o, chunk) in b.data().chunks_exact(4).enumerate() {
        let qb = i32::from_le_bytes(chunk.try_into().unwrap());
        assert_eq!(qb, q::quantize_bias(fb[o], acts[2].scale, scales[o]));
    }
}

/// On random images the small network's int8 logits stay close to the f32 ones.
#[test]
fn the_reference_tracks_the_f32_network() {
    for method in [
        Calibration::MinMax,
        Calibration::Percentile(99.99),
        Calibration::Mse,
    ] {
        reference_tracks(method);
    }
}

fn reference_tracks(method: Calibration) {
    let net = random_net(SMALL, 9);
    let images = random_images(64, 8 * 8 * 3, 8);
    let bytes = quantize::quantize(&net, &images, method).unwrap();
    let reference = Int8Reference::from_bytes(&bytes, "t").unwrap();
    let mut folded = fold_batchnorms(&net).unwrap();
    let f = logits(&mut folded, &images, 64);
    let last = *reference.activations().last().unwrap();
    let spread = f.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut worst = 0.0f32;
    for (i, img) in images.chunks_exact(8 * 8 * 3).enumerate() {
        let got = reference.logits_q(img);
        for (g, want) in got.iter().zip(&f[i * 5..i * 5 + 5]) {
            worst = worst.max((last.dequantize(*g) - want).abs());
        }
    }
    assert!(
        worst < 0.1 * spread,
        "int8 logits off by {worst} (f32 logits up to {spread})"
    );
}

/// Top-1 agreement of int8 with f32 on `n` test images, calibrated on 500
/// training images (as `trainer quantize` does by default).
fn agreement(model: &str, dir: &Path, calibration: Calibration, n: usize) -> f64 {
    let data = cifar10::load(dir).unwrap();
    let net = shipped(model);
    let calib = data
        .train
        .select(&calibration_indices(data.train.len(), 500, 1));
    let bytes = quantize::quantize(&net, &calib.images, calibration).unwrap();
    let reference = Int8Reference::from_bytes(&bytes, model).unwrap();
    let test: Split = data.test.head(n);
    let mut f32_net = shipped(model);
    let want: Vec<usize> = f32_net
        .predict_proba(&test.images, n)
        .chunks_exact(10)
        .map(argmax)
        .collect();
    let got: Vec<usize> = (0..n)
        .into_par_iter()
        .map(|i| argmax(&reference.probabilities(test.image(i))))
        .collect();
    let same = want.iter().zip(&got).filter(|(a, b)| a == b).count();
    same as f64 / n as f64
}

#[test]
fn int8_model1_agrees_with_f32() {
    let Some(dir) = cifar10_dir("int8_model1_agrees_with_f32") else {
        return;
    };
    let a = agreement("model1.safetensors", &dir, Calibration::DEFAULT, 1000);
    eprintln!("model1: int8 top-1 agrees with f32 on {:.1} %", a * 100.0);
    assert!(a >= 0.98, "agreement {a}");
}

#[test]
fn int8_fast_agrees_with_f32() {
    let Some(dir) = cifar10_dir("int8_fast_agrees_with_f32") else {
        return;
    };
    let a = agreement("fast.safetensors", &dir, Calibration::DEFAULT, 500);
    eprintln!("fast: int8 top-1 agrees with f32 on {:.1} %", a * 100.0);
    assert!(a >= 0.98, "agreement {a}");
}

/// Diagnostic: signal-to-quantization-noise ratio of every layer's int8
/// output against the f32 one (`QUANT_MODELS`, default model1).
#[test]
#[ignore]
fn layer_sqnr() {
    let Some(dir) = cifar10_dir("layer_sqnr") else {
        return;
    };
    let data = cifar10::load(&dir).unwrap();
    let (rest, val) = data.train.split_last(5000).unwrap();
    let val = val.head(50);
    let calib = rest.select(&calibration_indices(rest.len(), 500, 1));
    let models = std::env::var("QUANT_MODELS").unwrap_or("model1".into());
    for model in models.split(',').map(|m| format!("{m}.safetensors")) {
        let net = shipped(&model);
        for method in [
            Calibration::MinMax,
            Calibration::Percentile(99.99),
            Calibration::Mse,
        ] {
            let bytes = quantize::quantize(&net, &calib.images, method).unwrap();
            let reference = Int8Reference::from_bytes(&bytes, &model).unwrap();
            let mut folded = fold_batchnorms(&net).unwrap();
            folded.set_input_u8(&val.images, val.len());
            folded.forward(Mode::Eval);
            let f: Vec<Vec<f32>> = folded
                .layer_outputs()
                .iter()
                .map(|t| t.data.clone())
                .collect();
            let layers = f.len();
            let (mut sig, mut noise) = (vec![0f64; layers], vec![0f64; layers]);
            for i in 0..val.len() {
                let outs = reference.forward_all(val.image(i));
                for l in 0..layers {
                    let q = reference.activations()[l + 1];
                    let n = outs[l + 1].len();
                    for (a, &b) in f[l][i * n..(i + 1) * n].iter().zip(&outs[l + 1]) {
                        sig[l] += f64::from(*a).powi(2);
                        noise[l] += f64::from(a - q.dequantize(b)).powi(2);
                    }
                }
            }
            let line: Vec<String> = (0..layers)
                .map(|l| {
                    format!(
                        "{}:{:.1}",
                        reference.spec().layers[l].kind(),
                        10.0 * (sig[l] / noise[l]).log10()
                    )
                })
                .collect();
            eprintln!("{model} {}: {}", method.describe(), line.join(" "));
        }
    }
}

/// An add whose output only a relu reads (a ResNet block's end) is
/// quantized from the relu's range: zero point 0, which the relu repeats, so
/// every convolution after it reads a zero-point-0 input (what infer's SIMD
/// kernels need); one whose output other layers read keeps its own range.
#[test]
fn an_add_followed_by_a_relu_gets_zero_point_0() {
    let spec = r#"{"name":"t","input":{"height":8,"width":8,"channels":3},"layers":[
        {"type":"conv2d","filters":6,"kernel":3},{"type":"relu","name":"stem"},
        {"type":"conv2d","filters":6,"kernel":3},{"type":"add","from":"stem"},
        {"type":"relu","name":"block"},
        {"type":"conv2d","filters":6,"kernel":3},{"type":"add","from":"block","name":"raw"},
        {"type":"conv2d","filters":6,"kernel":1,"name":"side"},{"type":"relu","input":"raw"},
        {"type":"add","from":"side"},{"type":"global_avg_pool"},{"type":"dense","units":3}]}"#;
    let net = random_net(spec, 3);
    let images = random_images(40, 8 * 8 * 3, 5);
    let mut folded = fold_batchnorms(&net).unwrap();
    let acts = quantize::calibrate(&mut folded, &images, Calibration::MinMax).unwrap();
    // acts[i + 1] is layer i's output: the first add (3) and its relu (4).
    assert_eq!(acts[4].zero_point, 0, "{acts:?}");
    assert_eq!(acts[4], acts[5]);
    // The second add (6) is read by a convolution too: its own range, which
    // random weights make negative somewhere.
    assert!(acts[7].zero_point > 0, "{acts:?}");
}
