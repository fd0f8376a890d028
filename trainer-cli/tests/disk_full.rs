//! A full disk: training, quantizing and writing a report onto a filesystem
//! with no room left each fail with one clear error naming the file, leave
//! the previous version of every file intact, and leave no temporary file
//! behind.
//!
//! The filesystem is a real one: a small tmpfs, mounted in a private user and
//! mount namespace (`unshare -rm`, no root needed), filled with a file of
//! zeros. Where the kernel does not allow that namespace the test says so and
//! is skipped.

mod common;

use std::path::Path;
use std::process::Command;

use common::text;

/// The commands, each writing onto the full disk `$D` once the first ones
/// (with room) have made the previous versions, and what the test checks:
/// the exit status (`$D.rc.NAME`), the log (`$D.log.NAME`), the files that
/// changed (`$D.changed.NAME`) and the folder's listing (`$D.ls.NAME`). The
/// last, `checkpoint`, has room for the history but not the checkpoint.
const SCRIPT: &str = r#"
set -u
mount -t tmpfs -o size=24m tmpfs "$D" || exit 77
train() { "$T" train --model model3 --data "$DATA" --subset 300 --val-subset 100 --epochs 1 --quiet --out "$D/m.safetensors" "$@"; }
train > "$D.log.setup" 2>&1 || exit 78
"$T" quantize --model "$D/m.safetensors" --data "$DATA" --calib 50 --out "$D/q.safetensors" >> "$D.log.setup" 2>&1 || exit 79
"$T" evaluate --model "$D/m.safetensors" --data "$DATA" --json "$D/r.json" >> "$D.log.setup" 2>&1 || exit 80
for f in m.safetensors m.csv m.ckpt q.safetensors r.json; do cp "$D/$f" "$D.before.$f"; done
cat /dev/zero > "$D/fill" 2>/dev/null
check() {
    name=$1; shift
    "$@" > "$D.log.$name" 2>&1; echo $? > "$D.rc.$name"
    changed=""
    for f in m.safetensors m.csv m.ckpt q.safetensors r.json; do cmp -s "$D/$f" "$D.before.$f" || changed="$changed $f"; done
    echo "$changed" > "$D.changed.$name"
    ls -A "$D" > "$D.ls.$name"
}
check train train --fresh
check quantize "$T" quantize --model "$D/m.safetensors" --data "$DATA" --calib 50 --out "$D/q.safetensors"
check evaluate "$T" evaluate --model "$D/m.safetensors" --data "$DATA" --json "$D/r.json"
# Room for the history, not for the checkpoint (MBs).
truncate -s -256K "$D/fill"
check checkpoint train --fresh
exit 0
"#;

fn read(base: &Path, what: &str) -> String {
    let mut name = base.file_name().unwrap().to_os_string();
    name.push(format!(".{what}"));
    std::fs::read_to_string(base.with_file_name(name)).unwrap_or_default()
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_old_files() {
    let Some(data) = common::cifar10_dir("full_disk_fails_cleanly_and_keeps_the_old_files") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("disk");
    std::fs::create_dir(&d).unwrap();
    let o = Command::new("unshare")
        .args(["-rm", "sh", "-c", SCRIPT])
        .env("D", &d)
        .env("T", env!("CARGO_BIN_EXE_trainer"))
        .env("DATA", &data)
        .env("RAYON_NUM_THREADS", "2")
        .output();
    let skip = |why: String| {
        eprintln!("SKIPPED full_disk_fails_cleanly_and_keeps_the_old_files: {why}");
    };
    let o = match o {
        Ok(o) => o,
        Err(e) => return skip(format!("no unshare ({e})")),
    };
    let refused = o.status.code() == Some(1) && text(&o).contains("unshare");
    if o.status.code() == Some(77) || refused {
        return skip(format!(
            "cannot mount a tmpfs in a user namespace here ({})",
            text(&o).trim()
        ));
    }
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o),
        read(&d, "log.setup")
    );
    for (name, file, changed) in [
        ("train", "m.csv", ""),
        ("quantize", "q.safetensors", ""),
        ("evaluate", "r.json", ""),
        // The new history (complete) was written; the checkpoint was not.
        ("checkpoint", "m.ckpt", "m.csv"),
    ] {
        let log = read(&d, &format!("log.{name}"));
        eprintln!("{name} on a full disk: {}", log.trim());
        assert_eq!(read(&d, &format!("rc.{name}")).trim(), "1", "{name}: {log}");
        assert!(
            log.contains(&d.join(file).display().to_string())
                && log.contains("No space left on device"),
            "{name}: {log}"
        );
        assert!(!log.contains("panicked"), "{name}: {log}");
        assert_eq!(log.matches("error:").count(), 1, "{name}: one error: {log}");
        assert_eq!(
            read(&d, &format!("changed.{name}")).trim(),
            changed,
            "{name}"
        );
        let listing = read(&d, &format!("ls.{name}"));
        assert!(!listing.contains(".partial"), "{name} left {listing}");
    }
}
