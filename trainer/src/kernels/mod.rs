//! The arithmetic every layer runs on: flat NHWC tensors, SGEMM, and which
//! vector instructions the element-wise loops may use.

pub mod gemm;
pub mod tensor;

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
