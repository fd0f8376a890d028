//! `infer::Model::from_bytes`, structure-aware like `model_header` (the input
//! is the JSON header then the data; the harness writes the 8-byte length),
//! on `f32` and int8 files: Ok or Err, never a panic. A model that loads and
//! is small enough to run quickly classifies an image with every backend:
//! int8 models give the same probabilities bit for bit on all of them (finite,
//! summing to 1); `f32` ones agree to 1e-4 when every backend's answer is
//! finite.
#![no_main]

use infer::{Backend, Model, Precision};
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() > trainer_fuzz::MAX_INPUT {
        return Corpus::Reject;
    }
    let file = trainer_fuzz::model_file(data);
    let Ok(model) = Model::from_bytes(&file) else {
        return Corpus::Keep;
    };
    // Running a model costs about its scratch size times its kernel sizes:
    // keep the runs short.
    if model.scratch_len() > 1 << 16 || model.input_len() > 1 << 14 || model.num_classes() > 1 << 10 {
        return Corpus::Keep;
    }
    let image: Vec<u8> = (0..model.input_len()).map(|i| (i * 37 % 251) as u8).collect();
    let mut scratch = vec![0f32; model.scratch_len()];
    let run = |backend: Backend, scratch: &mut Vec<f32>| {
        let mut probs = vec![0f32; model.num_classes()];
        let m = model.clone().with_backend(backend);
        m.classify(&image, scratch, &mut probs)
            .expect("a loaded model classifies an image of its input size");
        probs
    };
    let first = run(Backend::Auto, &mut scratch);
    if model.precision() == Precision::Int8 {
        assert!(first.iter().all(|p| p.is_finite()), "{first:?}");
        let sum: f32 = first.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");
    }
    for b in [Backend::Avx512, Backend::Avx2, Backend::Portable] {
        let other = run(b, &mut scratch);
        if model.precision() == Precision::Int8 {
            assert_eq!(first, other, "{b:?} differs from Auto");
        } else if first.iter().chain(&other).all(|p| p.is_finite()) {
            // Weights are finite (checked at load), but huge ones can overflow
            // to infinity in one kernel and not in another (a fused
            // multiply-add rounds once): finite answers must agree.
            for (x, y) in first.iter().zip(&other) {
                assert!((x - y).abs() <= 1e-4, "{b:?}: {x} vs {y}");
            }
        }
    }
    Corpus::Keep
});
