//! A pure-Rust CPU trainer for small convolutional image classifiers.
//!
//! Data flows: [`data`] (CIFAR-10 reader) → [`augment`] (on a second thread)
//! → [`network::Network`] built from a [`spec::ModelSpec`] out of [`layers`] →
//! [`loss`] → backprop → [`optim::Optimizer`] (Adam or SGD) at the rate of a
//! [`schedule`], driven by [`train`] with a [`recipe`], measured by
//! [`metrics`], saved by [`network::Network::save`] as safetensors.

pub mod atomic;
pub mod augment;
pub mod checkpoint;
pub mod data;
pub mod download;
pub mod gemm;
pub mod init;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod network;
pub mod optim;
pub mod plot;
pub mod recipe;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod study;
pub mod tensor;
pub mod train;
