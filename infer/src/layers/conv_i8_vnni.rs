//! The int8 convolution tile (see [`super::conv_i8`]) with AVX-512 VNNI.
//!
//! `vpdpbusd` multiplies 4 unsigned bytes by 4 signed bytes and adds the four
//! products to an `i32` lane, which is exactly the int8 format's weight layout:
//! one 64-byte load holds the 4 weights of a group for 16 output channels.
//! Accumulators: `P` pixels × `V = 2` vectors of 16 channels (`V = 1` for a
//! block of at most 16; `P ≤ 8`: at most 16 of the 32 ZMM registers),
//! initialised with the biases. Per group of 4 input channels: `V` weight
//! vectors are loaded, and for each pixel its 4 input bytes are broadcast and
//! dot-multiplied into its accumulators. The input bytes are used as they
//! are, so the input's zero point must be 0 (the driver sends other layers to
//! the portable kernel).
//!
//! Requantization is `model_format::quant::Multiplier::apply`'s formula,
//! `(acc · mult + 2^(total−1)) >> total`, `total = 31 − shift`, then `+ z_y`
//! and the clamp to `[lo, 255]`: in 32-bit lanes from the high half of the
//! product where every multiplier of the block is below 1/4 (the usual case;
//! `quant_avx512.rs`), else in 64-bit lanes.
//!
//! Only the memory accesses through raw pointers are `unsafe`.

use super::conv::tiles;
use super::conv_i8::{TileI8, MAX_COLS};
use super::quant_avx512::{narrow_applies, Narrow};
use core::arch::x86_64::*;
use model_format::quant::GROUP;

/// Output channels per tile: up to 2 vectors of 16.
pub(crate) const COLS: usize = 32;

/// Output channels per tile of one pixel (a dense layer): up to 8 vectors
/// of 16, 2 sets of accumulators (16 + 8 weight registers of the 32), so
/// that the weights of a group are read as one run of up to 512 bytes.
/// Model 1's dense layer (2,048 → 128) in 4 blocks of 32 took 9.6 thousand
/// TSC cycles, 128 channels of 8,192 inputs in one block 4.2.
pub(crate) const WIDE: usize = 128;

/// Most pixels per tile: 8 × 2 vectors = 16 accumulators of the 32 ZMM
/// registers, each weight vector loaded serving 8 pixels. Against 6 (the
/// AVX2 kernel's), `infer_latency`'s int8 `classify_auto` alternated six
/// times in one sitting, medians: model 1 155 → 143 µs, `fast` 322 → 293,
/// ResNet-8 79 → 70 (a slow phase of the machine); 10 and 12 were no faster.
pub(crate) const PIXELS: usize = super::conv::MOST_PIXELS;

/// Most pixels in one call of [`tile`] (a row of a 64-wide image's interior).
pub(crate) const RUN: usize = 64;

/// Runs one run of pixels: `t.pixels` of them, any number, cut into tiles
/// of at most [`PIXELS`] as `conv::tiles` cuts a row (30 → 8, 8, 7, 7).
/// The driver hands over whole rows and columns of pixels that share their
/// taps, so that what a call costs (the window, the slices, the dispatch)
/// is paid once per run rather than once per tile.
///
/// # Safety
/// The CPU must support AVX-512F, BW, VL and VNNI. The run's slices must
/// cover what it reads and writes (`x_needed`, `w_needed`, and
/// `out[(pixels−1)·px_out + cols]`), `cols ≤ 32` (`cols ≤ 128` for one
/// pixel), `zp_in = 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn tile(t: &mut TileI8<'_>) {
    debug_assert!(t.cols >= 1 && t.zp_in == 0);
    debug_assert!(t.cols <= COLS || (t.pixels == 1 && t.cols <= WIDE));
    debug_assert!(t.out.len() >= t.px_out * t.pixels.saturating_sub(1) + t.cols);
    debug_assert!(t.rows == 0 || t.x.len() >= t.x_needed());
    debug_assert!(t.rows == 0 || t.w.len() >= t.w_needed());
    if t.pixels <= PIXELS {
        // SAFETY: as the caller guarantees, with `pixels ≤ PIXELS`.
        return unsafe { one_tile(t) };
    }
    for (first, n) in tiles(0, t.pixels, PIXELS) {
        let mut part = t.part(first, n);
        // SAFETY: the part lies inside the run (`TileI8::part`), whose
        // slices the caller guarantees; `n ≤ PIXELS`.
        unsafe { one_tile(&mut part) };
    }
}

/// [`tile`] of one tile: `t.pixels ≤ PIXELS`.
///
/// # Safety
/// As for [`tile`], with `t.pixels ≤ 8`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn one_tile(t: &mut TileI8<'_>) {
    if t.cols > COLS {
        // SAFETY: one pixel (the caller's bound for `cols > 32`), `cols ≤
        // 128 = 16·8`, masked unless all 128.
        return unsafe {
            if t.cols == WIDE {
                tile_n::<1, 8, false, 2>(t)
            } else {
                tile_n::<1, 8, true, 2>(t)
            }
        };
    }
    // `V = 2` vectors of 16 channels (4 vectors with up to 6 pixels spill
    // registers, and with 4 pixels measured no faster), `V = 1` for blocks of
    // up to 16 (a layer of 16 channels would multiply zeros half the time);
    // `MASKED` unless the tile fills them.
    // `S` sets of accumulators, summed at the end, where `P·V` alone would
    // be too few to hide `vpdpbusd`'s latency (the corners of a small image,
    // a dense layer): at least 8 sums in flight. Integer sums: the same
    // result in any order.
    macro_rules! by_pixels {
        ($v:literal, $masked:literal, [$($p:literal: $s:literal),*]) => {
            match t.pixels {
                $($p => tile_n::<$p, $v, $masked, $s>(t),)*
                _ => {}
            }
        };
    }
    // SAFETY: `tile_n::<P, V, MASKED, S>` needs what this function's caller
    // guarantees, with `P = pixels`, `16·V ≥ cols`, and `MASKED` unless
    // `cols = 16·V`: the matches pick those arguments.
    unsafe {
        match t.cols {
            COLS => by_pixels!(2, false, [8: 1, 7: 1, 6: 1, 5: 1, 4: 1, 3: 2, 2: 2, 1: 4]),
            16 => by_pixels!(1, false, [8: 1, 7: 2, 6: 2, 5: 2, 4: 2, 3: 3, 2: 4, 1: 8]),
            1..16 => by_pixels!(1, true, [8: 1, 7: 2, 6: 2, 5: 2, 4: 2, 3: 3, 2: 4, 1: 8]),
            _ => by_pixels!(2, true, [8: 1, 7: 1, 6: 1, 5: 1, 4: 1, 3: 2, 2: 2, 1: 4]),
        }
    }
}

/// Lane masks for the first `cols` of `16·V` channels, one per vector.
fn masks<const V: usize>(cols: usize) -> [__mmask16; V] {
    core::array::from_fn(|v| {
        let n = cols.saturating_sub(16 * v);
        if n >= 16 {
            0xFFFF
        } else {
            (1u16 << n) - 1
        }
    })
}

/// The 4 input bytes of a last group that holds only `len < 4` of them,
/// padded with zeros, never reading past them (all 4 when `len = 4`).
///
/// # Safety
/// `p .. p + len` must be readable.
#[inline(always)]
unsafe fn partial_group(p: *const u8, len: usize) -> i32 {
    if len >= GROUP {
        // SAFETY: 4 readable bytes; no alignment needed.
        return unsafe { (p as *const i32).read_unaligned() };
    }
    let mut v = 0u32;
    for i in 0..len.min(GROUP) {
        // SAFETY: `i < len` bytes are readable.
        v |= u32::from(unsafe { *p.add(i) }) << (8 * i);
    }
    v as i32
}

/// [`tile`] for `P = t.pixels` pixels and `V` vectors of channels, `MASKED`
/// when `cols < 16·V`; consecutive groups of a run go to `S` sets of
/// accumulators in turn.
///
/// # Safety
/// As for [`tile`], with those `P`, `V` and `MASKED`; `S ≥ 1`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_n<const P: usize, const V: usize, const MASKED: bool, const S: usize>(
    t: &mut TileI8<'_>,
) {
    let m = masks::<V>(t.cols);
    let b = t.block;
    // The block's arrays hold `MAX_COLS = 128` values each; the lanes past
    // `cols` are unused.
    // SAFETY: `V ≤ 8` vectors of 16 lanes inside a `[i32; 128]`.
    let load = |a: &[i32; MAX_COLS], v: usize| unsafe {
        _mm512_loadu_si512(a.as_ptr().add(16 * v).cast())
    };
    let bias: [__m512i; V] = core::array::from_fn(|v| load(&b.bias, v));
    let zero = [_mm512_setzero_si512(); V];
    let mut sets = [[zero; P]; S];
    sets[0] = [bias; P];
    let x = t.x.as_ptr();
    let w = t.w.as_ptr();
    // Groups of 4 input bytes: all full when 4 divides ci; else the last one
    // of each tap holds `ci % 4` bytes and is read byte by byte.
    let full = t.ci / GROUP;
    let tail = t.ci % GROUP;
    // One group into the accumulators `$acc`: weights for `16·V` channels
    // from `$wg`, the 4 input bytes of pixel `$p` given by `$xv` (a macro,
    // so that it is inlined).
    macro_rules! group {
        ($acc:expr, $wg:expr, |$p:ident| $xv:expr) => {{
            let wg: *const u8 = $wg;
            // SAFETY: the group's weights for `cols` channels are inside `w`
            // (`w_needed`); with `MASKED` the lanes past `cols` are not read.
            let wv: [__m512i; V] = core::array::from_fn(|v| unsafe {
                let p = wg.wrapping_add(64 * v);
                if MASKED {
                    _mm512_maskz_loadu_epi32(m[v], p.cast())
                } else {
                    _mm512_loadu_si512(p.cast())
                }
            });
            for ($p, a) in $acc.iter_mut().enumerate() {
                let xb = _mm512_set1_epi32($xv);
                for v in 0..V {
                    a[v] = _mm512_dpbusd_epi32(a[v], xb, wv[v]);
                }
            }
        }};
    }
    // A kernel row's taps as one run of groups, `x_step` bytes apart in `x`
    // and `w_group` apart in `w`, where the layout allows: when 4 divides
    // ci (`taps · full` groups 4 bytes apart; `w_tap = full · w_group`), and
    // when ci < 4 with the slack to read each tap's group whole (`taps`
    // groups `ci` bytes apart, each tap one group: `w_tap = w_group`; the
    // bytes of the next tap it reads meet zero weights). Model 1's first
    // layer (3 channels) took about 30 % less time this way than tap by tap
    // with each group's bytes read one by one, which kept the compiler from
    // broadcasting them straight from memory.
    let run_layout = if tail == 0 {
        Some((t.taps * full, GROUP))
    } else if full == 0 && t.x_slack {
        Some((t.taps, t.ci))
    } else {
        None
    };
    if let Some((run, x_step)) = run_layout {
        // Group `gi` goes to set `gi mod S` (the last `run mod S` to set 0).
        for r in 0..t.rows {
            // SAFETY (both `add`s): `r < rows`: inside `x` and `w`.
            let xr = unsafe { x.add(r * t.row_stride) };
            let wr = unsafe { w.add(r * t.w_row) };
            // SAFETY (both closures' `add`s): for `gi < run`, group `gi` of
            // pixel `p`'s row `r` (4 bytes, with the slack where ci < 4) lies
            // inside `x` (`x_needed`); its weights inside `w`.
            let wg = |gi: usize| unsafe { wr.add(gi * t.w_group) };
            let xg = |p: usize, gi: usize| unsafe {
                (xr.add(p * t.px_in + gi * x_step) as *const i32).read_unaligned()
            };
            let mut gi = 0;
            while gi + S <= run {
                for (s, acc) in sets.iter_mut().enumerate() {
                    group!(acc, wg(gi + s), |p| xg(p, gi + s));
                }
                gi += S;
            }
            for gi in gi..run {
                group!(sets[0], wg(gi), |p| xg(p, gi));
            }
        }
    } else {
        // With 3 bytes of slack after the tile's input, the last group is
        // read whole: its extra bytes meet zero weights (checked at load).
        for r in 0..t.rows {
            for j in 0..t.taps {
                // SAFETY (both `add`s): `r < rows`, `j < taps`: inside `x`
                // (`x_needed`) and `w` (`w_needed`).
                let xr = unsafe { x.add(r * t.row_stride + j * t.ci) };
                let wr = unsafe { w.add(r * t.w_row + j * t.w_tap) };
                for gi in 0..full {
                    // SAFETY: pixel `p`'s full group `gi` (4 bytes) lies inside
                    // `x`; the group's weights inside `w`.
                    group!(sets[0], unsafe { wr.add(gi * t.w_group) }, |p| unsafe {
                        (xr.add(p * t.px_in + gi * GROUP) as *const i32).read_unaligned()
                    });
                }
                // SAFETY: as above, for the last group's `tail` bytes, or 4
                // with the slack (then read as one `i32`, which the compiler
                // folds into the broadcast).
                let wl = unsafe { wr.add(full * t.w_group) };
                let xl = |p: usize| unsafe { xr.add(p * t.px_in + full * GROUP) };
                if t.x_slack {
                    group!(sets[0], wl, |p| unsafe {
                        (xl(p) as *const i32).read_unaligned()
                    });
                } else {
                    group!(sets[0], wl, |p| unsafe { partial_group(xl(p), tail) });
                }
            }
        }
    }
    let mut acc = sets[0];
    for set in &sets[1..] {
        for (a, b) in acc.iter_mut().zip(set) {
            for v in 0..V {
                a[v] = _mm512_add_epi32(a[v], b[v]);
            }
        }
    }
    let out = t.out.as_mut_ptr();
    // SAFETY: `p < pixels`, and the `cols` bytes of pixel `p` are in `out`;
    // with `MASKED` the bytes past `cols` are not written (their address may
    // lie past the end when all lanes of a vector are off).
    let store = |p: usize, v: usize, y: __m128i| unsafe {
        let o = out.add(p * t.px_out).wrapping_add(16 * v);
        if MASKED {
            _mm_mask_storeu_epi8(o.cast(), m[v], y);
        } else {
            _mm_storeu_si128(o.cast(), y);
        }
    };
    // Every multiplier of the block below 1/4, as for any sane scales:
    // requantize in 32-bit lanes (`quant_avx512`).
    let narrow = (0..V).all(|v| narrow_applies(m[v], load(&b.shift, v)));
    let zp = _mm512_set1_epi32(i32::from(b.zero_point));
    let lo = _mm512_set1_epi32(i32::from(b.lo));
    let top = _mm512_set1_epi32(255);
    if narrow {
        let k: [Narrow; V] =
            core::array::from_fn(|v| Narrow::new(load(&b.mult, v), load(&b.shift, v)));
        for (p, a) in acc.iter().enumerate() {
            for v in 0..V {
                let r = _mm512_add_epi32(k[v].apply(a[v]), zp);
                let r = _mm512_min_epi32(_mm512_max_epi32(r, lo), top);
                store(p, v, _mm512_cvtepi32_epi8(r));
            }
        }
        return;
    }
    // Otherwise in 64-bit lanes, as the scalar path: constants per vector of
    // 16 channels as two halves of 8 lanes (multiplier, rounding term and
    // shift); then `+ z_y` and the clamp, equal to the scalar path's `i32`
    // saturation followed by the clamp.
    let half = |z: __m512i, hi: bool| {
        if hi {
            _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(z))
        } else {
            _mm512_cvtepi32_epi64(_mm512_castsi512_si256(z))
        }
    };
    let k: [[(__m512i, __m512i, __m512i); 2]; V] = core::array::from_fn(|v| {
        let mult = load(&b.mult, v);
        let total = _mm512_sub_epi32(_mm512_set1_epi32(31), load(&b.shift, v));
        [false, true].map(|hi| {
            let total = half(total, hi);
            let round = _mm512_sllv_epi64(
                _mm512_set1_epi64(1),
                _mm512_sub_epi64(total, _mm512_set1_epi64(1)),
            );
            (half(mult, hi), round, total)
        })
    });
    let (zp, lo, top) = (half(zp, false), half(lo, false), half(top, false));
    let q = |h: __m512i, (mult, round, total): (__m512i, __m512i, __m512i)| {
        let r = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(h, mult), round), total);
        let r = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(r, zp), lo), top);
        _mm512_cvtepi64_epi8(r)
    };
    for (p, a) in acc.iter().enumerate() {
        for v in 0..V {
            let y = _mm_unpacklo_epi64(q(half(a[v], false), k[v][0]), q(half(a[v], true), k[v][1]));
            store(p, v, y);
        }
    }
}
