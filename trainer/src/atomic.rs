//! Atomic file output: write to a temporary file beside the target, then rename.
//! A crash or Ctrl-C leaves either the old file or the new one, never half of one.
//!
//! The temporary file of `dir/NAME` is `dir/.NAME.XXXXXX.partial`. A process
//! killed between writing it and renaming it (`kill -9`, a pre-empted VM)
//! leaves it behind; the next run that owns `NAME` removes it
//! ([`remove_stale_partials`]).

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable of the crash tests' hook: with
/// `TRAINER_TEST_WRITE_PAUSE_MS=N`, every atomic write sleeps N ms after
/// writing its temporary file and before the rename, so that a test's
/// `SIGKILL` can land inside a write. Unset (always, outside those tests):
/// no pause.
pub const WRITE_PAUSE_ENV: &str = "TRAINER_TEST_WRITE_PAUSE_MS";

fn write_pause() -> Option<Duration> {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    *PAUSE.get_or_init(|| {
        let ms: u64 = std::env::var(WRITE_PAUSE_ENV).ok()?.parse().ok()?;
        Some(Duration::from_millis(ms))
    })
}

/// `.NAME.` (the prefix of `path`'s temporary files) and `path`'s folder.
fn partial_prefix(path: &Path) -> (&Path, String) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(
        || "output".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    (dir, format!(".{name}."))
}

/// Writes `bytes` to `path` atomically, creating the parent directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, prefix) = partial_prefix(path);
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".partial")
        .tempfile_in(dir)?;
    // Through the File: NamedTempFile's own Write adds its temporary path to errors.
    tmp.as_file_mut().write_all(bytes)?;
    // tempfile creates files private (0600); outputs are ordinary files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    if let Some(pause) = write_pause() {
        std::thread::sleep(pause);
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes the temporary files that interrupted writes of `path` left behind
/// (`.NAME.*.partial` beside it) and returns how many. Only for a caller that
/// owns `path` (holds its run's lock): another process's write in progress
/// would lose its temporary file.
pub fn remove_stale_partials(path: &Path) -> std::io::Result<usize> {
    let (dir, prefix) = partial_prefix(path);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".partial") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/model.safetensors");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["model.safetensors"]);
    }

    /// The leftovers of `model.safetensors`'s interrupted writes go; those of
    /// other files, and other files, stay.
    #[test]
    fn stale_partials_of_the_target_only_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.safetensors");
        for name in [
            ".model.safetensors.a1B2c3.partial",
            ".model.safetensors.zz.partial",
            ".history.csv.a1B2c3.partial",
            "model.safetensors.partial",
            ".model.safetensors.keep",
            "model.safetensors",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_stale_partials(&target).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".history.csv.a1B2c3.partial",
                ".model.safetensors.keep",
                "model.safetensors",
                "model.safetensors.partial",
            ]
        );
        assert_eq!(
            remove_stale_partials(&dir.path().join("none/x")).unwrap(),
            0
        );
    }
}
