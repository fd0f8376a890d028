//! `include/infer.h` is what cbindgen generates from `src/lib.rs` today.

use std::path::Path;

const REGENERATE: &str =
    "cd infer-c && cbindgen --config cbindgen.toml --crate infer-c --output include/infer.h \
     (install it with: cargo install cbindgen --version 0.29.4 --locked), \
     or INFER_C_BLESS=1 cargo test -p infer-c --test header";

#[test]
fn header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = dir.join("include/infer.h");
    let committed = std::fs::read(&path).unwrap_or_default();
    if fresh == committed {
        return;
    }
    if std::env::var_os("INFER_C_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/infer.h");
        eprintln!("include/infer.h regenerated");
        return;
    }
    let fresh = String::from_utf8_lossy(&fresh);
    let committed = String::from_utf8_lossy(&committed);
    let first = fresh
        .lines()
        .zip(committed.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| fresh.lines().count().min(committed.lines().count()));
    panic!(
        "infer-c/include/infer.h is out of date with src/lib.rs (first difference at line {}: \
         generated {:?}, committed {:?}). Regenerate it: {REGENERATE}",
        first + 1,
        fresh.lines().nth(first).unwrap_or("<end>"),
        committed.lines().nth(first).unwrap_or("<end>"),
    );
}
