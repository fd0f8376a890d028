//! `maxpool2d` and `global_avg_pool`.

use super::in_image;
use crate::arch::Shape;

/// Shapes and padding of a max pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    pub input: Shape,
    pub output: Shape,
    pub size: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

/// `y[oy, ox, c] = max over the window cells inside the image of x[iy, ix, c]`,
/// window rows `oy·s − pad_top + [0, size)` (columns likewise). Padded cells
/// never win: they are simply not visited. (With TensorFlow's padding every
/// window has at least one cell in the image.) `lowest` starts each maximum
/// and `max` takes it: `−∞` and `f32::max` (NaN never wins), or 0 and
/// `u8::max` for an int8 model (whose maximum is the quantized maximum: the
/// scale is positive). Both vectorise.
pub(crate) fn maxpool2d<T: Copy>(
    g: &PoolGeom,
    x: &[T],
    y: &mut [T],
    lowest: T,
    max: impl Fn(T, T) -> T,
) {
    let (ih, iw, c) = (g.input.h, g.input.w, g.input.c);
    let (oh, ow) = (g.output.h, g.output.w);
    let (k, s) = (g.size, g.stride);
    // The maximum of a 2×2 window, cells in row-major order.
    let max4 = |a, b, d, e| max(max(max(max(lowest, a), b), d), e);
    let whole = 2 * oh <= ih && 2 * ow <= iw && ow * c > 0;
    if k == 2 && s == 2 && g.pad_top == 0 && g.pad_left == 0 && whole {
        // The usual pooling (2×2, stride 2, every window in the image): by
        // pairs of input rows, each window two runs of 2·c values, with no
        // window arithmetic per pixel (which took most of the time); the same
        // maxima in the same order as below. Isolated, best of 100 × 100,
        // thousand TSC cycles: u8 32×32×32 3.7 → 1.3, 16×16×64 1.2 → 0.6,
        // 8×8×128 0.45 → 0.29 (model 1's three int8 pools); f32 about the same.
        for (out, rows) in y
            .chunks_exact_mut(ow * c)
            .zip(x.chunks_exact(2 * iw * c))
            .take(oh)
        {
            let (top, bottom) = rows.split_at(iw * c);
            let pairs = top.chunks_exact(2 * c).zip(bottom.chunks_exact(2 * c));
            for (o, (t, b)) in out.chunks_exact_mut(c).zip(pairs) {
                let (a, bb) = t.split_at(c);
                let (d, e) = b.split_at(c);
                for ((((o, &a), &bb), &d), &e) in o.iter_mut().zip(a).zip(bb).zip(d).zip(e) {
                    *o = max4(a, bb, d, e);
                }
            }
        }
        return;
    }
    // Input indices of the window cells inside the image.
    let cells = |o: usize, pad: usize, len: usize| {
        let start = (o * s) as isize - pad as isize;
        let (lo, hi) = in_image(start, k, len);
        (start + lo as isize) as usize..(start + hi as isize) as usize
    };
    for oy in 0..oh {
        let rows = cells(oy, g.pad_top, ih);
        for ox in 0..ow {
            let cols = cells(ox, g.pad_left, iw);
            let out = &mut y[(oy * ow + ox) * c..][..c];
            let cell = |iy: usize, ix: usize| &x[(iy * iw + ix) * c..][..c];
            if rows.len() == 2 && cols.len() == 2 {
                // The usual window, 2×2 in the image: one pass over the
                // channels, the same maxima in the same order as below.
                let (r, q) = (rows.start, cols.start);
                let (a, b, d, e) = (
                    cell(r, q),
                    cell(r, q + 1),
                    cell(r + 1, q),
                    cell(r + 1, q + 1),
                );
                for ((((o, &a), &b), &d), &e) in out.iter_mut().zip(a).zip(b).zip(d).zip(e) {
                    *o = max4(a, b, d, e);
                }
                continue;
            }
            out.fill(lowest);
            for iy in rows.clone() {
                for ix in cols.clone() {
                    for (o, &v) in out.iter_mut().zip(cell(iy, ix)) {
                        *o = max(*o, v);
                    }
                }
            }
        }
    }
}

/// `y[c] = (1 / (h·w)) · Σ_{iy,ix} x[iy, ix, c]`.
pub(crate) fn global_avg_pool(input: Shape, x: &[f32], y: &mut [f32]) {
    let c = input.c;
    let y = &mut y[..c];
    y.fill(0.0);
    for pixel in x[..input.h * input.w * c].chunks_exact(c) {
        for (o, &v) in y.iter_mut().zip(pixel) {
            *o += v;
        }
    }
    let n = (input.h * input.w) as f32;
    for o in y {
        *o /= n;
    }
}

/// `global_avg_pool` in an int8 model: `y[c] = z + round(Σ (x − z) / (h·w))`,
/// half away from zero, with the input's quantization. The sums fit `i32`:
/// model loading refuses `h·w · 255 ≥ 2^31`.
pub(crate) fn global_avg_pool_i8(input: Shape, x: &[u8], y: &mut [u8], zero_point: u8) {
    // Sums of up to 64 channels at a time, pixel by pixel (contiguous reads).
    const CHUNK: usize = 64;
    let c = input.c;
    let count = input.h * input.w;
    let z = i32::from(zero_point);
    for c0 in (0..c).step_by(CHUNK) {
        let n = (c - c0).min(CHUNK);
        let mut sums = [0i32; CHUNK];
        for pixel in x[..count * c].chunks_exact(c) {
            for (s, &v) in sums[..n].iter_mut().zip(&pixel[c0..c0 + n]) {
                *s += i32::from(v);
            }
        }
        for (o, &s) in y[c0..c0 + n].iter_mut().zip(&sums[..n]) {
            // Σ (x − z) = Σ x − count·z.
            let avg = model_format::quant::rounded_div(s - count as i32 * z, count as i32);
            *o = (z + avg).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// The definition: each window cell by padded coordinates, in order,
    /// cells outside the image skipped.
    fn reference<T: Copy>(g: &PoolGeom, x: &[T], lowest: T, max: impl Fn(T, T) -> T) -> Vec<T> {
        let (ih, iw, c) = (g.input.h as isize, g.input.w as isize, g.input.c);
        let mut y = Vec::new();
        for oy in 0..g.output.h {
            for ox in 0..g.output.w {
                for ch in 0..c {
                    let mut m = lowest;
                    for ky in 0..g.size {
                        for kx in 0..g.size {
                            let iy = (oy * g.stride + ky) as isize - g.pad_top as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad_left as isize;
                            if (0..ih).contains(&iy) && (0..iw).contains(&ix) {
                                m = max(m, x[((iy * iw + ix) as usize) * c + ch]);
                            }
                        }
                    }
                    y.push(m);
                }
            }
        }
        y
    }

    proptest! {
        /// Windows of 1–3 cells a side, strides 1–3, padding at either side:
        /// the one-pass 2×2 windows and the general loop give the definition's
        /// values (f32 with NaNs, which never win, and u8).
        #[test]
        fn maxpool_matches_the_definition(
            h in 1usize..9, w in 1usize..9, c in 1usize..40, size in 1usize..4,
            stride in 1usize..4, pad in 0usize..2, seed in any::<u64>(),
        ) {
            let pad = pad.min(size - 1);
            let out = |len: usize| (len + 2 * pad).saturating_sub(size) / stride + 1;
            prop_assume!(h + 2 * pad >= size && w + 2 * pad >= size);
            let g = PoolGeom {
                input: Shape { h, w, c },
                output: Shape { h: out(h), w: out(w), c },
                size,
                stride,
                pad_top: pad,
                pad_left: pad,
            };
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let bytes: Vec<u8> = (0..h * w * c).map(|_| next() as u8).collect();
            let floats: Vec<f32> = bytes
                .iter()
                .map(|&b| if b < 100 { f32::NAN } else { f32::from(b) - 128.0 })
                .collect();
            let mut y = std::vec![0u8; g.output.h * g.output.w * c];
            maxpool2d(&g, &bytes, &mut y, 0, u8::max);
            prop_assert_eq!(&y, &reference(&g, &bytes, 0, u8::max));
            let mut y = std::vec![0f32; g.output.h * g.output.w * c];
            maxpool2d(&g, &floats, &mut y, f32::NEG_INFINITY, f32::max);
            let want = reference(&g, &floats, f32::NEG_INFINITY, f32::max);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&y), bits(&want));
        }
    }
}
