//! Data-parallel training under `mpirun` (the `mpi` feature; Open MPI on
//! loopback): two processes train what one process trains, and a process
//! that dies ends the job instead of leaving the others waiting.
//!
//! `cargo test -p trainer-cli --features mpi --test mpi` (`.ci/run` does).
//! Needs `mpirun` (Debian's openmpi-bin); without it the tests fail, saying so.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use trainer::model::network::Network;

/// A small CIFAR-10-format data set whose classes differ in colour and
/// brightness, so that a network learns something from it in a few steps.
fn tiny_cifar(dir: &Path) {
    let mut state = 12345u32;
    let mut next = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 24) as u8
    };
    let mut records = |n: usize| {
        let mut bytes = Vec::with_capacity(n * 3073);
        for i in 0..n {
            let label = (i % 10) as u8;
            bytes.push(label);
            for c in 0..3 {
                for _ in 0..1024 {
                    let base = 20 * label as u32 + 40 * c as u32 * u32::from(label % 3 == c);
                    bytes.push((base + u32::from(next()) / 4).min(255) as u8);
                }
            }
        }
        bytes
    };
    for k in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{k}.bin")), records(48)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), records(40)).unwrap();
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    std::fs::write(dir.join("batches.meta.txt"), names).unwrap();
}

/// Epochs of the comparison run: 3 × 11 steps.
const EPOCHS: usize = 3;

/// No batch norm and no dropout: one process and two compute the same
/// function of the same batches.
const SPEC: &str = r#"{"name":"tiny","input":{"height":32,"width":32,"channels":3},"layers":[
    {"type":"conv2d","filters":6,"kernel":3},{"type":"relu"},{"type":"maxpool2d"},
    {"type":"conv2d","filters":8,"kernel":3},{"type":"relu"},{"type":"maxpool2d"},
    {"type":"flatten"},{"type":"dense","units":10}]}"#;

/// SPEC with batch norm after each convolution.
const SPEC_BN: &str = r#"{"name":"tiny-bn","input":{"height":32,"width":32,"channels":3},"layers":[
    {"type":"conv2d","filters":6,"kernel":3},{"type":"batchnorm"},{"type":"relu"},{"type":"maxpool2d"},
    {"type":"conv2d","filters":8,"kernel":3},{"type":"batchnorm"},{"type":"relu"},{"type":"maxpool2d"},
    {"type":"flatten"},{"type":"dense","units":10}]}"#;

fn setup(dir: &Path, spec_json: &str) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_cifar(&data);
    let spec = dir.join("tiny.json");
    std::fs::write(&spec, spec_json).unwrap();
    (data, spec)
}

/// `trainer train` arguments for a short SGD run on `data`, saving to `out`.
fn train_args(data: &Path, spec: &Path, out: &Path, epochs: usize) -> Vec<String> {
    [
        "train",
        "--model",
        spec.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--offline",
        "--quiet",
        "--fresh",
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        "20",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--momentum",
        "0.9",
        "--nesterov",
        "--crop-pad",
        "2",
        "--flip",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `mpirun --oversubscribe -np N trainer …`, one thread per process.
fn mpirun(np: usize, args: &[String]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "-np", &np.to_string()])
        .arg(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        // CI runs as root; Open MPI refuses that unless told.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` at most `limit`; kills it and fails past that.
fn output_within(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still running after {limit:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn spawn(mut cmd: Command) -> std::process::Child {
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run mpirun ({e}): install Open MPI (Debian: openmpi-bin libopenmpi-dev)")
    })
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let net = Network::load(path).unwrap();
    net.named_tensors()
        .into_iter()
        .map(|(name, _, d)| (name, d.to_vec()))
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Two processes, each training on half of every batch of 20 (with random
/// crops and flips, and a last batch of 16), end with the weights one
/// process gets, within 1e-5, and report the same epochs: with the gradients
/// summed in one bucket once backward is done, and in buckets of 1 KiB
/// started during backward (three, and the loss).
#[test]
fn two_processes_train_what_one_process_trains() {
    for (kib, all_reduces) in [("0", 2), ("1", 4)] {
        let (worst, h1, h2) =
            one_and_two_processes(SPEC, &["--allreduce-bucket-kib", kib], all_reduces);
        assert!(
            worst <= 1e-5,
            "{kib} KiB buckets: weights differ by {worst}"
        );
        assert_same_history(&h1, &h2);
    }
}

/// With batch norm and `--sync-batch-norm`, each process normalises its half
/// of the batch by the whole batch's statistics, so two processes still
/// train what one does (running statistics included); without the option
/// they do not (which shows that the comparison can tell).
#[test]
fn synchronised_batch_norm_trains_what_one_process_trains() {
    // Buckets of 1 KiB: their sums interleave with batch norm's.
    let synced = ["--sync-batch-norm", "--allreduce-bucket-kib", "1"];
    let (worst, h1, h2) = one_and_two_processes(SPEC_BN, &synced, 4);
    assert!(worst <= 1e-5, "weights differ by {worst}");
    assert_same_history(&h1, &h2);
    let (apart, ..) = one_and_two_processes(SPEC_BN, &[], 2);
    assert!(
        apart > 1e-4,
        "per-process statistics gave the same weights: {apart}"
    );
}

/// Trains `spec_json` with `extra` arguments in one process and under
/// `mpirun -np 2`; checks the logs (the step's `all_reduces`), and returns
/// the largest difference between the two runs' weights and the two
/// histories (CSV).
fn one_and_two_processes(
    spec_json: &str,
    extra: &[&str],
    all_reduces: usize,
) -> (f32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (data, spec) = setup(dir.path(), spec_json);
    let (alone, pair) = (
        dir.path().join("alone.safetensors"),
        dir.path().join("pair.safetensors"),
    );
    let args = |out: &Path| {
        let mut args = train_args(&data, &spec, out, EPOCHS);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let one = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args(&alone))
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(one.status.success(), "{}", text(&one));
    let two = output_within(
        spawn(mpirun(2, &args(&pair))),
        Duration::from_secs(120),
        "mpirun -np 2",
    );
    let log = text(&two);
    assert!(two.status.success(), "{log}");
    assert!(log.contains("Data-parallel over 2 processes"), "{log}");
    assert!(log.contains("MPI over 2 processes"), "{log}");
    assert!(
        log.contains(&format!("per step in {all_reduces} all-reduces")),
        "{log}"
    );
    // Replica 0 alone reports: one line per epoch.
    assert_eq!(
        log.matches(&format!("Epoch {EPOCHS}/{EPOCHS}")).count(),
        1,
        "{log}"
    );

    let (a, b) = (weights(&alone), weights(&pair));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
        }
        assert_eq!(x.len(), y.len(), "{name}");
    }
    eprintln!("{extra:?}: largest difference between the weights: {worst:e}");
    let h1 = std::fs::read_to_string(alone.with_extension("csv")).unwrap();
    let h2 = std::fs::read_to_string(pair.with_extension("csv")).unwrap();
    (worst, h1, h2)
}

/// Column `c` of a history CSV.
fn column(h: &str, c: usize) -> Vec<f32> {
    h.lines()
        .skip(1)
        .map(|l| l.split(',').nth(c).unwrap().parse().unwrap())
        .collect()
}

/// The two runs report the same loss, validation loss and accuracy every
/// epoch, and they trained (the loss fell).
fn assert_same_history(h1: &str, h2: &str) {
    for c in [1, 3, 4] {
        for (p, q) in column(h1, c).iter().zip(column(h2, c)) {
            assert!((p - q).abs() < 1e-4, "history column {c}: {h1} vs {h2}");
        }
    }
    let losses = column(h1, 1);
    assert!(losses[EPOCHS - 1] < losses[0], "no learning: {h1}");
}

/// A process killed in the middle of training (`kill -9`, as an OOM killer
/// does) ends the whole job with an error, instead of leaving the other
/// waiting in its all-reduce forever.
#[test]
fn a_killed_process_ends_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (data, spec) = setup(dir.path(), SPEC);
    let out = dir.path().join("killed.safetensors");
    let child = spawn(mpirun(2, &train_args(&data, &spec, &out, 10_000)));
    // Wait for the first epoch (replica 0 writes the history), then kill rank 1.
    let history = out.with_extension("csv");
    let start = Instant::now();
    while !history.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no epoch finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rank1 = rank_process(&out, 1).expect("rank 1 is running");
    let killed = Command::new("kill")
        .args(["-9", &rank1.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let done = output_within(
        child,
        Duration::from_secs(60),
        "mpirun after a rank was killed",
    );
    assert!(!done.status.success(), "{}", text(&done));
}

/// The pid of the `trainer` process of MPI rank `rank` whose arguments name `out`.
fn rank_process(out: &Path, rank: usize) -> Option<u32> {
    let out = out.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let has = |bytes: &[u8], s: &str| bytes.split(|&b| b == 0).any(|part| part == s.as_bytes());
        if has(&cmdline, out)
            && !String::from_utf8_lossy(&cmdline).starts_with("mpirun")
            && has(&environ, &format!("OMPI_COMM_WORLD_RANK={rank}"))
        {
            return Some(pid);
        }
    }
    None
}
