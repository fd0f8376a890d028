//! Single-image latency of `infer` on model 1 and on the residual `fast`
//! model (classify's default), one thread (infer never spawns any).
//!
//! ```text
//! cargo bench --bench infer_latency
//! cargo bench --bench infer_latency -- classify_auto     # only the best kernels
//! ```
//!
//! `classify_auto` runs the best kernels the CPU has (AVX-512 or AVX2 on
//! x86-64), `classify_avx2` caps them at AVX2, `classify_portable` is plain Rust;
//! `classify_winograd` (f32 models) is `classify_auto` with
//! `Model::with_winograd(true)`, as the `classify` CLI runs them.
//!
//! Uses the shipped `models/model1.safetensors` (`models/fast.safetensors`)
//! when present, else a randomly initialised model exported by the trainer
//! (the time does not depend on the weights' values). The int8 groups
//! (`model1_int8_one_image`, `fast_int8_one_image`) time the shipped int8
//! files `models/model1-int8.safetensors` and `models/fast-int8.safetensors`
//! (made by `trainer quantize`), and are left out when those are missing. The image is the first CIFAR-10 test image when the data is
//! at `../shared/cifar10/cifar-10-batches-bin`, else a fixed pattern.

use criterion::{criterion_group, criterion_main, Criterion};
use infer::{Backend, Model};
use std::hint::black_box;
use std::path::Path;

/// The shipped `models/<name>.safetensors`, else the built-in spec `name`
/// randomly initialised and exported by the trainer; and where it came from.
fn model_bytes(name: &str) -> (Vec<u8>, String) {
    let file = format!("models/{name}.safetensors");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(&file);
    if let Ok(bytes) = std::fs::read(&shipped) {
        return (bytes, file);
    }
    let spec = trainer::train::spec_file::SpecFile::builtin(name)
        .expect("built-in spec")
        .model;
    let net = trainer::model::network::Network::new(&spec, 1).expect("network");
    let names: Vec<String> = (0..10).map(|i| format!("class{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let bytes = net.to_safetensors_bytes(&names).expect("export");
    (bytes, format!("{name}, random initialisation (trainer)"))
}

fn image() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cifar10/cifar-10-batches-bin");
    if let Ok(test) = trainer::data::cifar10::load_test(&dir) {
        return test.image(0).to_vec();
    }
    (0..32 * 32 * 3).map(|i| (i * 37 % 251) as u8).collect()
}

fn bench(c: &mut Criterion) {
    let (bytes, origin) = model_bytes("model1");
    let model = Model::from_bytes(&bytes).expect("model 1 loads");
    let image = image();
    print_scratch(&origin, &model);
    let mut scratch = vec![0f32; model.scratch_len()];
    let mut probs = vec![0f32; model.num_classes()];

    let mut group = c.benchmark_group("model1_one_image");
    for (name, backend) in [
        ("classify_auto", Backend::Auto),
        ("classify_avx2", Backend::Avx2),
        ("classify_portable", Backend::Portable),
    ] {
        let model = model.clone().with_backend(backend);
        group.bench_function(name, |b| {
            b.iter(|| {
                model
                    .classify(black_box(&image), &mut scratch, &mut probs)
                    .unwrap()
            })
        });
    }
    bench_winograd(&mut group, &model, &image, &mut probs);
    group.bench_function("load", |b| {
        b.iter(|| Model::from_bytes(black_box(&bytes)).unwrap().num_classes())
    });
    group.finish();

    // fast and ResNet-8 (models/resnet8.json), f32: the shipped files, else
    // random weights; the best backend only.
    for name in ["fast", "resnet8"] {
        let (bytes, origin) = model_bytes(name);
        let model = Model::from_bytes(&bytes).expect("the f32 model loads");
        print_scratch(&origin, &model);
        let mut scratch = vec![0f32; model.scratch_len()];
        let mut group = c.benchmark_group(format!("{name}_one_image"));
        group.bench_function("classify_auto", |b| {
            b.iter(|| {
                model
                    .classify(black_box(&image), &mut scratch, &mut probs)
                    .unwrap()
            })
        });
        bench_winograd(&mut group, &model, &image, &mut probs);
        group.finish();
    }

    for name in ["model1", "fast", "resnet8"] {
        let file = format!("models/{name}-int8.safetensors");
        let Ok(bytes) = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(&file)) else {
            println!(
                "{file} is missing: int8 latency not measured (make it with `trainer quantize`)"
            );
            continue;
        };
        let model = Model::from_bytes(&bytes).expect("int8 model loads");
        println!(
            "{file}: scratch {} f32 = {} bytes",
            model.scratch_len(),
            model.scratch_bytes()
        );
        let mut scratch = vec![0f32; model.scratch_len()];
        let mut group = c.benchmark_group(format!("{name}_int8_one_image"));
        for (function, backend) in [
            ("classify_auto", Backend::Auto),
            ("classify_avx2", Backend::Avx2),
            ("classify_portable", Backend::Portable),
        ] {
            let model = model.clone().with_backend(backend);
            group.bench_function(function, |b| {
                b.iter(|| {
                    model
                        .classify(black_box(&image), &mut scratch, &mut probs)
                        .unwrap()
                })
            });
        }
        group.finish();
    }
}

/// The scratch an f32 model needs, without and with Winograd (two lines, as
/// `benches/perf_report.py` reads them).
fn print_scratch(origin: &str, model: &Model<'_>) {
    let winograd = model.clone().with_winograd(true);
    println!(
        "{origin}: scratch {} f32 = {} bytes\n  with Winograd: scratch {} f32 = {} bytes",
        model.scratch_len(),
        model.scratch_bytes(),
        winograd.scratch_len(),
        winograd.scratch_bytes()
    );
}

/// `classify_winograd`: the best kernels with Winograd on (a larger scratch).
fn bench_winograd(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    model: &Model<'_>,
    image: &[u8],
    probs: &mut [f32],
) {
    let model = model.clone().with_winograd(true);
    let mut scratch = vec![0f32; model.scratch_len()];
    group.bench_function("classify_winograd", |b| {
        b.iter(|| {
            model
                .classify(black_box(image), &mut scratch, probs)
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
