//! The one error type of the crate.
//!
//! `no_std` means no `thiserror` and no `String`: every variant carries only
//! `Copy` data (offsets, indices, static descriptions) and [`core::fmt::Display`]
//! is written by hand.

use core::fmt;
/// Which tensor of a layer an [`Error::Tensor`] is about; `model_format`'s, so
/// its suffixes are the ones the trainer writes.
pub use model_format::Param;

/// Why a model file was rejected, or why a classification could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the 8-byte length prefix plus the header it announces.
    Truncated,
    /// The safetensors header is not the JSON we expect. `offset` is a byte offset in the file.
    Header {
        /// Byte offset in the file where the problem was seen.
        offset: usize,
        /// What was wrong.
        problem: &'static str,
    },
    /// A `__metadata__` entry is missing or wrong.
    Metadata(&'static str),
    /// The `architecture` metadata value is not a valid model spec. `offset` is a
    /// byte offset in the file (inside the escaped string).
    Architecture {
        /// Byte offset in the file where the problem was seen.
        offset: usize,
        /// What was wrong.
        problem: &'static str,
    },
    /// The `quantization` metadata value of an int8 model is not valid.
    /// `offset` is a byte offset in the file (inside the escaped string).
    Quantization {
        /// Byte offset in the file where the problem was seen.
        offset: usize,
        /// What was wrong.
        problem: &'static str,
    },
    /// A layer of the architecture cannot be built (index into the spec's `layers`).
    Layer {
        /// Index of the layer in the spec.
        index: usize,
        /// What was wrong.
        problem: &'static str,
    },
    /// The `from` of the `add` layer at `index` (into the spec's `layers`)
    /// cannot be used.
    Add {
        /// Index of the add layer in the spec.
        index: usize,
        /// What was wrong.
        problem: AddProblem,
    },
    /// The architecture has more layers than the [`crate::Model`] holds (its
    /// capacity `N`: [`crate::MAX_LAYERS`] for [`crate::Model::from_bytes`]).
    TooManyLayers,
    /// A parameter tensor of layer `layer` is missing, duplicated or malformed.
    Tensor {
        /// Index of the layer in the spec.
        layer: usize,
        /// Which parameter of the layer.
        param: Param,
        /// What was wrong.
        problem: TensorProblem,
    },
    /// The header names a tensor that no layer of the architecture uses.
    /// `offset` is the byte offset of its name in the file.
    UnexpectedTensor {
        /// Byte offset of the tensor's key in the file.
        offset: usize,
    },
    /// The image has the wrong number of bytes (height × width × channels).
    ImageSize {
        /// Bytes the model's input needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The scratch slice is shorter than [`crate::Model::scratch_len`] (in `f32` elements).
    ScratchTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements given.
        actual: usize,
    },
    /// The output slice is shorter than [`crate::Model::num_classes`].
    OutputTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements given.
        actual: usize,
    },
}

/// What is wrong with an `add` layer's `from` (see [`Error::Add`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddProblem {
    /// No layer has that name.
    UnknownSource,
    /// It names layer `source`: the add itself or a later layer.
    NotEarlier {
        /// Index of the named layer.
        source: usize,
    },
    /// The output of layer `source` has another shape than the add's input.
    ShapeMismatch {
        /// Index of the named layer.
        source: usize,
    },
}

/// What is wrong with a parameter tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorProblem {
    /// The layer needs it and the header does not list it.
    Missing,
    /// The header lists it twice.
    Duplicate,
    /// Its dtype is not the one the format gives it (`F32`; in an int8 model
    /// `I8` weights, `I32` biases).
    Dtype,
    /// Its shape is not the one the architecture implies.
    Shape,
    /// Its `data_offsets` are reversed, outside the data, or disagree with its shape.
    Offsets,
    /// Its bytes overlap another tensor's.
    Overlap,
    /// A value is out of range: a NaN or infinite `f32`, a negative batch-norm
    /// variance; in int8 models also a weight scale that is not a positive
    /// normal number, a multiplier out of range, non-zero weights in the
    /// padding of the last group, a bias that could overflow.
    Values,
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TensorProblem::Missing => "is missing",
            TensorProblem::Duplicate => "is listed twice",
            TensorProblem::Dtype => "has the wrong dtype (F32; int8 models: I8 weight, I32 bias)",
            TensorProblem::Shape => "has the wrong shape for the architecture",
            TensorProblem::Offsets => "has data_offsets outside the data or not matching its shape",
            TensorProblem::Overlap => "overlaps another tensor's data",
            TensorProblem::Values => "holds a value out of range",
        })
    }
}

impl fmt::Display for AddProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddProblem::UnknownSource => f.write_str("`from` names no layer"),
            AddProblem::NotEarlier { source } => write!(
                f,
                "`from` names layer {source}, which does not come before the add"
            ),
            AddProblem::ShapeMismatch { source } => write!(
                f,
                "`from` names layer {source}, whose output shape differs from the add's input"
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated => f.write_str(
                "not a complete model file: shorter than the header length it announces",
            ),
            Error::Header { offset, problem } => {
                write!(f, "invalid safetensors header at byte {offset}: {problem}")
            }
            Error::Metadata(problem) => write!(f, "invalid model metadata: {problem}"),
            Error::Architecture { offset, problem } => {
                write!(f, "invalid architecture (file byte {offset}): {problem}")
            }
            Error::Quantization { offset, problem } => {
                write!(
                    f,
                    "invalid quantization metadata (file byte {offset}): {problem}"
                )
            }
            Error::Layer { index, problem } => write!(f, "architecture layer {index}: {problem}"),
            Error::Add { index, problem } => {
                write!(f, "architecture layer {index} (add): {problem}")
            }
            Error::TooManyLayers => {
                write!(
                    f,
                    "architecture has more layers than the model can hold ({}, unless loaded with another capacity)",
                    crate::MAX_LAYERS
                )
            }
            Error::Tensor {
                layer,
                param,
                problem,
            } => write!(f, "tensor `{param}` of layer {layer} {problem}"),
            Error::UnexpectedTensor { offset } => write!(
                f,
                "the header lists a tensor (at byte {offset}) that no layer uses"
            ),
            Error::ImageSize { expected, actual } => {
                write!(f, "image has {actual} bytes, the model needs {expected}")
            }
            Error::ScratchTooSmall { needed, actual } => write!(
                f,
                "scratch buffer has {actual} f32 elements, the model needs {needed}"
            ),
            Error::OutputTooSmall { needed, actual } => write!(
                f,
                "output buffer has {actual} elements, the model has {needed} classes"
            ),
        }
    }
}

// `core::error::Error` is stable since Rust 1.81, so std users get `?` into
// `anyhow::Error` / `Box<dyn Error>` for free.
impl core::error::Error for Error {}
