//! `examples/c/classify.c`, built with the system C compiler against this
//! crate's static library, prints the same classes and probabilities as
//! `classify --json` for the sample images (`../shared/samples/*.png`) with
//! the shipped model (`models/fast.safetensors`, classify's default).
//!
//! The PNGs are decoded here, as `classify` prepares them (the model's
//! channels, then a centre crop to its aspect ratio and a triangle resize
//! when the size differs), and handed to the C program as raw RGB files.

use image::imageops::FilterType;
use image::DynamicImage;
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sample images: `$INFER_SAMPLES_DIR`, else `../shared/samples` next to
/// the workspace; `None` (and a SKIPPED note) when absent.
fn samples_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("INFER_SAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../../shared/samples"));
    if dir.is_dir() {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED {test}: no sample images in {} (set INFER_SAMPLES_DIR)",
        dir.display()
    );
    None
}

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

/// The target directory this test was built in (the folder holding cargo's
/// `CACHEDIR.TAG`), so that a nested cargo reuses it.
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// The `classify` binary: built (or found up to date) by cargo, in this
/// test's target directory and profile.
fn classify_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir().join(".."))
        .args([
            "build",
            "-p",
            "classify",
            "--bin",
            "classify",
            "--profile",
            "test",
        ])
        .args(["--message-format", "json-render-diagnostics"]);
    if let Some(dir) = target_dir() {
        cmd.arg("--target-dir").arg(dir);
    }
    let out = cmd.output().expect("run cargo build -p classify");
    assert!(
        out.status.success(),
        "cargo build -p classify failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "classify")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no classify executable")
}

/// Crops `image` to the aspect ratio of `w × h` around its centre, then
/// resizes it (triangle filter): `classify`'s `input::fit` (a binary-only
/// crate, so copied; the comparison below fails if the two ever differ).
fn fit(image: DynamicImage, w: u32, h: u32) -> DynamicImage {
    let (iw, ih) = (u64::from(image.width()), u64::from(image.height()));
    let (tw, th) = (u64::from(w), u64::from(h));
    let (x, y, cw, ch) = if iw * th > ih * tw {
        let cw = ((ih * tw + th / 2) / th).clamp(1, iw);
        ((iw - cw) / 2, 0, cw, ih)
    } else if iw * th < ih * tw {
        let ch = ((iw * th + tw / 2) / tw).clamp(1, ih);
        (0, (ih - ch) / 2, iw, ch)
    } else {
        (0, 0, iw, ih)
    };
    image
        .crop_imm(x as u32, y as u32, cw as u32, ch as u32)
        .resize_exact(w, h, FilterType::Triangle)
}

/// One line of either program: file stem, class name, index, probability.
#[derive(Debug, PartialEq)]
struct Line {
    stem: String,
    class: String,
    index: usize,
    probability: f32,
}

fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(path)
        .to_string()
}

#[test]
fn c_example_matches_classify_json() {
    let Some(samples) = samples_dir("c_example_matches_classify_json") else {
        return;
    };
    let root = manifest_dir().join("..");
    let model_path = root.join("models/fast.safetensors");
    let bytes = std::fs::read(&model_path).expect("read models/fast.safetensors");
    let model = infer::Model::from_bytes(&bytes).expect("open the model");
    let (h, w, c) = model.input_shape();
    assert_eq!(c, 3, "the shipped model takes RGB");

    let mut pngs: Vec<PathBuf> = std::fs::read_dir(&samples)
        .expect("list samples")
        .map(|e| e.expect("sample entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    assert!(!pngs.is_empty(), "no PNG in {}", samples.display());

    // The PNGs as raw RGB at the model's input size.
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut raws = Vec::new();
    for png in &pngs {
        let image = image::open(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        let image = DynamicImage::ImageRgb8(image.into_rgb8());
        let image = if (image.width() as usize, image.height() as usize) == (w, h) {
            image
        } else {
            fit(image, w as u32, h as u32)
        };
        let raw = tmp
            .path()
            .join(png.file_stem().expect("file name"))
            .with_extension("rgb");
        std::fs::write(&raw, image.into_bytes()).expect("write raw image");
        raws.push(raw);
    }

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

    // The C program's lines.
    let out = Command::new(&exe)
        .arg(&model_path)
        .args(&raws)
        .output()
        .expect("run the C example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the C example failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_c: Vec<Line> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "C output line {l:?}");
            Line {
                stem: stem(f[0]),
                class: f[1].to_string(),
                index: f[2].parse().expect("class index"),
                probability: f[3].parse().expect("probability"),
            }
        })
        .collect();

    // classify --json on the PNGs themselves (its default model is fast).
    let out = Command::new(classify_binary())
        .arg("--json")
        .args(&pngs)
        .output()
        .expect("run classify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "classify failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_classify: Vec<Line> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("classify JSON line");
            Line {
                stem: stem(v["file"].as_str().expect("file")),
                class: v["class"].as_str().expect("class").to_string(),
                index: v["index"].as_u64().expect("index") as usize,
                // classify prints the shortest decimal that reads back as the f32.
                probability: v["probability"].to_string().parse().expect("probability"),
            }
        })
        .collect();

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
