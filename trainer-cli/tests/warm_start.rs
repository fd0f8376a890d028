//! `trainer train --init`: training starts from an exported model's weights.

mod common;

use common::{figure, text, trainer};
use std::path::Path;

fn shipped_model1() -> String {
    common::shipped("model1.safetensors")
}

/// Starting from the shipped model 1 with a learning rate so small that no
/// `f32` weight can move (Adam's step is about the rate itself, 1e-30, far
/// below half an ulp of any weight), one epoch leaves the weights as they
/// were: the run's final evaluation is the shipped model's own, as `trainer
/// evaluate` prints it. With the architecture taken from the file (no --model).
#[test]
fn init_from_a_trained_model_starts_where_it_ended() {
    let Some(data) = common::cifar10_dir("init_from_a_trained_model_starts_where_it_ended") else {
        return;
    };
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tuned.safetensors");
    let init = shipped_model1();
    let o = trainer(&[
        "train",
        "--init",
        &init,
        "--data",
        data,
        "--subset",
        "200",
        "--epochs",
        "1",
        "--lr",
        "1e-30",
        "--val-subset",
        "500",
        "--validate-on-test",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("Starting from the weights of"), "{log}");
    assert!(log.contains("optimiser's state starts fresh"), "{log}");
    let e = trainer(&[
        "evaluate", "--model", &init, "--data", data, "--limit", "500",
    ]);
    let eval_log = text(&e);
    assert!(e.status.success(), "{eval_log}");
    assert_eq!(
        figure(&log, "Saved", "test accuracy"),
        figure(&eval_log, "test loss:", "test accuracy:"),
        "{log}\n{eval_log}"
    );
    assert_eq!(
        figure(&log, "Saved", "test loss"),
        figure(&eval_log, "test loss:", "test loss:")
    );
}

/// A file whose layers do not match --model is refused, naming the tensor.
#[test]
fn init_with_another_architecture_is_refused() {
    let Some(data) = common::cifar10_dir("init_with_another_architecture_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let o = trainer(&[
        "train",
        "--model",
        "model3",
        "--init",
        &shipped_model1(),
        "--data",
        data.to_str().unwrap(),
        "--subset",
        "100",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(log.contains("does not fit the architecture"), "{log}");
    assert!(log.contains("in the file"), "{log}");
    assert!(!out.exists());
    // A file that is not there.
    let o = trainer(&[
        "train",
        "--init",
        "/nonexistent.safetensors",
        "--data",
        data.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("bad --init") && log.contains("/nonexistent.safetensors"),
        "{log}"
    );
}

/// Fine-tuning only the head: `--init` a trained model with `--freeze 'conv*'`
/// changes the dense layers and leaves every convolution as it was.
#[test]
fn freeze_trains_only_the_other_layers() {
    let Some(data) = common::cifar10_dir("freeze_trains_only_the_other_layers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("head.safetensors");
    let init = shipped_model1();
    let o = trainer(&[
        "train",
        "--init",
        &init,
        "--freeze",
        "conv*",
        "--data",
        data.to_str().unwrap(),
        "--subset",
        "300",
        "--epochs",
        "1",
        "--val-subset",
        "200",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let before = trainer::Network::load(Path::new(&init)).unwrap();
    let after = trainer::Network::load(&out).unwrap();
    for ((name, _, b), (_, _, a)) in before.named_tensors().iter().zip(after.named_tensors()) {
        if name.starts_with("conv") {
            assert_eq!(*b, a, "{name} changed");
        } else {
            assert_ne!(*b, a, "{name} did not train");
        }
    }
    // A name that is not a layer (with --fresh: the checkpoint above is
    // another run's).
    let o = trainer(&[
        "train",
        "--fresh",
        "--init",
        &init,
        "--freeze",
        "conv9",
        "--data",
        data.to_str().unwrap(),
        "--subset",
        "100",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("--freeze conv9: no parameter layer has that name"),
        "{log}"
    );
}
