//! End-to-end tests of `trainer study`: a smoke-sized run writes its files,
//! charts and report; a rerun skips it; `--force` redoes it; the report can be
//! regenerated without data; bad run ids are refused.

mod common;

use serde_json::Value;
use std::path::Path;

use common::{text, trainer};

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The PNG at `path` exists and has `size` pixels.
fn check_png(path: &Path, size: (u32, u32)) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert_eq!(
        image::image_dimensions(path).unwrap(),
        size,
        "{}",
        path.display()
    );
}

/// `trainer study --only <ids>` at smoke size: `[subset, epochs cap,
/// validation subset]`, writing into `dir` and `results` (and reading the
/// Keras results beside `results`, `keras.json`), offline and quiet.
fn smoke_study(
    id: &str,
    [subset, epochs, val_subset]: [&str; 3],
    dir: &Path,
    results: &Path,
    data: &Path,
) -> Vec<String> {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    [
        "study",
        "--only",
        id,
        "--subset",
        subset,
        "--epochs-cap",
        epochs,
        "--val-subset",
        val_subset,
    ]
    .map(String::from)
    .into_iter()
    .chain([
        "--out-dir".into(),
        path(dir),
        "--results".into(),
        path(results),
        "--keras".into(),
        path(&results.with_file_name("keras.json")),
        "--data".into(),
        path(data),
        "--offline".into(),
        "--quiet".into(),
    ])
    .collect()
}

/// A `keras_study.py` results file with one run of model3-10k (seed 1).
const KERAS_FIXTURE: &str = r#"[{"id": "model3-10k", "seed": 1, "model": "model3",
 "test_accuracy": 0.7123, "test_loss": 0.9012, "epochs_run": 11, "best_epoch": 1,
 "stopped_early": true, "seconds_per_epoch": 9.5, "threads": 2, "train_images": 10000,
 "starts_from": "model3-es", "history": [], "tensorflow": "2.21.0", "python": "3.11.2",
 "finished": "2026-12-06 06:00 UTC", "command": "benches/reference/keras_study.py"}]"#;

/// The table row of `id` in the report.
fn row<'a>(md: &'a str, id: &str) -> &'a str {
    md.lines()
        .find(|l| l.starts_with(&format!("| {id} ")))
        .unwrap_or_else(|| panic!("no row for {id} in\n{md}"))
}

/// model3-es then model3-10k (which starts from model3-es's weights) on 300
/// images for 2 epochs, validated on 200 test images: the run's files, the
/// charts and the report agree with result.json, and the report shows the
/// Keras results file beside them; a rerun is skipped; `--force` trains again.
#[test]
fn smoke_run_report_skip_and_force() {
    let Some(data) = common::cifar10_dir("smoke_run_report_skip_and_force") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    let results = tmp.path().join("docs/RESULTS.md");
    std::fs::create_dir_all(results.parent().unwrap()).unwrap();
    std::fs::write(results.with_file_name("keras.json"), KERAS_FIXTURE).unwrap();
    let owned = smoke_study(
        "model3-es,model3-10k",
        ["300", "2", "200"],
        &dir,
        &results,
        &data,
    );
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let o = trainer(&args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("Epoch 2/2"), "{out}");
    let from = dir.join("model3-es/model.safetensors");
    assert!(
        out.contains(&format!("Starting from the weights of {}", from.display())),
        "{out}"
    );

    let run_dir = dir.join("model3-10k");
    let result = read_json(&run_dir.join("result.json"));
    check_result(&result);
    let csv = std::fs::read_to_string(run_dir.join("history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("epoch,loss,accuracy,val_loss,val_accuracy,seconds,lr"));
    assert!(run_dir.join("model.safetensors").exists());
    assert!(run_dir.join("model.ckpt").exists());

    let img = tmp.path().join("docs/img");
    check_png(
        &img.join("model3-10k-history.png"),
        trainer_cli::plot::HISTORY_SIZE,
    );
    check_png(
        &img.join("model3-10k-confusion.png"),
        trainer_cli::plot::CONFUSION_SIZE,
    );
    check_png(
        &img.join("compare-models.png"),
        trainer_cli::plot::COMPARE_SIZE,
    );
    check_png(
        &img.join("accuracy-vs-time.png"),
        trainer_cli::plot::COMPARE_SIZE,
    );

    let md = std::fs::read_to_string(&results).unwrap();
    check_report(&md, &result);

    // A rerun finds result.json and trains nothing.
    let before = std::fs::read(run_dir.join("result.json")).unwrap();
    let o = trainer(&args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("skipping model3-es"), "{out}");
    assert!(out.contains("skipping model3-10k"), "{out}");
    assert!(!out.contains("Epoch 1/2"), "{out}");
    assert_eq!(std::fs::read(run_dir.join("result.json")).unwrap(), before);

    // --force trains it again from scratch.
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = trainer(&forced);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("skipping"), "{out}");
    assert!(
        out.contains("Epoch 1/2") && out.contains("Epoch 2/2"),
        "{out}"
    );
    check_result(&read_json(&run_dir.join("result.json")));

    // Other settings (here: the real study's) neither skip nor overwrite the
    // smoke result without --force.
    let o = trainer(&[
        "study",
        "--only",
        "model3-10k",
        "--out-dir",
        dir.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--offline",
    ]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("pass --force"), "{out}");
    check_result(&read_json(&run_dir.join("result.json")));
}

/// result.json records the smoke settings and the run it started from, and
/// its confusion matrix is that of the reported test accuracy.
fn check_result(result: &Value) {
    assert_eq!(result["id"], "model3-10k");
    assert_eq!(result["settings"]["init_from"], "model3-es");
    let overrides = &result["settings"]["overrides"];
    assert_eq!(overrides["epochs_cap"], 2);
    assert_eq!(overrides["subset"], 300);
    assert_eq!(overrides["val_subset"], 200);
    let run = &result["run"];
    assert_eq!(run["epochs_run"], 2);
    assert_eq!(run["train_images"], 300);
    assert_eq!(run["test_images"], 200);
    assert_eq!(run["history"].as_array().unwrap().len(), 2);
    let confusion: Vec<Vec<u64>> = serde_json::from_value(result["confusion"].clone()).unwrap();
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion.iter().flatten().sum();
    let correct: u64 = (0..10).map(|i| confusion[i][i]).sum();
    assert_eq!(total, 200);
    let accuracy = run["test_accuracy"].as_f64().unwrap();
    assert!((correct as f64 / 200.0 - accuracy).abs() < 1e-6);
}

/// The report's row for the run shows result.json's figures and the smoke
/// mark; the other runs are "not run yet"; the charts are linked.
fn check_report(md: &str, result: &Value) {
    let run = &result["run"];
    let accuracy = format!("{:.2} %", run["test_accuracy"].as_f64().unwrap() * 100.0);
    let loss = format!("{:.3}", run["test_loss"].as_f64().unwrap());
    let seconds = format!("{:.1} s", run["seconds_per_epoch"].as_f64().unwrap());
    let r = row(md, "model3-10k");
    let cells: Vec<&str> = r.split('|').map(str::trim).collect();
    // ["", run, ref acc, ref loss, keras, our acc, our loss, epochs, best, s/epoch, ""]
    assert_eq!(cells.len(), 11, "{r}");
    assert!(cells[1].contains("smoke test"), "{r}");
    assert_eq!(cells[2], "73.78 %");
    assert_eq!(cells[3], "0.853");
    assert_eq!(cells[4], "71.23 %, 0.901 (s1)");
    assert!(cells[5].starts_with(&accuracy), "{r} vs {accuracy}");
    assert!(cells[5].contains("200 test images"), "{r}");
    assert_eq!(cells[6], loss);
    assert_eq!(cells[7], "2");
    assert!(cells[9].starts_with(&seconds), "{r}");
    for id in ["model1-35", "model1-es", "model2-50", "model3-10k-scratch"] {
        assert!(row(md, id).contains("not run yet"), "{}", row(md, id));
    }
    assert!(
        row(md, "model3-es").contains("| — |"),
        "no Keras run of model3-es"
    );
    assert!(md.contains("TensorFlow 2.21.0. Keras runs: model3-10k s1: 11 epochs, best epoch 1"));
    assert!(md.contains("Generated by: `trainer study --only model3-es,model3-10k"));
    assert!(md.contains("Colab GPU"));
    assert!(md.contains("smoke-test runs"));
    for png in [
        "img/model3-10k-history.png",
        "img/model3-10k-confusion.png",
        "img/compare-models.png",
        "img/accuracy-vs-time.png",
    ] {
        assert!(md.contains(png), "{png} not linked");
    }
    assert!(md.contains("weighted avg"), "no per-class report");
}

/// `--report-only` needs no data: with no results, every run is "not run yet".
/// The report goes into `--out-dir` (not into the working directory's docs/).
#[test]
fn report_only_without_results() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("study");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .current_dir(tmp.path())
        .args([
            "study",
            "--report-only",
            "--out-dir",
            out_dir.to_str().unwrap(),
            "--data",
            tmp.path().join("no-data").to_str().unwrap(),
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let results = out_dir.join("RESULTS.md");
    assert!(text(&o).contains(&format!("Report: {}", results.display())));
    assert!(!tmp.path().join("docs").exists());
    let md = std::fs::read_to_string(&results).unwrap();
    for id in [
        "model1-35",
        "model1-es",
        "model2-50",
        "model3-es",
        "model3-10k",
        "model3-10k-scratch",
        "fast",
        "fast-50",
        "fast-12",
    ] {
        assert!(row(&md, id).contains("not run yet"), "{md}");
    }
    assert!(md.contains("Keras on our data") && md.contains("Not run yet (—)."));
    assert!(!md.contains("!["), "no charts without results");
}

/// The run beyond the study trains with its spec's recipe (SGD, batch 512,
/// augmentation) and reports test-time augmentation, wall time and the
/// accuracy-against-time table.
#[test]
fn fast_run_uses_its_recipe_and_reports_tta() {
    let Some(data) = common::cifar10_dir("fast_run_uses_its_recipe_and_reports_tta") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    let results = tmp.path().join("RESULTS.md");
    let args = smoke_study("fast", ["600", "1", "100"], &dir, &results, &data);
    let o = trainer(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let result = read_json(&dir.join("fast/result.json"));
    let settings = &result["settings"];
    assert_eq!(settings["batch_size"], 512);
    assert_eq!(settings["recipe"]["optimizer"], "sgd");
    assert_eq!(settings["recipe"]["epochs"], 1);
    let run = &result["run"];
    assert_eq!(run["train_images"], 600);
    let lr = run["history"][0]["lr"].as_f64().unwrap();
    assert!(
        (0.0..0.2).contains(&lr),
        "one-cycle rate after epoch 1 of 1: {lr}"
    );
    let tta = run["tta"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&tta));
    let wall = result["wall_seconds"].as_f64().unwrap();
    let trained: f64 = run["history"][0]["seconds"].as_f64().unwrap();
    assert!(wall >= trained, "wall {wall} < epoch {trained}");

    let md = std::fs::read_to_string(&results).unwrap();
    let r = row(&md, "fast");
    assert!(r.starts_with("| fast ⚠ smoke test | — | — |"), "{r}");
    assert!(r.contains(&format!("TTA {:.2} %", tta * 100.0)), "{r}");
    assert!(md.contains("| epoch | elapsed | learning rate |"), "{md}");
    assert!(md.contains("With test-time augmentation"), "{md}");
    assert!(md.contains("Wall time of the whole run"), "{md}");
}

/// model3-10k starts from model3-es's saved weights: without them it stops
/// before training, saying what to run.
#[test]
fn warm_started_run_needs_its_origin() {
    let Some(data) = common::cifar10_dir("warm_started_run_needs_its_origin") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    let results = tmp.path().join("RESULTS.md");
    let args = smoke_study("model3-10k", ["300", "1", "100"], &dir, &results, &data);
    let o = trainer(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("run model3-10k starts from the weights of model3-es")
            && out.contains("run `trainer study --only model3-es` first"),
        "{out}"
    );
    assert!(!out.contains("Epoch 1/1"), "{out}");
    assert!(!dir.join("model3-10k/result.json").exists());
}

#[test]
fn unknown_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = trainer(&[
        "study",
        "--only",
        "model9",
        "--out-dir",
        tmp.path().to_str().unwrap(),
        "--results",
        tmp.path().join("R.md").to_str().unwrap(),
        "--offline",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown run \"model9\""), "{}", text(&o));
}
