//! The model: its spec (architectures as data), the [`network::Network`] built
//! from it with its model file, and the loss at its end.

pub mod loss;
pub mod network;
pub mod spec;
