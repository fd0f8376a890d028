//! `classify` on 10,000 files in 100 folders, 4,500 of them broken in five ways: every good
//! one is classified, every bad one gets one error line naming it, the exit
//! status is 1, and the peak memory is printed (measured in this test's only
//! child process, so `getrusage(RUSAGE_CHILDREN)` is its own).

use std::process::Command;

#[test]
fn ten_thousand_files_many_corrupt() {
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/samples");
    let Some(sample) = std::fs::read_dir(&samples).ok().and_then(|d| {
        d.filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "png"))
    }) else {
        println!("SKIPPED ten_thousand_files_many_corrupt: no sample PNGs in ../shared/samples");
        return;
    };
    let png = std::fs::read(sample).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut good, mut bad) = (0, 0);
    for i in 0..10_000u32 {
        let bytes: Vec<u8> = match i % 10 {
            0 => png[..png.len() / 2].to_vec(),                 // truncated
            1 => Vec::new(),                                    // empty
            2 => (0..500).map(|k| (k * 7 + i) as u8).collect(), // noise
            3 => png.iter().map(|b| b ^ ((i as u8) | 1)).collect(), // scrambled
            4 if i % 20 == 4 => png[..40].to_vec(),             // header only
            _ => png.clone(),
        };
        let broken = i % 10 < 4 || i % 20 == 4;
        if broken {
            bad += 1;
        } else {
            good += 1;
        }
        let folder = dir.path().join(format!("{:02}", i % 100));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{i:05}.png")), bytes).unwrap();
    }
    assert_eq!((good, bad), (5_500, 4_500));
    let out = Command::new(env!("CARGO_BIN_EXE_classify"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stdout.lines().count(), good, "classified");
    assert_eq!(stderr.lines().count(), bad, "errors");
    assert!(stderr
        .lines()
        .all(|l| l.starts_with("classify: error: ") && l.contains(".png")));
    // SAFETY: getrusage writes into the struct it is given.
    let peak_kib = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage.ru_maxrss
    };
    println!(
        "classify on 10,000 files ({good} good, {bad} broken): peak RSS {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
}
