//! Helpers shared by the tests that compare infer-c's programs (the C example,
//! the WebAssembly module) with `classify --json` on the sample images.
#![allow(dead_code)]

use image::imageops::FilterType;
use image::DynamicImage;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root.
pub fn root() -> PathBuf {
    manifest_dir().join("..")
}

/// The sample images: `$INFER_SAMPLES_DIR`, else `../shared/samples` next to
/// the workspace; `None` (and a SKIPPED note) when absent.
pub fn samples_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("INFER_SAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/samples"));
    if dir.is_dir() {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED {test}: no sample images in {} (set INFER_SAMPLES_DIR)",
        dir.display()
    );
    None
}

/// The PNGs of `dir`, sorted.
pub fn pngs(dir: &Path) -> Vec<PathBuf> {
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list samples")
        .map(|e| e.expect("sample entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    assert!(!pngs.is_empty(), "no PNG in {}", dir.display());
    pngs
}

/// Crops `image` to the aspect ratio of `w × h` around its centre, then
/// resizes it (triangle filter): `classify`'s `input::fit` (a binary-only
/// crate, so copied; the comparisons with `classify --json` fail if the two
/// ever differ).
pub fn fit(image: DynamicImage, w: u32, h: u32) -> DynamicImage {
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

/// Each PNG decoded as `classify` prepares it for a `w × h` RGB model, written
/// as a raw `.rgb` file into `dir`; the files' paths.
pub fn raw_rgb(pngs: &[PathBuf], w: usize, h: usize, dir: &Path) -> Vec<PathBuf> {
    pngs.iter()
        .map(|png| {
            let image = image::open(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
            let image = DynamicImage::ImageRgb8(image.into_rgb8());
            let image = if (image.width() as usize, image.height() as usize) == (w, h) {
                image
            } else {
                fit(image, w as u32, h as u32)
            };
            let raw = dir
                .join(png.file_stem().expect("file name"))
                .with_extension("rgb");
            std::fs::write(&raw, image.into_bytes()).expect("write raw image");
            raw
        })
        .collect()
}

/// One classified image: file stem, class name, index, probability.
#[derive(Debug, PartialEq)]
pub struct Line {
    pub stem: String,
    pub class: String,
    pub index: usize,
    pub probability: f32,
}

fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(path)
        .to_string()
}

/// Runs `cmd` and returns its standard output; fails the test with both
/// outputs when it fails.
pub fn stdout_of(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `FILE \t CLASS \t INDEX \t PROBABILITY` lines (the C example, web/check.mjs).
pub fn parse_tsv(stdout: &str) -> Vec<Line> {
    stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "output line {l:?}");
            Line {
                stem: stem(f[0]),
                class: f[1].to_string(),
                index: f[2].parse().expect("class index"),
                probability: f[3].parse().expect("probability"),
            }
        })
        .collect()
}

/// The target directory this test was built in (the folder holding cargo's
/// `CACHEDIR.TAG`), so that a nested cargo reuses it.
pub fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// `cargo build ARGS --message-format json` in this test's target directory;
/// the paths of the artefacts of target `name` (executables, or all files).
pub fn cargo_build(args: &[&str], envs: &[(&str, &str)], name: &str) -> Vec<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root())
        .arg("build")
        .args(args)
        .args(["--message-format", "json-render-diagnostics"])
        .envs(envs.iter().copied());
    if let Some(dir) = target_dir() {
        cmd.arg("--target-dir").arg(dir);
    }
    let stdout = stdout_of(&mut cmd, &format!("cargo build {}", args.join(" ")));
    let artefacts: Vec<PathBuf> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .flat_map(|m| {
            let files = m["filenames"].as_array().cloned().unwrap_or_default();
            m["executable"]
                .as_str()
                .map(PathBuf::from)
                .into_iter()
                .chain(
                    files
                        .into_iter()
                        .filter_map(|f| f.as_str().map(PathBuf::from)),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!artefacts.is_empty(), "cargo built no {name}");
    artefacts
}

/// The `classify` binary: built (or found up to date) by cargo, in this
/// test's target directory and profile.
pub fn classify_binary() -> PathBuf {
    // The package's library is named `classify` too: take the executable, not
    // the library's .rlib/.rmeta.
    cargo_build(
        &["-p", "classify", "--bin", "classify", "--profile", "test"],
        &[],
        "classify",
    )
    .into_iter()
    .find(|p| p.extension().is_none_or(|e| e == "exe"))
    .expect("cargo built the classify executable")
}

/// `classify --json ARGS PNGS`, one line per image.
pub fn classify_json(args: &[&str], pngs: &[PathBuf]) -> Vec<Line> {
    let stdout = stdout_of(
        Command::new(classify_binary())
            .arg("--json")
            .args(args)
            .args(pngs),
        "classify",
    );
    stdout
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
        .collect()
}

/// Whether `rustc` has the `wasm32-unknown-unknown` standard library.
pub fn wasm_target_installed() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|s| s.join("lib/rustlib/wasm32-unknown-unknown/lib").is_dir())
}

/// The page's WebAssembly module, as `web/build.sh` builds it: infer-c for
/// `wasm32-unknown-unknown`, `no_std`, release without debug information.
pub fn build_wasm() -> PathBuf {
    cargo_build(
        &[
            "-p",
            "infer-c",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--no-default-features",
        ],
        &[
            ("CARGO_PROFILE_RELEASE_DEBUG", "0"),
            ("CARGO_PROFILE_RELEASE_STRIP", "true"),
        ],
        "infer_c",
    )
    .into_iter()
    .find(|p| p.extension().is_some_and(|e| e == "wasm"))
    .expect("cargo built no .wasm")
}

/// Whether `program --version` runs.
pub fn runs(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}
