//! The arithmetic every layer runs on: flat NHWC tensors and SGEMM.

pub mod gemm;
pub mod tensor;
