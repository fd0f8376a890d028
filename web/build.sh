#!/usr/bin/env bash
# Builds the page's WebAssembly module and copies it, with the shipped models,
# into web/pkg/ (not committed). Then serve web/ with any static file server:
#   web/build.sh && python3 -m http.server -d web 8000   # http://127.0.0.1:8000/
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
# The C API of infer-c, no_std (no allocator, no std: the module has no imports),
# release without debug info.
CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=true \
  cargo build -p infer-c --release --target wasm32-unknown-unknown --no-default-features
target="${CARGO_TARGET_DIR:-target}"
mkdir -p web/pkg
cp "$target/wasm32-unknown-unknown/release/infer_c.wasm" web/pkg/
cp models/fast.safetensors models/model1.safetensors web/pkg/
ls -l web/pkg
