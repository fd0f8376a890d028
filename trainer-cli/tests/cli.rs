//! End-to-end tests of the `trainer` command: training on a subset, export,
//! evaluation, resume, and clear errors on bad input.

mod common;

use std::path::Path;

use common::{figure, text, trainer};

/// A few hundred steps of model 1 on a stratified subset: the loss falls, the
/// accuracy is well above chance, the export reloads, and `evaluate` prints the
/// same test loss and accuracy that training reported for those weights.
#[test]
fn train_subset_export_and_evaluate() {
    let Some(data) = common::cifar10_dir("train_subset_export_and_evaluate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m1.safetensors");
    let o = trainer(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--subset",
        "2000",
        "--epochs",
        "3",
        "--val-subset",
        "1000",
        "--early-stopping",
        "--patience",
        "2",
        // The reference protocol: the figures on (the first 1,000 of) the
        // test set, which `evaluate --limit 1000` must reproduce.
        "--validate-on-test",
        "--quiet",
        "--tta",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let first = figure(&log, "Epoch 1/3", "loss:");
    let last = figure(&log, "Epoch 3/3", "loss:");
    assert!(
        last < first,
        "training loss should fall: {first} → {last}\n{log}"
    );
    let acc = figure(&log, "Saved", "test accuracy");
    assert!(
        acc > 0.25,
        "accuracy {acc} after ~190 steps should be well above chance (0.10)\n{log}"
    );

    let history = std::fs::read_to_string(dir.path().join("m1.csv")).unwrap();
    assert_eq!(history.lines().count(), 4, "header + 3 epochs:\n{history}");
    assert!(history.starts_with("epoch,loss,accuracy,val_loss,val_accuracy,seconds,lr"));

    let json = dir.path().join("report.json");
    let e = trainer(&[
        "evaluate",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "1000",
        "--json",
        json.to_str().unwrap(),
        "--tta",
    ]);
    let eval_log = text(&e);
    assert!(e.status.success(), "{eval_log}");
    assert_eq!(
        figure(&log, "Saved", "test loss"),
        figure(&eval_log, "test loss:", "test loss:")
    );
    assert_eq!(acc, figure(&eval_log, "test loss:", "test accuracy:"));
    assert!(eval_log.contains("weighted avg") && eval_log.contains("airplane"));
    // Test-time augmentation: reported on its own line, the same figures in
    // training's report, evaluate's and the JSON file.
    let tta = figure(&log, "With test-time augmentation", "test accuracy");
    assert!((0.0..=1.0).contains(&tta), "{log}");
    assert_eq!(
        tta,
        figure(&eval_log, "with test-time augmentation", "test accuracy:")
    );
    assert_eq!(
        figure(&log, "With test-time augmentation", "test loss"),
        figure(&eval_log, "with test-time augmentation", "test loss:")
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let json_tta = report["tta"]["accuracy"].as_f64().unwrap();
    assert!(
        (json_tta - f64::from(tta)).abs() < 1e-4,
        "{json_tta} vs {tta}"
    );
    assert_eq!(
        report["confusion_matrix"]["counts"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

/// A run stopped after 2 epochs and resumed to 3 ends exactly where an
/// uninterrupted 3-epoch run does.
#[test]
fn resumed_run_matches_uninterrupted_run() {
    let Some(data) = common::cifar10_dir("resumed_run_matches_uninterrupted_run") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, epochs: &str| {
        let out = dir.path().join(name);
        let o = trainer(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--subset",
            "300",
            "--epochs",
            epochs,
            "--val-subset",
            "200",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    run("a.safetensors", "2");
    let resumed = run("a.safetensors", "3");
    assert!(resumed.contains("Resuming from"), "{resumed}");
    run("b.safetensors", "3");
    // Compare the tensors (the files' bytes may differ: safetensors writes the
    // metadata map in no fixed order).
    let weights = |name: &str| tensors(&dir.path().join(name));
    let (a, b) = (weights("a.safetensors"), weights("b.safetensors"));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{name}: resumed weights differ from the uninterrupted run's"
        );
    }
    // Every column but `seconds` (the 6th) must match.
    assert_eq!(
        common::history_without_seconds(&dir.path().join("a.csv")),
        common::history_without_seconds(&dir.path().join("b.csv"))
    );
}

#[test]
fn truncated_data_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    for name in trainer_cli::download::EXPECTED_FILES {
        std::fs::write(dir.path().join(name), vec![0u8; 3073]).unwrap();
    }
    std::fs::write(
        dir.path().join("batches.meta.txt"),
        trainer::model::network::CIFAR10_CLASSES.join("\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("data_batch_3.bin"), vec![0u8; 3073 * 2 - 5]).unwrap();
    let o = trainer(&[
        "train",
        "--data",
        dir.path().to_str().unwrap(),
        "--offline",
        "--epochs",
        "1",
    ]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("data_batch_3.bin") && log.contains("not a multiple of the 3073-byte record"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn missing_data_offline_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let o = trainer(&["train", "--data", missing.to_str().unwrap(), "--offline"]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(log.contains("nowhere") && log.contains("missing"), "{log}");
    // The cause is said once.
    assert_eq!(log.matches("No such file or directory").count(), 1, "{log}");
}

#[test]
fn diverging_loss_is_reported_not_saved() {
    let Some(data) = common::cifar10_dir("diverging_loss_is_reported_not_saved") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let o = trainer(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--subset",
        "640",
        "--epochs",
        "2",
        "--lr",
        "1e12",
        "--val-subset",
        "100",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(log.contains("training diverged"), "{log}");
    assert!(!out.exists());
}

/// A run whose outputs another run is writing (it holds `OUT.lock`) is
/// refused with a clear message and writes nothing; once the lock is
/// released the same command runs, and leaves no lock file behind.
#[test]
fn a_second_run_on_the_same_out_is_refused() {
    let Some(data) = common::cifar10_dir("a_second_run_on_the_same_out_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let lock_path = dir.path().join("m.safetensors.lock");
    let args = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--offline",
        "--subset",
        "200",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    let other = std::fs::File::create(&lock_path).unwrap();
    other.try_lock().unwrap();
    let o = trainer(&args);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("another run is writing") && log.contains("m.safetensors.lock"),
        "{log}"
    );
    assert!(!out.exists() && !out.with_extension("ckpt").exists());
    drop(other);
    let o = trainer(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.exists());
    assert!(!lock_path.exists(), "the lock file is left behind");
}

#[test]
fn bad_spec_and_bad_model_file_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.json");
    std::fs::write(
        &spec,
        r#"{"name":"bad","input":{"height":32,"width":32,"channels":3},"layers":[
  {"type":"conv2d","filters":8,"kernel":3},
  {"type":"dense","units":10}]}"#,
    )
    .unwrap();
    let o = trainer(&[
        "train",
        "--model",
        spec.to_str().unwrap(),
        "--data",
        "/nonexistent",
        "--offline",
    ]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("layer 1 (dense)") && log.contains("flatten"),
        "{log}"
    );

    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let o = trainer(&[
        "evaluate",
        "--model",
        junk.to_str().unwrap(),
        "--data",
        "/nonexistent",
    ]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("junk.safetensors") && !log.contains("panicked"),
        "{log}"
    );
}

/// The saved tensors of a model file, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let net = trainer::model::network::Network::load(path).unwrap();
    net.named_tensors()
        .into_iter()
        .map(|(n, _, d)| (n, d.to_vec()))
        .collect()
}

/// The training-recipe flags: SGD with Nesterov momentum and decoupled weight
/// decay, a warm-up and step schedule, label smoothing, crop + flip + cutout.
/// The recipe is reported, and a run stopped after one epoch and resumed ends
/// exactly where an uninterrupted one does (augmentation, schedule and SGD
/// velocity all carry over); resuming with another recipe is refused.
#[test]
fn recipe_flags_train_and_resume_exactly() {
    let Some(data) = common::cifar10_dir("recipe_flags_train_and_resume_exactly") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let recipe = [
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--nesterov",
        "--weight-decay",
        "5e-4",
        "--no-decay-bn-bias",
        "--schedule",
        "step",
        "--step-epochs",
        "1",
        "--step-gamma",
        "0.5",
        "--warmup-epochs",
        "0.5",
        "--label-smoothing",
        "0.1",
        "--augment",
        "--pad-mode",
        "zero",
        "--cutout",
        "8",
    ];
    let run = |name: &str, epochs: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "model3",
            "--subset",
            "200",
            "--epochs",
            epochs,
            "--val-subset",
            "200",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        trainer(&args)
    };
    let o = run("a.safetensors", "1", &recipe);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("Recipe: SGD lr 0.05, Nesterov momentum 0.9, weight decay 0.0005 (not on BN/biases); schedule step ×0.5 every 1 epochs, warm-up 0.5 epochs; augmentation crop 4 zero, flip, cutout 8; label smoothing 0.1"),
        "{log}"
    );
    // Another recipe cannot resume this checkpoint.
    let o = run("a.safetensors", "2", &recipe[..recipe.len() - 2]);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(log.contains("belongs to another run"), "{log}");
    // Nor the same recipe on other training images (a held-out split).
    let mut held_out = recipe.to_vec();
    held_out.extend(["--holdout", "1000"]);
    let o = run("a.safetensors", "2", &held_out);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(log.contains("belongs to another run"), "{log}");
    // The refusal names what changed, old and new.
    assert!(log.contains("data.holdout: null → 1000"), "{log}");
    let o = run("a.safetensors", "2", &recipe);
    let log = text(&o);
    assert!(o.status.success() && log.contains("Resuming from"), "{log}");
    let o = run("b.safetensors", "2", &recipe);
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (
        tensors(&dir.path().join("a.safetensors")),
        tensors(&dir.path().join("b.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name}: resumed weights differ");
    }
}

/// `--holdout N` validates on the last N training images instead of the test
/// set and says so; a spec's "training" object sets the recipe, the flags
/// override it, and the exported model (architecture only) evaluates.
#[test]
fn holdout_and_spec_training_object() {
    let Some(data) = common::cifar10_dir("holdout_and_spec_training_object") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny.json");
    std::fs::write(
        &spec,
        r#"{"name":"tiny","input":{"height":32,"width":32,"channels":3},
  "layers":[{"type":"conv2d","filters":8,"kernel":3,"stride":2},{"type":"batchnorm"},{"type":"relu"},
    {"type":"global_avg_pool"},{"type":"dense","units":10}],
  "training":{"optimizer":"sgd","lr":0.5,"momentum":0.8,"flip":true,"epochs":1,"schedule":"cosine"}}"#,
    )
    .unwrap();
    let out = dir.path().join("tiny.safetensors");
    let o = trainer(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        spec.to_str().unwrap(),
        "--lr",
        "0.02",
        "--subset",
        "100",
        "--holdout",
        "300",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("Recipe: SGD lr 0.02, momentum 0.8; schedule cosine to 0×; augmentation flip"),
        "{log}"
    );
    assert!(log.contains("Epoch 1/1"), "{log}");
    assert!(
        log.contains("validation accuracy") && log.contains("on 300 held-out training images"),
        "{log}"
    );
    let e = trainer(&[
        "evaluate",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--limit",
        "50",
    ]);
    assert!(e.status.success(), "{}", text(&e));
    // Too large a holdout is a clear error.
    let o = trainer(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--holdout",
        "50000",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(log.contains("cannot hold out 50000"), "{log}");
}

#[test]
fn bad_recipe_flags_are_clear_errors() {
    let o = trainer(&[
        "train",
        "--momentum",
        "0.9",
        "--data",
        "/nonexistent",
        "--offline",
    ]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(log.contains("settings of SGD"), "{log}");
    let o = trainer(&[
        "train",
        "--label-smoothing",
        "1.5",
        "--data",
        "/nonexistent",
        "--offline",
    ]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(log.contains("label smoothing 1.5"), "{log}");
}

/// `trainer quantize` writes an int8 model a quarter of the f32 file's size
/// (reporting both sizes), and `trainer evaluate` runs it through `infer`
/// with the same report as for f32 files, within a point of the f32
/// model's accuracy; bad flags and an int8 input are refused.
#[test]
fn quantize_then_evaluate_int8() {
    let Some(data) = common::cifar10_dir("quantize_then_evaluate_int8") else {
        return;
    };
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/model1.safetensors");
    let model = model.to_str().unwrap();
    let out = dir.path().join("m1-int8.safetensors");
    let q = trainer(&[
        "quantize",
        "--model",
        model,
        "--data",
        data,
        "--calib",
        "200",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&q);
    assert!(q.status.success(), "{log}");
    assert!(
        log.contains("with mse calibration on 200 training images"),
        "{log}"
    );
    let f32_len = std::fs::metadata(model).unwrap().len();
    let int8_len = std::fs::metadata(&out).unwrap().len();
    assert!(
        log.contains(&format!("{f32_len} bytes (f32) → {int8_len} bytes (int8)")),
        "{log}"
    );
    let ratio = figure(&log, "Size:", "(int8),");
    assert!((0.2..0.3).contains(&ratio), "{log}");

    let evaluate = |path: &str| {
        let e = trainer(&[
            "evaluate", "--model", path, "--data", data, "--limit", "500", "--json", "-",
        ]);
        assert!(e.status.success(), "{}", text(&e));
        let report: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&e.stderr).to_string();
        (report, stderr)
    };
    let (f32_report, _) = evaluate(model);
    let (int8_report, int8_log) = evaluate(out.to_str().unwrap());
    assert!(
        int8_log.contains("(model1, int8) on 500 test images"),
        "{int8_log}"
    );
    assert!(int8_log.contains("weighted avg") && int8_log.contains("airplane"));
    let acc = |r: &serde_json::Value| r["accuracy"].as_f64().unwrap();
    let loss = |r: &serde_json::Value| r["loss"].as_f64().unwrap();
    assert!(
        (acc(&f32_report) - acc(&int8_report)).abs() <= 0.01,
        "f32 {} vs int8 {}",
        acc(&f32_report),
        acc(&int8_report)
    );
    assert!((loss(&f32_report) - loss(&int8_report)).abs() <= 0.05);
    assert_eq!(
        int8_report["confusion_matrix"]["counts"]
            .as_array()
            .unwrap()
            .len(),
        10
    );

    // The int8 file exports to ONNX as QDQ, int8 weights: about a quarter of
    // the f32 export (tests/onnx.rs runs both in ONNX Runtime).
    let onnx = |path: &str, out: &Path| {
        let o = trainer(&["export", "--model", path, "--onnx", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        (text(&o), std::fs::metadata(out).unwrap().len())
    };
    let (log, int8_onnx) = onnx(out.to_str().unwrap(), &dir.path().join("int8.onnx"));
    assert!(log.contains("(model1, int8 as QDQ) to ONNX"), "{log}");
    let (log, f32_onnx) = onnx(model, &dir.path().join("f32.onnx"));
    assert!(log.contains("(model1, f32) to ONNX"), "{log}");
    let ratio = int8_onnx as f64 / f32_onnx as f64;
    assert!((0.2..0.3).contains(&ratio), "{int8_onnx} / {f32_onnx}");

    // Refusals: an unknown method, an int8 input.
    let bad = trainer(&[
        "quantize",
        "--model",
        model,
        "--data",
        data,
        "--calibration",
        "kl",
        "--out",
        "x",
    ]);
    assert!(
        !bad.status.success() && text(&bad).contains("mse"),
        "{}",
        text(&bad)
    );
    let again = trainer(&[
        "quantize",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data,
        "--out",
        dir.path().join("again.safetensors").to_str().unwrap(),
    ]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already an int8 model"),
        "{}",
        text(&again)
    );
}

/// `trainer plot` draws a history CSV (today's, and an older one without the
/// `lr` column) into a PNG; a file that is not a history is refused naming
/// the line; `trainer completions bash` prints bash's completion function.
#[test]
fn plot_and_completions() {
    use trainer::train::{history_csv, parse_history_csv, EpochRecord};
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<EpochRecord> = (1..=4)
        .map(|e| EpochRecord {
            epoch: e,
            loss: 2.0 / e as f32,
            accuracy: 0.2 * e as f32,
            val_loss: 2.1 / e as f32,
            val_accuracy: 0.18 * e as f32,
            seconds: 1.5,
            lr: 0.01,
        })
        .collect();
    let csv_text = history_csv(&records);
    let back = parse_history_csv(&csv_text).unwrap();
    assert_eq!(back.len(), 4);
    assert!((back[2].val_accuracy - 0.54).abs() < 1e-6);
    let csv = dir.path().join("run.csv");
    std::fs::write(&csv, &csv_text).unwrap();
    let o = trainer(&["plot", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let png = dir.path().join("run.png");
    let img = image::open(&png).unwrap();
    assert!(img.width() > 500 && img.height() > 300);
    // An older history, without the lr column, to another path.
    let old: String = csv_text
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    std::fs::write(&csv, old).unwrap();
    let other = dir.path().join("other.png");
    let o = trainer(&[
        "plot",
        csv.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(other.is_file());
    std::fs::write(&csv, "epoch,loss\n1,2\n").unwrap();
    let o = trainer(&["plot", csv.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("line 1"), "{}", text(&o));

    let o = trainer(&["completions", "bash"]);
    assert!(o.status.success());
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(
        script.contains("_trainer()") && script.contains("quantize"),
        "{script}"
    );
}

/// `--url` (or CIFAR10_URL) replaces the official address: the error of an
/// unreachable mirror names it.
#[test]
fn download_from_a_mirror() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").join("cifar-10-batches-bin");
    let o = trainer(&["download", "--data", data.to_str().unwrap(), "--url", &url]);
    assert!(!o.status.success());
    assert!(text(&o).contains(&url), "{}", text(&o));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["download", "--data", data.to_str().unwrap()])
        .env("CIFAR10_URL", &url)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains(&url), "{}", text(&o));
    assert!(
        !dir.path().join("d").exists(),
        "a failed download leaves no folder"
    );
}
