//! The int8 ResNet-8 really runs on a Cortex-M4: `firmware/` (no_std, no
//! allocator, the model and ten CIFAR-10 test images in flash, one static
//! scratch buffer) is built for `thumbv7em-none-eabihf` and booted on QEMU's
//! `mps2-an386` board; every image's class and probabilities (printed as
//! `f32` bits over semihosting) must equal, bit for bit, what `infer` gives
//! on this machine with its portable kernels and with the best SIMD ones.
//! Also prints the firmware's footprint: flash (code, model, images) and RAM
//! (static data, and the stack's high-water marks the firmware measures by
//! painting its stack), and the instructions per classification (QEMU runs
//! with `-icount`, and the firmware reads SysTick), which the README quotes.
//!
//! The `f32` build (the f32 ResNet-8, for FPU cores with more memory) is
//! checked the same way, within 1e-5 of the host's probabilities.
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
/// Where the memory maps put RAM (firmware/memory-int8.x, memory-f32.x).
const RAM_START: u64 = 0x2000_0000;
const IMAGE_LEN: usize = 32 * 32 * 3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether QEMU and the target are here; panics without them when
/// FIRMWARE_REQUIRE is set, else says SKIPPED.
fn can_run(test: &str) -> bool {
    let why = if Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .is_err()
    {
        "qemu-system-arm is not installed (Debian: qemu-system-arm)"
    } else if !target_installed() {
        "no thumbv7em-none-eabihf target (rustup target add thumbv7em-none-eabihf)"
    } else {
        return true;
    };
    if std::env::var_os("FIRMWARE_REQUIRE").is_some() {
        panic!("{why} (FIRMWARE_REQUIRE is set)");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
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
/// target and the linker script), with `features`, in a target folder of its
/// own (`name`); returns the ELF file.
fn build_firmware(name: &str, features: &[&str]) -> PathBuf {
    let dir = target_dir().join(name);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root().join("firmware"))
        .args(["build", "--release"])
        .args(features.iter().flat_map(|f| ["--features", f]))
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
        // Virtual time by instruction count, so that the firmware's SysTick
        // readings count instructions (see `instructions_per_image`).
        .args(["-icount", "shift=0"])
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

/// The median instructions per classification, from the firmware's SysTick
/// readings: under `-icount` its ticks are proportional to instructions, at
/// the rate its calibration loop (a known count of instructions) shows.
fn instructions_per_image(out: &str) -> f64 {
    instructions_of(out, "systick image ")
}

/// [`instructions_per_image`] of the readings on lines starting with `prefix`.
fn instructions_of(out: &str, prefix: &str) -> f64 {
    let cal = out
        .lines()
        .find_map(|l| l.strip_prefix("systick calibration "))
        .unwrap_or_else(|| panic!("no calibration line in:\n{out}"));
    let words: Vec<&str> = cal.split_whitespace().collect();
    let (instructions, ticks): (f64, f64) = (words[0].parse().unwrap(), words[2].parse().unwrap());
    assert!(ticks > 0.0, "SysTick did not count: {cal}");
    let mut per_image: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(words.get(2), Some(&"ticks"), "SysTick wrapped: {rest}");
            words[1].parse::<f64>().unwrap() * instructions / ticks
        })
        .collect();
    assert!(!per_image.is_empty(), "no SysTick readings in:\n{out}");
    per_image.sort_by(f64::total_cmp);
    per_image[per_image.len() / 2]
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

/// The probabilities of one `image …` line of the firmware's output, and
/// the line without them.
fn parse_line(line: &str) -> (String, Vec<f32>) {
    let (head, bits) = line.split_once(" probs ").expect("an image line");
    let probs = bits
        .split_whitespace()
        .map(|b| f32::from_bits(u32::from_str_radix(b, 16).expect("hex f32 bits")))
        .collect();
    (head.to_string(), probs)
}

/// Boots the firmware built with `features` and compares every image's class
/// and probabilities with `infer` on this machine (portable and best
/// kernels), within `tolerance` (0: the same bits); prints its footprint.
fn check_firmware(
    name: &str,
    features: &[&str],
    model_file: &str,
    tolerance: f32,
    ram_length: u64,
) {
    let elf = build_firmware(name, features);
    let out = run_in_qemu(&elf);
    print!("{out}");

    // The same model and images on this machine.
    let model_bytes = std::fs::read(root().join("models").join(model_file)).unwrap();
    let images = std::fs::read(root().join("firmware/images/cifar10-test.bin")).unwrap();
    let model = Model::from_bytes(&model_bytes).unwrap();
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("image ")).collect();
    assert_eq!(lines.len(), images.len() / (1 + IMAGE_LEN), "{out}");
    let mut scratch = vec![0f32; model.scratch_len()];
    let mut probs = vec![0f32; model.num_classes()];
    let mut worst = 0f32;
    for backend in [Backend::Portable, Backend::Auto] {
        let model = model.clone().with_backend(backend);
        for (i, (record, line)) in images.chunks_exact(1 + IMAGE_LEN).zip(&lines).enumerate() {
            let top = model
                .classify(&record[1..], &mut scratch, &mut probs)
                .unwrap();
            let (head, got) = parse_line(line);
            let want = format!("image {i} label {} class {}", record[0], top.class);
            assert_eq!(
                head, want,
                "{backend:?}: the Cortex-M4 and this machine disagree"
            );
            for (g, w) in got.iter().zip(&probs) {
                if tolerance == 0.0 {
                    assert_eq!(g.to_bits(), w.to_bits(), "{backend:?}, {line}: {probs:?}");
                }
                worst = worst.max((g - w).abs());
            }
        }
    }
    assert!(
        worst <= tolerance,
        "largest probability difference {worst:e}"
    );

    let (flash, ram) = footprint(&elf);
    let scratch_f32 = figure(
        &out,
        &format!("model {:?}, 10 classes, scratch ", model.precision()),
    );
    let (loading, classifying) = (
        figure(&out, "stack loading "),
        figure(&out, "stack classifying "),
    );
    assert_eq!(scratch_f32, model.scratch_len());
    let instructions = instructions_per_image(&out);
    // The same image with the portable kernels: the same probabilities.
    assert!(
        out.contains("portable kernels give the default's probabilities"),
        "{out}"
    );
    let portable = instructions_of(&out, "systick portable image ");
    // The stack grows down from the end of RAM towards the static data; had
    // it reached them, the paint would be gone up to them and the figures
    // below would be wrong (firmware/memory-int8.x and memory-f32.x set the RAM).
    let stack = loading.max(classifying) as u64;
    assert!(
        ram + stack < ram_length,
        "the stack ({stack} bytes) reached the static data ({ram} bytes of {ram_length})"
    );
    println!(
        "{name}: largest probability difference to this machine {worst:e}; footprint: flash {flash} bytes \
         (model {} bytes, test images {} bytes, the rest code and constants); RAM {ram} bytes static \
         (scratch {} bytes) + stack {stack} bytes (high-water: loading {loading}, classifying {classifying}) \
         = {} bytes; {:.1} M instructions per image (QEMU -icount, not cycles; \
         {:.1} M with the portable kernels only)",
        model_bytes.len(),
        images.len(),
        scratch_f32 * 4,
        ram + stack,
        instructions / 1e6,
        portable / 1e6
    );
}

#[test]
fn firmware_on_an_emulated_cortex_m4() {
    if can_run("firmware_on_an_emulated_cortex_m4") {
        check_firmware("firmware", &[], "resnet8-int8.safetensors", 0.0, 64 * 1024);
    }
}

#[test]
fn f32_firmware_on_an_emulated_cortex_m4() {
    if can_run("f32_firmware_on_an_emulated_cortex_m4") {
        check_firmware(
            "firmware-f32",
            &["f32"],
            "resnet8.safetensors",
            1e-5,
            256 * 1024,
        );
    }
}
