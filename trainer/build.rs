//! Enables the AVX-512 Winograd transforms (`cfg(trainer_avx512)`) when the
//! compiler is new enough for them: the AVX-512 intrinsics and target
//! features are stable since Rust 1.89, and the workspace supports 1.88,
//! which builds without them (AVX2 and baseline versions remain). Same test
//! as `infer/build.rs`.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(trainer_avx512)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        // "rustc 1.95.0 (59807616e 2026-04-14)"
        .and_then(|v| {
            v.split_whitespace()
                .nth(1)?
                .split('.')
                .nth(1)?
                .parse::<u32>()
                .ok()
        });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo::rustc-cfg=trainer_avx512");
    }
}
