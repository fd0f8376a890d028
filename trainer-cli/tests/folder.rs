//! A user's own images, end to end: a folder of class folders (PNGs and
//! JPEGs drawn by the test) trains to well above chance through the
//! `trainer` command, the exported model carries the folder's class names and
//! grayscale input shape, and a model that does not fit the data is refused
//! with one clear error before anything trains; interrupted runs (Ctrl-C,
//! kill -9) resume to the model an uninterrupted run exports.

mod common;

use common::{text, trainer};
use std::path::Path;

/// Three classes of 16×16 pictures, drawn with noise: a horizontal bar, a
/// vertical bar, a filled square (its folder's name holds a comma, as
/// ImageNet's "tench, Tinca tinca" does); `n` per class, every third one a JPEG.
fn draw_folder(root: &Path, n: usize) {
    let mut seed = 12345u32;
    let mut noise = move || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as u8 % 40
    };
    for (class, name) in ["hbar", "square, filled", "vbar"].iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let at = 3 + i % 8;
            let img = image::RgbImage::from_fn(16, 16, |x, y| {
                let (x, y) = (x as usize, y as usize);
                let on = match class {
                    0 => y >= at && y < at + 4,
                    1 => (4..12).contains(&x) && (4..12).contains(&y),
                    _ => x >= at && x < at + 4,
                };
                let v = if on { 200 } else { 20 } + noise();
                image::Rgb([v, v / 2 + noise(), v])
            });
            let path = if i % 3 == 0 {
                dir.join(format!("{i}.jpg"))
            } else {
                dir.join(format!("{i}.png"))
            };
            img.save(&path).unwrap();
        }
    }
}

const SPEC: &str = r#"{"name":"shapes","input":{"height":16,"width":16,"channels":1},"layers":[
    {"type":"conv2d","filters":8,"kernel":3},{"type":"relu"},{"type":"maxpool2d"},
    {"type":"conv2d","filters":8,"kernel":3},{"type":"relu"},{"type":"global_avg_pool"},
    {"type":"dense","units":"classes"}]}"#;

#[test]
fn image_folder_trains_exports_and_keeps_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shapes");
    draw_folder(&data, 40);
    let spec = dir.path().join("shapes.json");
    std::fs::write(&spec, SPEC).unwrap();
    let out = dir.path().join("shapes.safetensors");
    let steps_log = dir.path().join("steps.jsonl");
    let args = [
        "train",
        "--model",
        spec.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--val-split",
        "0.25",
        "--epochs",
        "25",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--quiet",
        "--threads",
        "1",
        "--log-jsonl",
        steps_log.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = trainer(&args);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("3 classes, 90 training, 30 test images of 16×16×1"),
        "{t}"
    );
    // --threads sets the pool.
    assert!(t.contains("epochs max, 1 threads"), "{t}");
    // --log-jsonl: a line per step, 81 training images in batches of 8 → 11
    // steps an epoch, for 25 epochs.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&steps_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 25 * 11);
    assert_eq!(
        (lines[12]["epoch"].as_u64(), lines[12]["step"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(lines
        .iter()
        .all(|l| l["loss"].as_f64().is_some_and(f64::is_finite)
            && l["images_per_second"].as_f64().is_some()));
    // Validated on 10 % of each class of the 90 training images (3 each),
    // the 30 test images read once, at the end.
    assert!(t.contains("Validating on 10 % of each class"), "{t}");
    let saved = t
        .lines()
        .find(|l| l.starts_with("Saved "))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        saved.contains("validation accuracy") && saved.ends_with("on 9 held-out training images"),
        "{saved}"
    );
    let line = t
        .lines()
        .find(|l| l.starts_with("Test set, evaluated once:"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(line.ends_with("on 30 test images"), "{line}");
    let accuracy: f32 = line
        .split("test accuracy ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // Chance is 1/3.
    assert!(accuracy >= 0.8, "{t}");
    let net = trainer::Network::load(&out).unwrap();
    assert_eq!(net.class_names, ["hbar", "square, filled", "vbar"]);
    // infer reads the same names from the file, without a heap.
    let bytes = std::fs::read(&out).unwrap();
    let model = infer::Model::from_bytes(&bytes).unwrap();
    assert_eq!(
        (0..4).map(|i| model.class_name(i)).collect::<Vec<_>>(),
        [Some("hbar"), Some("square, filled"), Some("vbar"), None]
    );
    assert_eq!(
        net.input_shape(),
        trainer::kernels::tensor::ImageShape::new(16, 16, 1)
    );
    // `evaluate` on the same folder: the held-out images, with `--json -`
    // giving standard output to the JSON report alone.
    let data_arg = data.to_str().unwrap();
    let model_arg = out.to_str().unwrap();
    fn evaluate_args<'a>(model: &'a str, data: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "evaluate",
            "--model",
            model,
            "--data",
            data,
            "--val-split",
            "0.25",
        ];
        a.extend_from_slice(extra);
        a
    }
    let eval = |extra| evaluate_args(model_arg, data_arg, extra);
    let o = trainer(&eval(&["--json", "-"]));
    assert!(o.status.success(), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is the JSON");
    assert_eq!(
        json["class_names"],
        serde_json::json!(["hbar", "square, filled", "vbar"])
    );
    let accuracy = json["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.8, "{json}");
    // No float noise: the figure is a short decimal (k / 30 as an f32, printed shortest).
    assert!(accuracy.to_string().len() <= 12, "{json}");
    assert!(!dir.path().join("-").exists());
    // A closed pipe (`trainer evaluate … | head -1`) is a normal end, not a panic.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(eval(&[]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("panicked"), "{err}");
    // Nothing to validate on is refused, not reported as 0 % on 0 images.
    let o = trainer(&[&args[..], &["--val-subset", "0"]].concat());
    assert!(
        !o.status.success() && text(&o).contains("--val-subset"),
        "{}",
        text(&o)
    );

    // The second run reads the decoded images from the cache.
    let mut again = args.to_vec();
    let epochs = again.iter().position(|a| *a == "25").unwrap();
    again[epochs] = "1";
    again.push("--fresh");
    let again = trainer(&again);
    assert!(text(&again).contains("from the cache"), "{}", text(&again));
}

#[test]
fn a_model_that_does_not_fit_the_data_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shapes");
    draw_folder(&data, 4);
    let spec = dir.path().join("two.json");
    std::fs::write(&spec, SPEC.replace(r#""units":"classes""#, r#""units":2"#)).unwrap();
    let o = trainer(&[
        "train",
        "--model",
        spec.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--val-split",
        "0.25",
        "--quiet",
        "--out",
        dir.path().join("m.safetensors").to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("has 2 outputs") && t.contains("3 classes"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}

/// Reads `child`'s standard output until a line starting with `prefix`.
fn wait_for_line(out: &mut impl std::io::BufRead, prefix: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "the run ended before printing {prefix:?}");
        if line.starts_with(prefix) {
            return;
        }
    }
}

/// Ctrl-C (SIGINT) says where the checkpoint is and how to resume, and exits
/// with 130; a run killed outright (SIGKILL) mid-epoch leaves a checkpoint
/// the same command resumes from; and the model of the twice-interrupted run
/// is byte for byte the uninterrupted run's (one thread, so that sums run in
/// one order).
#[test]
fn interrupted_runs_resume_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shapes");
    draw_folder(&data, 12);
    let spec = dir.path().join("shapes.json");
    std::fs::write(&spec, SPEC).unwrap();
    let out = dir.path().join("run.safetensors");
    let base = [
        "train",
        "--model",
        spec.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--val-split",
        "0.25",
        "--epochs",
        "400",
        "--batch-size",
        "4",
        "--quiet",
        "--threads",
        "1",
    ];
    let start = |out: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(base)
            .args(["--out", out.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let signal = |child: &std::process::Child, sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };

    let mut first = start(&out);
    let mut stdout = std::io::BufReader::new(first.stdout.take().unwrap());
    wait_for_line(&mut stdout, "Epoch 3/400");
    signal(&first, "-INT");
    let o = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let ckpt = out.with_extension("ckpt");
    assert!(
        err.contains("Interrupted. The last finished epoch is saved in")
            && err.contains(ckpt.to_str().unwrap())
            && err.contains("run the same command again to resume"),
        "{err}"
    );

    let mut second = start(&out);
    let mut stdout = std::io::BufReader::new(second.stdout.take().unwrap());
    wait_for_line(&mut stdout, "Epoch 9/400");
    signal(&second, "-KILL");
    second.wait().unwrap();

    let third = start(&out).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(third.status.success(), "{err}");
    assert!(err.contains("Resuming from"), "{err}");

    let whole_out = dir.path().join("whole.safetensors");
    let whole = start(&whole_out).wait_with_output().unwrap();
    assert!(whole.status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&whole_out).unwrap(),
        "the interrupted run ended elsewhere than the uninterrupted one"
    );
}
