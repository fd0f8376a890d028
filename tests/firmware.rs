//! The int8 ResNet-8 really runs on a Cortex-M4: `firmware/` (no_std, no
//! allocator, the model and ten CIFAR-10 test images in flash, one static
//! scratch buffer) is built for `thumbv7em-none-eabihf` and booted on QEMU's
//! `mps2-an386` board; every image's class and probabilities (printed as
//! `f32` bits over semihosting) must equal, bit for bit, what `infer` gives
//! on this machine with its portable kernels and with the best SIMD ones.
//! Also prints the firmware's footprint: flash (code, model, images) and RAM
//! (static data, and the stack's high-water marks the firmware measures by
//! painting its stack), which the README quotes.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target; says
//! SKIPPED without them, unless `FIRMWARE_REQUIRE=1` (as CI sets).

use infer::{Backend, Model};
use object::{Object, ObjectSection, SectionFlags};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TARGET: &str = "thumbv7em-none-eabihf";
/// Where the linker script puts RAM (firmware/memory.x).
const RAM_START: u64 = 0x2000_0000;
const IMAGE_LEN: usize = 32 * 32 * 3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn skip(why: &str) -> bool {
    if std::env::var_os("FIRMWARE_REQUIRE").is_some() {
        panic!("{why} (FIRMWARE_REQUIRE is set)");
    }
    eprintln!("SKIPPED firmware_on_an_emulated_cortex_m4: {why}");
    true
}

fn target_installed() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
}

/// The target directory this test was built in (holding cargo's `CACHEDIR.TAG`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("target"))
}

/// `cargo build --release` in firmware/ (its .cargo/config.toml picks the
/// target and the linker script); returns the ELF file.
fn build_firmware() -> PathBuf {
    let dir = target_dir().join("firmware");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root().join("firmware"))
        .args(["build", "--release"])
        .env("CARGO_TARGET_DIR", &dir)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building firmware/ failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(TARGET).join("release/infer-firmware")
}

/// Boots `elf` on QEMU's Cortex-M4 board; its semihosting output, after
/// checking that it exited with status 0 within two minutes.
fn run_in_qemu(elf: &Path) -> String {
    let mut child = Command::new("qemu-system-arm")
        .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-arm");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the firmware did not finish within 120 s under QEMU");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("qemu output");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .ok();
    assert!(
        status.success(),
        "the firmware failed ({status}):\n{stdout}{stderr}"
    );
    stdout
}

/// The number after `prefix` on the line that starts with it.
fn figure(out: &str, prefix: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

/// Flash (everything loaded from it: code, read-only data, `.data`'s initial
/// values) and static RAM (`.data`, `.bss`, `.uninit`) of the ELF, in bytes.
fn footprint(elf: &Path) -> (u64, u64) {
    let bytes = std::fs::read(elf).expect("read the ELF");
    let file = object::File::parse(&*bytes).expect("parse the ELF");
    let (mut flash, mut ram) = (0, 0);
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags } = section.flags() else {
            continue;
        };
        if sh_flags & u64::from(object::elf::SHF_ALLOC) == 0 {
            continue;
        }
        let name = section.name().unwrap_or("");
        if section.address() >= RAM_START {
            ram += section.size();
            // .data's initial values are stored in flash too.
            if name == ".data" {
                flash += section.size();
            }
        } else {
            flash += section.size();
        }
    }
    (flash, ram)
}

#[test]
fn firmware_on_an_emulated_cortex_m4() {
    let probe = Command::new("qemu-system-arm").arg("--version").output();
    if probe.is_err() && skip("qemu-system-arm is not installed (Debian: qemu-system-arm)") {
        return;
    }
    if !target_installed()
        && skip("no thumbv7em-none-eabihf target (rustup target add thumbv7em-none-eabihf)")
    {
        return;
    }
    let elf = build_firmware();
    let out = run_in_qemu(&elf);
    print!("{out}");

    // The same model and images on this machine.
    let model_bytes = std::fs::read(root().join("models/resnet8-int8.safetensors")).unwrap();
    let images = std::fs::read(root().join("firmware/images/cifar10-test.bin")).unwrap();
    let model = Model::from_bytes(&model_bytes).unwrap();
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("image ")).collect();
    assert_eq!(lines.len(), images.len() / (1 + IMAGE_LEN), "{out}");
    let mut scratch = vec![0f32; model.scratch_len()];
    let mut probs = vec![0f32; model.num_classes()];
    for backend in [Backend::Portable, Backend::Auto] {
        let model = model.clone().with_backend(backend);
        for (i, (record, line)) in images.chunks_exact(1 + IMAGE_LEN).zip(&lines).enumerate() {
            let top = model
                .classify(&record[1..], &mut scratch, &mut probs)
                .unwrap();
            let bits: Vec<String> = probs
                .iter()
                .map(|p| format!("{:08x}", p.to_bits()))
                .collect();
            let want = format!(
                "image {i} label {} class {} probs {}",
                record[0],
                top.class,
                bits.join(" ")
            );
            assert_eq!(
                *line, want,
                "{backend:?}: the Cortex-M4 and this machine disagree"
            );
        }
    }

    let (flash, ram) = footprint(&elf);
    let scratch_f32 = figure(&out, "model Int8, 10 classes, scratch ");
    let (loading, classifying) = (
        figure(&out, "stack loading "),
        figure(&out, "stack classifying "),
    );
    assert_eq!(scratch_f32, model.scratch_len());
    println!(
        "footprint: flash {flash} bytes (model {} bytes, test images {} bytes, the rest code and constants); \
         RAM {ram} bytes static (scratch {} bytes) + stack {} bytes (high-water: loading {loading}, classifying {classifying}) = {} bytes",
        model_bytes.len(),
        images.len(),
        scratch_f32 * 4,
        loading.max(classifying),
        ram as usize + loading.max(classifying)
    );
}
