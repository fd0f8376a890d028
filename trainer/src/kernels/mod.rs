//! The arithmetic every layer runs on: flat NHWC tensors, SGEMM, which
//! vector instructions the element-wise loops may use, and how parallel work
//! enters rayon's pool.

pub mod gemm;
pub mod tensor;

/// Runs `op` on a thread of rayon's pool: the caller's own if it is one,
/// else one of the pool's while the caller waits. The parallel loops inside
/// (every layer's, the optimiser's) then start from a worker of the pool,
/// which shares them out directly; started from a thread outside the pool,
/// as a program's main thread is, each loop would wake the pool and put the
/// caller to sleep until it is done, dozens of times per training step.
/// A training step and an optimiser step each run in one such call
/// (measured, the two steps alternating in one process, 2 threads: model 1
/// at batch 32 4–11 % more images per second, model 3 7 %, model 1 at
/// batch 128 2 %).
pub fn on_pool<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| op())
}

/// Whether this CPU runs AVX-512 (the foundation, `avx512f`): the
/// hand-written Winograd transforms and direct-convolution tiles are
/// compiled for it, and [`ConvChoice::Auto`](crate::layers::ConvChoice)
/// picks the algorithms that use them only where they run.
#[inline]
pub(crate) fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs AVX2 and FMA: element-wise loops heavy in
/// arithmetic (GELU's) then run a copy of themselves compiled for them
/// (`#[target_feature(enable = "avx2,fma")]`), 8 lanes instead of SSE2's 4.
/// The copy computes the same IEEE operations in the same order (Rust never
/// fuses a multiply and an add on its own), so its results are identical.
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
