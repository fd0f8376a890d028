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
            out.fill(lowest);
            for iy in rows.clone() {
                for ix in cols.clone() {
                    let cell = &x[(iy * iw + ix) * c..][..c];
                    for (o, &v) in out.iter_mut().zip(cell) {
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
