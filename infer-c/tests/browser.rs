//! The web page (`web/`) in a real browser: served on 127.0.0.1 by a small
//! static file server here, opened in headless Chromium through the DevTools
//! protocol (`web/browser.mjs`, Node, no npm packages), it classifies sample
//! images with the shipped models and shows the same top class as `classify
//! --json`, with a probability within 1e-5 of classify's (WebAssembly runs
//! `infer`'s portable kernels; classify the CPU's SIMD ones). A screenshot of
//! each page is kept in `<target dir>/infer-c-browser/`.
//!
//! Needs `node`, Chromium (`$CHROMIUM`, else `chromium`, `chromium-browser` or
//! `google-chrome` on the PATH) and the `wasm32-unknown-unknown` target; says
//! SKIPPED without them, unless `INFER_BROWSER_REQUIRE=1` (as CI sets).

mod common;

use common::*;
use infer::{Backend, Model};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

fn skip(why: &str) -> bool {
    if std::env::var_os("INFER_BROWSER_REQUIRE").is_some() {
        panic!("{why} (INFER_BROWSER_REQUIRE is set)");
    }
    eprintln!("SKIPPED page_in_chromium_matches_classify_json: {why}");
    true
}

fn chromium() -> Option<String> {
    std::env::var("CHROMIUM")
        .ok()
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(String::from))
        .find(|c| runs(c))
}

/// Where a URL path is on disk: `/pkg/infer_c.wasm` is the built module,
/// `/pkg/NAME.safetensors` a shipped model, `/samples/…` the sample images,
/// the rest `web/`.
struct Site {
    web: PathBuf,
    wasm: PathBuf,
    models: PathBuf,
    samples: PathBuf,
}

impl Site {
    fn file(&self, url_path: &str) -> Option<PathBuf> {
        let path = url_path.split(['?', '#']).next()?;
        let rel = path.trim_start_matches('/');
        if rel.split('/').any(|part| part == ".." || part.is_empty()) && !rel.is_empty() {
            return None;
        }
        let file = match rel {
            "" => self.web.join("index.html"),
            "pkg/infer_c.wasm" => self.wasm.clone(),
            _ => match rel.split_once('/') {
                Some(("pkg", name)) if name.ends_with(".safetensors") => self.models.join(name),
                Some(("samples", name)) => self.samples.join(name),
                _ => self.web.join(rel),
            },
        };
        file.is_file().then_some(file)
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// Answers one HTTP/1.1 GET with the file, or 404; closes the connection.
fn serve(site: &Site, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let mut stream = stream;
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    match site.file(target) {
        Some(file) => {
            let body = std::fs::read(&file)?;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                content_type(&file),
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        None => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    stream.flush()
}

/// Serves `site` on 127.0.0.1 from a background thread; its port.
fn start_server(site: Site) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("local address").port();
    let site = std::sync::Arc::new(site);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let site = site.clone();
            std::thread::spawn(move || {
                let _ = serve(&site, stream);
            });
        }
    });
    port
}

#[test]
fn page_in_chromium_matches_classify_json() {
    let Some(samples) = samples_dir("page_in_chromium_matches_classify_json") else {
        return;
    };
    if !runs("node") && skip("node is not installed") {
        return;
    }
    let Some(chromium) = chromium() else {
        skip("no Chromium (apt-get install chromium, or set CHROMIUM)");
        return;
    };
    if !wasm_target_installed()
        && skip("no wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown)")
    {
        return;
    }
    let wasm = build_wasm();
    let port = start_server(Site {
        web: root().join("web"),
        wasm,
        models: root().join("models"),
        samples: samples.clone(),
    });
    let shots = target_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("infer-c-browser");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    // Node 22 has WebSocket; Node 20 (≥ 20.10) behind a flag.
    let node_flags: &[&str] = match Command::new("node")
        .args([
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ])
        .status()
    {
        Ok(s) if s.success() => &[],
        _ => &["--experimental-websocket"],
    };
    let tmp = tempfile::tempdir().expect("temp dir");

    for (model_name, sample) in [("fast", "cat_1"), ("fast", "ship_1"), ("model1", "deer_1")] {
        let png = samples.join(format!("{sample}.png"));
        if !png.is_file() {
            eprintln!("no {}: skipped", png.display());
            continue;
        }
        let model_path = root().join(format!("models/{model_name}.safetensors"));
        let url = format!(
            "http://127.0.0.1:{port}/index.html?model=pkg/{model_name}.safetensors&image=samples/{sample}.png"
        );
        let shot = shots.join(format!("{model_name}-{sample}.png"));
        let stdout = stdout_of(
            Command::new("node")
                .args(node_flags)
                .arg(root().join("web/browser.mjs"))
                .arg(&chromium)
                .arg(&url)
                .arg(&shot)
                .arg("90"),
            "node web/browser.mjs",
        );
        let page: serde_json::Value = serde_json::from_str(stdout.trim()).expect("page JSON");
        eprintln!("{url}: {page}; screenshot {}", shot.display());
        assert!(shot.is_file(), "no screenshot");
        let console = page["console"].as_array().cloned().unwrap_or_default();
        assert!(console.is_empty(), "console output: {console:?}");

        let model_arg = model_path.to_str().expect("UTF-8 path");
        let want = classify_json(&["--model", model_arg], std::slice::from_ref(&png));
        let want = &want[0];
        assert_eq!(
            page["topClass"].as_str(),
            Some(want.class.as_str()),
            "{url}"
        );
        assert_eq!(
            page["topIndex"].as_str(),
            Some(want.index.to_string().as_str())
        );
        let shown: f64 = page["topProbability"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .expect("data-top-probability");
        let shown = shown as f32;
        assert!(
            (shown - want.probability).abs() <= 1e-5,
            "{url}: page {shown}, classify {}",
            want.probability
        );
        // With the pixels classify decodes, the portable kernels give exactly
        // the page's number (the canvas kept the 32×32 pixels as they are).
        let bytes = std::fs::read(&model_path).expect("model");
        let model = Model::from_bytes(&bytes)
            .expect("model")
            .with_backend(Backend::Portable);
        let (h, w, _) = model.input_shape();
        let raw = raw_rgb(std::slice::from_ref(&png), w, h, tmp.path());
        let image = std::fs::read(&raw[0]).expect("raw");
        let mut scratch = vec![0f32; model.scratch_len()];
        let mut probs = vec![0f32; model.num_classes()];
        let top = model
            .classify(&image, &mut scratch, &mut probs)
            .expect("classify");
        assert_eq!(shown.to_bits(), top.probability.to_bits(), "{url}");
    }
}
