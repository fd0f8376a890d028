//! Reading an image file into the model's input: `h × w × c` bytes, HWC.

use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use image::ImageReader;
use infer::Model;
use std::path::Path;

/// An image ready for the model, and where it came from.
pub struct Input {
    /// `h × w × c` bytes in row-major HWC order.
    pub pixels: Vec<u8>,
    /// The file's own width and height.
    pub original: (u32, u32),
    /// Whether it was resized to the model's input size.
    pub resized: bool,
    /// The model's input width and height.
    pub size: (u32, u32),
}

/// Decodes `path` (PNG or JPEG, told by content, not by name) and converts it
/// to the model's input: channels first (grayscale → RGB, palette expanded,
/// alpha dropped, 16-bit scaled to 8-bit), then the size (bilinear resize,
/// aspect ratio not kept) when it differs.
pub fn load(path: &Path, model: &Model<'_>) -> Result<Input> {
    let name = path.display();
    let image = ImageReader::open(path)
        .with_context(|| format!("cannot read {name}"))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {name}"))?;
    if image.format().is_none() {
        bail!("{name}: not a PNG or JPEG image");
    }
    // The decoder's message already includes its causes: no `.context` chain,
    // which would print them twice.
    let image = image
        .decode()
        .map_err(|e| anyhow!("cannot decode {name}: {e}"))?;
    let (h, w, c) = model.input_shape();
    let (w, h) = (
        u32::try_from(w).context("model input too wide")?,
        u32::try_from(h).context("model input too tall")?,
    );
    let original = (image.width(), image.height());
    let resized = original != (w, h);
    let image = if resized {
        image.resize_exact(w, h, FilterType::Triangle)
    } else {
        image
    };
    let pixels = match c {
        1 => image.to_luma8().into_raw(),
        3 => image.to_rgb8().into_raw(),
        4 => image.to_rgba8().into_raw(),
        _ => bail!(
            "the model expects {c} channels per pixel; only 1, 3 and 4 can be made from images"
        ),
    };
    Ok(Input {
        pixels,
        original,
        resized,
        size: (w, h),
    })
}
