//! Training throughput (images/s) of the built-in models, one full step
//! (forward, backward, Adam) at a time, on random data.
//!
//! ```text
//! cargo bench --bench train_throughput                 # model1 and model3, batch 32 and 128
//! cargo bench --bench train_throughput -- --quick      # model1, batch 32, fewer steps
//! cargo bench --bench train_throughput -- --profile    # also a per-layer time breakdown
//! RAYON_NUM_THREADS=1 cargo bench --bench train_throughput   # one core
//! cargo bench --bench train_throughput -- --backend matrixmultiply --only model1:32
//! cargo bench --bench train_throughput -- --only fast:512     # any built-in model or spec file
//! cargo bench --bench train_throughput -- --only models/airbench.json:1024
//! cargo bench --bench train_throughput -- --conv im2col  # im2col everywhere: no Winograd, no direct sums
//! cargo bench --bench train_throughput -- --only models/airbench.json:1024 --held whiten
//!     # layers held fixed (airbench's whitening layer once its bias is done): no backward below them
//! ```
//!
//! Prints the median over repeated timed runs, so a noisy machine shows less.

use rand::{Rng, SeedableRng};
use std::time::Instant;
use trainer::model::network::Network;
use trainer::optim::Adam;
use trainer::train::groups::Grouped;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let profile = args.iter().any(|a| a == "--profile");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let mut compute = trainer::layers::Compute::default();
    if let Some(name) = value("--backend") {
        compute.gemm = match name.as_str() {
            "matrixmultiply" => trainer::kernels::gemm::Backend::MatrixMultiply,
            "gemm" => trainer::kernels::gemm::Backend::Gemm,
            other => panic!("unknown --backend {other} (gemm or matrixmultiply)"),
        };
        assert!(compute.gemm.available(), "backend {name} not compiled in");
    }
    if let Some(conv) = value("--conv") {
        compute.conv = match conv.as_str() {
            "im2col" => trainer::layers::ConvChoice::Im2col,
            "winograd" => trainer::layers::ConvChoice::Winograd,
            "auto" => trainer::layers::ConvChoice::Auto,
            other => panic!("unknown --conv {other} (auto, winograd or im2col)"),
        };
    }
    let mut cases: Vec<(String, usize)> = if quick {
        vec![("model1".into(), 32)]
    } else {
        [
            ("model1", 32),
            ("model1", 128),
            ("model3", 32),
            ("model3", 128),
        ]
        .map(|(m, b)| (m.to_string(), b))
        .to_vec()
    };
    if let Some(only) = value("--only") {
        // A built-in model or a spec file (`--only models/x.json:1024`).
        let (model, batch) = only.rsplit_once(':').expect("--only MODEL:BATCH");
        cases = vec![(model.to_string(), batch.parse().expect("batch size"))];
    }
    // Layers held fixed, as a recipe's parameter groups hold them: the
    // optimiser leaves them alone and backward stops above them.
    let groups = trainer::train::groups::ParamGroups {
        held: value("--held")
            .map(|v| v.split(',').map(|l| (l.to_string(), None)).collect())
            .unwrap_or_default(),
        ..Default::default()
    };
    // Rounds of about 2,048 images at large batches (8 steps at 32 and 128).
    let (rounds, max_steps) = if quick { (3, 4) } else { (5, 8) };
    println!("threads: {}", rayon::current_num_threads());
    println!("gemm backend: {:?}", compute.gemm);
    println!(
        "3×3 stride-1 convolutions with ≥ {} input channels: {:?}",
        trainer::layers::WINOGRAD_MIN_CHANNELS,
        compute.conv
    );
    for (model, batch) in &cases {
        let (model, batch) = (model.as_str(), *batch);
        let steps = (2048 / batch).clamp(2, max_steps);
        let spec = trainer::train::spec_file::SpecFile::resolve(model)
            .unwrap_or_else(|e| panic!("--only {model}: {e}"))
            .model;
        let mut net = Network::new(&spec, 1).unwrap();
        net.set_compute(compute);
        net.skip_held_prefix(&|layer, suffix| groups.lr_scale(layer, suffix) > 0.0);
        let mut opt = Adam::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let images: Vec<u8> = (0..batch * spec.input.len())
            .map(|_| rng.random())
            .collect();
        let labels: Vec<u8> = (0..batch).map(|_| rng.random_range(0..10)).collect();
        let mut step = |net: &mut Network| {
            net.set_input_u8(&images, batch);
            net.forward_backward(&labels);
            opt.step(&mut Grouped {
                inner: net,
                groups: &groups,
            });
        };
        step(&mut net); // warm-up: buffers reach their size
        let per_round: Vec<f64> = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..steps {
                    step(&mut net);
                }
                (steps * batch) as f64 / t.elapsed().as_secs_f64()
            })
            .collect();
        let min = per_round.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = per_round.iter().cloned().fold(0.0, f64::max);
        println!(
            "train {model} batch {batch}: median {:.1} images/s (min {min:.1}, max {max:.1}, {rounds} rounds of {steps} steps)",
            median(per_round.clone())
        );
        if profile {
            net.set_input_u8(&images, batch);
            let mut total = vec![];
            for _ in 0..5 {
                net.set_input_u8(&images, batch);
                total.push(net.forward_backward_profiled(&labels).1);
            }
            println!("  {:<16} {:>10} {:>10}", "layer", "fwd ms", "bwd ms");
            for i in 0..total[0].len() {
                let f = median(total.iter().map(|t| t[i].1 * 1e3).collect());
                let b = median(total.iter().map(|t| t[i].2 * 1e3).collect());
                println!("  {:<16} {f:>10.2} {b:>10.2}", total[0][i].0);
            }
        }
    }
}
