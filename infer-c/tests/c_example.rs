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

/// A library cargo built for this test run (`libinfer_c.a`, `libinfer_c.so`):
/// it builds the crate's lib once with all its crate types, next to this test
/// executable (`target/<profile>/deps/`), or uplifted one level above.
fn library(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable's folder");
    [deps.join(name), deps.join("..").join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found in {} or its parent", deps.display()))
}

/// Runs the C compiler `cc` with `args`; `None` when it cannot be started
/// (and INFER_C_REQUIRE_CC is not set), else fails the test if it fails.
fn compile(cc: &std::ffi::OsStr, args: &mut Command) -> Option<()> {
    let out = match args.output() {
        Ok(out) => out,
        Err(e) if std::env::var_os("INFER_C_REQUIRE_CC").is_none() => {
            eprintln!(
                "SKIPPED c_example_matches_classify_json: cannot run the C compiler {cc:?} ({e}); \
                 set CC, or INFER_C_REQUIRE_CC=1 to make this an error"
            );
            return None;
        }
        Err(e) => panic!("cannot run the C compiler {cc:?}: {e}"),
    };
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
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

    // Build the C example with the system compiler, against the static library
    // and (on Linux) against the shared one.
    let exe = tmp.path().join("classify-c");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let c_flags = [
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-O2",
    ];
    let source = manifest_dir().join("examples/c/classify.c");
    let include = manifest_dir().join("include");
    let mut build = Command::new(&cc);
    build
        .args(c_flags)
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg(library("libinfer_c.a"))
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(&exe);
    if compile(&cc, &mut build).is_none() {
        return;
    }
    let shared = cfg!(target_os = "linux").then(|| {
        let so = library("libinfer_c.so");
        let exe = tmp.path().join("classify-c-shared");
        let mut build = Command::new(&cc);
        build
            .args(c_flags)
            .arg("-I")
            .arg(&include)
            .arg(&source)
            .arg(format!("-L{}", so.parent().expect("folder").display()))
            .arg(format!(
                "-Wl,-rpath,{}",
                so.parent().expect("folder").display()
            ))
            .args(["-linfer_c", "-o"])
            .arg(&exe);
        compile(&cc, &mut build).expect("the compiler ran a moment ago");
        exe
    });
    // The header is C++ too (cpp_compat): it compiles as C++ when there is a
    // C++ compiler.
    let cxx = std::env::var_os("CXX").unwrap_or_else(|| "c++".into());
    let main_cc = tmp.path().join("header.cc");
    std::fs::write(
        &main_cc,
        "#include \"infer.h\"\nint main() { return infer_model_size() > 0 ? 0 : 1; }\n",
    )
    .expect("write header.cc");
    match Command::new(&cxx)
        .args([
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-I",
        ])
        .arg(&include)
        .arg(&main_cc)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "infer.h does not compile as C++:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("no C++ compiler {cxx:?} ({e}): the header's C++ check is skipped"),
    }

    let from_c = parse_tsv(&stdout_of(
        Command::new(&exe).arg(&model_path).args(&raws),
        "the C example",
    ));
    // classify --json on the PNGs themselves (its default model is fast).
    let from_classify = classify_json(&[], &pngs);

    assert_eq!(from_c.len(), pngs.len());
    assert_eq!(from_c, from_classify, "C example vs classify --json");
    if let Some(exe) = shared {
        let from_shared = parse_tsv(&stdout_of(
            Command::new(&exe).arg(&model_path).args(&raws),
            "the C example linked with libinfer_c.so",
        ));
        assert_eq!(from_shared, from_c, "shared vs static library");
    }
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
