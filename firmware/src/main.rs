//! ResNet-8 int8 on a Cortex-M4, with no allocator: the model file and ten
//! CIFAR-10 test images are in flash (`include_bytes!`), `infer` views the
//! model where it lies, and every activation lives in one static scratch
//! buffer. Prints each image's class and probabilities (as `f32` bits, for an
//! exact comparison with `infer` on the host: `tests/firmware.rs`), the
//! scratch it needed and the stack's high-water marks while loading the model
//! and while classifying, measured by painting the free stack before each;
//! exits through semihosting with status 0, or 1 on any error (a hard fault
//! or a panic included).
//!
//! Each classification is also timed with the SysTick timer on the core
//! clock: under QEMU's `-icount` (as `tests/firmware.rs` runs it) virtual
//! time advances by a fixed amount per instruction, so the ticks count the
//! instructions executed, not cycles; on a board they are cycles.
//!
//! Run it under QEMU: `cd firmware && cargo run --release`.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut};
use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

/// The int8 ResNet-8 shipped in models/ (trained and quantized by `trainer`).
#[cfg(not(feature = "f32"))]
static MODEL: &[u8] = include_bytes!("../../models/resnet8-int8.safetensors");
/// The `f32` feature: the f32 ResNet-8 it was quantized from.
#[cfg(feature = "f32")]
static MODEL: &[u8] = include_bytes!("../../models/resnet8.safetensors");

/// Test images: a label byte, then 32×32×3 pixels (HWC), for each
/// (`images/make_images.py`).
static IMAGES: &[u8] = include_bytes!("../images/cifar10-test.bin");
const IMAGE_LEN: usize = 32 * 32 * 3;

/// `infer`'s scratch, in `f32` elements: the model's
/// [`infer::Model::scratch_len`] (checked at run time). An int8 model keeps
/// `u8` activations, so this is a quarter of the f32 model's.
#[cfg(not(feature = "f32"))]
const SCRATCH_LEN: usize = 12_288;
#[cfg(feature = "f32")]
const SCRATCH_LEN: usize = 49_152;
static mut SCRATCH: [f32; SCRATCH_LEN] = [0.0; SCRATCH_LEN];

/// Layers the firmware's `Model` can hold: the int8 ResNet-8 has 21 (the 28
/// entries of models/resnet8.json less its 7 batch norms, folded into the
/// convolutions by `trainer quantize`), the f32 one 28.
#[cfg(not(feature = "f32"))]
const LAYERS: usize = 21;
#[cfg(feature = "f32")]
const LAYERS: usize = 28;

/// SysTick's reload value: its largest (the counter has 24 bits).
const RELOAD: u32 = 0x00FF_FFFF;

/// What the unused stack is painted with.
const PAINT: u32 = 0x5AC5_5AC5;

extern "C" {
    /// End of the static data (`.bss`, `.uninit`): the stack may grow down to here.
    static __sheap: u32;
    /// Top of the stack (the end of RAM).
    static _stack_start: u32;
}

#[entry]
fn main() -> ! {
    paint_stack();
    let status = match run() {
        Ok(()) => debug::EXIT_SUCCESS,
        Err(e) => {
            hprintln!("error: {}", e);
            debug::EXIT_FAILURE
        }
    };
    hprintln!("stack classifying {} bytes", stack_used());
    hprintln!("done");
    debug::exit(status);
    // Only reached without a debugger to end the session (a real board).
    loop {
        cortex_m::asm::wfi();
    }
}

fn run() -> Result<(), infer::Error> {
    // Room for ResNet-8's layers, not the default 64: the model's table
    // and the ones used while loading it take space in proportion. Borrowed
    // from the result, not moved out of it, so that it is on the stack once.
    let mut loaded = infer::Model::<'static, LAYERS>::load(MODEL);
    let model = loaded.as_mut().map_err(|e| *e)?;
    // The stack's high-water mark while loading; then paint again for
    // classifying's.
    hprintln!("stack loading {} bytes", stack_used());
    paint_stack();
    // SAFETY: the only reference to SCRATCH, taken once, on the only thread.
    let scratch = unsafe { &mut *addr_of_mut!(SCRATCH) };
    hprintln!(
        "model {:?}, {} classes, scratch {} of {} f32",
        model.precision(),
        model.num_classes(),
        model.scratch_len(),
        SCRATCH_LEN
    );
    let mut probs = [0f32; 10];
    let mut correct = 0;
    // SysTick counts down from its 24-bit reload on the core clock; each
    // classification must take less than one turn (COUNTFLAG says if not).
    let mut syst = cortex_m::Peripherals::take().map(|p| p.SYST);
    if let Some(syst) = syst.as_mut() {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.enable_counter();
        // Calibration: a loop of a known number of instructions (two per turn).
        syst.clear_current();
        let turns: u32 = 1_000_000;
        // SAFETY: a register-only countdown loop.
        unsafe {
            core::arch::asm!("2:", "subs {0}, {0}, #1", "bne 2b", inout(reg) turns => _, options(nomem, nostack));
        }
        let ticks = (RELOAD + 1) - SYST::get_current();
        hprintln!(
            "systick calibration {} instructions {} ticks",
            2 * turns,
            ticks
        );
    }
    for (i, record) in IMAGES.chunks_exact(1 + IMAGE_LEN).enumerate() {
        let (label, image) = (record[0], &record[1..]);
        // Clearing the counter (and COUNTFLAG) makes the next tick load the
        // reload value: the counter then stands at 2^24 − ticks elapsed.
        if let Some(s) = syst.as_mut() {
            s.clear_current();
        }
        let top = model.classify(image, scratch, &mut probs)?;
        if let Some(s) = syst.as_mut() {
            let ticks = (RELOAD + 1) - SYST::get_current();
            if s.has_wrapped() {
                hprintln!("systick image {} wrapped", i);
            } else {
                hprintln!("systick image {} {} ticks", i, ticks);
            }
        }
        correct += usize::from(top.class == usize::from(label));
        let b = probs.map(f32::to_bits);
        hprintln!(
            "image {} label {} class {} probs {:08x} {:08x} {:08x} {:08x} {:08x} {:08x} {:08x} {:08x} {:08x} {:08x}",
            i, label, top.class, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]
        );
    }
    hprintln!("correct {} of {}", correct, IMAGES.len() / (1 + IMAGE_LEN));
    // The last image again with the portable kernels only (on this core the
    // default runs the DSP-extension int8 kernel): the same bits, and what
    // the DSP kernel saves.
    let last = &IMAGES[IMAGES.len() - IMAGE_LEN..];
    let default = probs;
    model.set_backend(infer::Backend::Portable);
    if let Some(s) = syst.as_mut() {
        s.clear_current();
    }
    model.classify(last, scratch, &mut probs)?;
    if let Some(s) = syst.as_mut() {
        let ticks = (RELOAD + 1) - SYST::get_current();
        if !s.has_wrapped() {
            let i = IMAGES.len() / (1 + IMAGE_LEN) - 1;
            hprintln!("systick portable image {} {} ticks", i, ticks);
        }
    }
    hprintln!(
        "portable kernels {} the default's probabilities",
        if probs == default {
            "give"
        } else {
            "DIFFER from"
        }
    );
    Ok(())
}

/// Fills the free stack, from the end of the static data up to just below
/// the current stack pointer, with [`PAINT`].
fn paint_stack() {
    let bottom = addr_of!(__sheap) as usize;
    let sp = cortex_m::register::msp::read() as usize;
    let mut at = bottom;
    while at + 64 < sp {
        // SAFETY: free RAM between the static data and the live stack.
        unsafe { (at as *mut u32).write_volatile(PAINT) };
        at += 4;
    }
}

/// Bytes of stack ever used: from the top of RAM down to the lowest word
/// that no longer holds the paint.
fn stack_used() -> usize {
    let bottom = addr_of!(__sheap) as usize;
    let top = addr_of!(_stack_start) as usize;
    let mut at = bottom;
    // SAFETY: reads of RAM between the static data and the stack's top.
    while at < top && unsafe { (at as *const u32).read_volatile() } == PAINT {
        at += 4;
    }
    top - at
}

#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    hprintln!("hard fault at pc {:#010x}", frame.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
