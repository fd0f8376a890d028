//! Data augmentation on the fly: random crop with padding, horizontal flip and
//! cutout, applied to `u8` HWC images while a batch is gathered.
//!
//! Every random choice of a batch comes from one stream seeded by
//! [`batch_seed`]`(epoch_seed, step)`, so a batch depends only on the run's
//! seed, the epoch and the step: a run resumed from a checkpoint sees exactly
//! the batches an uninterrupted one would. With augmentation off,
//! [`gather_batch`] copies the images unchanged (the same bytes as a plain
//! gather).
//!
//! Per image, in this order:
//!
//! - **crop** (`crop_pad = p > 0`): pad the image by `p` pixels on every side
//!   (`reflect`: mirrored without repeating the edge, as NumPy's and PyTorch's
//!   `reflect`; `zero`: black), then cut a `H × W` window at a random offset
//!   `(oy, ox) ∈ [0, 2p]²`: `out[y, x] = padded[y + oy, x + ox]`;
//! - **flip** (`flip`): mirror left–right with probability ½;
//! - **cutout** (`cutout = s > 0`): zero an `s × s` square centred on a random
//!   pixel, clipped at the borders (DeVries & Taylor, 2017).

use crate::data::Split;
use crate::kernels::tensor::ImageShape;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What fills the border that a crop shifts into view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// Mirror the image at its edge, without repeating the edge pixel.
    #[default]
    Reflect,
    /// Black pixels.
    Zero,
}

/// Augmentation settings; the default (all off) leaves images unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Pixels of padding for the random crop (0 = no crop; at most [`MAX_CROP_PAD`]).
    pub crop_pad: usize,
    pub pad_mode: PadMode,
    /// Mirror left–right with probability ½.
    pub flip: bool,
    /// Side of the cutout square (0 = none).
    pub cutout: usize,
    /// With `flip`: instead of a fresh coin per image and epoch, a random
    /// half of the images (drawn once from the run's seed) is mirrored in
    /// odd epochs and the other half in even ones, so every image is seen
    /// both ways every two epochs (airbench).
    pub alternate_flip: bool,
}

/// Largest `crop_pad` accepted (reflection needs `pad < side`).
pub const MAX_CROP_PAD: usize = 8;

impl Augment {
    /// Whether every image passes through unchanged.
    pub fn is_identity(&self) -> bool {
        self.crop_pad == 0 && !self.flip && self.cutout == 0
    }

    /// Checks the settings on their own (see also [`Augment::check_fits`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.alternate_flip && !self.flip {
            return Err("alternate_flip needs flip".to_string());
        }
        if self.crop_pad > MAX_CROP_PAD {
            return Err(format!(
                "crop padding {} is larger than {MAX_CROP_PAD}",
                self.crop_pad
            ));
        }
        Ok(())
    }

    /// Checks the settings against the images they will augment: reflection
    /// needs a padding smaller than each side, and the cutout must fit.
    pub fn check_fits(&self, shape: ImageShape) -> Result<(), String> {
        let side = shape.height.min(shape.width);
        if self.crop_pad > 0 && self.crop_pad >= side {
            return Err(format!(
                "crop padding {} needs images larger than {shape}",
                self.crop_pad
            ));
        }
        if self.cutout > side {
            return Err(format!(
                "cutout {} is larger than the {shape} image",
                self.cutout
            ));
        }
        Ok(())
    }

    /// A short description (`crop 4 reflect, flip, cutout 8`; `none`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.crop_pad > 0 {
            let mode = match self.pad_mode {
                PadMode::Reflect => "reflect",
                PadMode::Zero => "zero",
            };
            parts.push(format!("crop {} {mode}", self.crop_pad));
        }
        if self.flip && self.alternate_flip {
            parts.push("alternating flip".to_string());
        } else if self.flip {
            parts.push("flip".to_string());
        }
        if self.cutout > 0 {
            parts.push(format!("cutout {}", self.cutout));
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// The random choices for one image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Draw {
    /// Crop offset in the padded image, each in `[0, 2·crop_pad]`.
    pub oy: usize,
    pub ox: usize,
    pub flip: bool,
    /// Centre of the cutout square.
    pub cutout_at: (usize, usize),
}

impl Draw {
    /// Draws in a fixed order (crop offset, flip, cutout centre). Every draw
    /// is made whether or not its option is on, so turning one option on or
    /// off does not change the others' choices.
    fn sample(aug: &Augment, shape: ImageShape, rng: &mut ChaCha8Rng) -> Self {
        let span = 2 * aug.crop_pad + 1;
        let oy = rng.random_range(0..span);
        let ox = rng.random_range(0..span);
        let flip = rng.random::<bool>();
        let cy = rng.random_range(0..shape.height);
        let cx = rng.random_range(0..shape.width);
        Draw {
            oy,
            ox,
            flip: flip && aug.flip,
            cutout_at: (cy, cx),
        }
    }
}

/// Source index along one axis of length `n` for padded coordinate `i`
/// (`i − pad`), or `None` for a zero pixel.
fn source(i: usize, pad: usize, n: usize, mode: PadMode) -> Option<usize> {
    let j = i as isize - pad as isize;
    let n = n as isize;
    if (0..n).contains(&j) {
        return Some(j as usize);
    }
    match mode {
        PadMode::Zero => None,
        PadMode::Reflect => {
            // Reflection without repeating the edge: −1 → 1, n → n − 2.
            let r = if j < 0 { -j } else { 2 * (n - 1) - j };
            Some(r.clamp(0, n - 1) as usize)
        }
    }
}

/// Writes the augmented `src` (one HWC image of `shape`) into `dst`.
pub fn augment_image(src: &[u8], dst: &mut [u8], shape: ImageShape, aug: &Augment, d: &Draw) {
    let (height, width, channels) = (shape.height, shape.width, shape.channels);
    debug_assert_eq!(src.len(), shape.len());
    debug_assert_eq!(dst.len(), shape.len());
    let p = aug.crop_pad;
    for y in 0..height {
        let sy = source(y + d.oy, p, height, aug.pad_mode);
        for x in 0..width {
            // Flipping the output is reading the crop mirrored.
            let xc = if d.flip { width - 1 - x } else { x };
            let sx = source(xc + d.ox, p, width, aug.pad_mode);
            let out = &mut dst[(y * width + x) * channels..][..channels];
            match (sy, sx) {
                (Some(sy), Some(sx)) => {
                    out.copy_from_slice(&src[(sy * width + sx) * channels..][..channels])
                }
                _ => out.fill(0),
            }
        }
    }
    if aug.cutout > 0 {
        let s = aug.cutout;
        let (cy, cx) = d.cutout_at;
        let (y0, y1) = (cy.saturating_sub(s / 2), (cy + s.div_ceil(2)).min(height));
        let (x0, x1) = (cx.saturating_sub(s / 2), (cx + s.div_ceil(2)).min(width));
        for y in y0..y1 {
            dst[(y * width + x0) * channels..(y * width + x1) * channels].fill(0);
        }
    }
}

/// Writes the mirror image (left–right) of `src`, one HWC image of `shape`,
/// into `dst`: `dst[y, x] = src[y, W − 1 − x]`. The view that test-time
/// augmentation adds.
pub fn mirror_image(src: &[u8], dst: &mut [u8], shape: ImageShape) {
    let (width, channels) = (shape.width, shape.channels);
    debug_assert_eq!(src.len(), shape.len());
    debug_assert_eq!(dst.len(), shape.len());
    for (src_row, dst_row) in src
        .chunks_exact(width * channels)
        .zip(dst.chunks_exact_mut(width * channels))
    {
        for (x, out) in dst_row.chunks_exact_mut(channels).enumerate() {
            out.copy_from_slice(&src_row[(width - 1 - x) * channels..][..channels]);
        }
    }
}

/// The seed of the augmentation stream of batch `step` of an epoch.
pub fn batch_seed(epoch_seed: u64, step: usize) -> u64 {
    splitmix64(splitmix64(epoch_seed ^ 0xA076_1D64_78BD_642F).wrapping_add(step as u64))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A batch of images and labels, reused from step to step.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Batch {
    pub fn with_capacity(n: usize, shape: ImageShape) -> Self {
        Self {
            images: Vec::with_capacity(n * shape.len()),
            labels: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Which images an epoch mirrors under [`Augment::alternate_flip`]: image
/// `i` (its index in the training split) is mirrored when its coin, drawn
/// once from the run's seed, differs from the epoch's parity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlipPhase {
    pub run_seed: u64,
    /// 1-based.
    pub epoch: usize,
}

impl FlipPhase {
    pub fn mirrors(&self, index: usize) -> bool {
        let coin = splitmix64(self.run_seed ^ 0x5851_F42D_4C95_7F2D ^ index as u64) & 1 == 1;
        coin != self.epoch.is_multiple_of(2)
    }
}

/// Gathers the images `indices` of `split` into `batch`, augmented with the
/// stream seeded by `seed` (see [`batch_seed`]); `phase` decides the flips
/// when they alternate.
pub fn gather_batch(
    split: &Split,
    indices: &[usize],
    aug: &Augment,
    seed: u64,
    phase: FlipPhase,
    batch: &mut Batch,
) {
    batch.images.clear();
    batch.labels.clear();
    if aug.is_identity() {
        for &i in indices {
            batch.images.extend_from_slice(split.image(i));
            batch.labels.push(split.labels[i]);
        }
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shape = split.shape;
    batch.images.resize(indices.len() * shape.len(), 0);
    for (&i, dst) in indices
        .iter()
        .zip(batch.images.chunks_exact_mut(shape.len()))
    {
        let mut draw = Draw::sample(aug, shape, &mut rng);
        if aug.flip && aug.alternate_flip {
            draw.flip = phase.mirrors(i);
        }
        augment_image(split.image(i), dst, shape, aug, &draw);
        batch.labels.push(split.labels[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ImageShape = ImageShape::new(32, 32, 3);
    const HEIGHT: usize = 32;
    const WIDTH: usize = 32;
    const CHANNELS: usize = 3;
    const IMAGE_LEN: usize = SHAPE.len();

    /// An image whose pixels all differ from one another.
    fn ramp() -> Vec<u8> {
        (0..IMAGE_LEN)
            .map(|i| {
                let (p, c) = (i / CHANNELS, i % CHANNELS);
                let (y, x) = (p / WIDTH, p % WIDTH);
                (y * 8 + x / 4 + c * 85) as u8 ^ (x as u8 & 3)
            })
            .collect()
    }

    fn px(img: &[u8], y: usize, x: usize) -> &[u8] {
        &img[(y * WIDTH + x) * CHANNELS..][..CHANNELS]
    }

    fn split_of(n: usize) -> Split {
        let mut s = Split::new(SHAPE);
        for k in 0..n {
            s.images
                .extend(ramp().iter().map(|&v| v.wrapping_add(k as u8 * 31)));
            s.labels.push((k % 10) as u8);
        }
        s
    }

    #[test]
    fn flip_is_a_mirror() {
        let src = ramp();
        let mut dst = vec![0; IMAGE_LEN];
        let aug = Augment {
            flip: true,
            ..Augment::default()
        };
        let d = Draw {
            flip: true,
            ..Draw::default()
        };
        augment_image(&src, &mut dst, SHAPE, &aug, &d);
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                assert_eq!(px(&dst, y, x), px(&src, y, WIDTH - 1 - x));
            }
        }
        // Flipping twice gives the image back.
        let mut back = vec![0; IMAGE_LEN];
        augment_image(&dst, &mut back, SHAPE, &aug, &d);
        assert_eq!(back, src);
    }

    #[test]
    fn crop_with_pad_zero_is_identity() {
        let src = ramp();
        let mut dst = vec![0; IMAGE_LEN];
        augment_image(&src, &mut dst, SHAPE, &Augment::default(), &Draw::default());
        assert_eq!(dst, src);
        // The centred crop of a padded image is the image, whatever the mode.
        for pad_mode in [PadMode::Reflect, PadMode::Zero] {
            let aug = Augment {
                crop_pad: 4,
                pad_mode,
                ..Augment::default()
            };
            let d = Draw {
                oy: 4,
                ox: 4,
                ..Draw::default()
            };
            augment_image(&src, &mut dst, SHAPE, &aug, &d);
            assert_eq!(dst, src);
        }
    }

    #[test]
    fn reflect_padding_mirrors_without_repeating_the_edge() {
        let src = ramp();
        let mut dst = vec![0; IMAGE_LEN];
        let aug = Augment {
            crop_pad: 3,
            pad_mode: PadMode::Reflect,
            ..Augment::default()
        };
        // Offset (0, 0): output (y, x) is padded (y, x) = source (y − 3, x − 3), reflected.
        augment_image(&src, &mut dst, SHAPE, &aug, &Draw::default());
        assert_eq!(px(&dst, 0, 0), px(&src, 3, 3));
        assert_eq!(px(&dst, 2, 5), px(&src, 1, 2));
        assert_eq!(px(&dst, 3, 3), px(&src, 0, 0));
        assert_eq!(px(&dst, 10, 1), px(&src, 7, 2));
        // Offset (6, 6): output (y, x) = source (y + 3, x + 3); 32 → 30, 34 → 28.
        let d = Draw {
            oy: 6,
            ox: 6,
            ..Draw::default()
        };
        augment_image(&src, &mut dst, SHAPE, &aug, &d);
        assert_eq!(px(&dst, 28, 28), px(&src, 31, 31));
        assert_eq!(px(&dst, 29, 0), px(&src, 30, 3));
        assert_eq!(px(&dst, 31, 31), px(&src, 28, 28));
        assert_eq!(source(0, 2, 32, PadMode::Reflect), Some(2));
        assert_eq!(source(1, 2, 32, PadMode::Reflect), Some(1));
        assert_eq!(source(34, 2, 32, PadMode::Reflect), Some(30));
        assert_eq!(source(35, 2, 32, PadMode::Reflect), Some(29));
    }

    #[test]
    fn zero_padding_is_black_and_shifts() {
        let src = ramp();
        let mut dst = vec![0; IMAGE_LEN];
        let aug = Augment {
            crop_pad: 2,
            pad_mode: PadMode::Zero,
            ..Augment::default()
        };
        let d = Draw {
            oy: 0,
            ox: 4,
            ..Draw::default()
        };
        augment_image(&src, &mut dst, SHAPE, &aug, &d);
        // Rows 0–1 are padding; column x reads source x + 2 (black beyond 31).
        assert!(dst[..2 * WIDTH * CHANNELS].iter().all(|&v| v == 0));
        assert_eq!(px(&dst, 2, 0), px(&src, 0, 2));
        assert_eq!(px(&dst, 31, 29), px(&src, 29, 31));
        assert_eq!(px(&dst, 31, 30), &[0, 0, 0]);
    }

    #[test]
    fn cutout_zeroes_a_clipped_square() {
        let src = vec![200u8; IMAGE_LEN];
        let mut dst = vec![0; IMAGE_LEN];
        let aug = Augment {
            cutout: 8,
            ..Augment::default()
        };
        let zeros = |d: &Draw, dst: &mut Vec<u8>| {
            augment_image(&src, dst, SHAPE, &aug, d);
            dst.chunks_exact(CHANNELS)
                .filter(|p| p.iter().all(|&v| v == 0))
                .count()
        };
        let centred = Draw {
            cutout_at: (16, 16),
            ..Draw::default()
        };
        assert_eq!(zeros(&centred, &mut dst), 64);
        assert_eq!(px(&dst, 12, 12), &[0, 0, 0]);
        assert_eq!(px(&dst, 19, 19), &[0, 0, 0]);
        assert_eq!(px(&dst, 20, 20), &[200, 200, 200]);
        let corner = Draw {
            cutout_at: (0, 31),
            ..Draw::default()
        };
        assert_eq!(zeros(&corner, &mut dst), 4 * 5);
    }

    #[test]
    fn off_means_the_plain_gather() {
        let split = split_of(6);
        let idx = [4, 0, 5, 2];
        let mut batch = Batch::default();
        gather_batch(
            &split,
            &idx,
            &Augment::default(),
            99,
            FlipPhase::default(),
            &mut batch,
        );
        let mut plain = Vec::new();
        for &i in &idx {
            plain.extend_from_slice(split.image(i));
        }
        assert_eq!(batch.images, plain);
        assert_eq!(batch.labels, [4, 0, 5, 2]);
    }

    /// Alternating flips: each image is mirrored in exactly one of two
    /// consecutive epochs, whatever the batch's seed; about half of them in
    /// each epoch (some in each).
    #[test]
    fn alternating_flips_mirror_each_image_every_other_epoch() {
        let split = split_of(8);
        let idx: Vec<usize> = (0..8).collect();
        let aug = Augment {
            flip: true,
            alternate_flip: true,
            ..Augment::default()
        };
        let gather = |epoch: usize, seed: u64| {
            let mut b = Batch::default();
            let phase = FlipPhase { run_seed: 9, epoch };
            gather_batch(&split, &idx, &aug, seed, phase, &mut b);
            b
        };
        let mirrored =
            |b: &Batch, i: usize| b.images[i * IMAGE_LEN..][..IMAGE_LEN] != *split.image(i);
        let (one, two, three) = (gather(1, 5), gather(2, 6), gather(3, 7));
        let mut count = 0;
        for i in 0..8 {
            assert_ne!(mirrored(&one, i), mirrored(&two, i), "image {i}");
            assert_eq!(mirrored(&one, i), mirrored(&three, i), "image {i}");
            count += usize::from(mirrored(&one, i));
        }
        assert!((1..=7).contains(&count), "{count} of 8 mirrored");
        assert!(Augment {
            alternate_flip: true,
            ..Augment::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn same_seed_same_batch() {
        let split = split_of(8);
        let idx: Vec<usize> = (0..8).rev().collect();
        let aug = Augment {
            crop_pad: 4,
            pad_mode: PadMode::Reflect,
            flip: true,
            cutout: 6,
            alternate_flip: false,
        };
        let gather = |seed| {
            let mut b = Batch::default();
            gather_batch(&split, &idx, &aug, seed, FlipPhase::default(), &mut b);
            b
        };
        let (a, b, c) = (
            gather(batch_seed(7, 3)),
            gather(batch_seed(7, 3)),
            gather(batch_seed(7, 4)),
        );
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, c.labels);
        assert_ne!(a.images, c.images);
        assert_ne!(batch_seed(7, 3), batch_seed(8, 3));
    }

    #[test]
    fn validate_rejects_oversized_settings() {
        let ok = Augment {
            crop_pad: 4,
            cutout: 16,
            ..Augment::default()
        };
        assert!(ok.validate().is_ok() && ok.check_fits(SHAPE).is_ok());
        let big_pad = Augment {
            crop_pad: 9,
            ..Augment::default()
        };
        assert!(big_pad.validate().is_err());
        let big_cut = Augment {
            cutout: 33,
            ..Augment::default()
        };
        assert!(big_cut.check_fits(SHAPE).is_err());
        // 28×28 grayscale (MNIST): the same settings fit; a crop as wide as
        // a 4×4 image does not (reflection needs padding < side).
        assert!(ok.check_fits(ImageShape::new(28, 28, 1)).is_ok());
        let err = ok.check_fits(ImageShape::new(4, 4, 1)).unwrap_err();
        assert!(err.contains("crop padding 4"), "{err}");
    }
}
