//! `infer` gives the trainer's answers: for each network, the trainer exports
//! it, `infer` loads the bytes, and both classify the same images; every
//! probability must agree within 1e-4 and the top class must be the same
//! (unless the trainer itself sees a near-tie: top two within 1e-5).
//!
//! Networks: the built-in specs (the residual `fast` included) and a spec exercising batchnorm,
//! global_avg_pool, a stride-2 valid conv, 3×3 convs that the trainer runs by
//! Winograd with partial tiles (same and valid) and a same maxpool on odd sizes, all
//! randomly initialised (batchnorm statistics randomised too, so it is not the
//! identity), plus the shipped `models/model1.safetensors` and
//! `models/fast.safetensors` when present.
//! Images: the first 1,000 CIFAR-10 test images when the data is present
//! (`../shared/cifar10/cifar-10-batches-bin`), else random images.

mod common;

use common::randomise;
use infer::{Backend, Model};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use trainer::model::network::Network;
use trainer::model::spec::ModelSpec;

const TOLERANCE: f32 = 1e-4;
const IMAGES: usize = 1_000;

fn cifar_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cifar10/cifar-10-batches-bin")
}

/// The first 1,000 CIFAR-10 test images, or `None` (with a message) without the data.
fn cifar_images() -> Option<Vec<u8>> {
    match trainer::data::cifar10::load_test(&cifar_dir()) {
        Ok(test) => Some(test.head(IMAGES).images),
        Err(e) => {
            println!(
                "SKIPPED the CIFAR-10 images: no test set at {} ({e}); using random images",
                cifar_dir().display()
            );
            None
        }
    }
}

fn random_images(len: usize, n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len * n).map(|_| rng.random()).collect()
}

/// Compares trainer and infer on `n` images; returns the number of near-ties.
fn compare(what: &str, net: &mut Network, bytes: &[u8], images: &[u8], n: usize) -> usize {
    let classes = net.num_classes();
    let want = net.predict_proba(images, n);
    let model = Model::from_bytes(bytes)
        .unwrap_or_else(|e| panic!("{what}: infer rejects the trainer's file: {e}"));
    assert_eq!(model.num_classes(), classes, "{what}");
    let len = model.input_len();
    let mut scratch = vec![0f32; model.clone().with_winograd(true).scratch_len()];
    let mut probs = vec![0f32; classes];
    let mut ties = 0;
    let mut worst = 0f32;
    // Auto is the best this CPU has (AVX-512 or AVX2 on x86-64); each with
    // and without Winograd.
    let backends = [Backend::Auto, Backend::Avx2, Backend::Portable];
    for (backend, winograd) in backends.into_iter().flat_map(|b| [(b, false), (b, true)]) {
        let model = model.clone().with_backend(backend).with_winograd(winograd);
        for i in 0..n {
            let top = model
                .classify(&images[i * len..(i + 1) * len], &mut scratch, &mut probs)
                .unwrap();
            let row = &want[i * classes..(i + 1) * classes];
            for (c, (&got, &w)) in probs.iter().zip(row).enumerate() {
                let d = (got - w).abs();
                worst = worst.max(d);
                assert!(
                    d <= TOLERANCE,
                    "{what} ({backend:?}, Winograd {winograd}), image {i}, class {c}: \
                     infer {got}, trainer {w}"
                );
            }
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            if top.class != order[0] {
                let near_tie = classes > 1 && row[order[0]] - row[order[1]] <= 1e-5;
                assert!(
                    near_tie,
                    "{what} ({backend:?}, Winograd {winograd}), image {i}: infer says {}, trainer {}",
                    top.class, order[0]
                );
                ties += 1;
            }
        }
    }
    println!("{what}: {n} images × 3 backends, largest probability difference {worst:.2e}, {ties} near-ties");
    ties
}

fn export(net: &Network) -> Vec<u8> {
    let names: Vec<String> = (0..net.num_classes())
        .map(|i| format!("class{i}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    net.to_safetensors_bytes(&names).expect("export")
}

#[test]
fn builtin_specs_randomly_initialised() {
    let cifar = cifar_images();
    let n = if cifar.is_some() { IMAGES } else { 200 };
    let images = cifar.unwrap_or_else(|| random_images(32 * 32 * 3, n, 1));
    for (i, name) in ["model1", "model2", "model3"].into_iter().enumerate() {
        let spec = trainer::train::spec_file::SpecFile::builtin(name)
            .unwrap()
            .model;
        let mut net = Network::new(&spec, 10 + i as u64).unwrap();
        randomise(&mut net, i as u64);
        let bytes = export(&net);
        compare(name, &mut net, &bytes, &images, n);
    }
}

/// `models/fast.json`: the ResNet-9-like net with two residual `add`s, whose
/// skip inputs `infer` keeps in its scratch.
#[test]
fn fast_residual_randomly_initialised() {
    let cifar = cifar_images();
    let n = if cifar.is_some() { IMAGES } else { 200 };
    let images = cifar.unwrap_or_else(|| random_images(32 * 32 * 3, n, 4));
    let spec = trainer::train::spec_file::SpecFile::builtin("fast")
        .unwrap()
        .model;
    let mut net = Network::new(&spec, 14).unwrap();
    randomise(&mut net, 4);
    let bytes = export(&net);
    let model = Model::from_bytes(&bytes).unwrap();
    // conv2's input and output side by side (32·32·32 + 32·32·64); the stashes
    // (pool1: 16·16·64, pool3: 4·4·256) are alive only after it.
    assert_eq!(model.scratch_len(), 98_304);
    compare("fast", &mut net, &bytes, &images, n);
}

/// `models/resnet8.json`: projection shortcuts (a 1×1 stride-2 convolution
/// beside a main path whose first convolution names its `input`), in `f32`;
/// then quantized by the trainer, where `infer` must give the integer
/// reference's answers bit for bit on every backend.
#[test]
fn resnet8_projection_shortcuts_randomly_initialised() {
    let cifar = cifar_images();
    let n = if cifar.is_some() { IMAGES } else { 200 };
    let images = cifar.unwrap_or_else(|| random_images(32 * 32 * 3, n, 8));
    let spec = trainer::train::spec_file::SpecFile::builtin("resnet8")
        .unwrap()
        .model;
    let mut net = Network::new(&spec, 18).unwrap();
    randomise(&mut net, 8);
    let bytes = export(&net);
    compare("resnet8", &mut net, &bytes, &images, n);
    compare_int8("resnet8", &net, &images[..100 * 32 * 32 * 3], 100);
}

/// `models/airbench.json` (conv → max-pool → batch norm blocks, a 2×2 valid
/// whitening convolution, a 3×3 max-pool) in `f32`, and in int8, where its
/// batch norms fold through the max-pools; and its GELU variant
/// (`runs/tune/airbench-gelu.json`), both precisions.
#[test]
fn airbench_f32_and_int8() {
    let cifar = cifar_images();
    let n = if cifar.is_some() { 200 } else { 100 };
    let images = cifar.unwrap_or_else(|| random_images(32 * 32 * 3, n, 12));
    use trainer::train::spec_file::SpecFile;
    let relu = SpecFile::builtin("airbench").unwrap().model;
    let gelu =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runs/tune/airbench-gelu.json");
    let gelu = SpecFile::from_file(&gelu).unwrap().model;
    for (name, spec) in [("airbench", relu), ("airbench-gelu", gelu)] {
        let mut net = Network::new(&spec, 22).unwrap();
        randomise(&mut net, 22);
        let bytes = export(&net);
        compare(name, &mut net, &bytes, &images, n);
        compare_int8(name, &net, &images[..50 * 32 * 32 * 3], 50);
    }
}

/// Quantizes `net` (calibrated on the `n` images) and checks that `infer`
/// gives the trainer's integer reference's probabilities on every backend.
fn compare_int8(what: &str, net: &Network, images: &[u8], n: usize) {
    use trainer::model::quantize::{self, Calibration, Int8Reference};
    let int8 = quantize::quantize(net, images, Calibration::Mse).unwrap();
    let reference = Int8Reference::from_bytes(&int8, what).unwrap();
    let model = Model::from_bytes(&int8).unwrap();
    let mut scratch = vec![0f32; model.scratch_len()];
    let mut probs = vec![0f32; model.num_classes()];
    for backend in [
        Backend::Auto,
        Backend::Avx512,
        Backend::Avx2,
        Backend::Portable,
    ] {
        let model = model.clone().with_backend(backend);
        for image in images.chunks_exact(images.len() / n) {
            let want = reference.probabilities(image);
            model.classify(image, &mut scratch, &mut probs).unwrap();
            for (a, b) in probs.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "{what}, {backend:?}: {probs:?} vs {want:?}"
                );
            }
        }
    }
}

/// GELU after batch norm, after a convolution and in a dense block: `infer`
/// matches the trainer in `f32`, and the int8 look-up table matches the
/// trainer's integer reference on every backend.
#[test]
fn gelu_f32_and_int8() {
    let spec = ModelSpec::from_json_str(
        r#"{"name": "gelu", "input": {"height": 12, "width": 12, "channels": 3}, "layers": [
            {"type": "conv2d", "filters": 16, "kernel": 3},
            {"type": "batchnorm"},
            {"type": "gelu"},
            {"type": "maxpool2d"},
            {"type": "conv2d", "filters": 24, "kernel": 3},
            {"type": "gelu"},
            {"type": "global_avg_pool"},
            {"type": "dense", "units": 20},
            {"type": "gelu"},
            {"type": "dense", "units": 10}
        ]}"#,
    )
    .unwrap();
    let mut net = Network::new(&spec, 21).unwrap();
    randomise(&mut net, 21);
    let bytes = export(&net);
    let images = random_images(12 * 12 * 3, 300, 21);
    compare("gelu", &mut net, &bytes, &images, 300);
    compare_int8("gelu", &net, &images[..100 * 12 * 12 * 3], 100);
}

/// Layers whose `input` names an output several layers back (overwritten in
/// the working region by then, so `infer` reads it from its stash), a relu
/// that may not be fused because it reads another layer, and an add of a
/// batch norm's output that a later convolution reads too.
#[test]
fn inputs_reading_older_layers() {
    let spec = ModelSpec::from_json_str(
        r#"{"name":"dag","input":{"height":12,"width":10,"channels":3},"layers":[
            {"type":"conv2d","filters":8,"kernel":3},
            {"type":"batchnorm"},
            {"type":"relu","name":"stem"},
            {"type":"conv2d","filters":12,"kernel":1,"stride":2,"name":"proj"},
            {"type":"conv2d","filters":12,"kernel":3,"stride":2,"input":"stem"},
            {"type":"batchnorm"},
            {"type":"relu"},
            {"type":"conv2d","filters":12,"kernel":3},
            {"type":"batchnorm","name":"main"},
            {"type":"add","from":"proj"},
            {"type":"relu","name":"block"},
            {"type":"conv2d","filters":12,"kernel":3,"name":"pre"},
            {"type":"maxpool2d","padding":"same"},
            {"type":"relu","input":"pre"},
            {"type":"conv2d","filters":12,"kernel":1,"input":"main"},
            {"type":"relu"},
            {"type":"add","from":"block"},
            {"type":"global_avg_pool"},
            {"type":"dense","units":5}]}"#,
    );
    // The maxpool's output is read by nothing: refused.
    let e = spec.unwrap_err().to_string();
    assert!(
        e.contains("layer 12 (maxpool2d)") && e.contains("no layer reads"),
        "{e}"
    );
    let spec = ModelSpec::from_json_str(
        r#"{"name":"dag","input":{"height":12,"width":10,"channels":3},"layers":[
            {"type":"conv2d","filters":8,"kernel":3},
            {"type":"batchnorm"},
            {"type":"relu","name":"stem"},
            {"type":"conv2d","filters":12,"kernel":1,"stride":2,"name":"proj"},
            {"type":"conv2d","filters":12,"kernel":3,"stride":2,"input":"stem"},
            {"type":"batchnorm"},
            {"type":"relu"},
            {"type":"conv2d","filters":12,"kernel":3},
            {"type":"batchnorm","name":"main"},
            {"type":"add","from":"proj"},
            {"type":"relu","name":"block"},
            {"type":"conv2d","filters":12,"kernel":3,"name":"pre"},
            {"type":"maxpool2d","padding":"same","name":"pool"},
            {"type":"relu","input":"pre"},
            {"type":"maxpool2d","padding":"same"},
            {"type":"add","from":"pool"},
            {"type":"flatten","name":"flat"},
            {"type":"conv2d","filters":12,"kernel":1,"input":"main"},
            {"type":"relu"},
            {"type":"add","from":"block"},
            {"type":"global_avg_pool"},
            {"type":"dense","units":5,"name":"head"},
            {"type":"dense","units":5,"input":"flat"},
            {"type":"add","from":"head"},
            {"type":"dense","units":4}]}"#,
    )
    .unwrap();
    let mut net = Network::new(&spec, 5).unwrap();
    randomise(&mut net, 5);
    let bytes = export(&net);
    let images = random_images(12 * 10 * 3, 300, 6);
    compare("dag", &mut net, &bytes, &images, 300);
}

#[test]
fn odd_sizes_batchnorm_global_pool_strides() {
    let spec = ModelSpec::from_json_str(
        r#"{"name": "odd", "input": {"height": 15, "width": 13, "channels": 3}, "layers": [
            {"type": "conv2d", "filters": 24, "kernel": 3, "stride": 2, "padding": "valid"},
            {"type": "batchnorm"},
            {"type": "relu"},
            {"type": "conv2d", "filters": 18, "kernel": 3, "padding": "same"},
            {"type": "conv2d", "filters": 19, "kernel": 3, "padding": "valid"},
            {"type": "relu"},
            {"type": "maxpool2d", "size": 3, "stride": 2, "padding": "same"},
            {"type": "conv2d", "filters": 20, "kernel": 5, "padding": "same"},
            {"type": "batchnorm", "epsilon": 0.01},
            {"type": "relu"},
            {"type": "conv2d", "filters": 17, "kernel": 2, "stride": 2, "padding": "same"},
            {"type": "global_avg_pool"},
            {"type": "dropout", "rate": 0.5},
            {"type": "dense", "units": 33},
            {"type": "relu"},
            {"type": "dense", "units": 7}
        ]}"#,
    )
    .unwrap();
    let mut net = Network::new(&spec, 3).unwrap();
    randomise(&mut net, 3);
    let bytes = export(&net);
    let images = random_images(15 * 13 * 3, 500, 2);
    compare("odd", &mut net, &bytes, &images, 500);
}

#[test]
fn shipped_model1() {
    check_shipped("models/model1.safetensors");
}

/// The default model of `classify`: the residual network of models/fast.json.
#[test]
fn shipped_fast() {
    check_shipped("models/fast.safetensors");
}

/// A model shipped in the repository gives the same probabilities in infer
/// as in the trainer on the CIFAR-10 test images, and names its classes.
fn check_shipped(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let Ok(bytes) = std::fs::read(&path) else {
        println!("SKIPPED: {} is not there yet", path.display());
        return;
    };
    let Some(images) = cifar_images() else {
        println!("SKIPPED {file}: it needs the CIFAR-10 test images");
        return;
    };
    let mut net = Network::load(&path).expect("trainer loads its own file");
    compare(file, &mut net, &bytes, &images, IMAGES);
    let model = Model::from_bytes(&bytes).unwrap();
    assert_eq!(model.class_name(0), Some("airplane"));
    assert_eq!(model.class_name(9), Some("truck"));
}

/// Grayscale and non-square inputs: the shipped 28×28×1 `mnist` spec and a
/// 20×36 RGB network (padding, pooling and Winograd tiles all see unequal
/// sides), on random images, every backend.
#[test]
fn grayscale_and_non_square_inputs() {
    let mnist = trainer::train::spec_file::SpecFile::builtin("mnist")
        .unwrap()
        .model;
    let wide = ModelSpec::from_json_str(
        r#"{"name":"wide","input":{"height":20,"width":36,"channels":3},"layers":[
            {"type":"conv2d","filters":16,"kernel":3},{"type":"batchnorm"},{"type":"relu"},
            {"type":"conv2d","filters":24,"kernel":3},{"type":"relu"},
            {"type":"maxpool2d","size":3,"stride":2,"padding":"same"},
            {"type":"conv2d","filters":16,"kernel":3,"stride":2,"padding":"valid"},
            {"type":"flatten"},{"type":"dense","units":7}]}"#,
    )
    .unwrap();
    for (i, spec) in [mnist, wide].into_iter().enumerate() {
        let mut net = Network::new(&spec, 40 + i as u64).unwrap();
        randomise(&mut net, 50 + i as u64);
        let bytes = export(&net);
        let n = 100;
        let images = random_images(spec.input.len(), n, 60 + i as u64);
        let ties = compare(&spec.name, &mut net, &bytes, &images, n);
        assert!(ties <= 1, "{}: {ties} near-ties", spec.name);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// Any class names the trainer writes, infer reads back: each name that
    /// needs no JSON escape sequence is borrowed from the file as it is; a name
    /// that does (a quote, a backslash, a control character) is `None`, never
    /// a wrong name, and never costs its neighbours theirs.
    #[test]
    fn class_names_written_by_the_trainer_read_in_infer(
        names in proptest::collection::vec("[a-z ,\"\\\\é\\t\\[\\]]{0,8}", 3)
    ) {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"t","input":{"height":2,"width":2,"channels":1},"layers":[
                {"type":"flatten"},{"type":"dense","units":3}]}"#,
        )
        .unwrap();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let bytes = Network::new(&spec, 1).unwrap().to_safetensors_bytes(&refs).unwrap();
        let back = Network::from_safetensors_bytes(&bytes, "t").unwrap();
        proptest::prop_assert_eq!(&back.class_names, &names);
        let model = Model::from_bytes(&bytes).unwrap();
        for (i, name) in names.iter().enumerate() {
            let plain = !name.contains(['"', '\\', '\t']);
            proptest::prop_assert_eq!(model.class_name(i), plain.then_some(name.as_str()));
        }
        proptest::prop_assert_eq!(model.class_name(3), None);
    }
}
