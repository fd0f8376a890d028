//! `trainer train --teacher`: distillation from an exported model.

mod common;

use common::{shipped, text, trainer};

/// A run distils from the shipped model 1 (its agreement with the labels is
/// reported); its checkpoint records the teacher, so resuming with another
/// weight is refused; bad teachers and weights are refused before training.
#[test]
fn distillation_from_a_shipped_model() {
    let Some(data) = common::cifar10_dir("distillation_from_a_shipped_model") else {
        return;
    };
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("student.safetensors");
    let teacher = shipped("model1.safetensors");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            "model1",
            "--data",
            data,
            "--subset",
            "200",
            "--epochs",
            "1",
            "--val-subset",
            "100",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        trainer(&args)
    };
    let o = run(&["--teacher", &teacher, "--teacher-weight", "0.7"]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("Distilling from") && log.contains("weight 0.7, views Flip"),
        "{log}"
    );
    assert!(log.contains("is the label of"), "{log}");
    assert!(out.exists());

    // The checkpoint is of a run with this teacher, weight and views.
    for other in [
        ["--teacher-weight", "0.3"],
        ["--teacher-views", "flip_translate"],
    ] {
        let o = run(&[&["--teacher", &teacher], &other[..]].concat());
        let log = text(&o);
        assert!(!o.status.success(), "{log}");
        assert!(
            log.contains("belongs to another run") && log.contains("teacher"),
            "{log}"
        );
    }
    // `plain`: the image alone.
    let o = run(&["--teacher", &teacher, "--teacher-views", "plain", "--fresh"]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("views Plain"), "{log}");
    let o = run(&["--teacher", &teacher, "--teacher-views", "crop", "--fresh"]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("--teacher-views") && log.contains("plain, flip, flip_translate"),
        "{log}"
    );

    let o = run(&["--teacher", "/nonexistent.safetensors", "--fresh"]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("bad --teacher") && log.contains("/nonexistent.safetensors"),
        "{log}"
    );
    let o = run(&["--teacher", &teacher, "--teacher-weight", "1.5", "--fresh"]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("--teacher-weight 1.5 must be in [0, 1]"),
        "{log}"
    );
}
