//! `batchnorm`, evaluation mode.

use super::conv::le_f32;

/// The four per-channel tensors of a batchnorm layer (little-endian `f32` bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchNormParams<'a> {
    pub gamma: &'a [u8],
    pub beta: &'a [u8],
    pub mean: &'a [u8],
    pub var: &'a [u8],
    pub epsilon: f32,
}

/// `x[.., c] = (x[.., c] − mean[c]) · gamma[c] / √(var[c] + ε) + beta[c]`, in place.
///
/// The per-channel factors are computed once into `tmp` (`3 · channels` values:
/// mean, `gamma / √(var + ε)`, beta) so the `√` is not repeated per pixel.
/// Subtracting the mean first (rather than folding it into one offset) keeps the
/// rounding the same as the plain formula's.
pub(crate) fn batchnorm(p: &BatchNormParams<'_>, channels: usize, x: &mut [f32], tmp: &mut [f32]) {
    let (mean, rest) = tmp.split_at_mut(channels);
    let (scale, rest) = rest.split_at_mut(channels);
    let beta = &mut rest[..channels];
    let params = p
        .gamma
        .chunks_exact(4)
        .zip(p.beta.chunks_exact(4))
        .zip(p.mean.chunks_exact(4).zip(p.var.chunks_exact(4)));
    for (c, ((g, b), (m, v))) in params.enumerate().take(channels) {
        mean[c] = le_f32(m);
        scale[c] = le_f32(g) / crate::math::sqrt(le_f32(v) + p.epsilon);
        beta[c] = le_f32(b);
    }
    let (mean, scale) = (&*mean, &*scale);
    for pixel in x.chunks_exact_mut(channels) {
        for (((v, &m), &s), &b) in pixel.iter_mut().zip(mean).zip(scale).zip(beta.iter()) {
            *v = (*v - m) * s + b;
        }
    }
}
