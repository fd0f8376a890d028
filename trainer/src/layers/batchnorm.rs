//! Batch normalisation over the channel axis (the last, in NHWC).
//!
//! Training: `y = γ · (x − μ_B) / sqrt(σ²_B + ε) + β` with the batch mean and
//! (biased) variance over all `n·h·w` positions, and the running statistics
//! updated as `m ← momentum · m + (1 − momentum) · μ_B` (Keras). Evaluation
//! uses the running statistics instead.
//!
//! Backward recomputes `x̂ = (x − μ)·inv_std` from `x` rather than keeping it
//! (one tensor less to write and hold). A following relu or GELU can be
//! fused in ([`BatchNorm::fuse_relu`], [`BatchNorm::fuse_gelu`]): forward
//! stores `max(0, y)` or `gelu(y)`, and backward multiplies `dy` by the
//! activation's derivative at `y` (`[y > 0]`, `Φ(y) + y·φ(y)`), with `y`
//! recomputed from `x` by the very operations of forward.
//!
//! Synchronised across the replicas of a data-parallel run
//! ([`Layer::forward_synced`]), the per-channel sums of forward (`Σd`, `Σd²`
//! of `d = x − K`, and the count) and of backward (`Σdy`, `Σdy·x̂`) are summed over the
//! replicas before use, so each replica normalises its shard by the whole
//! batch's statistics and its `dx` is its part of the whole batch's: what one
//! process computes on the whole batch.

// Per-channel loops index several parallel arrays (γ, β, statistics) by channel.
#![allow(clippy::needless_range_loop)]

use super::{BatchSync, Layer, Mode, NamedTensor, ParamVisitor};
use crate::kernels::has_avx2_fma;
use crate::kernels::tensor::{ImageShape, Tensor};
use rayon::prelude::*;

/// Rows (positions) per parallel work item.
const BLOCK_ROWS: usize = 2048;
/// Rows summed in `f32` (vectorised over channels) before the sums are added
/// into the `f64` totals: few enough that `f32` loses nothing that matters,
/// while the totals over a large batch stay exact to `f64` precision.
const GROUP_ROWS: usize = 64;
/// Channels summed at once (the `f32` group sums live on the stack).
const GROUP_CHANNELS: usize = 64;

/// What the element-wise loops need of one channel.
#[derive(Clone, Copy, Debug, Default)]
struct Channel {
    mean: f32,
    inv_std: f32,
    gamma: f32,
    beta: f32,
}

/// [`Channel`] for every channel, kept as four arrays (so that the loops load
/// 4–16 channels' worth of each with one vector load).
#[derive(Clone, Copy)]
struct PerChannel<'a> {
    mean: &'a [f32],
    inv_std: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
}

impl<'a> PerChannel<'a> {
    fn len(&self) -> usize {
        self.mean.len()
    }

    fn range(self, r: std::ops::Range<usize>) -> Self {
        PerChannel {
            mean: &self.mean[r.clone()],
            inv_std: &self.inv_std[r.clone()],
            gamma: &self.gamma[r.clone()],
            beta: &self.beta[r],
        }
    }

    fn iter(self) -> impl Iterator<Item = Channel> + 'a {
        self.mean
            .iter()
            .zip(self.inv_std)
            .zip(self.gamma.iter().zip(self.beta))
            .map(|((&mean, &inv_std), (&gamma, &beta))| Channel {
                mean,
                inv_std,
                gamma,
                beta,
            })
    }
}

/// `sums[ch] = Σ_rows f(a[row, ch], b[row, ch], per[ch])` for a pair-valued
/// `f`, in parallel over blocks of rows; `partials` is scratch (one entry per
/// block and channel), reused across calls. With `avx2` the blocks run the
/// AVX2 copy of the loop ([`has_avx2_fma`]: the same sums).
fn channel_sums<F: Fn(f32, f32, Channel) -> (f32, f32) + Sync>(
    a: &[f32],
    b: &[f32],
    per: PerChannel<'_>,
    partials: &mut Vec<(f64, f64)>,
    sums: &mut [(f64, f64)],
    avx2: bool,
    f: F,
) {
    let c = per.len();
    let blocks = (a.len() / c).div_ceil(BLOCK_ROWS);
    partials.resize(blocks * c, (0.0, 0.0));
    partials
        .par_chunks_mut(c)
        .zip(
            a.par_chunks(BLOCK_ROWS * c)
                .zip(b.par_chunks(BLOCK_ROWS * c)),
        )
        .for_each(|(acc, (a, b))| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the caller checked the CPU (`has_avx2_fma`).
                return unsafe { simd::block_sums(acc, a, b, per, &f) };
            }
            let _ = avx2;
            block_sums(acc, a, b, per, &f)
        });
    sums.fill((0.0, 0.0));
    for block in partials.chunks_exact(c) {
        for (s, p) in sums.iter_mut().zip(block) {
            s.0 += p.0;
            s.1 += p.1;
        }
    }
}

pub struct BatchNorm {
    shape: ImageShape,
    momentum: f32,
    epsilon: f32,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub moving_mean: Vec<f32>,
    pub moving_variance: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    /// A following activation computed here ([`NONE`], [`RELU`], [`GELU`]).
    act: u8,
    /// `1 / sqrt(σ² + ε)` per channel, used by the last forward.
    inv_std: Vec<f32>,
    /// Mode of the last forward: backward differs (batch vs running statistics).
    last_mode: Mode,
    /// Mean used by the last forward (batch or running), per channel.
    mean: Vec<f32>,
    /// Per-channel pairs of sums, and per-block partial sums (scratch).
    sum: Vec<(f64, f64)>,
    /// Per-channel shift of the training sums (scratch).
    shift: Vec<f32>,
    /// Backward's `dx = a·dy − b − k·x̂` coefficients: all `a`, then all `b`,
    /// then all `k` (scratch).
    coef: Vec<f32>,
    partials: Vec<(f64, f64)>,
}

impl BatchNorm {
    pub fn new(shape: ImageShape, momentum: f32, epsilon: f32) -> Self {
        let c = shape.channels;
        Self {
            shape,
            momentum,
            epsilon,
            gamma: vec![1.0; c],
            beta: vec![0.0; c],
            moving_mean: vec![0.0; c],
            moving_variance: vec![1.0; c],
            dgamma: vec![0.0; c],
            dbeta: vec![0.0; c],
            act: NONE,
            inv_std: vec![0.0; c],
            last_mode: Mode::Train,
            mean: vec![0.0; c],
            sum: vec![(0.0, 0.0); c],
            shift: vec![0.0; c],
            coef: vec![0.0; 3 * c],
            partials: Vec::new(),
        }
    }
}

impl BatchNorm {
    /// Fuses a relu that follows this layer into it (see the module comment).
    pub fn fuse_relu(&mut self) {
        self.act = RELU;
    }

    /// Fuses a GELU that follows this layer into it (see the module comment).
    pub fn fuse_gelu(&mut self) {
        self.act = GELU;
    }
}

/// The activation fused in, as a const parameter of the loops.
const NONE: u8 = 0;
const RELU: u8 = 1;
const GELU: u8 = 2;

/// The fused activation `ACT` of a normalised value.
#[inline(always)]
fn activate<const ACT: u8>(v: f32) -> f32 {
    match ACT {
        RELU => v.max(0.0),
        GELU => model_format::gelu::gelu(v),
        _ => v,
    }
}

/// One block of rows of [`channel_sums`] into `acc` (one pair per channel).
#[inline(always)]
fn block_sums<F: Fn(f32, f32, Channel) -> (f32, f32)>(
    acc: &mut [(f64, f64)],
    a: &[f32],
    b: &[f32],
    per: PerChannel<'_>,
    f: &F,
) {
    let c = per.len();
    acc.fill((0.0, 0.0));
    for c0 in (0..c).step_by(GROUP_CHANNELS) {
        let width = GROUP_CHANNELS.min(c - c0);
        let acc = &mut acc[c0..c0 + width];
        let per = per.range(c0..c0 + width);
        for (ga, gb) in a.chunks(GROUP_ROWS * c).zip(b.chunks(GROUP_ROWS * c)) {
            let (mut su, mut sv) = ([0f32; GROUP_CHANNELS], [0f32; GROUP_CHANNELS]);
            let (su, sv) = (&mut su[..width], &mut sv[..width]);
            for (ra, rb) in ga.chunks_exact(c).zip(gb.chunks_exact(c)) {
                let (ra, rb) = (&ra[c0..c0 + width], &rb[c0..c0 + width]);
                for ((((u, v), &x), &y), p) in su
                    .iter_mut()
                    .zip(sv.iter_mut())
                    .zip(ra)
                    .zip(rb)
                    .zip(per.iter())
                {
                    let (du, dv) = f(x, y, p);
                    *u += du;
                    *v += dv;
                }
            }
            for ((acc, &u), &v) in acc.iter_mut().zip(su.iter()).zip(sv.iter()) {
                acc.0 += u as f64;
                acc.1 += v as f64;
            }
        }
    }
}

/// `y = act(γ·(x − μ)·inv_std + β)` over whole rows of `c` channels.
#[inline(always)]
fn apply_rows<const ACT: u8>(y: &mut [f32], x: &[f32], per: PerChannel<'_>) {
    let c = per.len();
    for (ys, xs) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for ((y, &x), p) in ys.iter_mut().zip(xs).zip(per.iter()) {
            *y = activate::<ACT>(normalise(x, p));
        }
    }
}

/// Backward's `dx = a·dy' − b − k·x̂` over whole rows (`coef` = `a, b, k`
/// per channel, `dy'` and `x̂` from [`grad_terms`]).
#[inline(always)]
fn dx_rows<const ACT: u8>(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    per: PerChannel<'_>,
    coef: (&[f32], &[f32], &[f32]),
) {
    let c = per.len();
    let (ca, cb, ck) = coef;
    for ((d, g), x) in dx
        .chunks_exact_mut(c)
        .zip(dy.chunks_exact(c))
        .zip(x.chunks_exact(c))
    {
        for ((((d, &g), &x), p), ((&a, &b), &k)) in d
            .iter_mut()
            .zip(g)
            .zip(x)
            .zip(per.iter())
            .zip(ca.iter().zip(cb).zip(ck))
        {
            let (g, xh) = grad_terms::<ACT>(g, x, p);
            *d = a * g - b - k * xh;
        }
    }
}

/// The row loops compiled for AVX2 and FMA (see [`has_avx2_fma`]).
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Channel, PerChannel};

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_sums<F: Fn(f32, f32, Channel) -> (f32, f32)>(
        acc: &mut [(f64, f64)],
        a: &[f32],
        b: &[f32],
        per: PerChannel<'_>,
        f: &F,
    ) {
        super::block_sums(acc, a, b, per, f)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn apply_rows<const ACT: u8>(y: &mut [f32], x: &[f32], per: PerChannel<'_>) {
        super::apply_rows::<ACT>(y, x, per)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dx_rows<const ACT: u8>(
        dx: &mut [f32],
        dy: &[f32],
        x: &[f32],
        per: PerChannel<'_>,
        coef: (&[f32], &[f32], &[f32]),
    ) {
        super::dx_rows::<ACT>(dx, dy, x, per, coef)
    }
}

/// `y = γ·(x − μ)·inv_std + β` before any activation. Backward recomputes a
/// fused activation's input with this same function, so it matches forward
/// exactly.
#[inline(always)]
fn normalise(x: f32, p: Channel) -> f32 {
    p.gamma * ((x - p.mean) * p.inv_std) + p.beta
}

/// `(dy', x̂)` of one value: `dy` times the fused activation's derivative at
/// `y` (`[y > 0]` for a relu, `Φ(y) + y·φ(y)` for GELU), and
/// `x̂ = (x − μ)·inv_std`.
#[inline(always)]
fn grad_terms<const ACT: u8>(g: f32, x: f32, p: Channel) -> (f32, f32) {
    use model_format::gelu::grad;
    let g = match ACT {
        RELU if normalise(x, p) <= 0.0 => 0.0,
        GELU => g * grad(normalise(x, p)),
        _ => g,
    };
    (g, (x - p.mean) * p.inv_std)
}

impl BatchNorm {
    fn per(&self) -> PerChannel<'_> {
        PerChannel {
            mean: &self.mean,
            inv_std: &self.inv_std,
            gamma: &self.gamma,
            beta: &self.beta,
        }
    }

    fn backward_any(
        &mut self,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
        sync: Option<&dyn BatchSync>,
    ) {
        match self.act {
            RELU => self.backward_impl::<RELU>(x, dy, dx, sync),
            GELU => self.backward_impl::<GELU>(x, dy, dx, sync),
            _ => self.backward_impl::<NONE>(x, dy, dx, sync),
        }
    }

    fn forward_impl(
        &mut self,
        x: &Tensor,
        y: &mut Tensor,
        mode: Mode,
        sync: Option<&dyn BatchSync>,
    ) {
        let c = self.shape.channels;
        y.resize(x.n, self.shape);
        self.last_mode = mode;
        match mode {
            Mode::Eval => {
                // Fixed statistics: an affine map per channel.
                for ch in 0..c {
                    self.inv_std[ch] = 1.0 / (self.moving_variance[ch] + self.epsilon).sqrt();
                    self.mean[ch] = self.moving_mean[ch];
                }
            }
            Mode::Train => {
                // Σd and Σd² per channel of d = x − K, with the shift K the
                // batch's first value of the channel: close to the mean, so
                // that var = E[d²] − E[d]² does not cancel even when the mean
                // is large against the spread. Totalled in f64 so large batches
                // stay accurate (see GROUP_ROWS).
                // Across replicas the shift is the running mean instead: the
                // same on every replica (they all compute the same statistics).
                let mut rows = (x.data.len() / c) as f64;
                match sync {
                    Some(_) => self.shift.copy_from_slice(&self.moving_mean),
                    None => self.shift.copy_from_slice(&x.data[..c]),
                }
                let per = PerChannel {
                    mean: &self.shift,
                    inv_std: &self.inv_std,
                    gamma: &self.gamma,
                    beta: &self.beta,
                };
                channel_sums(
                    &x.data,
                    &x.data,
                    per,
                    &mut self.partials,
                    &mut self.sum,
                    has_avx2_fma(),
                    |a, _, p| {
                        let d = a - p.mean;
                        (d, d * d)
                    },
                );
                if let Some(sync) = sync {
                    rows = self.sum_across(sync, rows);
                }
                let m = self.momentum;
                for ch in 0..c {
                    let d = self.sum[ch].0 / rows;
                    let var = (self.sum[ch].1 / rows - d * d).max(0.0);
                    let mu = self.shift[ch] as f64 + d;
                    self.mean[ch] = mu as f32;
                    self.inv_std[ch] = 1.0 / ((var as f32) + self.epsilon).sqrt();
                    self.moving_mean[ch] = m * self.moving_mean[ch] + (1.0 - m) * mu as f32;
                    self.moving_variance[ch] =
                        m * self.moving_variance[ch] + (1.0 - m) * var as f32;
                }
            }
        }
        match self.act {
            RELU => self.apply::<RELU>(x, y),
            GELU => self.apply::<GELU>(x, y),
            _ => self.apply::<NONE>(x, y),
        }
    }

    /// `y = act(γ·(x − μ)·inv_std + β)` with the current statistics.
    fn apply<const ACT: u8>(&self, x: &Tensor, y: &mut Tensor) {
        let (per, c, avx2) = (self.per(), self.shape.channels, has_avx2_fma());
        y.data
            .par_chunks_mut(BLOCK_ROWS * c)
            .zip(x.data.par_chunks(BLOCK_ROWS * c))
            .for_each(|(y, x)| {
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: `has_avx2_fma` checked the CPU.
                    return unsafe { simd::apply_rows::<ACT>(y, x, per) };
                }
                let _ = avx2;
                apply_rows::<ACT>(y, x, per)
            });
    }

    /// Replaces the per-channel sums and `rows` by their totals over the
    /// replicas; returns the total `rows`.
    fn sum_across(&mut self, sync: &dyn BatchSync, rows: f64) -> f64 {
        let mut flat: Vec<f64> = self.sum.iter().flat_map(|&(a, b)| [a, b]).collect();
        flat.push(rows);
        sync.sum_f64(&mut flat);
        for (s, pair) in self.sum.iter_mut().zip(flat.chunks_exact(2)) {
            *s = (pair[0], pair[1]);
        }
        flat[flat.len() - 1]
    }

    /// Backward's sums and `dx`, with the fused activation's derivative
    /// compiled in or out.
    fn backward_impl<const ACT: u8>(
        &mut self,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
        sync: Option<&dyn BatchSync>,
    ) {
        let c = self.shape.channels;
        let mut rows = (x.data.len() / c) as f64;
        let per = PerChannel {
            mean: &self.mean,
            inv_std: &self.inv_std,
            gamma: &self.gamma,
            beta: &self.beta,
        };
        channel_sums(
            &dy.data,
            &x.data,
            per,
            &mut self.partials,
            &mut self.sum,
            has_avx2_fma(),
            |g, x, p| {
                let (g, xh) = grad_terms::<ACT>(g, x, p);
                (g, g * xh)
            },
        );
        for ch in 0..c {
            self.dbeta[ch] = self.sum[ch].0 as f32;
            self.dgamma[ch] = self.sum[ch].1 as f32;
        }
        let Some(dx) = dx else { return };
        dx.resize(x.n, self.shape);
        // dx = γ·inv_std/M · (M·dy − dβ − x̂·dγ) = a·dy − b − c·x̂ in training,
        // a·dy in evaluation.
        // M, dβ and dγ are the whole batch's when it is split across
        // replicas (this shard's dβ and dγ stay its parameter gradients).
        let train = self.last_mode == Mode::Train;
        if let (true, Some(sync)) = (train, sync) {
            rows = self.sum_across(sync, rows);
        }
        let rows = rows as f32;
        for ch in 0..c {
            let a = self.gamma[ch] * self.inv_std[ch];
            let (b, k) = if train {
                let (sum_dy, sum_dy_xh) = (self.sum[ch].0 as f32, self.sum[ch].1 as f32);
                (a * sum_dy / rows, a * sum_dy_xh / rows)
            } else {
                (0.0, 0.0)
            };
            (self.coef[ch], self.coef[c + ch], self.coef[2 * c + ch]) = (a, b, k);
        }
        let (per, avx2) = (self.per(), has_avx2_fma());
        let (ca, rest) = self.coef.split_at(c);
        let (cb, ck) = rest.split_at(c);
        let coef = (ca, cb, ck);
        dx.data
            .par_chunks_mut(BLOCK_ROWS * c)
            .zip(dy.data.par_chunks(BLOCK_ROWS * c))
            .zip(x.data.par_chunks(BLOCK_ROWS * c))
            .for_each(|((dx, dy), x)| {
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: `has_avx2_fma` checked the CPU.
                    return unsafe { simd::dx_rows::<ACT>(dx, dy, x, per, coef) };
                }
                let _ = avx2;
                dx_rows::<ACT>(dx, dy, x, per, coef)
            });
    }
}

impl Layer for BatchNorm {
    fn output_shape(&self) -> ImageShape {
        self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, mode: Mode) {
        self.forward_impl(x, y, mode, None);
    }

    /// With `M = n·h·w` positions per channel: `dβ = Σ dy`, `dγ = Σ dy·x̂`, and
    /// `dx = γ·inv_std/M · (M·dy − dβ − x̂·dγ)` in training (the batch
    /// statistics depend on x), `dx = γ·inv_std·dy` in evaluation. With a
    /// fused relu, `dy` is first masked by the forward output `> 0`.
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        self.backward_any(x, dy, dx, None);
    }

    fn forward_synced(&mut self, x: &Tensor, y: &mut Tensor, mode: Mode, sync: &dyn BatchSync) {
        self.forward_impl(x, y, mode, Some(sync));
    }

    fn backward_synced(
        &mut self,
        x: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
        dx: Option<&mut Tensor>,
        sync: &dyn BatchSync,
    ) {
        self.backward_any(x, dy, dx, Some(sync));
    }

    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        f("gamma", &mut self.gamma, &self.dgamma, false);
        f("beta", &mut self.beta, &self.dbeta, false);
    }

    fn tensors(&self) -> Vec<NamedTensor<'_>> {
        let c = self.shape.channels;
        let t = |suffix, data| NamedTensor {
            suffix,
            shape: vec![c],
            data,
        };
        vec![
            t("gamma", &self.gamma),
            t("beta", &self.beta),
            t("moving_mean", &self.moving_mean),
            t("moving_variance", &self.moving_variance),
        ]
    }

    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        vec![
            &mut self.gamma,
            &mut self.beta,
            &mut self.moving_mean,
            &mut self.moving_variance,
        ]
    }

    fn statistics_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.moving_mean, &mut self.moving_variance]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Gelu, Relu};
    use rand::{Rng, SeedableRng};

    /// A fused relu or GELU gives what batch norm followed by that layer
    /// gives, bit for bit: the same output and the same gradients for the
    /// activation's `dy`, in training and in evaluation mode.
    #[test]
    fn fused_activations_match_batchnorm_then_the_layer() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let shape = ImageShape::new(5, 6, 70);
        for gelu in [false, true] {
            for mode in [Mode::Train, Mode::Eval] {
                let build = || {
                    let mut bn = BatchNorm::new(shape, 0.9, 1e-3);
                    for (ch, (g, b)) in bn.gamma.iter_mut().zip(&mut bn.beta).enumerate() {
                        *g = 0.5 + (ch % 7) as f32 * 0.2;
                        *b = (ch % 5) as f32 * 0.3 - 0.6;
                    }
                    bn
                };
                let (mut plain, mut fused) = (build(), build());
                let mut act: Box<dyn Layer> = if gelu {
                    fused.fuse_gelu();
                    Box::new(Gelu::new(shape))
                } else {
                    fused.fuse_relu();
                    Box::new(Relu::new(shape))
                };
                let mut x = Tensor::zeros(3, shape);
                x.data
                    .iter_mut()
                    .for_each(|v| *v = rng.random_range(-2.0..3.0));
                let (mut y, mut r, mut yf) =
                    (Tensor::default(), Tensor::default(), Tensor::default());
                plain.forward(&x, &mut y, mode);
                act.forward(&y, &mut r, mode);
                fused.forward(&x, &mut yf, mode);
                assert_eq!(yf.data, r.data, "gelu {gelu}, {mode:?} forward");
                assert!(r.data.iter().any(|&v| v <= 0.0) && r.data.iter().any(|&v| v > 0.0));

                let mut dy = Tensor::zeros(3, shape);
                dy.data
                    .iter_mut()
                    .for_each(|v| *v = rng.random_range(-1.0..1.0));
                let (mut dmasked, mut dx, mut dxf) =
                    (Tensor::default(), Tensor::default(), Tensor::default());
                act.backward(&y, &r, &dy, Some(&mut dmasked));
                plain.backward(&x, &y, &dmasked, Some(&mut dx));
                fused.backward(&x, &yf, &dy, Some(&mut dxf));
                for (name, a, b) in [
                    ("dx", &dx.data, &dxf.data),
                    ("dgamma", &plain.dgamma, &fused.dgamma),
                    ("dbeta", &plain.dbeta, &fused.dbeta),
                ] {
                    assert_eq!(a, b, "gelu {gelu}, {mode:?} {name}");
                }
            }
        }
    }

    /// The AVX2 copies of the row loops give the portable loops' values bit
    /// for bit, for each fused activation (skipped without AVX2 and FMA).
    #[test]
    fn avx2_loops_match_the_portable_ones() {
        if !has_avx2_fma() {
            eprintln!("no AVX2+FMA: only the portable loops exist here");
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let c = 70;
            let rows = 300;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            let mut random =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-3.0..3.0)).collect() };
            let (mean, inv_std, gamma, beta) = (random(c), random(c), random(c), random(c));
            let per = PerChannel {
                mean: &mean,
                inv_std: &inv_std,
                gamma: &gamma,
                beta: &beta,
            };
            let (x, dy) = (random(rows * c), random(rows * c));
            let (ca, cb, ck) = (random(c), random(c), random(c));
            fn check<const ACT: u8>(
                x: &[f32],
                dy: &[f32],
                per: PerChannel<'_>,
                coef: (&[f32], &[f32], &[f32]),
            ) {
                let n = x.len();
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                apply_rows::<ACT>(&mut a, x, per);
                unsafe { simd::apply_rows::<ACT>(&mut b, x, per) };
                assert_eq!(a, b, "apply, activation {ACT}");
                dx_rows::<ACT>(&mut a, dy, x, per, coef);
                unsafe { simd::dx_rows::<ACT>(&mut b, dy, x, per, coef) };
                assert_eq!(a, b, "dx, activation {ACT}");
                let f = |g, x, p| {
                    let (g, xh) = grad_terms::<ACT>(g, x, p);
                    (g, g * xh)
                };
                let c = per.len();
                let (mut sa, mut sb) = (vec![(0.0, 0.0); c], vec![(0.0, 0.0); c]);
                block_sums(&mut sa, dy, x, per, &f);
                unsafe { simd::block_sums(&mut sb, dy, x, per, &f) };
                assert_eq!(sa, sb, "sums, activation {ACT}");
            }
            let coef = (&ca[..], &cb[..], &ck[..]);
            check::<NONE>(&x, &dy, per, coef);
            check::<RELU>(&x, &dy, per, coef);
            check::<GELU>(&x, &dy, per, coef);
        }
    }

    /// Batch statistics stay accurate when the mean is large against the
    /// spread: values 1000 + u, u uniform in [−1, 1], normalise to mean 0 and
    /// variance 1 (computed in f64 here).
    #[test]
    fn statistics_hold_for_a_large_mean() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let shape = ImageShape::new(16, 16, 3);
        let mut bn = BatchNorm::new(shape, 0.9, 1e-6);
        let mut x = Tensor::zeros(32, shape);
        x.data
            .iter_mut()
            .for_each(|v| *v = 1000.0 + rng.random_range(-1.0..1.0));
        let mut y = Tensor::default();
        bn.forward(&x, &mut y, Mode::Train);
        for ch in 0..3 {
            let v: Vec<f64> = y
                .data
                .iter()
                .skip(ch)
                .step_by(3)
                .map(|&v| v as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / v.len() as f64;
            assert!(mean.abs() < 1e-3, "channel {ch}: mean {mean}");
            assert!((var - 1.0).abs() < 1e-3, "channel {ch}: variance {var}");
        }
    }
}
