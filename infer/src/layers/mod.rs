//! The layer computations, one concept per module. Each works on NHWC `f32`
//! activations in caller-provided slices; parameters stay in the file's bytes.

pub(crate) mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_avx2;
pub(crate) mod norm;
pub(crate) mod pool;

/// `relu`: `x = max(x, 0)`, in place.
pub(crate) fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}
