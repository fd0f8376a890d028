//! `conv2d`, and `dense` as its 1×1 special case, in an int8 model
//! (FORMAT.md, "Int8 models"; the arithmetic is `model_format::quant`'s):
//!
//! ```text
//! acc[co] = bias[co] + Σ_{in-image taps} (x − z_x) · q[ky, kx, ci/4, co, ci%4]     (i32)
//! y       = clamp(z_y + M_co(acc[co]), lo, 255),    M_co = s_x · weight_scale[co] / s_y
//! ```
//!
//! Tiled like the `f32` convolution ([`super::conv::for_each_tile`]: same
//! regions, padded taps skipped, which is exact because padding is real 0,
//! i.e. `x = z_x`). Per block of output channels the driver decodes the biases
//! and derives the multipliers once; a tile kernel then accumulates `pixels ×
//! cols` sums and requantizes them. The portable kernel is the reference;
//! the x86-64 kernels (`conv_i8_vnni.rs`: AVX-512 VNNI, `conv_i8_avx2.rs`:
//! AVX2) must give the same bytes.
//!
//! The accumulators cannot overflow: model loading refuses a layer where
//! `|bias| ≥ 2^30` or `k·k·4·⌈ci/4⌉ · 255 · 127 ≥ 2^30`.

use super::conv::{for_each_tile, ConvGeom, TilePos, MAX_PIXELS};
use crate::arch::Shape;
use model_format::quant::{self, ActQuant, Multiplier, GROUP};

/// Most output channels in one block (the widest kernel's: VNNI's for an
/// output of one pixel, a dense layer's; 32 on other targets).
#[cfg(target_arch = "x86_64")]
pub(crate) const MAX_COLS: usize = super::conv_i8_vnni::WIDE;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const MAX_COLS: usize = 32;

/// Output channels per block of the portable kernel.
const PORTABLE_COLS: usize = 16;

/// Which implementation of the int8 tile kernel to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelI8 {
    /// Plain Rust; any CPU. The reference.
    Portable,
    /// AVX2 (exact 16-bit products, `vpmaddwd`); the caller has checked the
    /// CPU supports it.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 VNNI (`vpdpbusd`, with AVX-512BW/VL for the byte stores); the
    /// caller has checked the CPU supports them.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// Arm DSP extension (`SMLAD`; `conv_i8_dsp.rs`), on ARMv7E-M builds;
    /// the host's tests run it with the instructions emulated.
    #[cfg(any(infer_arm_dsp, test))]
    ArmDsp,
}

impl KernelI8 {
    /// Output channels per block of a layer of geometry `g`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn cols(self, g: &ConvGeom) -> usize {
        match self {
            KernelI8::Portable => PORTABLE_COLS,
            #[cfg(target_arch = "x86_64")]
            KernelI8::Avx2 => super::conv_i8_avx2::COLS,
            // One output pixel (a dense layer): one block of up to 128
            // channels, whose weights for a group of inputs are 512 bytes in
            // a row (blocks of 32 read 128 bytes of every 512, at half the
            // speed); with more pixels, 32 (the registers' limit).
            #[cfg(target_arch = "x86_64")]
            KernelI8::Vnni if g.output.h * g.output.w == 1 => super::conv_i8_vnni::WIDE,
            #[cfg(target_arch = "x86_64")]
            KernelI8::Vnni => super::conv_i8_vnni::COLS,
            #[cfg(any(infer_arm_dsp, test))]
            KernelI8::ArmDsp => super::conv_i8_dsp::COLS,
        }
    }

    /// Most pixels in one call: a tile, or for the VNNI kernel a run of
    /// pixels that it cuts into tiles itself.
    fn max_pixels(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            KernelI8::Vnni => super::conv_i8_vnni::RUN,
            _ => MAX_PIXELS,
        }
    }

    /// Whether the kernel runs a narrow image's convolution on a copy padded
    /// left and right ([`padded_applies`]): the x86-64 kernels, where it was
    /// measured faster. The portable and Arm kernels multiply every tap once
    /// whatever the tiles, so the padding's extra taps would only cost them
    /// (measured 18 % slower on `fast`'s 4×4 layers with the portable one).
    fn pads_narrow_images(self) -> bool {
        match self {
            KernelI8::Portable => false,
            #[cfg(any(infer_arm_dsp, test))]
            KernelI8::ArmDsp => false,
            #[cfg(target_arch = "x86_64")]
            KernelI8::Avx2 | KernelI8::Vnni => true,
        }
    }

    /// Whether the kernel subtracts the input's zero point itself (else it
    /// multiplies the raw bytes and runs only where the zero point is 0).
    fn takes_any_zero_point(self) -> bool {
        match self {
            KernelI8::Portable => true,
            #[cfg(any(infer_arm_dsp, test))]
            KernelI8::ArmDsp => true,
            #[cfg(target_arch = "x86_64")]
            KernelI8::Avx2 | KernelI8::Vnni => false,
        }
    }
}

/// An int8 convolution's parameters: the tensors' bytes (checked at load)
/// and the quantization of its input and output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QuantConv<'a> {
    pub geom: &'a ConvGeom,
    /// `I8 [k, k, ⌈ci/4⌉, co, 4]`.
    pub weight: &'a [u8],
    /// `I32 [co]`, little-endian.
    pub bias: &'a [u8],
    /// `F32 [co]`, little-endian.
    pub weight_scale: &'a [u8],
    pub q_in: ActQuant,
    pub q_out: ActQuant,
    /// A relu is fused: the output's lower bound is its zero point.
    pub relu: bool,
}

impl QuantConv<'_> {
    /// The requantization multiplier of output channel `co` (0 if out of
    /// range, which model loading has ruled out).
    pub fn multiplier(&self, co: usize) -> Option<Multiplier> {
        let s = self.weight_scale.get(co * 4..co * 4 + 4)?;
        let ws = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        Multiplier::for_conv(self.q_in.scale, ws, self.q_out.scale)
    }

    /// The bias of output channel `co`.
    pub fn bias(&self, co: usize) -> i32 {
        let b = &self.bias[co * 4..co * 4 + 4];
        i32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// One block of output channels: biases and multipliers, decoded once per
/// block and image, in place ([`Block::load`]).
pub(crate) struct Block {
    pub co0: usize,
    pub bias: [i32; MAX_COLS],
    pub mult: [i32; MAX_COLS],
    pub shift: [i32; MAX_COLS],
    /// The output's zero point, and the lower clamp (the zero point with a
    /// fused relu, else 0).
    pub zero_point: u8,
    pub lo: u8,
}

impl Block {
    /// A block of `c`'s output channels, none loaded yet.
    fn new(c: &QuantConv<'_>) -> Block {
        let zero_point = c.q_out.zero_point;
        Block {
            co0: usize::MAX,
            bias: [0; MAX_COLS],
            mult: [0; MAX_COLS],
            shift: [0; MAX_COLS],
            zero_point,
            lo: if c.relu { zero_point } else { 0 },
        }
    }

    /// Loads output channels `co0 .. co0 + cols`: their biases, and
    /// multipliers 8 at a time with AVX-512 where the kernel is `Vnni` (bits
    /// for bits the scalar `Multiplier::for_conv`; one at a time they took
    /// 3–4 % of an int8 image, as this runs per block on every image).
    fn load(&mut self, c: &QuantConv<'_>, co0: usize, cols: usize, kernel: KernelI8) {
        let b = self;
        b.co0 = co0;
        for j in 0..cols {
            b.bias[j] = c.bias(co0 + j);
        }
        #[cfg(target_arch = "x86_64")]
        if kernel == KernelI8::Vnni {
            // SAFETY: `Vnni` is only chosen where the CPU has AVX-512F and VL.
            unsafe {
                super::quant_avx512::conv_multipliers(
                    c.q_in.scale,
                    c.q_out.scale,
                    &c.weight_scale[co0 * 4..],
                    &mut b.mult[..cols],
                    &mut b.shift[..cols],
                )
            };
            return;
        }
        let _ = kernel;
        for j in 0..cols {
            let m = c.multiplier(co0 + j).unwrap_or_default();
            b.mult[j] = m.mult;
            b.shift[j] = m.shift;
        }
    }

    /// Requantizes column `j`'s accumulator.
    #[inline(always)]
    pub fn requantize(&self, j: usize, acc: i32) -> u8 {
        let m = Multiplier {
            mult: self.mult[j],
            shift: self.shift[j],
        };
        quant::requantize(acc, m, self.zero_point, self.lo)
    }
}

/// One tile: `pixels` output pixels × `cols` output channels.
pub(crate) struct TileI8<'t> {
    /// Input, from the first pixel's first in-image tap `x[iy, ix, 0]`.
    pub x: &'t [u8],
    /// Weights, from `q[ky0, kx0, 0, co0, 0]`.
    pub w: &'t [u8],
    /// Output, from `y[oy, ox, co0]` of the first pixel.
    pub out: &'t mut [u8],
    pub block: &'t Block,
    pub pixels: usize,
    pub cols: usize,
    /// In-image kernel rows and columns.
    pub rows: usize,
    pub taps: usize,
    /// Input channels (the input values between consecutive taps of a row),
    /// and their groups of 4 (the last one holds `ci − 4·(groups−1)`).
    pub ci: usize,
    pub groups: usize,
    /// Input values between consecutive pixels of the tile, and between rows.
    pub px_in: usize,
    pub row_stride: usize,
    /// Output values between consecutive pixels of the tile.
    pub px_out: usize,
    /// Weight bytes between consecutive groups (`co·4`), taps (`groups·co·4`)
    /// and kernel rows (`k·groups·co·4`).
    pub w_group: usize,
    pub w_tap: usize,
    pub w_row: usize,
    /// The input's zero point (the SIMD kernels run only when it is 0).
    pub zp_in: u8,
    /// `x` holds 3 more bytes than `x_needed`: a last group of fewer than 4
    /// input channels may be read whole (its extra bytes meet zero weights).
    pub x_slack: bool,
}

impl TileI8<'_> {
    /// Pixels `first .. first + n` of this tile (or run) as a tile of their
    /// own: its slices start at pixel `first`, and it has the slack to read
    /// a last group whole where 3 more bytes of `x` follow what it needs.
    /// (The VNNI kernel's tiles of a run.)
    #[cfg(target_arch = "x86_64")]
    pub fn part(&mut self, first: usize, n: usize) -> TileI8<'_> {
        let x_at = if self.rows == 0 {
            0
        } else {
            first * self.px_in
        };
        let mut part = TileI8 {
            x: &self.x[x_at..],
            out: &mut self.out[first * self.px_out..],
            pixels: n,
            ..*self
        };
        if part.rows > 0 && !part.x_slack {
            part.x_slack = part.x.len() >= part.x_needed() + GROUP - 1;
        }
        part
    }

    /// Input bytes the tile reads (when `rows, taps > 0`).
    pub fn x_needed(&self) -> usize {
        (self.pixels - 1) * self.px_in + (self.rows - 1) * self.row_stride + self.taps * self.ci
    }

    /// Weight bytes the tile reads (when `rows, taps > 0`).
    pub fn w_needed(&self) -> usize {
        (self.rows - 1) * self.w_row
            + (self.taps - 1) * self.w_tap
            + (self.groups - 1) * self.w_group
            + self.cols * GROUP
    }
}

/// Widest output that [`padded_applies`] to.
pub(crate) const PADDED_MAX_WIDTH: usize = 4;

/// Whether a convolution may run on a copy of its input padded left and right
/// (when the kernel [pads narrow images](KernelI8::pads_narrow_images), so
/// only on x86-64, where such kernels exist; model plans reserve its
/// workspace where this holds): a kernel larger than 1×1, stride 1, padding
/// at the left, and an output at most [`PADDED_MAX_WIDTH`] wide.
///
/// A tile's pixels must share their in-image taps, so a 4×4 output with
/// `same` padding is 10 tiles of 1 or 2 pixels, each loading its taps'
/// weights (73 KB per block of 32 output channels of a 256-channel layer,
/// more than L1 holds) for 1 or 2 pixels. Padded left and right, every pixel
/// of a row has all its kernel columns, so a row is one tile of 4: 4 tiles,
/// each weight vector serving 4 pixels, for 20 % more multiply-adds (the
/// padding's). Measured on `fast`'s two 4×4 layers (256 channels in and out),
/// one thread, with a temporary per-layer cycle counter: 105 against 62
/// thousand cycles each with VNNI, 79 against 63 with AVX2; on its 8×8 layer
/// it was slower (109 against 120), hence the width limit. The whole image:
/// docs/PERFORMANCE.md (`benches/compare.sh`).
pub(crate) fn padded_applies(g: &ConvGeom) -> bool {
    cfg!(target_arch = "x86_64")
        && g.k > 1
        && g.stride == 1
        && g.pad_left > 0
        && g.output.w <= PADDED_MAX_WIDTH
}

/// The padded input's geometry: the same convolution of an input
/// `ow − 1 + k` wide without left padding.
fn padded_geom(g: &ConvGeom) -> ConvGeom {
    ConvGeom {
        input: Shape {
            w: g.output.w - 1 + g.k,
            ..g.input
        },
        pad_left: 0,
        ..*g
    }
}

/// Bytes of workspace the padded copy needs (its input, and 3 bytes of slack
/// so that a last group of fewer than 4 channels is read whole); `None` on
/// overflow.
pub(crate) fn padded_workspace_len(g: &ConvGeom) -> Option<usize> {
    padded_geom(g).input.len()?.checked_add(GROUP - 1)
}

/// `y = requantize(conv(x − z_x, q) + bias)`: `x` and `y` hold at least
/// `geom.input.len()` / `geom.output.len()` bytes; the tensors' sizes and
/// values were checked at load. Where [`padded_applies`], the kernel pads
/// narrow images and `ws` holds [`padded_workspace_len`] bytes, the input is
/// first copied into `ws` with its left and right padding (the value `z_x`,
/// i.e. real 0: the same sums).
pub(crate) fn conv2d(c: &QuantConv<'_>, x: &[u8], y: &mut [u8], kernel: KernelI8, ws: &mut [u8]) {
    let g = c.geom;
    let ws_len = padded_workspace_len(g).unwrap_or(usize::MAX);
    if !(kernel.pads_narrow_images() && padded_applies(g) && ws.len() >= ws_len) {
        return conv2d_tiles(c, x, y, kernel);
    }
    let padded = padded_geom(g);
    let ws = &mut ws[..ws_len];
    let zp = c.q_in.zero_point;
    let (row_in, row_out) = (g.input.w * g.input.c, padded.input.w * g.input.c);
    let left = g.pad_left * g.input.c;
    let rows = ws.chunks_exact_mut(row_out).zip(x.chunks_exact(row_in));
    for (dst, src) in rows.take(g.input.h) {
        let (pad_left, rest) = dst.split_at_mut(left);
        let (inside, pad_right) = rest.split_at_mut(row_in);
        pad_left.fill(zp);
        inside.copy_from_slice(src);
        pad_right.fill(zp);
    }
    // The slack after the last row.
    ws[g.input.h * row_out..].fill(zp);
    conv2d_tiles(
        &QuantConv {
            geom: &padded,
            ..*c
        },
        ws,
        y,
        kernel,
    );
}

/// [`conv2d`] by the tiles of [`for_each_tile`].
fn conv2d_tiles(c: &QuantConv<'_>, x: &[u8], y: &mut [u8], kernel: KernelI8) {
    // The x86 SIMD kernels multiply the raw bytes: they need z_x = 0, which
    // holds for the image and every post-relu tensor.
    let kernel = if c.q_in.zero_point == 0 || kernel.takes_any_zero_point() {
        kernel
    } else {
        KernelI8::Portable
    };
    let g = c.geom;
    let mut block = Block::new(c);
    for_each_tile(g, kernel.cols(g), kernel.max_pixels(), |at| {
        if at.co0 != block.co0 {
            block.load(c, at.co0, at.cols, kernel);
        }
        tile(c, x, y, at, &block, kernel);
    });
}

/// Computes one tile.
fn tile(c: &QuantConv<'_>, x: &[u8], y: &mut [u8], at: TilePos, block: &Block, kernel: KernelI8) {
    let g = c.geom;
    let (iw, ci) = (g.input.w, g.input.c);
    let (ow, oc) = (g.output.w, g.output.c);
    let groups = quant::groups(ci);
    let TilePos {
        oy,
        ox,
        step: (dy, dx),
        n,
        co0,
        cols,
    } = at;
    let win = g.window(oy, ox);
    let px_in = (dy * iw + dx) * g.stride * ci;
    let row_stride = iw * ci;
    let w_group = oc * GROUP;
    let w_tap = groups * w_group;
    let w_row = g.k * w_tap;
    let px_out = (dy * ow + dx) * oc;
    let y_at = (oy * ow + ox) * oc + co0;
    let y_len = (n - 1) * px_out + cols;
    let mut t = TileI8 {
        x: &[],
        w: &[],
        out: &mut y[y_at..y_at + y_len],
        block,
        pixels: n,
        cols,
        rows: win.rows,
        taps: win.taps,
        ci,
        groups,
        px_in,
        row_stride,
        px_out,
        w_group,
        w_tap,
        w_row,
        zp_in: c.q_in.zero_point,
        x_slack: false,
    };
    if win.rows == 0 || win.taps == 0 || ci == 0 {
        // No tap in the image (cannot happen with same/valid padding): bias only.
        t.rows = 0;
    } else {
        let x_at = (win.iy * iw + win.ix) * ci;
        let w_at = (win.ky0 * g.k + win.kx0) * w_tap + co0 * GROUP;
        let needed = x_at + t.x_needed();
        let end = (needed + GROUP - 1).min(x.len());
        t.x_slack = end == needed + GROUP - 1;
        t.x = &x[x_at..end];
        t.w = &c.weight[w_at..w_at + t.w_needed()];
    }
    match kernel {
        KernelI8::Portable => tile_portable(&mut t),
        // SAFETY: `KernelI8::Vnni` is only chosen after checking the CPU has
        // AVX-512F/BW/VL and VNNI, and only for `zp_in = 0`; the slices above
        // cover exactly what the tile reads and writes (`x_needed`,
        // `w_needed`, `y_len`), and `cols ≤ COLS`.
        #[cfg(target_arch = "x86_64")]
        KernelI8::Vnni => unsafe { super::conv_i8_vnni::tile(&mut t) },
        // SAFETY: as above, for AVX2 (`cols ≤ 8`).
        #[cfg(target_arch = "x86_64")]
        KernelI8::Avx2 => unsafe { super::conv_i8_avx2::tile(&mut t) },
        #[cfg(any(infer_arm_dsp, test))]
        KernelI8::ArmDsp => super::conv_i8_dsp::tile(&mut t),
    }
}

/// The tile in plain Rust: per pixel, a row of `cols` accumulators, fed a
/// group of 4 input channels at a time, which is how the weights lie (each
/// output channel's 4 weights of a group side by side): a 4-term dot product
/// per output channel. Integer sums, so the order of the terms changes
/// nothing (no sum can overflow: checked at load).
pub(crate) fn tile_portable(t: &mut TileI8<'_>) {
    const _: () = assert!(GROUP == 4, "the dot product below has 4 terms");
    let cols = t.cols;
    let zp = i32::from(t.zp_in);
    for p in 0..t.pixels {
        let mut acc = [0i32; PORTABLE_COLS];
        acc[..cols].copy_from_slice(&t.block.bias[..cols]);
        for r in 0..t.rows {
            for j in 0..t.taps {
                let xs = &t.x[p * t.px_in + r * t.row_stride + j * t.ci..][..t.ci];
                let wt = &t.w[r * t.w_row + j * t.w_tap..];
                for (g, xg) in xs.chunks(GROUP).enumerate() {
                    // The last group's missing channels have zero weights.
                    let mut x4 = [0i32; GROUP];
                    for (x, &v) in x4.iter_mut().zip(xg) {
                        *x = i32::from(v) - zp;
                    }
                    let wg = &wt[g * t.w_group..][..cols * GROUP];
                    for (a, w4) in acc[..cols].iter_mut().zip(wg.chunks_exact(GROUP)) {
                        let dot = x4[0] * i32::from(w4[0] as i8)
                            + x4[1] * i32::from(w4[1] as i8)
                            + x4[2] * i32::from(w4[2] as i8)
                            + x4[3] * i32::from(w4[3] as i8);
                        *a = a.wrapping_add(dot);
                    }
                }
            }
        }
        let out = &mut t.out[p * t.px_out..][..cols];
        for (j, (o, &a)) in out.iter_mut().zip(&acc[..cols]).enumerate() {
            *o = t.block.requantize(j, a);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::arch::Shape;
    use std::{vec, vec::Vec};

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// `kernel` gives the portable kernel's bytes: random shapes (partial
    /// groups of input channels, strides, padding at the borders, column
    /// blocks that are not full, 1 to 70 output channels, and dense layers
    /// of up to 300 inputs and outputs), input zero points
    /// from `zero_points`, weights at ±127, and requantization multipliers
    /// from 1e-6 to 300 (small ones, the usual case, and ones of 1/4 and
    /// above, which the SIMD kernels compute differently, and which saturate).
    fn gives_the_portable_bytes(kernel: KernelI8, zero_points: &[u8]) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut padded = 0;
        for case in 0..80 {
            // Every eighth a dense layer (a 1×1 convolution of one pixel, in
            // VNNI blocks of up to 128 channels): up to 300 inputs and outputs.
            let dense = case % 8 == 7;
            let (h, w) = if dense {
                (1, 1)
            } else {
                (1 + rng.below(9), 1 + rng.below(11))
            };
            let (ci, co) = if dense {
                (1 + rng.below(300), 1 + rng.below(300))
            } else {
                (1 + rng.below(13), 1 + rng.below(70))
            };
            let k = if dense { 1 } else { [1, 3, 5][rng.below(3)] };
            let stride = 1 + rng.below(2);
            // "same" padding, or "valid" where the kernel fits.
            let pad = if rng.below(2) == 0 || k > h.min(w) {
                k / 2
            } else {
                0
            };
            let (oh, ow) = (
                (h + 2 * pad - k) / stride + 1,
                (w + 2 * pad - k) / stride + 1,
            );
            let geom = ConvGeom {
                input: Shape { h, w, c: ci },
                output: Shape {
                    h: oh,
                    w: ow,
                    c: co,
                },
                k,
                stride,
                pad_top: pad,
                pad_left: pad,
            };
            let groups = quant::groups(ci);
            let mut weight = vec![0u8; k * k * groups * co * GROUP];
            for (i, q) in weight.iter_mut().enumerate() {
                // Zero weights for the last group's missing channels.
                let channel = (i / (co * GROUP) % groups) * GROUP + i % GROUP;
                if channel < ci {
                    *q = (rng.below(255) as i32 - 127) as i8 as u8;
                }
            }
            let bias: Vec<u8> = (0..co)
                .flat_map(|_| (rng.below(20_001) as i32 - 10_000).to_le_bytes())
                .collect();
            // Multipliers 0.02 · weight scale / output scale: in one octave
            // from 2^−20, 1/8, 1/4 (the first octave the SIMD kernels round
            // in 64 bits), 1 or 128; or spread over [0.2, 2.2].
            let (m_low, spread) = [
                (2f32.powi(-20), false),
                (0.125, false),
                (0.25, false),
                (1.0, false),
                (128.0, false),
                (0.2, true),
            ][case % 6];
            let weight_scale: Vec<u8> = (0..co)
                .flat_map(|_| {
                    let r = rng.below(100) as f32;
                    let ws = if spread {
                        1.0 + r / 10.0
                    } else {
                        1.0 + r / 100.0
                    };
                    (0.001 * ws).to_le_bytes()
                })
                .collect();
            let out_scale = 0.02 * 0.001 / m_low;
            let c = QuantConv {
                geom: &geom,
                weight: &weight,
                bias: &bias,
                weight_scale: &weight_scale,
                q_in: ActQuant {
                    scale: 0.02,
                    zero_point: zero_points[case % zero_points.len()],
                },
                q_out: ActQuant {
                    scale: out_scale,
                    zero_point: rng.below(256) as u8,
                },
                relu: case % 3 == 0,
            };
            let x: Vec<u8> = (0..h * w * ci).map(|_| rng.below(256) as u8).collect();
            let mut want = vec![0u8; oh * ow * co];
            let mut got = vec![1u8; oh * ow * co];
            // The workspace of a padded copy, where it applies (the x86
            // kernels then run on it; the portable one never does).
            let mut ws = vec![7u8; padded_workspace_len(&geom).unwrap()];
            padded += usize::from(padded_applies(&geom));
            conv2d(&c, &x, &mut want, KernelI8::Portable, &mut ws);
            conv2d(&c, &x, &mut got, kernel, &mut ws);
            assert_eq!(
                got, want,
                "{kernel:?}, case {case}: {h}×{w}×{ci} → {co}, k {k}, stride {stride}, output scale {out_scale}"
            );
        }
        assert!(
            padded >= 5,
            "only {padded} cases where the padded copy applies"
        );
    }

    /// The Arm DSP kernel, its instructions emulated.
    #[test]
    fn arm_dsp_kernel_gives_the_portable_bytes() {
        gives_the_portable_bytes(KernelI8::ArmDsp, &[0, 128, 255, 37]);
    }

    /// The x86-64 kernels, where the CPU has them (they multiply the raw
    /// bytes, so the input's zero point is 0).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_kernels_give_the_portable_bytes() {
        use crate::cpu::Level;
        let level = crate::cpu::level();
        if level >= Level::Avx2 {
            gives_the_portable_bytes(KernelI8::Avx2, &[0]);
        } else {
            std::eprintln!("no AVX2 on this CPU: its int8 kernel is not tested");
        }
        if level >= Level::Avx512Vnni {
            gives_the_portable_bytes(KernelI8::Vnni, &[0]);
        } else {
            std::eprintln!("no AVX-512 VNNI on this CPU: its int8 kernel is not tested");
        }
    }
}
