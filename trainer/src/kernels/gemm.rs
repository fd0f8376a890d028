//! Single-precision matrix multiply on row-major slices, on one of two
//! backends: the `gemm` crate (the default, with the `gemm-backend` feature)
//! or `matrixmultiply`.
//!
//! All of the network's heavy lifting (convolution through im2col or
//! Winograd, dense layers, and their gradients) goes through
//! [`Backend::sgemm`]. The backend is a value each layer holds (set through
//! [`crate::model::network::Network::set_compute`]), never a process-wide switch.

use std::sync::atomic::{AtomicU64, Ordering};

/// Number of [`sgemm`] calls so far (each costs `matrixmultiply` one heap
/// allocation for its packing buffer; tests use this to check that nothing
/// else in a training step allocates).
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Number of GEMM calls made by this process so far.
pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

thread_local! {
    /// Whether this thread is inside a GEMM backend call right now.
    static IN_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is inside a GEMM backend call (the backends
/// allocate packing buffers; an allocation-counting test tells theirs from ours).
pub fn in_gemm() -> bool {
    IN_GEMM.with(|f| f.get())
}

/// Marks the current thread as inside a GEMM call while `f` runs.
fn inside_gemm(f: impl FnOnce()) {
    IN_GEMM.with(|flag| flag.set(true));
    f();
    IN_GEMM.with(|flag| flag.set(false));
}

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The operand is stored row-major with its logical shape.
    N,
    /// The operand is stored row-major as its transpose.
    T,
}

/// An SGEMM implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The `gemm` crate (needs the `gemm-backend` feature; the default).
    Gemm,
    /// `matrixmultiply`.
    MatrixMultiply,
}

impl Default for Backend {
    /// `Gemm` with the `gemm-backend` feature (faster at our shapes on
    /// AVX-512 machines, see `docs/PERFORMANCE.md`), `MatrixMultiply` without.
    fn default() -> Self {
        if cfg!(feature = "gemm-backend") {
            Backend::Gemm
        } else {
            Backend::MatrixMultiply
        }
    }
}

impl Backend {
    /// Whether this build has the backend (`Gemm` needs the `gemm-backend` feature).
    pub fn available(self) -> bool {
        self == Backend::MatrixMultiply || cfg!(feature = "gemm-backend")
    }

    /// `C[m×n] = A[m×k] · B[k×n] + beta · C`, all contiguous row-major.
    ///
    /// `a` holds `A` (or `Aᵀ`, a `k×m` matrix, when `op_a == Op::T`), likewise `b`.
    /// Panics if a slice is too short for its shape: that is a bug in a layer,
    /// never a consequence of user input (shapes are checked when networks are
    /// built). A backend this build lacks ([`Backend::available`]) runs on
    /// `matrixmultiply`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn sgemm(
        self,
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        op_a: Op,
        b: &[f32],
        op_b: Op,
        beta: f32,
        c: &mut [f32],
    ) {
        inside_gemm(|| match self {
            #[cfg(feature = "gemm-backend")]
            Backend::Gemm => sgemm_gemm(m, k, n, a, op_a, b, op_b, beta, c),
            _ => sgemm_matrixmultiply(m, k, n, a, op_a, b, op_b, beta, c),
        });
    }
}

/// Checks the slices and returns the (row, column) strides of the logical `A` and `B`.
#[allow(clippy::too_many_arguments)]
fn strides(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    c: &[f32],
) -> [isize; 4] {
    assert!(
        a.len() >= m * k,
        "sgemm: A has {} values, needs {m}×{k}",
        a.len()
    );
    assert!(
        b.len() >= k * n,
        "sgemm: B has {} values, needs {k}×{n}",
        b.len()
    );
    assert!(
        c.len() >= m * n,
        "sgemm: C has {} values, needs {m}×{n}",
        c.len()
    );
    let (rsa, csa) = match op_a {
        Op::N => (k as isize, 1),
        Op::T => (1, m as isize),
    };
    let (rsb, csb) = match op_b {
        Op::N => (n as isize, 1),
        Op::T => (1, k as isize),
    };
    [rsa, csa, rsb, csb]
}

/// [`Backend::sgemm`] on `matrixmultiply` (runtime-detected AVX2/FMA kernels).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_matrixmultiply(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    beta: f32,
    c: &mut [f32],
) {
    let [rsa, csa, rsb, csb] = strides(m, k, n, a, op_a, b, op_b, c);
    if m == 0 || n == 0 {
        return;
    }
    CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `strides` asserted that every index the strides can reach,
    // (m-1)·rs + (k-1)·cs for A and likewise for B and C, lies inside the
    // slices; `c` is uniquely borrowed so it aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// [`Backend::sgemm`] on the `gemm` crate (runtime-detected AVX2/AVX-512 kernels), single-threaded:
/// our parallelism is over the batch.
#[cfg(feature = "gemm-backend")]
#[allow(clippy::too_many_arguments)]
pub fn sgemm_gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    beta: f32,
    c: &mut [f32],
) {
    let [rsa, csa, rsb, csb] = strides(m, k, n, a, op_a, b, op_b, c);
    if m == 0 || n == 0 {
        return;
    }
    CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: as for `sgemm_matrixmultiply`. `gemm` computes
    // dst = alpha·dst + beta·lhs·rhs, so its `alpha` is our `beta` (dst is
    // only read when that is non-zero) and its `beta` is 1.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.as_ptr(),
            csa,
            rsa,
            b.as_ptr(),
            csb,
            rsb,
            beta,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let mut t = vec![0.0; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn all_transpose_combinations_match_naive() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(m, k, n, &a, &b);
        let at = transpose(m, k, &a);
        let bt = transpose(k, n, &b);
        type Gemm = fn(usize, usize, usize, &[f32], Op, &[f32], Op, f32, &mut [f32]);
        let mut backends: Vec<Gemm> = vec![
            |m, k, n, a, oa, b, ob, beta, c| {
                Backend::default().sgemm(m, k, n, a, oa, b, ob, beta, c)
            },
            |m, k, n, a, oa, b, ob, beta, c| {
                Backend::MatrixMultiply.sgemm(m, k, n, a, oa, b, ob, beta, c)
            },
            sgemm_matrixmultiply,
        ];
        #[cfg(feature = "gemm-backend")]
        backends.push(sgemm_gemm);
        for sgemm in backends {
            for (aa, oa) in [(&a, Op::N), (&at, Op::T)] {
                for (bb, ob) in [(&b, Op::N), (&bt, Op::T)] {
                    let mut c = vec![1.0; m * n];
                    sgemm(m, k, n, aa, oa, bb, ob, 0.0, &mut c);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - y).abs() < 1e-5, "{oa:?}{ob:?}: {x} vs {y}");
                    }
                    // beta = 1 accumulates.
                    sgemm(m, k, n, aa, oa, bb, ob, 1.0, &mut c);
                    for (x, y) in c.iter().zip(&want) {
                        assert!((x - 2.0 * y).abs() < 1e-4);
                    }
                }
            }
        }
    }
}
