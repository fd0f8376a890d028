//! The model format's rules, written once and used by both the trainer and
//! `infer` (see `docs/FORMAT.md`).
//!
//! A model file is a safetensors file whose `__metadata__` carries the format
//! string, the architecture (a model spec as JSON) and the class names. This
//! crate holds what a writer and a reader of such files must agree on, and
//! nothing that depends on how they parse or compute:
//!
//! - the format string [`FORMAT`], the metadata keys ([`KEY_FORMAT`],
//!   [`KEY_ARCHITECTURE`], [`KEY_CLASS_NAMES`]), the class names' encoding
//!   ([`class_names`]) and the tensor dtype;
//! - the layer types ([`LayerKind`]: `type` tags, which ones have parameters,
//!   their default-name prefixes) and the default names themselves
//!   ([`DefaultNames`]);
//! - the defaults of the optional layer fields ([`defaults`]);
//! - the output-size arithmetic of convolutions and pooling ([`Padding`]);
//! - the parameter tensors of each layer type and their shapes ([`Param`],
//!   [`ParamLayer`], [`TensorShape`]);
//! - the arithmetic both sides must compute bit for bit: GELU ([`gelu`]) and
//!   the int8 scheme ([`quant`]).
//!
//! It is `no_std`, has no dependencies, never allocates and never panics, so a
//! `std` trainer and a heap-free bare-metal reader can both use it.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::fmt;

pub mod class_names;
pub mod gelu;
pub mod quant;

/// The value of the `format` metadata entry.
pub const FORMAT: &str = "cifar-cnn/1";

/// Metadata key of the format string ([`FORMAT`]).
pub const KEY_FORMAT: &str = "format";

/// Metadata key of the architecture: the model spec as a JSON string, in its
/// canonical form (every field present, every parameter layer named).
pub const KEY_ARCHITECTURE: &str = "architecture";

/// Metadata key of the class names, in label order: a JSON array of strings
/// (older files: joined by commas), see [`class_names`].
pub const KEY_CLASS_NAMES: &str = "class_names";

/// The safetensors dtype of every tensor of an `f32` model (little-endian `f32`).
pub const DTYPE: &str = "F32";

/// Bytes per tensor value ([`DTYPE`]).
pub const DTYPE_BYTES: usize = 4;

/// The number type of a model's weights and activations. An int8 model has the
/// [`quant::KEY_QUANTIZATION`] metadata entry (see [`quant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// `f32` weights and activations: every tensor is [`Dtype::F32`].
    #[default]
    F32,
    /// `i8` weights, `i32` biases, `u8` activations, `f32` scales.
    Int8,
}

/// The dtype of a tensor, as safetensors names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// Little-endian IEEE `f32`.
    F32,
    /// `i8`.
    I8,
    /// Little-endian `i32`.
    I32,
}

impl Dtype {
    /// The safetensors `dtype` string.
    pub const fn tag(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::I8 => "I8",
            Dtype::I32 => "I32",
        }
    }

    /// The dtype a safetensors `dtype` string names, among these.
    pub fn from_tag(tag: &[u8]) -> Option<Dtype> {
        [Dtype::F32, Dtype::I8, Dtype::I32]
            .into_iter()
            .find(|d| d.tag().as_bytes() == tag)
    }

    /// Bytes per value.
    pub const fn bytes(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::I8 => 1,
        }
    }
}

/// The defaults of the optional layer fields, as FORMAT.md lists them.
pub mod defaults {
    use super::Padding;

    /// `conv2d` `stride`.
    pub const CONV_STRIDE: usize = 1;
    /// `conv2d` `padding`.
    pub const CONV_PADDING: Padding = Padding::Same;
    /// `maxpool2d` `size`.
    pub const POOL_SIZE: usize = 2;
    /// `maxpool2d` `stride`.
    pub const POOL_STRIDE: usize = 2;
    /// `maxpool2d` `padding`.
    pub const POOL_PADDING: Padding = Padding::Valid;
    /// `batchnorm` `momentum` (of the moving averages, during training).
    pub const BN_MOMENTUM: f32 = 0.99;
    /// `batchnorm` `epsilon`.
    pub const BN_EPSILON: f32 = 1e-3;
}

/// Padding mode of `conv2d` and `maxpool2d`, with TensorFlow's semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Output `⌈in / stride⌉`, zero (or, for pooling, ignored) cells around the input.
    Same,
    /// Output `⌊(in − k) / stride⌋ + 1`, no padding.
    Valid,
}

impl Padding {
    /// The value of the `padding` field: `"same"` or `"valid"`.
    pub const fn tag(self) -> &'static str {
        match self {
            Padding::Same => "same",
            Padding::Valid => "valid",
        }
    }

    /// The mode a `padding` value names, if any (`tag` as UTF-8 bytes, so a
    /// reader without `str` in hand can ask too).
    pub fn from_tag(tag: &[u8]) -> Option<Padding> {
        [Padding::Same, Padding::Valid]
            .into_iter()
            .find(|p| p.tag().as_bytes() == tag)
    }

    /// Output length and padding before (top/left) along one axis, for a window
    /// of `kernel` cells moved by `stride`:
    ///
    /// - `valid`: `out = ⌊(in − k) / s⌋ + 1`, no padding (`None` when `in < k`);
    /// - `same`: `out = ⌈in / s⌉`, `pad_total = max((out − 1)·s + k − in, 0)`,
    ///   `pad_before = ⌊pad_total / 2⌋` (the rest goes after: bottom/right).
    ///
    /// `None` also when `input`, `kernel` or `stride` is 0, or when the
    /// arithmetic would overflow (possible with a 32-bit `usize`): this never
    /// panics.
    pub fn output_and_pad(
        self,
        input: usize,
        kernel: usize,
        stride: usize,
    ) -> Option<(usize, usize)> {
        if input == 0 || kernel == 0 || stride == 0 {
            return None;
        }
        match self {
            Padding::Valid => (input >= kernel).then(|| ((input - kernel) / stride + 1, 0)),
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = (out - 1)
                    .checked_mul(stride)?
                    .checked_add(kernel)?
                    .saturating_sub(input);
                Some((out, total / 2))
            }
        }
    }
}

/// The layer types: the `type` field of an entry of the spec's `layers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// `conv2d`: fields `name`, `filters`, `kernel`, `stride`, `padding`.
    Conv2d,
    /// `relu`.
    Relu,
    /// `gelu`: `x · Φ(x)` ([`gelu`]).
    Gelu,
    /// `maxpool2d`: fields `size`, `stride`, `padding`.
    MaxPool2d,
    /// `global_avg_pool`.
    GlobalAvgPool,
    /// `batchnorm`: fields `name`, `momentum`, `epsilon`.
    BatchNorm,
    /// `flatten`.
    Flatten,
    /// `dropout`: field `rate` (identity at inference).
    Dropout,
    /// `dense`: fields `name`, `units`.
    Dense,
    /// `add` (residual connection): field `from`.
    Add,
}

impl LayerKind {
    /// Every layer type, in the order of FORMAT.md's table.
    pub const ALL: [LayerKind; 10] = [
        LayerKind::Conv2d,
        LayerKind::Relu,
        LayerKind::Gelu,
        LayerKind::MaxPool2d,
        LayerKind::GlobalAvgPool,
        LayerKind::BatchNorm,
        LayerKind::Flatten,
        LayerKind::Dropout,
        LayerKind::Dense,
        LayerKind::Add,
    ];

    /// The `type` tag, as written in spec files.
    pub const fn tag(self) -> &'static str {
        match self {
            LayerKind::Conv2d => "conv2d",
            LayerKind::Relu => "relu",
            LayerKind::Gelu => "gelu",
            LayerKind::MaxPool2d => "maxpool2d",
            LayerKind::GlobalAvgPool => "global_avg_pool",
            LayerKind::BatchNorm => "batchnorm",
            LayerKind::Flatten => "flatten",
            LayerKind::Dropout => "dropout",
            LayerKind::Dense => "dense",
            LayerKind::Add => "add",
        }
    }

    /// The layer type a `type` tag names, if any (`tag` as UTF-8 bytes).
    pub fn from_tag(tag: &[u8]) -> Option<LayerKind> {
        LayerKind::ALL
            .into_iter()
            .find(|k| k.tag().as_bytes() == tag)
    }

    /// The parameter tensors of this layer type, in a fixed order (the slot
    /// order): `weight, bias` for conv2d and dense; `gamma, beta, moving_mean,
    /// moving_variance` for batchnorm; none for the others. A tensor's key is
    /// `{layer name}.{suffix}`.
    pub const fn params(self) -> &'static [Param] {
        match self {
            LayerKind::Conv2d | LayerKind::Dense => &[Param::Weight, Param::Bias],
            LayerKind::BatchNorm => &[
                Param::Gamma,
                Param::Beta,
                Param::MovingMean,
                Param::MovingVariance,
            ],
            LayerKind::Relu
            | LayerKind::Gelu
            | LayerKind::MaxPool2d
            | LayerKind::GlobalAvgPool
            | LayerKind::Flatten
            | LayerKind::Dropout
            | LayerKind::Add => &[],
        }
    }

    /// The parameter tensors of this layer type in a model of `precision`, in
    /// slot order: as [`LayerKind::params`] for `f32`; an int8 conv2d or dense
    /// adds `weight_scale` (an int8 model has no batchnorm: it is folded into
    /// the convolution before quantizing).
    pub const fn params_in(self, precision: Precision) -> &'static [Param] {
        match (precision, self) {
            (Precision::Int8, LayerKind::Conv2d | LayerKind::Dense) => {
                &[Param::Weight, Param::Bias, Param::WeightScale]
            }
            (Precision::Int8, LayerKind::BatchNorm) => &[],
            _ => self.params(),
        }
    }

    /// Whether a model of `precision` may hold this layer type (an int8 model
    /// has no batchnorm).
    pub const fn allowed_in(self, precision: Precision) -> bool {
        !matches!((precision, self), (Precision::Int8, LayerKind::BatchNorm))
    }

    /// The prefix of the default names of this type's layers (`conv`, `bn`,
    /// `dense`): the parameter layers, and only they, always have a name.
    pub const fn default_name_prefix(self) -> Option<&'static str> {
        match self {
            LayerKind::Conv2d => Some("conv"),
            LayerKind::BatchNorm => Some("bn"),
            LayerKind::Dense => Some("dense"),
            LayerKind::Relu
            | LayerKind::Gelu
            | LayerKind::MaxPool2d
            | LayerKind::GlobalAvgPool
            | LayerKind::Flatten
            | LayerKind::Dropout
            | LayerKind::Add => None,
        }
    }

    /// The default name of the `rank`-th layer of this type (counting from 1):
    /// the prefix followed by `rank` in decimal (`conv1`). `None` for a type
    /// without default names.
    pub fn default_name(self, rank: usize) -> Option<DefaultName> {
        self.default_name_prefix()
            .map(|prefix| DefaultName::new(prefix, rank))
    }
}

/// Most parameter tensors of one layer ([`LayerKind::params`]).
pub const MAX_PARAMS: usize = 4;

/// Most dimensions of a parameter tensor (an int8 conv2d weight has 5).
pub const MAX_RANK: usize = 5;

/// A parameter tensor of a layer, named by the suffix after `{layer name}.`
/// in its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    /// `{name}.weight` (conv2d, dense).
    Weight,
    /// `{name}.bias` (conv2d, dense).
    Bias,
    /// `{name}.gamma` (batchnorm).
    Gamma,
    /// `{name}.beta` (batchnorm).
    Beta,
    /// `{name}.moving_mean` (batchnorm).
    MovingMean,
    /// `{name}.moving_variance` (batchnorm).
    MovingVariance,
    /// `{name}.weight_scale` (int8 conv2d, dense): the scale of each output
    /// channel's weights.
    WeightScale,
}

impl Param {
    /// Every parameter.
    pub const ALL: [Param; 7] = [
        Param::Weight,
        Param::Bias,
        Param::Gamma,
        Param::Beta,
        Param::MovingMean,
        Param::MovingVariance,
        Param::WeightScale,
    ];

    /// The suffix after `{name}.` in the tensor's key.
    pub const fn suffix(self) -> &'static str {
        match self {
            Param::Weight => "weight",
            Param::Bias => "bias",
            Param::Gamma => "gamma",
            Param::Beta => "beta",
            Param::MovingMean => "moving_mean",
            Param::MovingVariance => "moving_variance",
            Param::WeightScale => "weight_scale",
        }
    }

    /// The parameter a key suffix names, if any (`suffix` as UTF-8 bytes).
    pub fn from_suffix(suffix: &[u8]) -> Option<Param> {
        Param::ALL
            .into_iter()
            .find(|p| p.suffix().as_bytes() == suffix)
    }
}

/// Shows the suffix (`weight`, `moving_mean`, …).
impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// A parameter layer with the sizes that fix its tensors' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamLayer {
    /// `conv2d`: `weight [kernel, kernel, in_channels, filters]`, `bias [filters]`
    /// (the weight layout is `[ky][kx][ci][co]`).
    Conv2d {
        /// Side of the square kernel.
        kernel: usize,
        /// Channels of the layer's input.
        in_channels: usize,
        /// Output channels.
        filters: usize,
    },
    /// `batchnorm`: `gamma`, `beta`, `moving_mean`, `moving_variance`, all `[channels]`.
    BatchNorm {
        /// Channels of the layer's input (and output).
        channels: usize,
    },
    /// `dense`: `weight [in_features, units]`, `bias [units]`.
    Dense {
        /// Length of the input vector.
        in_features: usize,
        /// Outputs.
        units: usize,
    },
}

impl ParamLayer {
    /// The layer type.
    pub const fn kind(self) -> LayerKind {
        match self {
            ParamLayer::Conv2d { .. } => LayerKind::Conv2d,
            ParamLayer::BatchNorm { .. } => LayerKind::BatchNorm,
            ParamLayer::Dense { .. } => LayerKind::Dense,
        }
    }

    /// The shape of tensor `param` of this layer; `None` when the layer has no
    /// such tensor.
    pub const fn shape(self, param: Param) -> Option<TensorShape> {
        let dims = match (self, param) {
            (
                ParamLayer::Conv2d {
                    kernel,
                    in_channels,
                    filters,
                },
                Param::Weight,
            ) => TensorShape::new([kernel, kernel, in_channels, filters, 0], 4),
            (ParamLayer::Conv2d { filters, .. }, Param::Bias) => {
                TensorShape::new([filters, 0, 0, 0, 0], 1)
            }
            (
                ParamLayer::BatchNorm { channels },
                Param::Gamma | Param::Beta | Param::MovingMean | Param::MovingVariance,
            ) => TensorShape::new([channels, 0, 0, 0, 0], 1),
            (ParamLayer::Dense { in_features, units }, Param::Weight) => {
                TensorShape::new([in_features, units, 0, 0, 0], 2)
            }
            (ParamLayer::Dense { units, .. }, Param::Bias) => {
                TensorShape::new([units, 0, 0, 0, 0], 1)
            }
            _ => return None,
        };
        Some(dims)
    }

    /// The shape and dtype of tensor `param` of this layer in a model of
    /// `precision`; `None` when the layer has no such tensor. In an int8 model
    /// (FORMAT.md, "Int8 models"): `weight` is `I8` in groups of
    /// [`quant::GROUP`] input channels, `[kernel, kernel, ⌈in_channels/4⌉,
    /// filters, 4]` for conv2d and `[⌈in_features/4⌉, units, 4]` for dense;
    /// `bias` is `I32`; `weight_scale` is `F32` with one value per output.
    pub const fn tensor(self, param: Param, precision: Precision) -> Option<(TensorShape, Dtype)> {
        let int8 = match precision {
            Precision::F32 => {
                return match self.shape(param) {
                    Some(s) => Some((s, Dtype::F32)),
                    None => None,
                }
            }
            Precision::Int8 => match (self, param) {
                (
                    ParamLayer::Conv2d {
                        kernel,
                        in_channels,
                        filters,
                    },
                    Param::Weight,
                ) => (
                    TensorShape::new(
                        [
                            kernel,
                            kernel,
                            quant::groups(in_channels),
                            filters,
                            quant::GROUP,
                        ],
                        5,
                    ),
                    Dtype::I8,
                ),
                (ParamLayer::Dense { in_features, units }, Param::Weight) => (
                    TensorShape::new([quant::groups(in_features), units, quant::GROUP, 0, 0], 3),
                    Dtype::I8,
                ),
                (
                    ParamLayer::Conv2d { filters: n, .. } | ParamLayer::Dense { units: n, .. },
                    Param::Bias,
                ) => (TensorShape::new([n, 0, 0, 0, 0], 1), Dtype::I32),
                (
                    ParamLayer::Conv2d { filters: n, .. } | ParamLayer::Dense { units: n, .. },
                    Param::WeightScale,
                ) => (TensorShape::new([n, 0, 0, 0, 0], 1), Dtype::F32),
                _ => return None,
            },
        };
        Some(int8)
    }

    /// The layer's tensors with their shapes, in slot order ([`LayerKind::params`]).
    pub fn tensors(self) -> impl Iterator<Item = (Param, TensorShape)> {
        self.kind()
            .params()
            .iter()
            .filter_map(move |&p| Some((p, self.shape(p)?)))
    }
}

/// The shape of a parameter tensor: 1 to [`MAX_RANK`] dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorShape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl TensorShape {
    const fn new(dims: [usize; MAX_RANK], rank: usize) -> TensorShape {
        TensorShape { dims, rank }
    }

    /// The dimensions, outermost first (as in the header's `shape`).
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// Number of values (the product of the dimensions); `None` on overflow.
    pub fn num_values(&self) -> Option<usize> {
        self.dims()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Bytes of the tensor's data ([`DTYPE_BYTES`] per value); `None` on overflow.
    pub fn num_bytes(&self) -> Option<usize> {
        self.num_bytes_as(Dtype::F32)
    }

    /// Bytes of the tensor's data as `dtype`; `None` on overflow.
    pub fn num_bytes_as(&self, dtype: Dtype) -> Option<usize> {
        self.num_values()?.checked_mul(dtype.bytes())
    }
}

/// Longest default name: `dense` and the 20 digits of a 64-bit rank.
const MAX_DEFAULT_NAME: usize = 25;

/// A default layer name (`conv1`, `bn2`, `dense3`), held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DefaultName {
    bytes: [u8; MAX_DEFAULT_NAME],
    len: usize,
}

impl DefaultName {
    /// `prefix` (at most 5 ASCII bytes) followed by the decimal digits of `n`.
    fn new(prefix: &str, n: usize) -> DefaultName {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut v = n;
        loop {
            start -= 1;
            digits[start] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let mut name = DefaultName {
            bytes: [0; MAX_DEFAULT_NAME],
            len: 0,
        };
        for &b in prefix.as_bytes().iter().chain(&digits[start..]) {
            name.bytes[name.len] = b;
            name.len += 1;
        }
        name
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // ASCII prefix and digits, so always UTF-8.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl AsRef<str> for DefaultName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for DefaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for DefaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Hands out default names in spec order.
///
/// The rule: the parameter layers of each type are numbered 1, 2, … in order of
/// appearance, *counting the layers that carry a name of their own*; an unnamed
/// one gets its prefix and number. So `conv2d, conv2d "mine", conv2d` are
/// named `conv1, mine, conv3`. Call [`DefaultNames::next`] once for every
/// layer, named or not, and use the answer when the layer has no name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultNames {
    /// Layers seen so far of each type with default names: conv2d, batchnorm, dense.
    counts: [usize; 3],
}

impl DefaultNames {
    /// Before the first layer.
    pub const fn new() -> DefaultNames {
        DefaultNames { counts: [0; 3] }
    }

    /// The default name of the next layer of the spec, of type `kind`; `None`
    /// for a type without default names (whose layers have no name unless given one).
    pub fn next(&mut self, kind: LayerKind) -> Option<DefaultName> {
        let slot = match kind {
            LayerKind::Conv2d => 0,
            LayerKind::BatchNorm => 1,
            LayerKind::Dense => 2,
            _ => return None,
        };
        self.counts[slot] = self.counts[slot].saturating_add(1);
        kind.default_name(self.counts[slot])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_follows_tensorflow() {
        // 5 → ceil(5/2) = 3 with total padding 1, all of it after.
        assert_eq!(Padding::Same.output_and_pad(5, 2, 2), Some((3, 0)));
        assert_eq!(Padding::Same.output_and_pad(32, 3, 1), Some((32, 1)));
        assert_eq!(Padding::Same.output_and_pad(32, 5, 1), Some((32, 2)));
        assert_eq!(Padding::Same.output_and_pad(8, 3, 2), Some((4, 0)));
        assert_eq!(Padding::Same.output_and_pad(7, 3, 2), Some((4, 1)));
        assert_eq!(Padding::Valid.output_and_pad(32, 3, 1), Some((30, 0)));
        assert_eq!(Padding::Valid.output_and_pad(2, 3, 1), None);
        // Valid floors: (8 − 3) / 2 + 1 = 3.
        assert_eq!(Padding::Valid.output_and_pad(8, 3, 2), Some((3, 0)));
        // A kernel larger than the input is fine with same padding.
        assert_eq!(Padding::Same.output_and_pad(1, 3, 1), Some((1, 1)));
    }

    #[test]
    fn padding_never_overflows_or_panics() {
        // The largest sizes infer accepts (2^16): no overflow, whatever the usize width.
        let m = 1usize << 16;
        assert_eq!(
            Padding::Same.output_and_pad(m, m, 1),
            Some((m, (m - 1) / 2))
        );
        assert_eq!(Padding::Same.output_and_pad(m, m, m), Some((1, 0)));
        assert_eq!(Padding::Valid.output_and_pad(m, 1, m), Some((1, 0)));
        // (out − 1)·s + k overflows.
        assert_eq!(Padding::Same.output_and_pad(usize::MAX, 2, 1), None);
        assert_eq!(
            Padding::Same.output_and_pad(usize::MAX, 1, usize::MAX),
            Some((1, 0))
        );
        // Zero sizes.
        for p in [Padding::Same, Padding::Valid] {
            assert_eq!(p.output_and_pad(0, 1, 1), None);
            assert_eq!(p.output_and_pad(4, 0, 1), None);
            assert_eq!(p.output_and_pad(4, 1, 0), None);
        }
    }

    #[test]
    fn padding_tags() {
        assert_eq!(Padding::from_tag(b"same"), Some(Padding::Same));
        assert_eq!(Padding::from_tag(b"valid"), Some(Padding::Valid));
        assert_eq!(Padding::from_tag(b"Same"), None);
        assert_eq!(Padding::Valid.tag(), "valid");
        assert_eq!(defaults::CONV_PADDING, Padding::Same);
        assert_eq!(defaults::POOL_PADDING, Padding::Valid);
    }

    #[test]
    fn layer_tags_round_trip() {
        for kind in LayerKind::ALL {
            assert_eq!(LayerKind::from_tag(kind.tag().as_bytes()), Some(kind));
        }
        assert_eq!(LayerKind::from_tag(b"lstm"), None);
        assert_eq!(LayerKind::from_tag(b""), None);
        assert_eq!(LayerKind::MaxPool2d.tag(), "maxpool2d");
        assert_eq!(LayerKind::GlobalAvgPool.tag(), "global_avg_pool");
    }

    #[test]
    fn parameter_layers_have_names_and_tensors() {
        for kind in LayerKind::ALL {
            // Exactly the parameter layers have default names.
            assert_eq!(
                kind.default_name_prefix().is_some(),
                !kind.params().is_empty(),
                "{kind:?}"
            );
            assert!(kind.params().len() <= MAX_PARAMS);
        }
        let suffixes = |k: LayerKind| {
            let mut out = [""; MAX_PARAMS];
            for (o, p) in out.iter_mut().zip(k.params()) {
                *o = p.suffix();
            }
            out
        };
        assert_eq!(suffixes(LayerKind::Conv2d), ["weight", "bias", "", ""]);
        assert_eq!(suffixes(LayerKind::Dense), ["weight", "bias", "", ""]);
        assert_eq!(
            suffixes(LayerKind::BatchNorm),
            ["gamma", "beta", "moving_mean", "moving_variance"]
        );
        for p in Param::ALL {
            assert_eq!(Param::from_suffix(p.suffix().as_bytes()), Some(p));
        }
        assert_eq!(Param::from_suffix(b"running_mean"), None);
    }

    #[test]
    fn parameter_shapes() {
        let conv = ParamLayer::Conv2d {
            kernel: 3,
            in_channels: 16,
            filters: 32,
        };
        assert_eq!(conv.kind(), LayerKind::Conv2d);
        assert_eq!(conv.shape(Param::Weight).unwrap().dims(), [3, 3, 16, 32]);
        assert_eq!(conv.shape(Param::Bias).unwrap().dims(), [32]);
        assert_eq!(conv.shape(Param::Gamma), None);
        let w = conv.shape(Param::Weight).unwrap();
        assert_eq!((w.num_values(), w.num_bytes()), (Some(4608), Some(18432)));

        let dense = ParamLayer::Dense {
            in_features: 2048,
            units: 128,
        };
        let mut it = dense.tensors();
        let (p, s) = it.next().unwrap();
        assert_eq!((p, s.dims()), (Param::Weight, &[2048, 128][..]));
        let (p, s) = it.next().unwrap();
        assert_eq!((p, s.dims()), (Param::Bias, &[128][..]));
        assert!(it.next().is_none());

        let bn = ParamLayer::BatchNorm { channels: 64 };
        assert_eq!(bn.tensors().count(), 4);
        assert!(bn.tensors().all(|(_, s)| s.dims() == [64]));
        assert_eq!(bn.shape(Param::Weight), None);
        for layer in [conv, dense, bn] {
            assert!(layer
                .tensors()
                .map(|(p, _)| p)
                .eq(layer.kind().params().iter().copied()));
        }

        let huge = ParamLayer::Dense {
            in_features: usize::MAX,
            units: 2,
        };
        assert_eq!(huge.shape(Param::Weight).unwrap().num_values(), None);
        assert_eq!(huge.shape(Param::Bias).unwrap().num_bytes(), Some(8));
    }

    #[test]
    fn default_names_count_named_layers_too() {
        use LayerKind::*;
        let mut names = DefaultNames::new();
        let got = [
            Conv2d, BatchNorm, Relu, Conv2d, Conv2d, MaxPool2d, Add, Flatten, Dense, Dense,
        ]
        .map(|k| names.next(k));
        let want = [
            Some("conv1"),
            Some("bn1"),
            None,
            Some("conv2"),
            Some("conv3"),
            None,
            None,
            None,
            Some("dense1"),
            Some("dense2"),
        ];
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.as_ref().map(DefaultName::as_str), w);
        }
        assert_eq!(Dense.default_name(10).unwrap().as_str(), "dense10");
        assert_eq!(Conv2d.default_name(0).unwrap().as_str(), "conv0");
        let longest = Dense.default_name(usize::MAX).unwrap();
        assert!(longest.as_str().starts_with("dense"));
        assert_eq!(longest.as_str()[5..].parse::<usize>(), Ok(usize::MAX));
        assert_eq!(Relu.default_name(1), None);
    }

    #[test]
    fn display() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(Param::MovingVariance.to_string(), "moving_variance");
        let bn7 = LayerKind::BatchNorm.default_name(7).unwrap();
        assert_eq!(bn7.to_string(), "bn7");
        assert_eq!(std::format!("{bn7:?}"), "\"bn7\"");
    }

    #[test]
    fn format_constants() {
        assert_eq!(FORMAT, "cifar-cnn/1");
        assert_eq!(
            [KEY_FORMAT, KEY_ARCHITECTURE, KEY_CLASS_NAMES],
            ["format", "architecture", "class_names"]
        );
        assert_eq!((DTYPE, DTYPE_BYTES), ("F32", 4));
        assert_eq!(
            (
                defaults::CONV_STRIDE,
                defaults::POOL_SIZE,
                defaults::POOL_STRIDE
            ),
            (1, 2, 2)
        );
        assert_eq!((defaults::BN_MOMENTUM, defaults::BN_EPSILON), (0.99, 0.001));
    }
}
