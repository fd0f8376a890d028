//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The CIFAR-10 folder: `$CIFAR10_DIR`, else `../shared/cifar10/cifar-10-batches-bin`
/// or `data/cifar-10-batches-bin` next to the workspace. `None` (and a note on
/// stderr saying the test is skipped) when there is none.
pub fn cifar10_dir(test: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = std::env::var_os("CIFAR10_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            root.join("../shared/cifar10/cifar-10-batches-bin"),
            root.join("data/cifar-10-batches-bin"),
        ]);
    for dir in candidates {
        if trainer::data::cifar10::is_present(&dir) {
            return Some(dir);
        }
    }
    eprintln!("SKIPPED {test}: CIFAR-10 not found (set CIFAR10_DIR or put it in ../shared/cifar10/cifar-10-batches-bin)");
    None
}

/// The path of a file of the repository's models/ folder (`model1.safetensors`).
pub fn shipped(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
        .display()
        .to_string()
}

/// Runs the `trainer` binary of this package with `args`, on two threads.
pub fn trainer(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("run trainer")
}

/// Standard output then standard error, as text.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The figure after `key` on the line starting with `prefix`.
pub fn figure(out: &str, prefix: &str, key: &str) -> f32 {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {out}"));
    let rest = &line[line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line}"))
        + key.len()..];
    rest.trim_start()
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every column of a history CSV but `seconds` (the 6th), one string per
/// line: what two runs of the same training must share.
pub fn history_without_seconds(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.remove(5);
            cells.join(",")
        })
        .collect()
}
