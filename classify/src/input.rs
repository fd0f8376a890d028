//! Reading an image file into the model's input: `h × w × c` bytes, HWC.

use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits};
use infer::Model;
use std::io::Cursor;
use std::path::Path;

/// The largest image side decoded (pixels). A file claiming more is refused
/// before anything is allocated: a few hundred bytes of PNG can declare an
/// image of gigabytes (a decompression bomb).
pub const MAX_SIDE: u32 = 16_384;
/// The most memory one decode may allocate (bytes): an 8-bit RGBA image of
/// 8,192 × 8,192. Files are decoded on every core at once, so this bounds the
/// program's memory to about cores × this.
pub const MAX_ALLOC: u64 = 256 << 20;

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

/// Whether a folder's file is taken as an image: a `.png`, `.jpg` or `.jpeg`
/// name, in any case (files named on the command line are read whatever
/// their name).
pub fn is_image_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["png", "jpg", "jpeg"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// Decodes `path` (PNG or JPEG, told by content, not by name) and converts it
/// to the model's input: channels first (grayscale → RGB, palette expanded,
/// alpha dropped, 16-bit scaled to 8-bit), then, when the size differs, a
/// centre crop to the model's aspect ratio and a bilinear (triangle-filter)
/// resize: the trainer's rule for image folders
/// (`trainer::data::folder::fit`), so a model sees its images as it was
/// trained on them.
pub fn load(path: &Path, model: &Model<'_>) -> Result<Input> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode(&bytes, &path.display().to_string(), model.input_shape())
}

/// [`load`] on the bytes of a file (`name` is what errors call it), for a
/// model whose input is `(h, w, c)`. Within [`MAX_SIDE`] and [`MAX_ALLOC`].
pub fn decode(bytes: &[u8], name: &str, (h, w, c): (usize, usize, usize)) -> Result<Input> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read {name}"))?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)
    ) {
        bail!("{name}: not a PNG or JPEG image");
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    // The decoder's message already includes its causes: no `.context` chain,
    // which would print them twice.
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => anyhow!(
            "cannot decode {name}: {e} (images are decoded up to {MAX_SIDE} pixels a side and {} MiB)",
            MAX_ALLOC >> 20
        ),
        _ => anyhow!("cannot decode {name}: {e}"),
    })?;
    let (w, h) = (
        u32::try_from(w).context("model input too wide")?,
        u32::try_from(h).context("model input too tall")?,
    );
    let original = (image.width(), image.height());
    let resized = original != (w, h);
    // Channels first, then the size (the trainer's order).
    let image = match c {
        1 => DynamicImage::ImageLuma8(image.into_luma8()),
        3 => DynamicImage::ImageRgb8(image.into_rgb8()),
        4 => DynamicImage::ImageRgba8(image.into_rgba8()),
        _ => bail!(
            "the model expects {c} channels per pixel; only 1, 3 and 4 can be made from images"
        ),
    };
    let image = if resized { fit(image, w, h) } else { image };
    let pixels = image.into_bytes();
    Ok(Input {
        pixels,
        original,
        resized,
        size: (w, h),
    })
}

/// Crops `image` to the aspect ratio of `w × h` around its centre, then
/// resizes it to `w × h` (triangle filter). A copy of the trainer's
/// `data::folder::fit` geometry (this crate does not depend on the trainer);
/// `classify/tests/cli.rs` checks that both give the same pixels.
pub fn fit(image: DynamicImage, w: u32, h: u32) -> DynamicImage {
    let (iw, ih) = (u64::from(image.width()), u64::from(image.height()));
    let (tw, th) = (u64::from(w), u64::from(h));
    let (x, y, cw, ch) = if iw * th > ih * tw {
        let cw = ((ih * tw + th / 2) / th).clamp(1, iw);
        ((iw - cw) / 2, 0, cw, ih)
    } else if iw * th < ih * tw {
        let ch = ((iw * th + tw / 2) / tw).clamp(1, ih);
        (0, (ih - ch) / 2, iw, ch)
    } else {
        (0, 0, iw, ih)
    };
    // All four fit in u32: they are at most the image's own sides.
    image
        .crop_imm(x as u32, y as u32, cw as u32, ch as u32)
        .resize_exact(w, h, FilterType::Triangle)
}
