//! The model: its spec (architectures as data), the [`network::Network`] built
//! from it with its model file, the int8 model file made from it
//! ([`quantize`]), and the loss at its end.

pub mod loss;
pub mod network;
pub mod quantize;
pub mod spec;
