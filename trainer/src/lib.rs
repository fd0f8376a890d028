//! A pure-Rust CPU trainer for small convolutional image classifiers: the
//! engine, with no command line, terminal, network or plotting code (those
//! live in the `trainer-cli` crate, the `trainer` command).
//!
//! The levels, from the bottom up (each uses only those above it in this list):
//!
//! - [`kernels`]: tensors and SGEMM, the arithmetic everything else runs on;
//! - [`layers`]: one small type per layer, `forward` and `backward` side by side;
//! - [`model`]: the spec format, the [`Network`] built from it, the loss, the model file;
//! - [`optim`]: optimisers (stepping parameters through [`layers::ParamVisitor`]) and schedules;
//! - [`data`]: data-set readers, labelled image splits and augmentation;
//! - [`train`]: the training loop, evaluation, early stopping, recipe, checkpoints, metrics.
//!
//! Data flows: files on disk → [`data`] → [`train::fit`] (batches, augmented on
//! a second thread) → [`Network`] forward, [`model::loss`], backward →
//! [`optim::Optimizer`] → [`Network::save`] (safetensors, spec in the metadata).

pub mod atomic;
pub mod data;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod optim;
pub mod train;

pub use model::network::Network;
pub use model::spec::ModelSpec;
