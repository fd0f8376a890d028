//! The int8 tile kernel for Arm cores with the DSP extension (ARMv7E-M:
//! Cortex-M4 and M7; chosen when `infer` is built for `thumbv7em-*`, see
//! `build.rs`): two 16-bit multiply-accumulates per instruction (`SMLAD`),
//! what CMSIS-NN builds its int8 convolutions on. It gives the portable
//! kernel's bytes: the tests below run it on the host with the instructions
//! emulated, and `tests/firmware.rs` runs the real ones under QEMU and
//! compares with x86, bit for bit.
//!
//! Per pixel and group of 4 input channels, the bytes minus the input's zero
//! point become two pairs of 16-bit values, channels (0, 2) and (1, 3)
//! (`UXTB16`, `SSUB16`); per output channel the 4 weights, stored side by
//! side, become the same two pairs (`SXTB16` of the word, and of the word
//! rotated by 8); then
//!
//! ```text
//! acc += x0·w0 + x2·w2      SMLAD
//! acc += x1·w1 + x3·w3      SMLAD
//! ```
//!
//! Every value fits 16 bits (`x − z_x ∈ [−255, 255]`, `w ∈ [−127, 127]`),
//! so the products are exact, and integer sums in any order are the
//! portable kernel's sums (no overflow: checked at load).

use super::conv_i8::{TileI8, MAX_COLS};
use model_format::quant::GROUP;

/// Output channels per block.
pub(crate) const COLS: usize = 16;
const _: () = assert!(COLS <= MAX_COLS && GROUP == 4);

/// The tile, two pixels at a time (each weight word, loaded and unpacked
/// once, feeds both), then the last pixel of an odd count alone.
pub(crate) fn tile(t: &mut TileI8<'_>) {
    let mut p = 0;
    while p + 2 <= t.pixels {
        pixels::<2>(t, p);
        p += 2;
    }
    if p < t.pixels {
        pixels::<1>(t, p);
    }
}

/// Pixels `p..p + N` of the tile: per output channel `N` accumulators
/// (one per pixel), fed one group of 4 input channels at a time (two
/// `SMLAD`s per pixel, output channel and group).
#[inline(always)]
fn pixels<const N: usize>(t: &mut TileI8<'_>, p: usize) {
    let cols = t.cols;
    let zp = u32::from(t.zp_in) * 0x0001_0001;
    let mut acc = [[0i32; N]; COLS];
    for (a, &b) in acc.iter_mut().zip(&t.block.bias[..cols]) {
        *a = [b; N];
    }
    let full = t.ci / GROUP;
    for r in 0..t.rows {
        for j in 0..t.taps {
            let first = r * t.row_stride + j * t.ci;
            // Each pixel's input channels at this tap, and the tap's weights.
            let xs: [&[u8]; N] =
                core::array::from_fn(|n| &t.x[(p + n) * t.px_in + first..][..t.ci]);
            let wt = &t.w[r * t.w_row + j * t.w_tap..][..(t.groups - 1) * t.w_group + cols * GROUP];
            for (g, wg) in wt.chunks(t.w_group).enumerate() {
                // Channels (0, 2) and (1, 3) of the group, minus the zero
                // point, of each pixel.
                let mut x02 = [0u32; N];
                let mut x13 = [0u32; N];
                for n in 0..N {
                    let xg = &xs[n][g * GROUP..];
                    let word = if g < full { word(xg) } else { partial_word(xg) };
                    x02[n] = ssub16(uxtb16(word), zp);
                    x13[n] = ssub16(uxtb16_ror8(word), zp);
                }
                for (a, w4) in acc[..cols]
                    .iter_mut()
                    .zip(wg[..cols * GROUP].chunks_exact(GROUP))
                {
                    let w = word(w4);
                    let (w02, w13) = (sxtb16(w), sxtb16_ror8(w));
                    for n in 0..N {
                        a[n] = smlad(x13[n], w13, smlad(x02[n], w02, a[n]));
                    }
                }
            }
        }
    }
    for n in 0..N {
        let out = &mut t.out[(p + n) * t.px_out..][..cols];
        for (j, (o, a)) in out.iter_mut().zip(&acc[..cols]).enumerate() {
            *o = t.block.requantize(j, a[n]);
        }
    }
}

/// A last group of fewer than 4 input channels as a little-endian word, 0s
/// past them (they meet zero weights).
#[inline(always)]
fn partial_word(x: &[u8]) -> u32 {
    let mut b = [0u8; GROUP];
    b[..x.len()].copy_from_slice(x);
    u32::from_le_bytes(b)
}

/// The first 4 bytes of `x` (at least 4) as a little-endian word: one `LDR`
/// on the target, which reads unaligned words (ARMv7-M, unless a program
/// sets `CCR.UNALIGN_TRP`); the compiler, which must assume strict alignment
/// there, would load 4 bytes and merge them.
#[inline(always)]
fn word(x: &[u8]) -> u32 {
    let x = &x[..GROUP];
    #[cfg(infer_arm_dsp)]
    {
        let r: u32;
        // SAFETY: `x` holds the 4 bytes read; ARMv7E-M's LDR takes any
        // address (unaligned access is enabled at reset).
        unsafe {
            core::arch::asm!("ldr {r}, [{p}]", p = in(reg) x.as_ptr(), r = lateout(reg) r,
                             options(pure, readonly, nostack, preserves_flags));
        }
        r
    }
    #[cfg(not(infer_arm_dsp))]
    u32::from_le_bytes([x[0], x[1], x[2], x[3]])
}

// The instructions. On the target, one each (`asm!`; a rotation by 8 folds
// into SXTB16/UXTB16's operand); elsewhere (the host's tests), their
// definitions from the Arm Architecture Reference Manual.

/// `SXTB16`: bytes 0 and 2, sign-extended to the two halfwords.
#[cfg(infer_arm_dsp)]
#[inline(always)]
fn sxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: a register-only DSP instruction of ARMv7E-M (the target).
    unsafe {
        core::arch::asm!("sxtb16 {r}, {x}", x = in(reg) x, r = lateout(reg) r,
                         options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// `SXTB16` of the word rotated right by 8: bytes 1 and 3.
#[cfg(infer_arm_dsp)]
#[inline(always)]
fn sxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: as `sxtb16`.
    unsafe {
        core::arch::asm!("sxtb16 {r}, {x}, ror #8", x = in(reg) x, r = lateout(reg) r,
                         options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// `UXTB16`: bytes 0 and 2, zero-extended to the two halfwords.
#[cfg(infer_arm_dsp)]
#[inline(always)]
fn uxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: as `sxtb16`.
    unsafe {
        core::arch::asm!("uxtb16 {r}, {x}", x = in(reg) x, r = lateout(reg) r,
                         options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// `UXTB16` of the word rotated right by 8: bytes 1 and 3.
#[cfg(infer_arm_dsp)]
#[inline(always)]
fn uxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: as `sxtb16`.
    unsafe {
        core::arch::asm!("uxtb16 {r}, {x}, ror #8", x = in(reg) x, r = lateout(reg) r,
                         options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// `SSUB16`: halfword-wise `a − b` (16-bit, wrapping).
#[cfg(infer_arm_dsp)]
#[inline(always)]
fn ssub16(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: as `sxtb16` (it sets the GE flags, which nothing here reads).
    unsafe {
        core::arch::asm!("ssub16 {r}, {a}, {b}", a = in(reg) a, b = in(reg) b, r = lateout(reg) r,
                         options(pure, nomem, nostack));
    }
    r
}

/// `SMLAD`: `acc + a.lo·b.lo + a.hi·b.hi` (signed 16-bit halves; wrapping).
#[cfg(infer_arm_dsp)]
#[inline(always)]
fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let r: i32;
    // SAFETY: as `sxtb16` (it sets the Q flag on overflow, which nothing reads).
    unsafe {
        core::arch::asm!("smlad {r}, {a}, {b}, {acc}", a = in(reg) a, b = in(reg) b,
                         acc = in(reg) acc, r = lateout(reg) r,
                         options(pure, nomem, nostack));
    }
    r
}

#[cfg(not(infer_arm_dsp))]
fn halves(x: u32) -> (u16, u16) {
    (x as u16, (x >> 16) as u16)
}

#[cfg(not(infer_arm_dsp))]
fn sxtb16(x: u32) -> u32 {
    let (lo, hi) = halves(x);
    u32::from(lo as u8 as i8 as i16 as u16) | (u32::from(hi as u8 as i8 as i16 as u16) << 16)
}

#[cfg(not(infer_arm_dsp))]
fn sxtb16_ror8(x: u32) -> u32 {
    sxtb16(x.rotate_right(8))
}

#[cfg(not(infer_arm_dsp))]
fn uxtb16(x: u32) -> u32 {
    x & 0x00ff_00ff
}

#[cfg(not(infer_arm_dsp))]
fn uxtb16_ror8(x: u32) -> u32 {
    uxtb16(x.rotate_right(8))
}

#[cfg(not(infer_arm_dsp))]
fn ssub16(a: u32, b: u32) -> u32 {
    let ((a0, a1), (b0, b1)) = (halves(a), halves(b));
    let lo = (a0 as i16).wrapping_sub(b0 as i16) as u16;
    let hi = (a1 as i16).wrapping_sub(b1 as i16) as u16;
    u32::from(lo) | (u32::from(hi) << 16)
}

#[cfg(not(infer_arm_dsp))]
fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let ((a0, a1), (b0, b1)) = (halves(a), halves(b));
    let lo = i32::from(a0 as i16) * i32::from(b0 as i16);
    let hi = i32::from(a1 as i16) * i32::from(b1 as i16);
    acc.wrapping_add(lo).wrapping_add(hi)
}

#[cfg(all(test, not(infer_arm_dsp)))]
mod tests {
    use super::*;

    /// The emulated instructions on hand-computed cases.
    #[test]
    fn instructions_as_the_manual_defines_them() {
        assert_eq!(sxtb16(0x80_7f_ff_01), 0x007f_0001);
        assert_eq!(sxtb16(0x01_80_02_ff), 0xff80_ffff);
        assert_eq!(uxtb16(0x12_34_56_78), 0x0034_0078);
        assert_eq!(uxtb16_ror8(0x12_34_56_78), 0x0012_0056);
        assert_eq!(sxtb16_ror8(0x80_7f_ff_01), 0xff80_ffff);
        assert_eq!(ssub16(0x0000_00ff, 0x00ff_00ff), 0xff01_0000);
        assert_eq!(smlad(0x0003_fffe, 0x0005_0007, 10), 10 - 14 + 15);
        assert_eq!(smlad(0xff01_00ff, 0x007f_ff81, 0), 255 * -127 + -255 * 127);
    }
}
