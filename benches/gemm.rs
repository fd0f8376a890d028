//! SGEMM at the shapes our layers produce: the trainer's two backends,
//! `trainer::kernels::gemm::sgemm_matrixmultiply` and `trainer::kernels::gemm::sgemm_gemm` (the
//! `gemm` crate, what burn and candle use), both single-threaded.
//!
//! ```text
//! cargo bench --bench gemm                      # model 1, batch 32
//! cargo bench --bench gemm -- --quick           # fewer, shorter samples (seconds)
//! cargo bench --bench gemm -- --model model3 --batch 128
//! ```
//!
//! For every convolution of the model the shapes are those of one im2col tile
//! (`Conv2d` walks each thread's chunk of the batch in tiles of
//! `clamp(2^16 / K, 16, 4096)` rows, `K = k·k·Cin`): forward `m×K · K×Cout`,
//! weight gradient `Kᵀ×m · m×Cout` (A transposed) and input gradient
//! `m×Cout · Cout×K` (B transposed; not for the network's first layer). Dense layers:
//! `batch×in · in×units` and the two gradients likewise. `calls` is how many
//! products of that shape one training step at the given batch needs (FLOP
//! weighted: a shorter last tile counts as a fraction), so that `calls ×
//! time` summed over the rows is the GEMM time of a step on one thread.
//!
//! Both libraries are first checked to agree (max abs difference, printed);
//! then they are timed in alternation, sample after sample, and the median
//! GFLOP/s of each is printed, as a human line and as one JSON object per line
//! (`{"bench":"gemm",...}`), which `benches/perf_report.py` reads.

use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Instant;
use trainer::kernels::gemm::{sgemm_gemm as gemm_crate, sgemm_matrixmultiply as sgemm, Op};
use trainer::model::spec::{LayerSpec, ModelSpec};

/// `Conv2d`'s im2col tile target, in floats (trainer/src/layers/conv.rs).
const TILE_FLOATS: usize = trainer::layers::CONV_TILE_FLOATS;

struct Case {
    layer: String,
    /// `forward`, `grad_weight` or `grad_input`.
    pass: &'static str,
    m: usize,
    k: usize,
    n: usize,
    op_a: Op,
    op_b: Op,
    /// The `beta` the layer uses (1 = accumulate into C).
    beta: f32,
    calls: f64,
}

fn cases(spec: &ModelSpec, batch: usize, threads: usize) -> Vec<Case> {
    let shapes = spec.shapes().expect("built-in spec");
    let per_chunk = batch.div_ceil(threads.max(1)).max(1);
    let mut out = Vec::new();
    let mut input = spec.input;
    // The network asks every layer but the first for its input gradient.
    for (index, (layer, &shape)) in spec.layers.iter().zip(&shapes).enumerate() {
        match layer {
            LayerSpec::Conv2d { name, kernel, .. } => {
                let name = name.clone().unwrap_or_else(|| "conv".into());
                let kk = kernel * kernel * input.channels;
                let cout = shape.channels;
                let chunk_rows = per_chunk * shape.pixels();
                let m = (TILE_FLOATS / kk).clamp(16, 4096).min(chunk_rows);
                let calls = (batch * shape.pixels()) as f64 / m as f64;
                let mut push = |pass, m, k, n, op_a, op_b, beta| {
                    out.push(Case {
                        layer: name.clone(),
                        pass,
                        m,
                        k,
                        n,
                        op_a,
                        op_b,
                        beta,
                        calls,
                    })
                };
                push("forward", m, kk, cout, Op::N, Op::N, 1.0);
                push("grad_weight", kk, m, cout, Op::T, Op::N, 1.0);
                if index > 0 {
                    push("grad_input", m, cout, kk, Op::N, Op::T, 0.0);
                }
            }
            LayerSpec::Dense { name, units, .. } => {
                let name = name.clone().unwrap_or_else(|| "dense".into());
                let inputs = input.len();
                let mut push = |pass, m, k, n, op_a, op_b, beta| {
                    out.push(Case {
                        layer: name.clone(),
                        pass,
                        m,
                        k,
                        n,
                        op_a,
                        op_b,
                        beta,
                        calls: 1.0,
                    })
                };
                push("forward", batch, inputs, *units, Op::N, Op::N, 1.0);
                push("grad_weight", inputs, batch, *units, Op::T, Op::N, 0.0);
                if index > 0 {
                    push("grad_input", batch, *units, inputs, Op::N, Op::T, 0.0);
                }
            }
            _ => {}
        }
        input = shape;
    }
    out
}

type GemmFn = fn(usize, usize, usize, &[f32], Op, &[f32], Op, f32, &mut [f32]);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::N => "N",
        Op::T => "T",
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let model = value("--model").unwrap_or_else(|| "model1".into());
    let batch: usize = value("--batch").map_or(32, |b| b.parse().expect("--batch N"));
    // The chunking the training step would use (one chunk of the batch per thread).
    let threads: usize = value("--threads").map_or(2, |t| t.parse().expect("--threads N"));
    let (samples, sample_s) = if quick { (5, 0.004) } else { (21, 0.025) };

    let spec = trainer::train::spec_file::SpecFile::builtin(&model)
        .expect("a built-in model")
        .model;
    let cases = cases(&spec, batch, threads);
    let libs: [(&str, GemmFn); 2] = [
        ("matrixmultiply", sgemm as GemmFn),
        ("gemm", gemm_crate as GemmFn),
    ];
    println!(
        "gemm: {model}, batch {batch} split over {threads} threads, single-threaded SGEMM, \
         median of {samples} samples of ≥{:.0} ms",
        sample_s * 1e3
    );
    println!(
        "  {:<8} {:<12} {:>5} {:>5} {:>5} {:>3} {:>7} {:>10} {:>10} {:>6} {:>8}",
        "layer", "pass", "m", "k", "n", "op", "calls", "mm GF/s", "gemm GF/s", "ratio", "max|Δ|"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut step_s = [0.0f64; 2];
    for case in &cases {
        let Case { m, k, n, .. } = *case;
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let c0: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();

        // Agreement first.
        let results: Vec<Vec<f32>> = libs
            .iter()
            .map(|(_, f)| {
                let mut c = c0.clone();
                f(m, k, n, &a, case.op_a, &b, case.op_b, case.beta, &mut c);
                c
            })
            .collect();
        let max_abs_diff = results[0]
            .iter()
            .zip(&results[1])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let scale = results[0]
            .iter()
            .fold(0.0f32, |s, x| s.max(x.abs()))
            .max(1.0);
        assert!(
            max_abs_diff <= 1e-4 * scale * (k as f32).sqrt(),
            "{} {}: the libraries disagree by {max_abs_diff}",
            case.layer,
            case.pass
        );

        // Iterations per sample so that one sample lasts about `sample_s`.
        let mut c = c0.clone();
        let time = |f: GemmFn, iters: usize, c: &mut [f32]| {
            let t = Instant::now();
            for _ in 0..iters {
                f(
                    m,
                    k,
                    n,
                    black_box(&a),
                    case.op_a,
                    black_box(&b),
                    case.op_b,
                    case.beta,
                    black_box(&mut *c),
                );
            }
            t.elapsed().as_secs_f64()
        };
        let once = libs
            .iter()
            .map(|(_, f)| {
                time(*f, 1, &mut c); // warm-up (packing buffers, caches)
                time(*f, 3, &mut c) / 3.0
            })
            .fold(f64::INFINITY, f64::min);
        let iters = ((sample_s / once.max(1e-9)).ceil() as usize).max(1);
        let mut per_call: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..samples {
            for (i, (_, f)) in libs.iter().enumerate() {
                per_call[i].push(time(*f, iters, &mut c) / iters as f64);
            }
        }
        let flop = 2.0 * (m * k * n) as f64;
        let secs: Vec<f64> = per_call.into_iter().map(median).collect();
        let gflops: Vec<f64> = secs.iter().map(|s| flop / s / 1e9).collect();
        for (i, s) in secs.iter().enumerate() {
            step_s[i] += s * case.calls;
        }
        let ratio = gflops[0] / gflops[1];
        let ops = format!("{}{}", op_name(case.op_a), op_name(case.op_b));
        println!(
            "  {:<8} {:<12} {m:>5} {k:>5} {n:>5} {ops:>3} {:>7.1} {:>10.1} {:>10.1} {ratio:>6.2} {max_abs_diff:>8.1e}",
            case.layer, case.pass, case.calls, gflops[0], gflops[1]
        );
        println!(
            "{}",
            serde_json::json!({
                "bench": "gemm", "model": model, "batch": batch, "threads": threads,
                "layer": case.layer, "pass": case.pass, "m": m, "k": k, "n": n,
                "op": ops, "beta": case.beta, "calls_per_step": case.calls,
                "matrixmultiply_gflops": gflops[0], "gemm_gflops": gflops[1],
                "matrixmultiply_us": secs[0] * 1e6, "gemm_us": secs[1] * 1e6,
                "ratio_mm_over_gemm": ratio, "max_abs_diff": max_abs_diff,
                "samples": samples, "iters_per_sample": iters,
            })
        );
    }
    println!(
        "GEMM time of one {model} training step at batch {batch}, one thread: \
         matrixmultiply {:.2} ms, gemm {:.2} ms",
        step_s[0] * 1e3,
        step_s[1] * 1e3
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "gemm_step", "model": model, "batch": batch, "threads": threads,
            "matrixmultiply_ms": step_s[0] * 1e3, "gemm_ms": step_s[1] * 1e3,
        })
    );
}
