//! `batchnorm`, evaluation mode.

use super::conv::{le_f32, Kernel};

/// The four per-channel tensors of a batchnorm layer (little-endian `f32` bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchNormParams<'a> {
    pub gamma: &'a [u8],
    pub beta: &'a [u8],
    pub mean: &'a [u8],
    pub var: &'a [u8],
    pub epsilon: f32,
}

/// `x[.., c] = (x[.., c] − mean[c]) · gamma[c] / √(var[c] + ε) + beta[c]`, in place,
/// then `max(x, 0)` when a relu is fused into it (one pass instead of two).
///
/// The per-channel factors are computed once into `tmp` (`3 · channels` values:
/// mean, `gamma / √(var + ε)`, beta) so the `√` is not repeated per pixel.
/// Subtracting the mean first (rather than folding it into one offset) keeps the
/// rounding the same as the plain formula's. Channels go in blocks of
/// [`BLOCK`], which the compiler turns into whole vectors, compiled for the
/// widest registers `kernel` allows ([`super::simd`]).
pub(crate) fn batchnorm(
    p: &BatchNormParams<'_>,
    channels: usize,
    x: &mut [f32],
    tmp: &mut [f32],
    relu: bool,
    kernel: Kernel,
) {
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
    let (mean, scale, beta) = (&*mean, &*scale, &*beta);
    match relu {
        true => super::simd(
            kernel,
            Normalise::<true> {
                x,
                channels,
                mean,
                scale,
                beta,
            },
        ),
        false => super::simd(
            kernel,
            Normalise::<false> {
                x,
                channels,
                mean,
                scale,
                beta,
            },
        ),
    }
}

/// Channels per block of [`Normalise`]: one AVX-512 vector.
const BLOCK: usize = 16;

/// The first [`BLOCK`] values of `f` (all there are: the callers check).
#[inline(always)]
fn block(f: &[f32]) -> Option<&[f32; BLOCK]> {
    f.get(..BLOCK)?.try_into().ok()
}

/// The per-pixel half of [`batchnorm`]: `x = (x − mean) · scale + beta`,
/// then relu if `RELU`.
struct Normalise<'a, const RELU: bool> {
    x: &'a mut [f32],
    channels: usize,
    mean: &'a [f32],
    scale: &'a [f32],
    beta: &'a [f32],
}

impl<const RELU: bool> super::Pass for Normalise<'_, RELU> {
    #[inline(always)]
    fn run(self) {
        let Self {
            x,
            channels,
            mean,
            scale,
            beta,
        } = self;
        let one = |v: f32, m: f32, s: f32, b: f32| {
            let y = (v - m) * s + b;
            if RELU {
                y.max(0.0)
            } else {
                y
            }
        };
        if channels % BLOCK == 0 {
            // Whole blocks: one flat walk, the channel wrapping round.
            let mut c = 0;
            for v in x.chunks_exact_mut(BLOCK) {
                let factors = (block(&mean[c..]), block(&scale[c..]), block(&beta[c..]));
                if let (Ok(v), Some(&m), Some(&s), Some(&b)) = (
                    <&mut [f32; BLOCK]>::try_from(v),
                    factors.0,
                    factors.1,
                    factors.2,
                ) {
                    // (Copies: the compiler cannot tell that `x` and the
                    // factors never overlap, and would not vectorise.)
                    for j in 0..BLOCK {
                        v[j] = one(v[j], m[j], s[j], b[j]);
                    }
                }
                c += BLOCK;
                if c == channels {
                    c = 0;
                }
            }
        } else {
            for pixel in x.chunks_exact_mut(channels) {
                for (((v, &m), &s), &b) in pixel.iter_mut().zip(mean).zip(scale).zip(beta) {
                    *v = one(*v, m, s, b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    /// Every kernel's pass gives the plain formula's values bit for bit
    /// (then relu), for channel counts that are whole blocks of 16 and
    /// not, NaN and infinities included.
    #[test]
    fn every_kernel_gives_the_plain_formula() {
        let kernels = crate::layers::conv::tests::kernels();
        for channels in [1, 5, 16, 21, 48, 64] {
            let ch = |k: usize| -> Vec<f32> {
                (0..channels)
                    .map(|c| ((c * k + 3) % 17) as f32 / 7.0 - 1.0)
                    .collect()
            };
            let (gamma, beta, mean) = (ch(5), ch(11), ch(3));
            let var: Vec<f32> = ch(7).iter().map(|v| v.abs()).collect();
            let (g, b, m, v) = (bytes(&gamma), bytes(&beta), bytes(&mean), bytes(&var));
            let p = BatchNormParams {
                gamma: &g,
                beta: &b,
                mean: &m,
                var: &v,
                epsilon: 1e-3,
            };
            let mut x: Vec<f32> = (0..channels * 37)
                .map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0)
                .collect();
            x[3] = f32::NAN;
            x[11] = f32::INFINITY;
            for relu in [false, true] {
                let want: Vec<u32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = i % channels;
                        let s = gamma[c] / crate::math::sqrt(var[c] + 1e-3);
                        let y = (v - mean[c]) * s + beta[c];
                        if relu { y.max(0.0) } else { y }.to_bits()
                    })
                    .collect();
                for &kernel in &kernels {
                    let mut got = x.clone();
                    let mut tmp = std::vec![0.0; 3 * channels];
                    batchnorm(&p, channels, &mut got, &mut tmp, relu, kernel);
                    let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "{channels} channels, relu {relu}, {kernel:?}");
                }
            }
        }
    }
}
