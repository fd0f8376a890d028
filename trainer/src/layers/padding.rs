//! Padding of convolutions and pooling, as spec files name it (`same`,
//! `valid`); the arithmetic is the format's own ([`model_format::Padding`]).
//! Defined here, below the spec, so that layers need nothing from the model level.

use serde::{Deserialize, Serialize};

/// Padding mode, with TensorFlow's semantics (the arithmetic is the format's
/// own, [`model_format::Padding`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Output `ceil(in / stride)`, zero (or, for pooling, ignored) cells around the input.
    Same,
    /// Output `(in - k) / stride + 1`, no padding.
    Valid,
}

impl Padding {
    pub(crate) fn format(self) -> model_format::Padding {
        match self {
            Padding::Same => model_format::Padding::Same,
            Padding::Valid => model_format::Padding::Valid,
        }
    }

    pub(crate) fn from_format(p: model_format::Padding) -> Self {
        match p {
            model_format::Padding::Same => Padding::Same,
            model_format::Padding::Valid => Padding::Valid,
        }
    }

    /// Output length and padding before (top/left) for one spatial axis
    /// (`None` when the kernel does not fit with valid padding).
    pub fn output_and_pad(
        self,
        input: usize,
        kernel: usize,
        stride: usize,
    ) -> Option<(usize, usize)> {
        self.format().output_and_pad(input, kernel, stride)
    }
}
