//! `examples/c/classify.c`, built with the system C compiler against this
//! crate's static library, prints the same classes and probabilities as
//! `classify --json` for the sample images (`../shared/samples/*.png`) with
//! the shipped model (`models/fast.safetensors`, classify's default).
//!
//! The PNGs are decoded here, as `classify` prepares them (the model's
//! channels, then a centre crop to its aspect ratio and a triangle resize
//! when the size differs), and handed to the C program as raw RGB files.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

/// The static library cargo built for this test run: it builds the crate's
/// lib once with all its crate types, next to this test executable
/// (`target/<profile>/deps/`), or uplifted one level above.
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable's folder");
    let name = if cfg!(windows) {
        "infer_c.lib"
    } else {
        "libinfer_c.a"
    };
    [deps.join(name), deps.join("..").join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found in {} or its parent", deps.display()))
}

#[test]
fn c_example_matches_classify_json() {
    let Some(samples) = samples_dir("c_example_matches_classify_json") else {
        return;
    };
    let model_path = root().join("models/fast.safetensors");
    let bytes = std::fs::read(&model_path).expect("read models/fast.safetensors");
    let model = infer::Model::from_bytes(&bytes).expect("open the model");
    let (h, w, c) = model.input_shape();
    assert_eq!(c, 3, "the shipped model takes RGB");
    let pngs = pngs(&samples);
    let tmp = tempfile::tempdir().expect("temp dir");
    let raws = raw_rgb(&pngs, w, h, tmp.path());

    // Build the C example with the system compiler.
    let exe = tmp.path().join("classify-c");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let mut build = Command::new(&cc);
    build
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O2",
        ])
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg(manifest_dir().join("examples/c/classify.c"))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(&exe);
    let out = match build.output() {
        Ok(out) => out,
        Err(e) if std::env::var_os("INFER_C_REQUIRE_CC").is_none() => {
            eprintln!(
                "SKIPPED c_example_matches_classify_json: cannot run the C compiler {cc:?} ({e}); \
                 set CC, or INFER_C_REQUIRE_CC=1 to make this an error"
            );
            return;
        }
        Err(e) => panic!("cannot run the C compiler {cc:?}: {e}"),
    };
    assert!(
        out.status.success(),
        "building examples/c/classify.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let from_c = parse_tsv(&stdout_of(
        Command::new(&exe).arg(&model_path).args(&raws),
        "the C example",
    ));
    // classify --json on the PNGs themselves (its default model is fast).
    let from_classify = classify_json(&[], &pngs);

    assert_eq!(from_c.len(), pngs.len());
    assert_eq!(from_c, from_classify, "C example vs classify --json");
    // Reading the samples' names as labels: the shipped model gets most right.
    let right = from_c
        .iter()
        .filter(|l| l.stem.starts_with(&l.class))
        .count();
    eprintln!(
        "{right}/{} samples classified as their file name says",
        from_c.len()
    );
    assert!(right * 4 >= from_c.len() * 3, "{right}/{}", from_c.len());
}
