//! Crash safety, tested by killing: a training run is sent `SIGKILL` at
//! pseudo-random moments (mid-epoch, and inside the writes of the history and
//! the checkpoint, which `TRAINER_TEST_WRITE_PAUSE_MS` stretches) and resumed
//! after each kill. Every file on disk must always be a complete old or new
//! version, at most one finished epoch may be lost per kill, and the run must
//! end with the very bytes of an uninterrupted run. A damaged or truncated
//! checkpoint is refused with an error naming it, never resumed from.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{history_without_seconds, text, trainer};
use trainer::atomic::WRITE_PAUSE_ENV;
use trainer::train::checkpoint;

/// The run: model 3 (batch norm and dropout, so the resumed random streams
/// matter) on 300 training images, validated on 100 test images.
fn train_args<'a>(data: &'a str, out: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        "model3",
        "--data",
        data,
        "--subset",
        "300",
        "--val-subset",
        "100",
        "--epochs",
        epochs,
        "--quiet",
        "--out",
        out,
    ]
}

/// The history is complete: a header and `epochs` rows of 7 cells.
fn check_history(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with("epoch,loss,accuracy"),
        "{text}"
    );
    let rows: Vec<&str> = lines.collect();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), 7, "{text}");
        assert_eq!(cells[0], (i + 1).to_string(), "{text}");
    }
    rows.len()
}

/// The moment of a kill.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// While the process's n-th atomic write is paused before its rename.
    Write(usize),
    /// `ms` milliseconds after the process printed its m-th epoch (its two
    /// writes take 300 ms, then the next epoch runs).
    AfterEpoch(usize, u64),
}

/// Waits until `target` (true) or until the process exits (false).
fn wait_for(child: &mut std::process::Child, target: Target, dir: &Path, log: &Path) -> bool {
    let mut partials = std::collections::BTreeSet::new();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        match target {
            Target::Write(n) => {
                for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".partial") {
                        partials.insert(name);
                    }
                }
                if partials.len() >= n {
                    return true;
                }
            }
            Target::AfterEpoch(m, ms) => {
                let printed = std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .matches("Epoch ")
                    .count();
                if printed >= m {
                    std::thread::sleep(Duration::from_millis(ms));
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A small deterministic generator for the kill times (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let Some(data) = common::cifar10_dir("killed_runs_resume_to_the_uninterrupted_result") else {
        return;
    };
    const EPOCHS: usize = 20;
    const KILLS: usize = 20;
    let data = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let epochs = EPOCHS.to_string();

    let reference = tmp.path().join("reference.safetensors");
    let o = trainer(&train_args(data, reference.to_str().unwrap(), &epochs));
    assert!(o.status.success(), "{}", text(&o));

    let out = tmp.path().join("killed.safetensors");
    let (history, ckpt) = (out.with_extension("csv"), out.with_extension("ckpt"));
    let args = train_args(data, out.to_str().unwrap(), &epochs);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut kills, mut in_write, mut max_lost, mut done_before) = (0, 0, 0, 0);
    let mut finished = false;
    for attempt in 0..200 {
        let log = tmp.path().join(format!("attempt-{attempt}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(&args)
            .env("RAYON_NUM_THREADS", "2")
            .env(WRITE_PAUSE_ENV, "150")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Where this kill lands: inside the n-th write of this process (the
        // history then the checkpoint after every epoch; each paused 150 ms),
        // or at a random moment in the epoch after its m-th finished one.
        let target = if rng.below(2) == 0 {
            Target::Write(1 + rng.below(4) as usize)
        } else {
            Target::AfterEpoch(1 + rng.below(2) as usize, 300 + rng.below(400))
        };
        let killed = kills < KILLS && wait_for(&mut child, target, tmp.path(), &log);
        if killed {
            child.kill().unwrap(); // SIGKILL
        }
        let status = child.wait().unwrap();
        if !killed {
            assert!(status.success(), "attempt {attempt} failed");
            finished = true;
            break;
        }
        kills += 1;
        // Was the kill inside a write? Its temporary file is still there.
        let partial = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"));
        in_write += usize::from(partial);
        // Every file is a complete version.
        if out.exists() {
            // Written once, at the end: the finished model, whole.
            assert_eq!(
                std::fs::read(&out).unwrap(),
                std::fs::read(&reference).unwrap()
            );
        }
        let rows = if history.exists() {
            check_history(&history)
        } else {
            0
        };
        let done = if ckpt.exists() {
            checkpoint::load(&ckpt)
                .unwrap_or_else(|e| panic!("after kill {kills}: {e}"))
                .state
                .epochs_done
        } else {
            0
        };
        assert!(done >= done_before, "the checkpoint went back");
        assert!(
            rows >= done && rows <= done + 1,
            "history {rows}, checkpoint {done}"
        );
        // The epochs this process finished (printed) and those saved.
        let printed = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("Epoch ")?.split('/').next()?.parse().ok())
            .max()
            .unwrap_or(0usize);
        let lost = printed.saturating_sub(done);
        assert!(lost <= 1, "kill {kills} lost {lost} finished epochs");
        max_lost = max_lost.max(lost);
        done_before = done;
    }
    assert!(
        finished && kills >= KILLS,
        "{kills} kills, finished {finished}"
    );
    eprintln!(
        "{kills} kills ({in_write} inside a write), at most {max_lost} finished epoch lost per kill"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&reference).unwrap(),
        "the resumed run's model differs from the uninterrupted run's"
    );
    assert_eq!(
        history_without_seconds(&history),
        history_without_seconds(&reference.with_extension("csv"))
    );
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A checkpoint with one flipped byte, or cut short, is refused with an error
/// naming it and saying how to start over; nothing is trained.
#[test]
fn damaged_checkpoint_is_refused() {
    let Some(data) = common::cifar10_dir("damaged_checkpoint_is_refused") else {
        return;
    };
    let data = data.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.safetensors");
    let ckpt = out.with_extension("ckpt");
    let o = trainer(&train_args(data, out.to_str().unwrap(), "1"));
    assert!(o.status.success(), "{}", text(&o));
    let good = std::fs::read(&ckpt).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 3; // inside the tensor data
    flipped[last] ^= 0x10;
    let cut = good[..good.len() / 2].to_vec();
    for (what, bytes, problem) in [
        ("flipped", flipped, "do not match its checksum"),
        ("truncated", cut, "checkpoint"),
    ] {
        std::fs::write(&ckpt, &bytes).unwrap();
        let o = trainer(&train_args(data, out.to_str().unwrap(), "2"));
        let log = text(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {log}");
        assert!(
            log.contains(&ckpt.display().to_string())
                && log.contains(problem)
                && log.contains("pass --fresh to start over"),
            "{what}: {log}"
        );
        assert!(!log.contains("Epoch 2/2"), "{what}: {log}");
        assert!(!log.contains("panicked"), "{what}: {log}");
        assert_eq!(std::fs::read(&ckpt).unwrap(), bytes, "{what}: rewritten");
    }
    // --fresh starts over.
    let mut fresh = train_args(data, out.to_str().unwrap(), "1");
    fresh.push("--fresh");
    let o = trainer(&fresh);
    assert!(o.status.success(), "{}", text(&o));
    checkpoint::load(&ckpt).unwrap();
}
