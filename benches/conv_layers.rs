//! Each convolution of a model on its own, forward and backward, at its real
//! input shape, through the public `trainer::layers::Conv2d` (parallel over
//! the batch with rayon), by the algorithm it uses by default and, where
//! Winograd is that default, by im2col + SGEMM as well for comparison.
//!
//! ```text
//! cargo bench --bench conv_layers                       # model 1, batch 32
//! cargo bench --bench conv_layers -- --quick            # fewer samples (seconds)
//! cargo bench --bench conv_layers -- --model model3 --batch 128
//! RAYON_NUM_THREADS=1 cargo bench --bench conv_layers   # one core
//! ```
//!
//! Backward computes the weight and bias gradients and, except for the
//! network's first layer (whose input gradient nobody needs), the input
//! gradient, as in training. GFLOP/s is *effective*: the multiply-adds of a
//! direct convolution (forward `2·P·K·Cout` for `P` output pixels and
//! `K = k·k·Cin`; backward that once or twice) over the time, whatever the
//! algorithm did, so im2col overhead shows as a lower rate and Winograd's
//! fewer multiplies as a higher one. Prints a human line and one JSON object per line
//! (`{"bench":"conv_layer",...}`), read by `benches/perf_report.py`.

use rand::{Rng, SeedableRng};
use std::time::Instant;
use trainer::kernels::tensor::Tensor;
use trainer::layers::{Conv2d, ConvAlgorithm, Layer, Mode};
use trainer::model::spec::LayerSpec;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn random_tensor(
    n: usize,
    shape: trainer::kernels::tensor::ImageShape,
    rng: &mut impl Rng,
) -> Tensor {
    let mut t = Tensor::zeros(n, shape);
    t.data
        .iter_mut()
        .for_each(|v| *v = rng.random_range(-1.0..1.0));
    t
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
    let samples = if quick { 5 } else { 25 };
    let threads = rayon::current_num_threads();

    let spec = trainer::train::spec_file::SpecFile::builtin(&model)
        .expect("a built-in model")
        .model;
    let shapes = spec.shapes().expect("built-in spec");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    println!("conv_layers: {model}, batch {batch}, {threads} threads, median of {samples} calls");
    println!(
        "  {:<8} {:>10} {:>10} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "layer", "input", "output", "dx", "algorithm", "fwd ms", "fwd GF/s", "bwd ms", "bwd GF/s"
    );
    let (mut total_fwd, mut total_bwd) = (0.0, 0.0);
    let inputs = spec.inputs();
    for (index, (layer, &out)) in spec.layers.iter().zip(&shapes).enumerate() {
        let LayerSpec::Conv2d {
            name,
            filters,
            kernel,
            stride,
            padding,
            ..
        } = layer
        else {
            continue;
        };
        // The activation it reads (a projection shortcut's is not the previous one).
        let input = match inputs[index] {
            0 => spec.input,
            a => shapes[a - 1],
        };
        let name = name.clone().unwrap_or_else(|| format!("layer{index}"));
        let mut conv = Conv2d::new(input, *filters, *kernel, *stride, *padding, &mut rng);
        let x = random_tensor(batch, input, &mut rng);
        let dy = random_tensor(batch, out, &mut rng);
        let with_dx = index > 0;
        let default = conv.algorithm();
        let algorithms: &[ConvAlgorithm] = match default {
            ConvAlgorithm::Winograd => &[ConvAlgorithm::Winograd, ConvAlgorithm::Im2col],
            ConvAlgorithm::Direct => &[ConvAlgorithm::Direct, ConvAlgorithm::Im2col],
            ConvAlgorithm::Im2col => &[ConvAlgorithm::Im2col],
        };
        for &algorithm in algorithms {
            conv.set_algorithm(algorithm);
            let mut y = Tensor::default();
            let mut dx = Tensor::default();

            // Warm-up: buffers and scratch reach their size.
            conv.forward(&x, &mut y, Mode::Train);
            conv.backward(&x, &y, &dy, with_dx.then_some(&mut dx));

            let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
            for _ in 0..samples {
                let t = Instant::now();
                conv.forward(&x, &mut y, Mode::Train);
                fwd.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                conv.backward(&x, &y, &dy, with_dx.then_some(&mut dx));
                bwd.push(t.elapsed().as_secs_f64());
            }
            let (fwd, bwd) = (median(fwd), median(bwd));
            if algorithm == default {
                total_fwd += fwd;
                total_bwd += bwd;
            }
            let algorithm_name = match algorithm {
                ConvAlgorithm::Winograd => "winograd",
                ConvAlgorithm::Im2col => "im2col",
                ConvAlgorithm::Direct => "direct",
            };
            let k = kernel * kernel * input.channels;
            let flop = 2.0 * (batch * out.pixels() * k * out.channels) as f64;
            let bwd_flop = if with_dx { 2.0 * flop } else { flop };
            let (fwd_gf, bwd_gf) = (flop / fwd / 1e9, bwd_flop / bwd / 1e9);
            println!(
            "  {name:<8} {:>10} {:>10} {:>5} {algorithm_name:>9} {:>9.2} {fwd_gf:>9.1} {:>9.2} {bwd_gf:>9.1}",
            input.to_string(),
            out.to_string(),
            if with_dx { "yes" } else { "no" },
            fwd * 1e3,
            bwd * 1e3,
        );
            println!(
                "{}",
                serde_json::json!({
                    "bench": "conv_layer", "model": model, "batch": batch, "threads": threads,
                    "layer": name,
                    "input": [input.height, input.width, input.channels],
                    "output": [out.height, out.width, out.channels],
                    "kernel": kernel, "stride": stride, "dx": with_dx,
                    "algorithm": algorithm_name, "default": algorithm == default,
                    "fwd_ms": fwd * 1e3, "bwd_ms": bwd * 1e3,
                    "fwd_gflops": fwd_gf, "bwd_gflops": bwd_gf,
                    "samples": samples,
                })
            );
        }
    }
    println!(
        "  all conv layers (default algorithms): forward {:.2} ms, backward {:.2} ms per batch of {batch}",
        total_fwd * 1e3,
        total_bwd * 1e3
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "conv_total", "model": model, "batch": batch, "threads": threads,
            "fwd_ms": total_fwd * 1e3, "bwd_ms": total_bwd * 1e3,
        })
    );
}
