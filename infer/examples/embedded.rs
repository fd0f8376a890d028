//! How firmware would use `infer`: the model is compiled into the binary with
//! `include_bytes!`, the scratch and output buffers live on the stack, and
//! nothing touches the heap while loading or classifying.
//!
//! ```text
//! cargo run --release -p infer --example embedded
//! ```
//!
//! (This example is a normal `std` program only so that it can print; the two
//! calls into `infer` are exactly what a `no_std` target would run.)

use infer::Model;

/// The model, in the firmware image. The bytes have no alignment guarantee,
/// and `infer` needs none.
static MODEL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/model1.safetensors"
));

/// Scratch for model 1: `Model::scratch_len()` is 65,536 `f32`s (256 KiB). A
/// device would size this for the models it ships.
const SCRATCH_LEN: usize = 65_536;

/// A stand-in for a camera frame: 32×32 RGB, row-major HWC (a colour gradient).
const fn frame() -> [u8; 32 * 32 * 3] {
    let mut image = [0u8; 32 * 32 * 3];
    let mut i = 0;
    while i < 32 * 32 {
        let (y, x) = (i / 32, i % 32);
        image[3 * i] = (x * 8) as u8;
        image[3 * i + 1] = (y * 8) as u8;
        image[3 * i + 2] = ((x + y) * 4) as u8;
        i += 1;
    }
    image
}

static FRAME: [u8; 32 * 32 * 3] = frame();

fn main() -> Result<(), infer::Error> {
    // No allocation from here…
    let model = Model::from_bytes(MODEL)?;
    let mut scratch = [0f32; SCRATCH_LEN];
    let mut probs = [0f32; 16];
    let top = model.classify(&FRAME, &mut scratch, &mut probs)?;
    // …to here. (`classify` checks the buffer sizes and returns an error, not
    // a panic, if they are too small.)

    println!(
        "class {} ({}) with probability {:.3}; scratch used: {} of {} bytes",
        top.class,
        model.class_name(top.class).unwrap_or("?"),
        top.probability,
        model.scratch_bytes(),
        core::mem::size_of_val(&scratch),
    );
    Ok(())
}
