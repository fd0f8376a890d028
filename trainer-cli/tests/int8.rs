//! The int8 files of `trainer::model::quantize` mean the same to `infer` as
//! to the engine's plain integer reference, and the measurement behind the
//! default calibration method.

mod common;

use rayon::prelude::*;
use std::path::Path;
use trainer::model::loss::argmax;
use trainer::model::quantize::{self, calibration_indices, Calibration, Int8Reference};
use trainer::Network;

fn shipped(name: &str) -> Network {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{name}.safetensors"));
    Network::load(&path).expect("shipped model loads")
}

/// CIFAR-10 training images when the data set is there, else random images.
fn images(n: usize, seed: u64) -> Vec<u8> {
    let len = 32 * 32 * 3;
    if let Some(dir) = common::cifar10_dir("int8 tests on real images (random ones instead)") {
        let train = trainer::data::cifar10::load(&dir).unwrap().train;
        return train
            .select(&calibration_indices(train.len(), n, seed))
            .images;
    }
    // xorshift64*: any bytes will do.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n * len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// For model 1 and fast, with each calibration method: `infer` and the
/// reference give the same class and the same probabilities (up to the
/// softmax's own rounding) on every image.
#[test]
fn infer_and_the_reference_agree() {
    let calib = images(100, 1);
    let check = images(24, 2);
    for model in ["model1", "fast"] {
        let net = shipped(model);
        for method in [
            Calibration::MinMax,
            Calibration::Percentile(99.99),
            Calibration::Mse,
        ] {
            let bytes = quantize::quantize(&net, &calib, method).unwrap();
            let reference = Int8Reference::from_bytes(&bytes, model).unwrap();
            let fast = infer::Model::from_bytes(&bytes).unwrap();
            let mut scratch = vec![0f32; fast.scratch_len()];
            let mut probs = vec![0f32; 10];
            for image in check.chunks_exact(32 * 32 * 3) {
                let want = reference.probabilities(image);
                let top = fast.classify(image, &mut scratch, &mut probs).unwrap();
                assert_eq!(top.class, argmax(&want), "{model} {method:?}");
                for (a, b) in probs.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5,
                        "{model} {method:?}: {probs:?} vs {want:?}"
                    );
                }
            }
        }
    }
}

/// The measurement behind `Calibration::DEFAULT` (see the quantize module's
/// documentation): f32 and int8 accuracy on a validation split of the
/// *training* set (its last 5,000 images), calibrated on 500 of the other
/// 45,000 drawn with seeds 1, 2, 3; int8 through `infer`.
/// `cargo test --release -p trainer-cli --test int8 -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_calibration_methods() {
    let Some(dir) = common::cifar10_dir("measure_calibration_methods") else {
        return;
    };
    let data = trainer::data::cifar10::load(&dir).unwrap();
    let (rest, val) = data.train.split_last(5000).unwrap();
    for model in ["model1", "fast"] {
        let mut net = shipped(model);
        let want: Vec<usize> = net
            .predict_proba(&val.images, val.len())
            .chunks_exact(10)
            .map(argmax)
            .collect();
        let acc = |p: &[usize]| {
            p.iter()
                .zip(&val.labels)
                .filter(|(a, &b)| **a == usize::from(b))
                .count() as f64
                / val.len() as f64
        };
        eprintln!(
            "{model}: f32 accuracy {:.4} on {} validation images",
            acc(&want),
            val.len()
        );
        for method in [
            Calibration::MinMax,
            Calibration::Percentile(99.9),
            Calibration::Percentile(99.99),
            Calibration::Percentile(99.999),
            Calibration::Mse,
        ] {
            let (mut accs, mut agree) = (Vec::new(), Vec::new());
            for seed in 1..=3 {
                let calib = rest.select(&calibration_indices(rest.len(), 500, seed));
                let bytes = quantize::quantize(&net, &calib.images, method).unwrap();
                let m = infer::Model::from_bytes(&bytes).unwrap();
                let got: Vec<usize> = (0..val.len())
                    .into_par_iter()
                    .map_init(
                        || (vec![0f32; m.scratch_len()], vec![0f32; 10]),
                        |(s, p), i| m.classify(val.image(i), s, p).unwrap().class,
                    )
                    .collect();
                accs.push(acc(&got));
                let same = want.iter().zip(&got).filter(|(a, b)| a == b).count();
                agree.push(same as f64 / val.len() as f64);
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            eprintln!(
                "{model}: {:20} int8 accuracy {:.4} {accs:.4?}, agreement with f32 {:.4} {agree:.4?}",
                method.describe(),
                mean(&accs),
                mean(&agree)
            );
        }
    }
}
