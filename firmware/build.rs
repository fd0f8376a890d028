//! Puts the linker script's memory map where the linker finds it (cortex-m-rt's
//! link.x includes `memory.x`): memory-int8.x for the int8 model, memory-f32.x for
//! the `f32` feature's larger one.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let map: &[u8] = if env::var_os("CARGO_FEATURE_F32").is_some() {
        include_bytes!("memory-f32.x")
    } else {
        include_bytes!("memory-int8.x")
    };
    fs::write(out.join("memory.x"), map).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory-int8.x");
    println!("cargo:rerun-if-changed=memory-f32.x");
}
