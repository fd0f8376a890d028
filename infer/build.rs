//! Sets `cfg(infer_arm_dsp)` when building for ARMv7E-M (`thumbv7em-*`:
//! Cortex-M4 and M7), whose DSP extension (`SMLAD`, `SXTB16`, …) the int8
//! kernel of `layers/conv_i8_dsp.rs` uses. (Stable Rust does not expose Arm
//! target features to `cfg`, so the target's name decides: the "E" of
//! ARMv7E-M is that extension.)

fn main() {
    println!("cargo:rustc-check-cfg=cfg(infer_arm_dsp)");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em") {
        println!("cargo:rustc-cfg=infer_arm_dsp");
    }
}
