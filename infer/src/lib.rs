//! `no_std`, heap-free inference for the image classifiers exported by the
//! trainer (`docs/FORMAT.md`: one safetensors file whose metadata carries the
//! architecture).
//!
//! - [`Model::from_bytes`] parses and checks a model file *in place*: the
//!   header JSON (and the architecture, a JSON document inside a JSON string) is
//!   read with a small allocation-free parser, the weights are never copied.
//!   It never panics on malformed input and works on unaligned buffers.
//! - [`Model::classify`] runs one image through the network using only a
//!   caller-provided scratch slice of [`Model::scratch_len`] `f32`s, and writes
//!   the class probabilities to a caller-provided slice.
//!
//! Nothing in this crate allocates; it builds for bare-metal targets such as
//! `thumbv7em-none-eabihf`. On x86-64, convolutions and dense layers use
//! AVX-512F or AVX2 + FMA when the CPU has them (detected at run time; see
//! [`Backend`]), else portable code.
//!
//! ```no_run
//! static MODEL: &[u8] = include_bytes!("../../models/model1.safetensors");
//! # fn demo(image: &[u8; 32 * 32 * 3]) -> Result<(), infer::Error> {
//! let model = infer::Model::from_bytes(MODEL)?;
//! let mut scratch = [0f32; 65_536];
//! assert!(scratch.len() >= model.scratch_len());
//! let mut probs = [0f32; 10];
//! let top = model.classify(image, &mut scratch, &mut probs)?;
//! let _ = (model.class_name(top.class), top.probability);
//! # Ok(()) }
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(test)]
extern crate std;

mod arch;
mod cpu;
mod error;
mod json;
mod layers;
mod math;
mod model;
mod quant;
mod safetensors;
mod scratch;

pub use arch::{MAX_LAYERS, MAX_NAME};
pub use error::{AddProblem, Error, Param, TensorProblem};
pub use model::{Backend, Model, Prediction};
/// The number type of a model ([`Model::precision`]).
pub use model_format::Precision;
/// The value of the `format` metadata entry this crate reads (the format's
/// rules live in the `model_format` crate, shared with the trainer).
pub use model_format::FORMAT;
