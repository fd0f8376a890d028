//! The WebAssembly module the web page uses (infer-c built `no_std` for
//! `wasm32-unknown-unknown`), driven by the page's own wrapper `web/infer.js`
//! under Node (`web/check.mjs`), classifies the sample images as `classify
//! --json` does: the same classes, and probabilities equal to the bit to
//! `infer`'s portable kernels (WebAssembly runs those) and within 1e-5 of
//! classify's (which runs the CPU's SIMD kernels, summing in another order).
//!
//! Needs `node` and the `wasm32-unknown-unknown` target; says SKIPPED without
//! them, unless `INFER_WASM_REQUIRE=1` (as CI sets).

mod common;

use common::*;
use infer::{Backend, Model};
use std::process::Command;

fn skip(why: &str) -> bool {
    if std::env::var_os("INFER_WASM_REQUIRE").is_some() {
        panic!("{why} (INFER_WASM_REQUIRE is set)");
    }
    eprintln!("SKIPPED wasm_module_matches_classify_json: {why}");
    true
}

#[test]
fn wasm_module_matches_classify_json() {
    let Some(samples) = samples_dir("wasm_module_matches_classify_json") else {
        return;
    };
    if Command::new("node").arg("--version").output().is_err() && skip("node is not installed") {
        return;
    }
    if !wasm_target_installed()
        && skip("no wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown)")
    {
        return;
    }
    let wasm = build_wasm();
    let size = std::fs::metadata(&wasm).expect("wasm file").len();
    eprintln!("{}: {size} bytes", wasm.display());

    let pngs = pngs(&samples);
    let tmp = tempfile::tempdir().expect("temp dir");
    for name in ["fast", "model1"] {
        let model_path = root().join(format!("models/{name}.safetensors"));
        let bytes = std::fs::read(&model_path).expect("read the model");
        let model = Model::from_bytes(&bytes)
            .expect("open the model")
            .with_backend(Backend::Portable);
        let (h, w, _) = model.input_shape();
        let raws = raw_rgb(&pngs, w, h, tmp.path());
        let from_wasm = parse_tsv(&stdout_of(
            Command::new("node")
                .arg(root().join("web/check.mjs"))
                .arg(&wasm)
                .arg(&model_path)
                .args(&raws),
            "node web/check.mjs",
        ));
        let model_arg = model_path.to_str().expect("UTF-8 path");
        let from_classify = classify_json(&["--model", model_arg], &pngs);
        assert_eq!(from_wasm.len(), pngs.len());
        let mut scratch = vec![0f32; model.scratch_len()];
        let mut probs = vec![0f32; model.num_classes()];
        let mut worst = 0f32;
        for ((web, native), raw) in from_wasm.iter().zip(&from_classify).zip(&raws) {
            assert_eq!(
                (&web.stem, &web.class, web.index),
                (&native.stem, &native.class, native.index),
                "{name}: wasm vs classify --json"
            );
            let image = std::fs::read(raw).expect("raw image");
            let portable = model
                .classify(&image, &mut scratch, &mut probs)
                .expect("classify");
            assert_eq!(
                web.probability.to_bits(),
                portable.probability.to_bits(),
                "{name} {}: wasm {} vs portable kernels {}",
                web.stem,
                web.probability,
                portable.probability
            );
            worst = worst.max((web.probability - native.probability).abs());
        }
        eprintln!("{name}: largest difference from classify --json {worst:e}");
        assert!(worst <= 1e-5, "{name}: {worst}");
    }
}
