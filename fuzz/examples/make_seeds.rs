//! Writes the seed corpora, `fuzz/corpus/<target>/seed-*`: small valid files
//! of each format (and a few near misses). Run from `fuzz/`:
//!
//! ```text
//! cargo +nightly run --example make_seeds
//! ```
//!
//! Deterministic: running it again gives the same files.

use std::path::Path;
use trainer::model::network::Network;
use trainer::model::spec::ModelSpec;
use trainer_fuzz::*;

fn seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("mkdir corpus");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    println!("corpus/{target}/seed-{name}: {} bytes", bytes.len());
}

/// Tiny architectures covering every layer type (and the relu fusion and
/// residual paths of `Network::new`, and a batch norm folded through a
/// max-pool in the int8 seeds).
const MODELS: &[(&str, &str)] = &[
    (
        "minimal",
        r#"{"name":"m","input":{"height":1,"width":1,"channels":1},"layers":[{"type":"dense","units":2}]}"#,
    ),
    (
        "conv-same",
        r#"{"name":"s","input":{"height":2,"width":2,"channels":1},"layers":[
            {"type":"conv2d","filters":1,"kernel":1},{"type":"flatten"},{"type":"dense","units":2}]}"#,
    ),
    (
        "conv-bn",
        r#"{"name":"t","input":{"height":6,"width":5,"channels":1},"layers":[
            {"type":"conv2d","filters":3,"kernel":3},{"type":"batchnorm"},{"type":"relu"},
            {"type":"flatten"},{"type":"dense","units":4}]}"#,
    ),
    (
        "residual",
        r#"{"name":"r","input":{"height":4,"width":4,"channels":3},"layers":[
            {"type":"conv2d","filters":2,"kernel":3,"name":"a"},{"type":"relu","name":"r"},
            {"type":"conv2d","filters":2,"kernel":1,"stride":1,"padding":"same"},
            {"type":"add","from":"r"},{"type":"maxpool2d","size":2,"stride":2,"padding":"valid"},
            {"type":"global_avg_pool"},{"type":"dropout","rate":0.25},{"type":"dense","units":3}]}"#,
    ),
    (
        "pool-bn-gelu",
        r#"{"name":"g","input":{"height":6,"width":6,"channels":2},"layers":[
            {"type":"conv2d","filters":4,"kernel":3},{"type":"maxpool2d"},{"type":"batchnorm"},
            {"type":"gelu"},{"type":"flatten"},{"type":"dense","units":3}]}"#,
    ),
];

fn main() {
    // model_file, model_header and spec_file
    for (name, json) in MODELS {
        let spec = ModelSpec::from_json_str(json).expect("seed spec");
        let net = Network::new(&spec, 7).expect("seed network");
        let names = class_names(net.num_classes());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let bytes = net.to_safetensors_bytes(&names).expect("export");
        seed("model_file", &format!("{name}.safetensors"), &bytes);
        // model_header: the file without its 8-byte header length.
        seed("model_header", &format!("{name}.st-body"), &bytes[8..]);
        // infer_model: the same structure, f32 and the int8 file made by
        // `trainer quantize` from a few calibration images.
        seed("infer_model", &format!("{name}.st-body"), &bytes[8..]);
        let input = net.spec().input.len();
        let images: Vec<u8> = (0..4 * input).map(|i| (i * 37 % 251) as u8).collect();
        let int8 = trainer::model::quantize::quantize(
            &net,
            &images,
            trainer::model::quantize::Calibration::MinMax,
        )
        .expect("seed quantizes");
        seed("infer_model", &format!("{name}-int8.st-body"), &int8[8..]);
        seed("spec_file", &format!("{name}.json"), json.as_bytes());
    }
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut specs: Vec<_> = std::fs::read_dir(&models)
        .expect("models/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    specs.sort();
    for p in specs {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        seed(
            "spec_file",
            &format!("models-{name}"),
            &std::fs::read(&p).unwrap(),
        );
    }

    // idx: flags, split (u16 LE), images ++ labels
    let framed = |flags: u8, images: &[u8], labels: &[u8]| {
        let mut b = vec![flags];
        b.extend((images.len() as u16).to_le_bytes());
        b.extend(images);
        b.extend(labels);
        b
    };
    let (im, lb) = (idx_images(3, 4, 5), idx_labels(&[0, 7, 2]));
    seed("idx", "plain", &framed(0x00, &im, &lb));
    seed("idx", "gzip-by-harness", &framed(0x0a | 0x40, &im, &lb));
    seed(
        "idx",
        "gzip-raw-dotted",
        &framed(0x05 | 0x10 | 0x20, &gzip(&im), &gzip(&lb)),
    );
    seed(
        "idx",
        "big-label",
        &framed(0x10, &idx_images(2, 2, 2), &idx_labels(&[200, 3])),
    );

    // cifar10: flags, payload
    let mut two = cifar10_record(0, 5);
    two.extend(cifar10_record(9, 6));
    seed(
        "cifar10",
        "one-record",
        &[&[0u8][..], &cifar10_record(4, 2)].concat(),
    );
    seed(
        "cifar10",
        "two-records-all-files",
        &[&[0x03u8][..], &two].concat(),
    );
    seed(
        "cifar10",
        "meta",
        &[&[0x04u8][..], &names_file("n", 10)].concat(),
    );

    // cifar100: flags, payload
    let mut two = cifar100_record(0, 99, 5);
    two.extend(cifar100_record(19, 0, 6));
    seed(
        "cifar100",
        "one-record",
        &[&[0u8][..], &cifar100_record(7, 70, 2)].concat(),
    );
    seed(
        "cifar100",
        "two-records-coarse-meta",
        &[&[0x07u8][..], &two].concat(),
    );
    seed(
        "cifar100",
        "names",
        &[&[0x08u8][..], &names_file("f", 100)].concat(),
    );

    // folder_cache: the valid cache of the fixture folder, and a truncation.
    let dir = scratch();
    make_image_folder(dir.path());
    let (_, report) = load_folder(dir.path());
    assert!(!report.from_cache);
    let cache = std::fs::read(trainer::data::folder::cache_path(dir.path(), FOLDER_SHAPE))
        .expect("cache written");
    let (_, report) = load_folder(dir.path());
    assert!(
        report.from_cache,
        "the fixture's cache is used on a second load"
    );
    seed("folder_cache", "valid", &cache);
    seed("folder_cache", "truncated", &cache[..cache.len() - 1]);

    // classify_decode: byte 0 picks the input shape; then small PNG and JPEG
    // files (RGB, grayscale, RGBA 16-bit, a size to resize, a truncation).
    let rgb = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, ((x + y) * 4) as u8])
    });
    let encode = |img: image::DynamicImage, format: image::ImageFormat| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode seed image");
        out.into_inner()
    };
    let png = encode(rgb.clone().into(), image::ImageFormat::Png);
    let gray = image::DynamicImage::ImageRgb8(rgb.clone()).into_luma8();
    let rgba16 = image::DynamicImage::ImageRgb8(rgb.clone()).into_rgba16();
    let wide = image::DynamicImage::ImageRgb8(rgb.clone()).resize_exact(
        48,
        20,
        image::imageops::FilterType::Nearest,
    );
    for (shape, name, bytes) in [
        (0u8, "rgb.png", png.clone()),
        (1, "gray.png", encode(gray.into(), image::ImageFormat::Png)),
        (2, "rgba16.png", encode(rgba16.into(), image::ImageFormat::Png)),
        (3, "wide.png", encode(wide, image::ImageFormat::Png)),
        (0, "rgb.jpg", encode(rgb.into(), image::ImageFormat::Jpeg)),
        (0, "truncated.png", png[..png.len() / 2].to_vec()),
    ] {
        seed("classify_decode", name, &[&[shape][..], &bytes].concat());
    }
}
