//! Muon ("momentum orthogonalised by Newton–Schulz", Keller Jordan 2024), as
//! airbench94_muon steps a network's convolution filters; SGD ([`super::Sgd`])
//! steps every other parameter. For one filter tensor `w` of `co` filters,
//! gradient `g` and velocity `v`:
//!
//! ```text
//! v ← μ·v + g
//! d ← g + μ·v                      (Nesterov; else d ← v)
//! w ← w · sqrt(co) / ‖w‖           (the filters kept at Frobenius norm sqrt(co))
//! w ← w − lr · NS(d)
//! ```
//!
//! `NS(D)` approximates `U·Vᵀ` for `D = U·S·Vᵀ`: the update keeps the
//! directions of the momentum and sets all its singular values to about 1,
//! so that every direction moves at the same rate. [`orthogonalise`] runs
//! `steps` iterations of the quintic
//!
//! ```text
//! X₀ = D / (‖D‖ + 1e-7)                         (singular values ≤ 1)
//! X ← a·X + (b·A + c·A²)·X,   A = X·Xᵀ,   (a, b, c) = (3.4445, −4.7750, 2.0315)
//! ```
//!
//! which maps each singular value `σ` to `a·σ + b·σ³ + c·σ⁵` and the singular
//! vectors to themselves. The coefficients make the slope at 0 steep, so
//! that a few steps lift small singular values to about [0.7, 1.2] instead
//! of converging slowly to exactly 1 (which measured no better in airbench).
//! Since `(b·A + c·A²)·X = X·(b·A' + c·A'²)` with `A' = Xᵀ·X`, the
//! iteration runs with the Gram matrix of the shorter side.
//!
//! A convolution's weight `[k, k, ci, co]` is, row-major, the
//! `(k·k·ci) × co` matrix `Dᵀ` of airbench's `D = g.reshape(co, −1)`; as
//! `NS(Dᵀ) = NS(D)ᵀ`, it is orthogonalised where it lies. In `f32` (airbench
//! uses bfloat16 on a GPU). No weight decay: the norm is fixed anyway.

use crate::kernels::gemm::{Backend, Op};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The quintic's coefficients (airbench94_muon's).
const A: f32 = 3.4445;
const B: f32 = -4.7750;
const C: f32 = 2.0315;

fn default_steps() -> usize {
    3
}

/// Muon's settings: the `"muon"` object of a spec's `"training"` (with
/// `"optimizer": "sgd"`, whose settings step the other parameters).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Muon {
    /// The filters' base learning rate; the schedule's factor applies to it
    /// as to SGD's rate, and so do the layers' multipliers (a frozen layer's
    /// 0 included).
    pub lr: f32,
    /// μ.
    pub momentum: f32,
    #[serde(default)]
    pub nesterov: bool,
    /// Newton–Schulz iterations per step (airbench: 3).
    #[serde(default = "default_steps")]
    pub steps: usize,
}

impl Muon {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("muon: learning rate {} must be positive", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!(
                "muon: momentum {} must be in [0, 1)",
                self.momentum
            ));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err("muon: Nesterov needs a momentum above 0".to_string());
        }
        if !(1..=20).contains(&self.steps) {
            return Err(format!("muon: steps {} must be 1 to 20", self.steps));
        }
        Ok(())
    }

    /// Whether Muon steps a parameter of this shape: a convolution's
    /// filters (`[k, k, ci, co]`), as airbench's `len(p.shape) == 4`.
    pub fn applies(shape: &[usize]) -> bool {
        shape.len() == 4 && shape.iter().all(|&n| n > 0)
    }

    /// One step of filters `w` (shape `[.., co]`, `co` last) with gradient
    /// `g` and velocity `v`, at rate `lr` (schedule and multiplier applied).
    /// The products run on `gemm`; `scratch` holds the step's matrices, so
    /// that once it has grown to the largest filter tensor a step allocates
    /// nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        w: &mut [f32],
        g: &[f32],
        v: &mut [f32],
        co: usize,
        lr: f32,
        gemm: Backend,
        scratch: &mut Scratch,
    ) {
        let mu = self.momentum;
        let mut d = std::mem::take(&mut scratch.d);
        d.clear();
        d.extend(v.iter_mut().zip(g).map(|(v, &g)| {
            *v = mu * *v + g;
            if self.nesterov {
                g + mu * *v
            } else {
                *v
            }
        }));
        let norm = frobenius(w);
        if norm > 0.0 {
            let s = ((co as f64).sqrt() / norm) as f32;
            w.iter_mut().for_each(|w| *w *= s);
        }
        orthogonalise(&mut d, w.len() / co, co, self.steps, gemm, scratch);
        for (w, d) in w.iter_mut().zip(&d) {
            *w -= lr * d;
        }
        scratch.d = d;
    }
}

/// The working matrices of [`Muon::step`] and [`orthogonalise`], kept by
/// the optimiser between steps (they are not state: a checkpoint does not
/// save them, and any two compare equal).
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    /// The direction `d` being orthogonalised.
    d: Vec<f32>,
    /// `d` transposed, when it has more columns than rows.
    t: Vec<f32>,
    /// `X` before the step `X ← a·X + X·P`.
    x0: Vec<f32>,
    /// One partial Gram matrix per block of rows.
    partial: Vec<f32>,
    gram: Vec<f32>,
    poly: Vec<f32>,
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `v` resized to `n` values (its contents are overwritten by the caller).
fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

fn frobenius(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Rows per parallel work item of the products.
const ROWS: usize = 256;

/// `NS(x)` in place, `x` a `rows × cols` row-major matrix (module docs),
/// the products on `gemm`, the working matrices in `scratch`.
pub fn orthogonalise(
    x: &mut [f32],
    rows: usize,
    cols: usize,
    steps: usize,
    gemm: Backend,
    scratch: &mut Scratch,
) {
    assert_eq!(x.len(), rows * cols, "a {rows}×{cols} matrix");
    let s = (1.0 / (frobenius(x) + 1e-7)) as f32;
    x.iter_mut().for_each(|v| *v *= s);
    if rows >= cols {
        iterate(x, rows, cols, steps, gemm, scratch);
    } else {
        // More columns than rows: the same iteration on the transpose.
        let mut t = std::mem::take(&mut scratch.t);
        transpose(x, rows, cols, sized(&mut t, x.len()));
        iterate(&mut t, cols, rows, steps, gemm, scratch);
        transpose(&t, cols, rows, x);
        scratch.t = t;
    }
}

/// The iteration on an `r × c` matrix `m` with `r ≥ c`.
fn iterate(m: &mut [f32], r: usize, c: usize, steps: usize, gemm: Backend, scratch: &mut Scratch) {
    let x0 = sized(&mut scratch.x0, m.len());
    let partial = sized(&mut scratch.partial, r.div_ceil(ROWS) * c * c);
    let (gram, poly) = (
        sized(&mut scratch.gram, c * c),
        sized(&mut scratch.poly, c * c),
    );
    for _ in 0..steps {
        // A' = Xᵀ·X (c × c), summed over blocks of rows in parallel.
        partial
            .par_chunks_mut(c * c)
            .zip(m.par_chunks(ROWS * c))
            .for_each(|(g, xb)| {
                let n = xb.len() / c;
                gemm.sgemm(c, n, c, xb, Op::T, xb, Op::N, 0.0, g);
            });
        gram.fill(0.0);
        for g in partial.chunks(c * c) {
            gram.iter_mut().zip(g).for_each(|(s, &v)| *s += v);
        }
        // P = b·A' + c·A'².
        gemm.sgemm(c, c, c, gram, Op::N, gram, Op::N, 0.0, poly);
        poly.iter_mut()
            .zip(gram.iter())
            .for_each(|(p, &a)| *p = C * *p + B * a);
        // X ← a·X + X·P, by blocks of rows.
        x0.copy_from_slice(m);
        let poly = &*poly;
        m.par_chunks_mut(ROWS * c)
            .zip(x0.par_chunks(ROWS * c))
            .for_each(|(xb, x0)| {
                let n = xb.len() / c;
                gemm.sgemm(n, c, c, x0, Op::N, poly, Op::N, A, xb);
            });
    }
}

/// `t` ← the `cols × rows` transpose of the `rows × cols` matrix `x`.
fn transpose(x: &[f32], rows: usize, cols: usize, t: &mut [f32]) {
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = x[i * cols + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `NS(x)` with a fresh scratch.
    fn ns(x: &mut [f32], rows: usize, cols: usize, steps: usize) {
        orthogonalise(
            x,
            rows,
            cols,
            steps,
            Backend::default(),
            &mut Scratch::default(),
        );
    }

    fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0f32; x.len()];
        transpose(x, rows, cols, &mut t);
        t
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// On a diagonal matrix each singular value follows the scalar quintic
    /// from `σ / ‖D‖`, whichever side is longer.
    #[test]
    fn diagonal_matrices_follow_the_scalar_quintic() {
        let d = [3.0f32, 0.5];
        let norm = (d[0] * d[0] + d[1] * d[1]).sqrt();
        let want: Vec<f32> = d
            .iter()
            .map(|&s| {
                let mut s = s / norm;
                for _ in 0..3 {
                    s = A * s + B * s.powi(3) + C * s.powi(5);
                }
                s
            })
            .collect();
        // 3×2 with d on the diagonal, and its 2×3 transpose.
        let tall = vec![d[0], 0.0, 0.0, d[1], 0.0, 0.0];
        for (mut x, rows, cols) in [(tall.clone(), 3, 2), (transposed(&tall, 3, 2), 2, 3)] {
            ns(&mut x, rows, cols, 3);
            let at = |i: usize, j: usize| x[i * cols + j];
            assert!((at(0, 0) - want[0]).abs() < 1e-5, "{x:?} against {want:?}");
            assert!((at(1, 1) - want[1]).abs() < 1e-5, "{x:?} against {want:?}");
            let off: f32 = x.iter().map(|v| v.abs()).sum::<f32>() - at(0, 0).abs() - at(1, 1).abs();
            assert!(off < 1e-6, "{x:?}");
        }
        // The scalar map lifts the small value and keeps the large one near 1.
        assert!(want.iter().all(|&s| (0.6..1.3).contains(&s)), "{want:?}");
    }

    /// `NS(Dᵀ) = NS(D)ᵀ`, and blocks of rows (more than [`ROWS`]) change
    /// nothing but rounding.
    #[test]
    fn the_transpose_orthogonalises_to_the_transpose() {
        for (rows, cols) in [(7, 4), (600, 5)] {
            let d = random(rows * cols, 1);
            let mut x = d.clone();
            ns(&mut x, rows, cols, 3);
            let mut t = transposed(&d, rows, cols);
            ns(&mut t, cols, rows, 3);
            let back = transposed(&t, cols, rows);
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() < 1e-5, "{a} against {b}");
            }
        }
    }

    /// A scratch reused for matrices of other shapes (larger, smaller, wide
    /// and tall) gives the same bits as a fresh one: nothing of an earlier
    /// step leaks into the next.
    #[test]
    fn a_reused_scratch_changes_nothing() {
        let mut scratch = Scratch::default();
        for (i, (rows, cols)) in [(600, 5), (3, 9), (40, 12), (7, 4), (9, 300)]
            .into_iter()
            .enumerate()
        {
            let d = random(rows * cols, 10 + i as u64);
            let (mut fresh, mut reused) = (d.clone(), d);
            ns(&mut fresh, rows, cols, 3);
            orthogonalise(&mut reused, rows, cols, 3, Backend::default(), &mut scratch);
            assert_eq!(fresh, reused, "{rows}×{cols}");
        }
    }

    /// Five steps put every singular value of a random matrix (spread over
    /// two orders of magnitude) into [0.6, 1.3]: the eigenvalues of `XᵀX`.
    #[test]
    fn singular_values_end_near_one() {
        let (rows, cols) = (40, 12);
        let mut x = random(rows * cols, 2);
        // Column j scaled by 10^(−2j/11): singular values from 1 down to ~0.01.
        for i in 0..rows {
            for j in 0..cols {
                x[i * cols + j] *= 10f32.powf(-2.0 * j as f32 / 11.0);
            }
        }
        ns(&mut x, rows, cols, 5);
        let mut gram = vec![0f64; cols * cols];
        for i in 0..rows {
            for a in 0..cols {
                for b in 0..cols {
                    gram[a * cols + b] += f64::from(x[i * cols + a]) * f64::from(x[i * cols + b]);
                }
            }
        }
        let (eigenvalues, _) = crate::train::whitening::symmetric_eigen(&gram, cols);
        for e in eigenvalues {
            let sigma = e.sqrt();
            assert!((0.6..1.3).contains(&sigma), "singular value {sigma}");
        }
    }

    /// A step by hand: the velocity, the normalised filters, the update
    /// `lr·NS(g + μ·v)`.
    #[test]
    fn a_step_normalises_then_moves_along_the_orthogonalised_momentum() {
        let muon = Muon {
            lr: 0.1,
            momentum: 0.5,
            nesterov: true,
            steps: 3,
        };
        let (rows, co) = (6, 3);
        let w0 = random(rows * co, 3);
        let g = random(rows * co, 4);
        let v0 = random(rows * co, 5);
        let (mut w, mut v) = (w0.clone(), v0.clone());
        muon.step(
            &mut w,
            &g,
            &mut v,
            co,
            0.05,
            Backend::default(),
            &mut Scratch::default(),
        );
        let v1: Vec<f32> = v0.iter().zip(&g).map(|(v, g)| 0.5 * v + g).collect();
        assert_eq!(v, v1);
        let mut d: Vec<f32> = g.iter().zip(&v1).map(|(g, v)| g + 0.5 * v).collect();
        ns(&mut d, rows, co, 3);
        let s = (3f64.sqrt() / frobenius(&w0)) as f32;
        for i in 0..w.len() {
            let want = w0[i] * s - 0.05 * d[i];
            assert!((w[i] - want).abs() < 1e-6, "{} against {want}", w[i]);
        }
    }

    #[test]
    fn settings_are_checked() {
        let ok = Muon {
            lr: 0.24,
            momentum: 0.6,
            nesterov: true,
            steps: 3,
        };
        assert!(ok.validate().is_ok());
        assert!(Muon { lr: 0.0, ..ok }.validate().is_err());
        assert!(Muon {
            momentum: 1.0,
            ..ok
        }
        .validate()
        .is_err());
        assert!(Muon { steps: 0, ..ok }.validate().is_err());
        assert!(Muon {
            momentum: 0.0,
            ..ok
        }
        .validate()
        .is_err());
        assert!(
            Muon::applies(&[3, 3, 16, 32]) && !Muon::applies(&[32]) && !Muon::applies(&[64, 10])
        );
    }
}
