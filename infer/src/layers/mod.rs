//! The layer computations, one concept per module. Each works on NHWC `f32`
//! activations in caller-provided slices; parameters stay in the file's bytes.

pub(crate) mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_avx2;
#[cfg(target_arch = "x86_64")]
mod conv_avx512;
pub(crate) mod conv_i8;
#[cfg(target_arch = "x86_64")]
mod conv_i8_avx2;
#[cfg(target_arch = "x86_64")]
mod conv_i8_vnni;
pub(crate) mod norm;
pub(crate) mod pool;

/// `relu`: `x = max(x, 0)`, in place.
pub(crate) fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `gelu`: `x = x · Φ(x)`, in place (`model_format::gelu`, as the trainer).
pub(crate) fn gelu(x: &mut [f32]) {
    for v in x {
        *v = model_format::gelu::gelu(*v);
    }
}

/// `add` (a residual connection): `x[i] = x[i] + skip[i]`, in place, where
/// `skip` is the stashed output of an earlier layer, of the same shape.
pub(crate) fn add(x: &mut [f32], skip: &[f32]) {
    debug_assert_eq!(x.len(), skip.len());
    for (v, &s) in x.iter_mut().zip(skip) {
        *v += s;
    }
}

/// `relu` in an int8 model: `x = max(x, z)`, in place (`z` is real 0).
pub(crate) fn relu_i8(x: &mut [u8], zero_point: u8) {
    for v in x {
        *v = (*v).max(zero_point);
    }
}

/// `gelu` in an int8 model, in place: `x = table[x]`, the table of
/// `model_format::quant::gelu_table` (256 bytes on the stack, made per call).
pub(crate) fn gelu_i8(
    x: &mut [u8],
    input: model_format::quant::ActQuant,
    output: model_format::quant::ActQuant,
) {
    let table = model_format::quant::gelu_table(input, output);
    for v in x {
        *v = table[usize::from(*v)];
    }
}

/// `add` in an int8 model, in place: `x[i] = x[i] + skip[i]` with each side's
/// quantization and the output's (`model_format::quant::add`). Each side's
/// rescaled term depends on its byte only, so it comes from a table of 256
/// made once per call: `quant::add`'s arithmetic, evaluated ahead.
pub(crate) fn add_i8(
    x: &mut [u8],
    skip: &[u8],
    z: [u8; 3],
    m: &model_format::quant::AddMultipliers,
) {
    use model_format::quant::{add_output, add_term};
    debug_assert_eq!(x.len(), skip.len());
    let [za, zb, zo] = z;
    let mut ta = [0i32; 256];
    let mut tb = [0i32; 256];
    for q in 0..=255u8 {
        ta[usize::from(q)] = add_term(q, za, m.a);
        tb[usize::from(q)] = add_term(q, zb, m.b);
    }
    for (v, &s) in x.iter_mut().zip(skip) {
        *v = add_output(ta[usize::from(*v)] + tb[usize::from(s)], zo, m.out);
    }
}

/// The offsets `[lo, hi)` within a window of `k` cells starting at input index
/// `start` (negative in the padding) whose input index `start + j` lies in
/// `[0, len)`: the part of the window inside the image.
pub(crate) fn in_image(start: isize, k: usize, len: usize) -> (usize, usize) {
    let lo = (-start).clamp(0, k as isize) as usize;
    let hi = (len as isize - start).clamp(lo as isize, k as isize) as usize;
    (lo, hi)
}
