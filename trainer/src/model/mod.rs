//! The model: its spec (architectures as data), the [`network::Network`] built
//! from it with its model file, the int8 model file made from it
//! ([`quantize`]), its ONNX export ([`onnx`]), and the loss at its end.

pub mod loss;
pub mod network;
pub mod onnx;
pub mod quantize;
pub mod spec;
