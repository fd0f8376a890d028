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

/// The core's peak rates, for the report's "what limits each row": 12
/// independent chains of f32 FMAs on 16-lane registers, and of int8
/// `vpdpbusd` (64 multiply-adds each), each timed over enough iterations;
/// printed as one line that `benches/perf_report.py` reads.
#[cfg(target_arch = "x86_64")]
fn print_peaks() {
    if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
        println!("peak: no AVX-512 VNNI on this CPU, not measured");
        return;
    }
    let n = 20_000_000 / 12;
    let best = |f: &dyn Fn() -> f32| {
        (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                black_box(f());
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    // SAFETY: both need AVX-512F (and VNNI), checked above.
    let fma = best(&|| unsafe { peaks::fma(black_box(n)) });
    let vnni = best(&|| unsafe { peaks::vnni(black_box(n)) });
    let ops = (n * 12) as f64;
    println!(
        "peak, one core: f32 FMA {:.1} GFLOP/s, int8 vpdpbusd {:.1} GMAC/s",
        ops * 32.0 / fma / 1e9,
        ops * 64.0 / vnni / 1e9
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn print_peaks() {
    println!("peak: not measured on this architecture");
}

#[cfg(target_arch = "x86_64")]
mod peaks {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// `n` rounds of 12 independent `vfmadd` (16 lanes, 2 flops each).
    #[target_feature(enable = "avx512f")]
    pub fn fma(n: usize) -> f32 {
        let (a, b) = (
            black_box(_mm512_set1_ps(0.999)),
            black_box(_mm512_set1_ps(1e-3)),
        );
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..n {
            for x in &mut acc {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, &x| _mm512_add_ps(s, x));
        _mm512_reduce_add_ps(sum)
    }

    /// `n` rounds of 12 independent `vpdpbusd` (16 lanes × 4 products each).
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub fn vnni(n: usize) -> f32 {
        let (a, b) = (
            black_box(_mm512_set1_epi32(0x0102_0304)),
            black_box(_mm512_set1_epi32(0x0101_0101)),
        );
        let mut acc = [_mm512_setzero_si512(); 12];
        for _ in 0..n {
            for x in &mut acc {
                *x = _mm512_dpbusd_epi32(*x, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_si512(), |s, &x| _mm512_add_epi32(s, x));
        _mm512_reduce_add_epi32(sum) as f32
    }
}

fn bench(c: &mut Criterion) {
    print_peaks();
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
