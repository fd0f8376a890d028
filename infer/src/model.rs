//! [`Model`]: a checked, zero-copy view of a model file, and the forward pass.

use crate::arch::{self, Kind, Shape, Spec, MAX_LAYERS};
use crate::error::{AddProblem, Param, TensorProblem};
use crate::layers::conv::{self, ConvGeom, Kernel};
use crate::layers::conv_i8::{self, KernelI8, QuantConv};
use crate::layers::norm::{self, BatchNormParams};
use crate::layers::pool::{self, PoolGeom};
use crate::layers::winograd;
use crate::quant::Activations;
use crate::safetensors::{self, Metadata, TensorEntry};
use crate::scratch::{self, Demand};
use crate::{math, Error};
use core::fmt;
use model_format::class_names::ClassNames;
use model_format::quant::{self as q, ActQuant, AddMultipliers, GROUP};
use model_format::{Param as P, ParamLayer, Precision, FORMAT, MAX_PARAMS};

/// The most capable kernels [`Model::classify`] may run. The CPU's support is
/// detected once at run time; a backend it lacks falls back to the best one
/// below it, down to [`Backend::Portable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// The fastest kernels this CPU supports.
    #[default]
    Auto,
    /// AVX-512F (x86-64).
    Avx512,
    /// AVX2 + FMA (x86-64).
    Avx2,
    /// Plain Rust only, on every CPU.
    Portable,
}

/// The result of [`Model::classify`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Index of the most probable class (the first one on ties).
    pub class: usize,
    /// Its probability.
    pub probability: f32,
}

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvPath {
    /// `conv::conv2d` (every int8 convolution, dense layers).
    Direct,
    /// `conv::conv2d_small`, for an output of at most 16 pixels, with its
    /// workspace between input and output.
    SmallImage,
    /// Int8 models: `conv_i8::conv2d` with the workspace for a copy of the
    /// input padded left and right, between input and output (where
    /// `conv_i8::padded_applies`).
    Padded,
    /// `f32` models: `winograd::conv2d` when [`Model::with_winograd`] is on
    /// (where `winograd::applies`), else direct.
    Winograd,
}

/// What one layer computes, with its parameter bytes.
#[derive(Clone, Copy)]
enum Op<'a> {
    /// conv2d, and dense as a 1×1 convolution; `relu` when a following relu
    /// layer is fused into it.
    Conv {
        geom: ConvGeom,
        weight: &'a [u8],
        bias: &'a [u8],
        /// Int8 models: the per-channel weight scales (empty for `f32`).
        weight_scale: &'a [u8],
        relu: bool,
        /// How it is computed.
        path: ConvPath,
    },
    MaxPool(PoolGeom),
    GlobalAvgPool,
    /// batchnorm; `relu` when a following relu layer is fused into it.
    BatchNorm {
        params: BatchNormParams<'a>,
        relu: bool,
    },
    Relu,
    Gelu,
    /// add: the skip input is the stash starting at scratch index `stash`,
    /// the output of layer `source`; `m` are an int8 model's multipliers;
    /// `relu` when a following relu layer is fused into it.
    Add {
        stash: usize,
        source: usize,
        m: AddMultipliers,
        relu: bool,
    },
    /// flatten (NHWC data is already in flattened order), dropout (identity at
    /// inference), and a relu fused into the layer before it.
    Identity,
}

/// Debug output shows the geometry and the parameter sizes, not the weights.
impl fmt::Debug for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Conv {
                geom,
                weight,
                bias,
                weight_scale,
                relu,
                path,
            } => f
                .debug_struct("Conv")
                .field("geom", geom)
                .field("weight_bytes", &weight.len())
                .field("bias_bytes", &bias.len())
                .field("weight_scale_bytes", &weight_scale.len())
                .field("relu", relu)
                .field("path", path)
                .finish(),
            Op::MaxPool(g) => f.debug_tuple("MaxPool").field(g).finish(),
            Op::GlobalAvgPool => f.write_str("GlobalAvgPool"),
            Op::BatchNorm { params, relu } => f
                .debug_struct("BatchNorm")
                .field("channels", &(params.gamma.len() / 4))
                .field("epsilon", &params.epsilon)
                .field("relu", relu)
                .finish(),
            Op::Relu => f.write_str("Relu"),
            Op::Gelu => f.write_str("Gelu"),
            Op::Add {
                stash,
                source,
                m,
                relu,
            } => f
                .debug_struct("Add")
                .field("stash", stash)
                .field("source", source)
                .field("m", m)
                .field("relu", relu)
                .finish(),
            Op::Identity => f.write_str("Identity"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Layer<'a> {
    op: Op<'a>,
    /// Values in the layer's input and output.
    in_len: usize,
    out_len: usize,
    /// Output channels (for batchnorm's per-channel tables).
    channels: usize,
    /// The layer's working region is `scratch[..region]` (see `scratch.rs`).
    region: usize,
    /// Where its output is stashed for a later layer (an add's `from`, an
    /// `input`), if one reads it.
    stash: Option<usize>,
    /// Where the stash it reads lies, when its `input` names an earlier layer
    /// (its `in_len` values are copied to the front of the region first).
    input_stash: Option<usize>,
    /// Int8 models: the quantization of its input and output.
    q_in: ActQuant,
    q_out: ActQuant,
}

const EMPTY_LAYER: Layer<'static> = Layer {
    op: Op::Identity,
    in_len: 0,
    out_len: 0,
    channels: 0,
    region: 0,
    stash: None,
    input_stash: None,
    q_in: ActQuant::INPUT,
    q_out: ActQuant::INPUT,
};

/// A model, parsed and checked, borrowing its weights from the file's bytes.
///
/// Loading ([`Model::from_bytes`]) and classifying ([`Model::classify`]) never
/// allocate: the layers live in a fixed array of `N` ([`MAX_LAYERS`] unless
/// given: on a microcontroller, a capacity that just fits the model keeps the
/// `Model` and its loading small, see [`Model::load`]), the weights stay in
/// the caller's buffer, and activations go to a caller-provided scratch slice
/// of [`Model::scratch_len`] `f32`s.
///
/// ```no_run
/// # fn demo(bytes: &[u8], image: &[u8]) -> Result<(), infer::Error> {
/// let model = infer::Model::from_bytes(bytes)?;
/// let mut scratch = [0f32; 65_536]; // ≥ model.scratch_len()
/// let mut probs = [0f32; 10];       // ≥ model.num_classes()
/// let top = model.classify(image, &mut scratch, &mut probs)?;
/// let name = model.class_name(top.class).unwrap_or("?");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Model<'a, const N: usize = MAX_LAYERS> {
    input: Shape,
    layers: [Layer<'a>; N],
    num_layers: usize,
    num_classes: usize,
    /// Scratch elements: `f32`s, or bytes in an int8 model.
    scratch_elems: usize,
    /// `f32`s of Winograd workspace after them (used when `winograd` is on):
    /// the most that a layer running by Winograd needs.
    winograd_elems: usize,
    /// Whether the layers that [`Model::with_winograd`] names run by Winograd.
    winograd: bool,
    class_names: Option<ClassNames<'a>>,
    backend: Backend,
    precision: Precision,
}

impl<const N: usize> fmt::Debug for Model<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("input", &self.input)
            .field("layers", &&self.layers[..self.num_layers])
            .field("num_classes", &self.num_classes)
            .field("scratch_elems", &self.scratch_elems)
            .field("winograd_elems", &self.winograd_elems)
            .field("winograd", &self.winograd)
            .field("precision", &self.precision)
            .field("class_names", &self.class_names)
            .field("backend", &self.backend)
            .finish()
    }
}

/// Parameter tensors found so far: byte range in the data section, per layer
/// and parameter slot (the order of `LayerKind::params`).
type Found<const N: usize> = [[Option<(usize, usize)>; MAX_PARAMS]; N];

/// The parameters a layer kind has in a model of `precision`, in slot order.
fn params_of(kind: &Kind, precision: Precision) -> &'static [Param] {
    kind.layer_kind().params_in(precision)
}

impl<'a> Model<'a> {
    /// Parses and checks a model file in place (see `docs/FORMAT.md`): a model
    /// of up to [`MAX_LAYERS`] layers ([`Model::load`] with that capacity).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        Self::load(bytes)
    }
}

impl<'a, const N: usize> Model<'a, N> {
    /// Parses and checks a model file in place (see `docs/FORMAT.md`), for a
    /// model of at most `N` layers ([`Error::TooManyLayers`] otherwise). The
    /// `Model` and the tables used while loading take space in proportion to
    /// `N`: `Model::<'_, 28>::load(bytes)` holds ResNet-8 in 3.3 KB on a
    /// 32-bit microcontroller, against 7.5 KB for [`Model::from_bytes`]'s 64.
    ///
    /// Checks the safetensors header, the `format`, `architecture`,
    /// `class_names` and (int8 models) `quantization` metadata, every layer's
    /// shapes, and every tensor: dtype (`F32`; `I8`/`I32` in int8 models), the
    /// shape the architecture implies, offsets inside the data, no overlap,
    /// none missing, none extra; in an int8 model also the values that the
    /// integer arithmetic relies on (see `Model::check_int8`). Never panics
    /// and never reads outside `bytes`, whatever they hold. The buffer needs
    /// no alignment.
    // Not inlined, so that its temporaries (the parsed architecture, the
    // tensor table) leave the caller's stack frame when it returns.
    #[inline(never)]
    pub fn load(bytes: &'a [u8]) -> Result<Model<'a, N>, Error> {
        let file = safetensors::split(bytes)?;

        // Pass 1 over the header: the metadata.
        let mut meta = Metadata::default();
        safetensors::walk(&file, Some(&mut meta), &mut |_| Ok(()))?;
        if let Some((at, raw)) = meta.format {
            if !safetensors::unescaped_eq(raw, at, FORMAT.as_bytes())? {
                return Err(Error::Metadata("format is not cifar-cnn/1"));
            }
        }
        let (at, raw) = meta
            .architecture
            .ok_or(Error::Metadata("no `architecture` entry"))?;
        let mut spec = Spec::<N>::EMPTY;
        arch::parse(raw, at, &mut spec)?;
        let acts = match meta.quantization {
            None => None,
            Some((at, raw)) => Some(crate::quant::parse::<N>(raw, at)?),
        };

        // The layers, with their shapes; parameters come next.
        let mut model = Model {
            input: spec.input,
            layers: [EMPTY_LAYER; N],
            num_layers: spec.layers().len(),
            num_classes: 0,
            scratch_elems: 0,
            winograd_elems: 0,
            winograd: false,
            class_names: None,
            backend: Backend::Auto,
            precision: if acts.is_some() {
                Precision::Int8
            } else {
                Precision::F32
            },
        };
        model.plan(&spec)?;

        // Pass 2: the tensors.
        let mut found: Found<N> = [[None; MAX_PARAMS]; N];
        let data_len = file.data.len();
        safetensors::walk(&file, None, &mut |t| {
            place_tensor(&model, &spec, t, data_len, &mut found)
        })?;
        check_overlaps(&spec, &found, model.precision)?;
        check_values(&model, &spec, &found, file.data)?;
        model.attach(&spec, &found, file.data);
        if let Some(acts) = &acts {
            model.check_int8(&spec, acts)?;
        }

        model.class_names = match meta.class_names {
            None => None,
            Some((_, raw)) => Some(class_names(raw, model.num_classes)?),
        };
        Ok(model)
    }

    /// Computes every layer's shapes and geometry, the scratch layout and the
    /// number of classes; fuses `relu` layers into the conv/dense before them.
    // Not inlined: its locals would otherwise add to `from_bytes`'s stack
    // frame for the whole load, which matters on a microcontroller.
    #[inline(never)]
    fn plan(&mut self, spec: &Spec<N>) -> Result<(), Error> {
        let too_big = Error::Metadata("model too large for this platform");
        let mut shape = spec.input;
        // Every layer's output shape (an add checks its source's) and what it
        // asks of the scratch.
        let mut shapes = [Shape::default(); N];
        let mut demands = [Demand::default(); N];
        // Whether a layer other than the next reads each layer's output.
        let mut read_later = [false; N];
        for (index, l) in spec.layers().iter().enumerate() {
            let err = |problem| Error::Layer { index, problem };
            // The activation it reads: the previous output, or the one its
            // `input` names (`source < index`, checked by the parser).
            if let Some(source) = l.input {
                shape = shapes[source];
                read_later[source] = true;
            }
            if !l.kind.layer_kind().allowed_in(self.precision) {
                return Err(err(
                    "an int8 model has no batchnorm (it is folded into the layer before)",
                ));
            }
            let in_len = shape.len().ok_or(too_big)?;
            let (op, out) = match l.kind {
                Kind::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                } => {
                    let too_small = err("kernel larger than the input with valid padding");
                    let (h, pad_top) = padding
                        .output_and_pad(shape.h, kernel, stride)
                        .ok_or(too_small)?;
                    let (w, pad_left) = padding
                        .output_and_pad(shape.w, kernel, stride)
                        .ok_or(too_small)?;
                    let output = Shape { h, w, c: filters };
                    let geom = ConvGeom {
                        input: shape,
                        output,
                        k: kernel,
                        stride,
                        pad_top,
                        pad_left,
                    };
                    // (Int8 models: direct, or on a padded copy; the f32
                    // small-image path, im2col, measured no faster there.)
                    let path = if self.precision != Precision::F32 {
                        if conv_i8::padded_applies(&geom) {
                            ConvPath::Padded
                        } else {
                            ConvPath::Direct
                        }
                    } else if conv::small_applies(&geom) {
                        ConvPath::SmallImage
                    } else if cfg!(feature = "winograd") && winograd::applies(&geom) {
                        let ws = winograd::workspace_len(&geom).ok_or(too_big)?;
                        self.winograd_elems = self.winograd_elems.max(ws);
                        ConvPath::Winograd
                    } else {
                        ConvPath::Direct
                    };
                    (conv_op(geom, path), output)
                }
                Kind::Dense { units } => {
                    if !shape.is_vector() {
                        return Err(err(
                            "dense input must be a vector (add flatten or global_avg_pool)",
                        ));
                    }
                    let geom = ConvGeom::dense(shape.c, units);
                    (conv_op(geom, ConvPath::Direct), geom.output)
                }
                Kind::MaxPool2d {
                    size,
                    stride,
                    padding,
                } => {
                    let too_small = err("pool larger than the input with valid padding");
                    let (h, pad_top) = padding
                        .output_and_pad(shape.h, size, stride)
                        .ok_or(too_small)?;
                    let (w, pad_left) = padding
                        .output_and_pad(shape.w, size, stride)
                        .ok_or(too_small)?;
                    let output = Shape { h, w, c: shape.c };
                    let geom = PoolGeom {
                        input: shape,
                        output,
                        size,
                        stride,
                        pad_top,
                        pad_left,
                    };
                    (Op::MaxPool(geom), output)
                }
                Kind::GlobalAvgPool => (
                    Op::GlobalAvgPool,
                    Shape {
                        h: 1,
                        w: 1,
                        c: shape.c,
                    },
                ),
                Kind::BatchNorm { epsilon } => (
                    Op::BatchNorm {
                        params: BatchNormParams {
                            gamma: &[],
                            beta: &[],
                            mean: &[],
                            var: &[],
                            epsilon,
                        },
                        relu: false,
                    },
                    shape,
                ),
                Kind::Flatten => (
                    Op::Identity,
                    Shape {
                        h: 1,
                        w: 1,
                        c: in_len,
                    },
                ),
                Kind::Dropout => (Op::Identity, shape),
                Kind::Relu => (Op::Relu, shape),
                Kind::Gelu => (Op::Gelu, shape),
                Kind::Add { source } => {
                    // `source < index`, checked by the parser.
                    read_later[source] = true;
                    if shapes[source] != shape {
                        return Err(Error::Add {
                            index,
                            problem: AddProblem::ShapeMismatch { source },
                        });
                    }
                    // The stash's place is known once the scratch is laid out.
                    (
                        Op::Add {
                            relu: false,
                            stash: 0,
                            source,
                            m: AddMultipliers::default(),
                        },
                        shape,
                    )
                }
            };
            let out_len = out.len().ok_or(too_big)?;
            // Scratch: an out-of-place layer needs its input and output side by
            // side; batchnorm needs its data and 3 tables of `channels`.
            // A small-image convolution's workspace goes between them.
            let need = match op {
                Op::Conv {
                    geom,
                    path: ConvPath::SmallImage,
                    ..
                } => conv::small_workspace_len(&geom)
                    .and_then(|ws| ws.checked_add(in_len)?.checked_add(out_len)),
                Op::Conv {
                    geom,
                    path: ConvPath::Padded,
                    ..
                } => conv_i8::padded_workspace_len(&geom)
                    .and_then(|ws| ws.checked_add(in_len)?.checked_add(out_len)),
                Op::Conv { .. } | Op::MaxPool(_) | Op::GlobalAvgPool => in_len.checked_add(out_len),
                Op::BatchNorm { .. } => out.c.checked_mul(3).and_then(|t| t.checked_add(out_len)),
                _ => Some(out_len),
            };
            demands[index] = Demand {
                need: need.ok_or(too_big)?,
                out_len,
                reads: [
                    match l.kind {
                        Kind::Add { source } => Some(source),
                        _ => None,
                    },
                    l.input,
                ],
            };
            self.layers[index] = Layer {
                op,
                in_len,
                out_len,
                channels: out.c,
                region: 0,
                stash: None,
                input_stash: None,
                q_in: ActQuant::INPUT,
                q_out: ActQuant::INPUT,
            };
            shapes[index] = out;
            shape = out;
        }
        if !shape.is_vector() {
            return Err(Error::Layer {
                index: self.num_layers - 1,
                problem: "the last layer must output a vector of class logits",
            });
        }
        self.num_classes = shape.c;
        let n = self.num_layers;
        // Every output but the logits is read (the trainer's rule too).
        for (index, next) in spec
            .layers()
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, l)| (i - 1, l))
        {
            if next.input.is_some() && !read_later[index] {
                return Err(Error::Layer {
                    index,
                    problem: "no layer reads its output (the next one names another `input`)",
                });
            }
        }
        let input_len = spec.input.len().ok_or(too_big)?;
        let layers = &mut self.layers;
        self.scratch_elems = scratch::layout::<N>(input_len, &demands[..n], |i, place| {
            layers[i].region = place.region;
            layers[i].stash = place.stash;
        })
        .ok_or(too_big)?;
        for (i, l) in spec.layers().iter().enumerate() {
            if let Some(source) = l.input {
                debug_assert!(self.layers[source].stash.is_some(), "an input is stashed");
                self.layers[i].input_stash = self.layers[source].stash;
            }
        }
        for (i, d) in demands[..n].iter().enumerate() {
            if let Some(source) = d.reads[0] {
                let stash = self.layers[source].stash;
                debug_assert!(stash.is_some(), "an add's source is stashed");
                self.layers[i].op = Op::Add {
                    stash: stash.unwrap_or(0),
                    source,
                    m: AddMultipliers::default(),
                    relu: false,
                };
            }
        }
        // Fuse relu into a conv/dense, batchnorm or add right before it
        // (saving a pass over the activation), unless another layer reads
        // that layer's own (pre-relu) output, or the relu reads another
        // layer's.
        for i in 1..n {
            if self.layers[i - 1].stash.is_some() || self.layers[i].input_stash.is_some() {
                continue;
            }
            if let (
                Op::Relu,
                Op::Conv { relu, .. } | Op::BatchNorm { relu, .. } | Op::Add { relu, .. },
            ) = (self.layers[i].op, &mut self.layers[i - 1].op)
            {
                *relu = true;
                self.layers[i].op = Op::Identity;
            }
        }
        Ok(())
    }

    /// Puts the parameter slices into the layers once all are found and checked.
    fn attach(&mut self, spec: &Spec<N>, found: &Found<N>, data: &'a [u8]) {
        for (index, l) in spec.layers().iter().enumerate() {
            let slice = |slot: usize| match found[index][slot] {
                Some((b, e)) => &data[b..e],
                None => &[][..],
            };
            match &mut self.layers[index].op {
                Op::Conv {
                    weight,
                    bias,
                    weight_scale,
                    ..
                } => {
                    *weight = slice(0);
                    *bias = slice(1);
                    *weight_scale = slice(2);
                }
                Op::BatchNorm { params: p, .. } => {
                    p.gamma = slice(0);
                    p.beta = slice(1);
                    p.mean = slice(2);
                    p.var = slice(3);
                }
                _ => {}
            }
            debug_assert_eq!(
                params_of(&l.kind, self.precision).len(),
                found[index].iter().flatten().count()
            );
        }
    }

    /// Input height, width and channels: the image must be `h × w × c` bytes, HWC.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        (self.input.h, self.input.w, self.input.c)
    }

    /// Bytes in an input image (`h · w · c`).
    pub fn input_len(&self) -> usize {
        self.input.h * self.input.w * self.input.c
    }

    /// Number of classes (width of the last layer).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Number of layers in the architecture.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// `f32` elements of scratch that [`Model::classify`] needs (multiply by 4
    /// for bytes; see [`Model::scratch_bytes`]). It is the largest, over the
    /// layers, of input + output values (two activations side by side, see
    /// [`Model::classify`]) plus the outputs kept at that point for a later
    /// `add`, and for a convolution on an output of 16 pixels or fewer its
    /// workspace (each pixel's window, side by side: 144 KiB for a 4×4 image
    /// of 256 channels, usually less than a larger layer's activations);
    /// with [`Model::with_winograd`], plus the workspace of the largest layer
    /// running by Winograd. An int8 model keeps one byte per value, and uses
    /// the scratch slice as bytes: a quarter of the `f32` figure.
    pub fn scratch_len(&self) -> usize {
        match self.precision {
            Precision::F32 => self.scratch_elems + self.workspace_len(),
            Precision::Int8 => self.scratch_elems.div_ceil(4),
        }
    }

    /// `f32`s of Winograd workspace after the activations (see
    /// [`Model::scratch_len`]).
    fn workspace_len(&self) -> usize {
        if self.winograd {
            self.winograd_elems
        } else {
            0
        }
    }

    /// [`Model::scratch_len`] in bytes.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch_len() * core::mem::size_of::<f32>()
    }

    /// The number type of the model's weights and activations.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Name of class `i` from the file's `class_names` metadata, borrowed
    /// from the file; `None` when out of range, when the file has no names, or
    /// when this name holds JSON escape sequences (a quote, a backslash, a
    /// control character: see `model_format::class_names`), which cannot be
    /// returned without a copy.
    pub fn class_name(&self, i: usize) -> Option<&'a str> {
        self.class_names?.get(i)?.as_str()
    }

    /// Runs the 3×3 stride-1 convolutions of an `f32` model by Winograd
    /// F(4×4, 3×3) where it pays (outputs of 16×16 or more with 8 input
    /// channels or more, or 8×8 with 64 or more): 4× fewer multiplies in
    /// those layers, for a workspace that [`Model::scratch_len`] then
    /// includes (the layer's transformed input, and its weights transformed
    /// for every image a block of 32 output channels at a time; the file is
    /// never written). Model 1's scratch grows from 256 KiB to about 1 MiB.
    /// Off by default, so that the scratch stays the smallest (what a
    /// microcontroller wants); it changes nothing in an int8 model. The
    /// probabilities differ from the direct convolution's by float rounding
    /// only (both are checked against the same `f64` reference in the tests).
    /// Only with the `winograd` feature (on by default).
    #[cfg(feature = "winograd")]
    #[must_use]
    pub fn with_winograd(mut self, on: bool) -> Self {
        self.winograd = on;
        self
    }

    /// [`Model::with_winograd`] in place.
    #[cfg(feature = "winograd")]
    pub fn set_winograd(&mut self, on: bool) {
        self.winograd = on;
    }

    /// Whether [`Model::with_winograd`] is on.
    pub fn winograd(&self) -> bool {
        self.winograd
    }

    /// The kernels in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Chooses the kernels (the default is [`Backend::Auto`]).
    #[must_use]
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// [`Model::with_backend`] in place (where moving the model would put a
    /// second copy of its layer table on a small stack).
    pub fn set_backend(&mut self, backend: Backend) {
        self.backend = backend;
    }

    /// The kernel to run: the backend's, capped by what the CPU supports.
    fn kernel(&self) -> Kernel {
        use crate::cpu::Level;
        let cap = match self.backend {
            Backend::Auto | Backend::Avx512 => Level::Avx512,
            Backend::Avx2 => Level::Avx2,
            Backend::Portable => Level::Portable,
        };
        let level = crate::cpu::level().min(cap);
        #[cfg(target_arch = "x86_64")]
        if level >= Level::Avx512 {
            return Kernel::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if level >= Level::Avx2 {
            return Kernel::Avx2;
        }
        let _ = level; // unused where there are no SIMD kernels
        Kernel::Portable
    }

    /// The int8 kernel to run: AVX-512 VNNI when the backend allows AVX-512
    /// and the CPU has it, else AVX2 when allowed and present, else portable;
    /// on ARMv7E-M builds the DSP kernel unless the backend is portable.
    fn kernel_i8(&self) -> KernelI8 {
        #[cfg(infer_arm_dsp)]
        if self.backend != Backend::Portable {
            return KernelI8::ArmDsp;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use crate::cpu::Level;
            let level = crate::cpu::level();
            let avx512 = matches!(self.backend, Backend::Auto | Backend::Avx512);
            if avx512 && level >= Level::Avx512Vnni {
                return KernelI8::Vnni;
            }
            if self.backend != Backend::Portable && level >= Level::Avx2 {
                return KernelI8::Avx2;
            }
        }
        KernelI8::Portable
    }

    /// Classifies one image.
    ///
    /// - `image`: `h × w × c` bytes in row-major HWC order (RGB for 3 channels);
    ///   values are scaled to `x / 255`.
    /// - `scratch`: at least [`Model::scratch_len`] `f32`s, contents ignored
    ///   (an int8 model uses it as bytes).
    ///   The activations of consecutive layers alternate between its front and
    ///   its back, so at most two are alive at once, besides the layer outputs
    ///   that a later `add` reads, kept at the very back until then.
    /// - `probs`: at least [`Model::num_classes`] values; receives the class
    ///   probabilities (the softmax of the logits) in its first `num_classes`.
    ///
    /// Returns the most probable class. Errors (never panics) when a slice has
    /// the wrong size.
    pub fn classify(
        &self,
        image: &[u8],
        scratch: &mut [f32],
        probs: &mut [f32],
    ) -> Result<Prediction, Error> {
        if image.len() != self.input_len() {
            return Err(Error::ImageSize {
                expected: self.input_len(),
                actual: image.len(),
            });
        }
        if scratch.len() < self.scratch_len() {
            return Err(Error::ScratchTooSmall {
                needed: self.scratch_len(),
                actual: scratch.len(),
            });
        }
        if probs.len() < self.num_classes {
            return Err(Error::OutputTooSmall {
                needed: self.num_classes,
                actual: probs.len(),
            });
        }
        let probs = &mut probs[..self.num_classes];
        match self.precision {
            Precision::F32 => {
                let (s, ws) = scratch.split_at_mut(self.scratch_elems);
                let ws = &mut ws[..self.workspace_len()];
                for (x, &p) in s.iter_mut().zip(image) {
                    *x = f32::from(p) / 255.0;
                }
                let kernel = self.kernel();
                let (at, len) = self.run(s, image.len(), |layer, step| {
                    self.step_f32(layer, step, kernel, ws)
                });
                probs.copy_from_slice(&s[at..at + len]);
            }
            Precision::Int8 => {
                let bytes = core::mem::size_of_val(scratch);
                // SAFETY: the `f32` slice's memory, viewed as its bytes: `u8`
                // has no alignment requirement, every byte pattern is a valid
                // `f32` (so writing bytes leaves valid `f32`s behind), and the
                // exclusive borrow of `scratch` lasts as long as `s`.
                let s = unsafe {
                    core::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<u8>(), bytes)
                };
                let s = &mut s[..self.scratch_elems];
                s[..image.len()].copy_from_slice(image);
                let kernel = self.kernel_i8();
                let (at, len) = self.run(s, image.len(), |layer, step| {
                    self.step_i8(layer, step, kernel)
                });
                let q = self.layers[self.num_layers - 1].q_out;
                for (p, &v) in probs.iter_mut().zip(&s[at..at + len]) {
                    *p = q.dequantize(v);
                }
            }
        }
        let class = math::softmax_in_place(probs);
        Ok(Prediction {
            class,
            probability: probs[class],
        })
    }

    /// Runs the layers over the scratch `s` (elements of `T`), the input's
    /// `input_len` values at its front; `step` computes one layer. Returns
    /// where the last layer's output lies.
    fn run<T: Copy>(
        &self,
        s: &mut [T],
        input_len: usize,
        mut step: impl FnMut(&Layer<'a>, Step<'_, T>),
    ) -> (usize, usize) {
        // The current activation: `s[at..at + len]`, at the front or the back
        // of the working region of the layer about to run (see `scratch.rs`).
        let mut at = 0;
        let mut len = input_len;
        for layer in &self.layers[..self.num_layers] {
            if let Some(from) = layer.input_stash {
                // It reads an earlier layer's output: copy it to the front of
                // the region (below every stash alive now, its own included).
                s.copy_within(from..from + layer.in_len, 0);
                (at, len) = (0, layer.in_len);
            }
            at = scratch::settle(s, at, len, layer.region);
            let (work, stashes) = s.split_at_mut(layer.region);
            let front = at == 0;
            let (x, free) = split_active(work, front, len);
            match layer.op {
                Op::Conv { .. } | Op::MaxPool(_) | Op::GlobalAvgPool => {
                    // Out of place: the output goes to the far end of the free part.
                    // What lies between input and output is the layer's
                    // `spare` (a small-image convolution's workspace).
                    let (y, spare) = if front {
                        let n = free.len();
                        at = layer.region - layer.out_len;
                        let (spare, y) = free.split_at_mut(n - layer.out_len);
                        (y, spare)
                    } else {
                        at = 0;
                        free.split_at_mut(layer.out_len)
                    };
                    step(layer, Step::OutOfPlace { x, y, spare });
                }
                Op::Add { stash, .. } => {
                    let skip = &stashes[stash - layer.region..][..len];
                    step(layer, Step::Add { x, skip });
                }
                _ => step(layer, Step::InPlace { x, free }),
            }
            len = layer.out_len;
            if let Some(to) = layer.stash {
                scratch::stash(s, at, len, to);
            }
        }
        (at, len)
    }

    /// One layer of an `f32` model; `ws` is the Winograd workspace (empty
    /// when Winograd is off).
    #[cfg_attr(not(feature = "winograd"), allow(unused_variables))]
    fn step_f32(&self, layer: &Layer<'_>, step: Step<'_, f32>, kernel: Kernel, ws: &mut [f32]) {
        match (step, &layer.op) {
            (Step::InPlace { x, .. }, Op::Relu) => crate::layers::relu(x),
            (Step::InPlace { x, .. }, Op::Gelu) => crate::layers::gelu(x, kernel),
            (Step::InPlace { x, free }, Op::BatchNorm { params, relu }) => {
                norm::batchnorm(params, layer.channels, x, free, *relu, kernel)
            }
            (Step::Add { x, skip }, Op::Add { relu, .. }) => {
                crate::layers::add(x, skip, *relu, kernel)
            }
            (
                Step::OutOfPlace { x, y, spare },
                Op::Conv {
                    geom,
                    weight,
                    bias,
                    relu,
                    path,
                    ..
                },
            ) => match path {
                #[cfg(feature = "winograd")]
                ConvPath::Winograd if self.winograd => {
                    winograd::conv2d(geom, x, weight, bias, y, *relu, kernel, ws)
                }
                ConvPath::SmallImage => {
                    conv::conv2d_small(geom, x, weight, bias, y, *relu, kernel, spare)
                }
                _ => conv::conv2d(geom, x, weight, bias, y, *relu, kernel),
            },
            (Step::OutOfPlace { x, y, .. }, Op::MaxPool(g)) => {
                pool::maxpool2d(g, x, y, f32::NEG_INFINITY, f32::max)
            }
            (Step::OutOfPlace { x, y, .. }, Op::GlobalAvgPool) => {
                pool::global_avg_pool(layer.gap_input(), x, y)
            }
            _ => {}
        }
    }

    /// One layer of an int8 model (FORMAT.md, "Integer semantics").
    fn step_i8(&self, layer: &Layer<'_>, step: Step<'_, u8>, kernel: KernelI8) {
        match (step, &layer.op) {
            (Step::InPlace { x, .. }, Op::Relu) => crate::layers::relu_i8(x, layer.q_in.zero_point),
            (Step::InPlace { x, .. }, Op::Gelu) => {
                crate::layers::gelu_i8(x, layer.q_in, layer.q_out)
            }
            (
                Step::Add { x, skip },
                Op::Add {
                    source, m, relu, ..
                },
            ) => {
                let zs = [
                    layer.q_in.zero_point,
                    self.layers[*source].q_out.zero_point,
                    layer.q_out.zero_point,
                ];
                crate::layers::add_i8(x, skip, zs, m, kernel);
                if *relu {
                    // The fused relu's quantization is the add's output's.
                    crate::layers::relu_i8(x, layer.q_out.zero_point);
                }
            }
            (Step::OutOfPlace { x, y, spare }, Op::Conv { path, .. }) => {
                if let Some(c) = layer.quant_conv() {
                    let ws = if *path == ConvPath::Padded {
                        spare
                    } else {
                        &mut []
                    };
                    conv_i8::conv2d(&c, x, y, kernel, ws)
                }
            }
            (Step::OutOfPlace { x, y, .. }, Op::MaxPool(g)) => {
                pool::maxpool2d(g, x, y, 0u8, u8::max)
            }
            (Step::OutOfPlace { x, y, .. }, Op::GlobalAvgPool) => {
                pool::global_avg_pool_i8(layer.gap_input(), x, y, layer.q_in.zero_point)
            }
            _ => {}
        }
    }

    /// Checks what the integer arithmetic of an int8 model relies on, and
    /// gives each layer its quantization: one activation pair per layer plus
    /// the input's, which is `x / 255`; the layers that move values keep their
    /// input's; every multiplier in range; weight scales positive and normal;
    /// the padding of the last weight group zero; no accumulator overflow
    /// (`|bias| < 2^30` and `k·k·4·⌈ci/4⌉ · 255 · 127 < 2^30`).
    // Not inlined: its locals would otherwise add to `from_bytes`'s stack
    // frame for the whole load, which matters on a microcontroller.
    #[inline(never)]
    fn check_int8(&mut self, spec: &Spec<N>, acts: &Activations<N>) -> Result<(), Error> {
        let n = self.num_layers;
        if acts.len != n + 1 {
            return Err(Error::Metadata(
                "quantization must list one activation pair per layer, plus the input's",
            ));
        }
        if acts.pair(0) != ActQuant::INPUT {
            return Err(Error::Metadata(
                "quantization of the input must be [1/255, 0] (the image bytes)",
            ));
        }
        for (index, l) in spec.layers().iter().enumerate() {
            let (q_in, q_out) = (acts.pair(l.input_activation(index)), acts.pair(index + 1));
            let err = |problem| Error::Layer { index, problem };
            let layer = &mut self.layers[index];
            layer.q_in = q_in;
            layer.q_out = q_out;
            match l.kind {
                Kind::GlobalAvgPool
                    if (layer.in_len / layer.channels.max(1)) >= (1 << 31) / 255 =>
                {
                    return Err(err(
                        "global_avg_pool: too many pixels for 32-bit sums in int8",
                    ));
                }
                Kind::Relu
                | Kind::MaxPool2d { .. }
                | Kind::GlobalAvgPool
                | Kind::Flatten
                | Kind::Dropout => {
                    if q_out != q_in {
                        return Err(err(
                            "an int8 relu, pooling, flatten or dropout must keep its input's quantization",
                        ));
                    }
                }
                Kind::Add { source } => {
                    let skip = acts.pair(source + 1);
                    let multipliers = AddMultipliers::new(q_in, skip, q_out)
                        .ok_or(err("add: a rescaling multiplier is out of range"))?;
                    if let Op::Add { m, .. } = &mut layer.op {
                        *m = multipliers;
                    }
                }
                Kind::Conv2d { .. } | Kind::Dense { .. } => check_conv(index, layer)?,
                // Any pair: the table maps each input byte to its output byte.
                Kind::Gelu => {}
                Kind::BatchNorm { .. } => return Err(err("batchnorm in an int8 model")),
            }
        }
        Ok(())
    }
}

/// One layer's data during [`Model::run`].
enum Step<'s, T> {
    /// In place (relu, gelu, batchnorm, flatten, dropout): the activation, and the
    /// free part of the working region.
    InPlace { x: &'s mut [T], free: &'s mut [T] },
    /// An add: the activation and the stashed skip input.
    Add { x: &'s mut [T], skip: &'s [T] },
    /// Out of place (conv, dense, pooling): input and output, and the free
    /// part of the working region between them.
    OutOfPlace {
        x: &'s [T],
        y: &'s mut [T],
        spare: &'s mut [T],
    },
}

impl<'a> Layer<'a> {
    /// A conv/dense layer's int8 parameters with its quantization; `None`
    /// for the other ops.
    fn quant_conv(&self) -> Option<QuantConv<'_>> {
        let Op::Conv {
            geom,
            weight,
            bias,
            weight_scale,
            relu,
            ..
        } = &self.op
        else {
            return None;
        };
        Some(QuantConv {
            geom,
            weight,
            bias,
            weight_scale,
            q_in: self.q_in,
            q_out: self.q_out,
            relu: *relu,
        })
    }

    /// The input of a global average pooling, as an image of one row.
    fn gap_input(&self) -> Shape {
        Shape {
            h: 1,
            w: self.in_len / self.channels.max(1),
            c: self.channels,
        }
    }
}

/// The value checks of an int8 conv2d/dense (see `Model::check_int8`).
fn check_conv(index: usize, layer: &Layer<'_>) -> Result<(), Error> {
    let Some(c) = layer.quant_conv() else {
        return Ok(());
    };
    let (geom, weight, weight_scale) = (c.geom, c.weight, c.weight_scale);
    let values = |param| Error::Tensor {
        layer: index,
        param,
        problem: TensorProblem::Values,
    };
    let inputs = geom.k * geom.k * GROUP * q::groups(geom.input.c);
    // Compared in u64: 255 · 127 · inputs, inputs ≤ 2^16 · 2^16 · 4 · 2^14.
    if (inputs as u64).saturating_mul(255 * 127) >= 1 << 30 {
        return Err(Error::Layer {
            index,
            problem: "too many inputs per output for 32-bit accumulation in int8",
        });
    }
    for co in 0..geom.output.c {
        let ws = &weight_scale[co * 4..co * 4 + 4];
        let ws = f32::from_le_bytes([ws[0], ws[1], ws[2], ws[3]]);
        if !(ws.is_normal() && ws > 0.0) || c.multiplier(co).is_none() {
            return Err(values(P::WeightScale));
        }
        if c.bias(co).unsigned_abs() >= 1 << 30 {
            return Err(values(P::Bias));
        }
    }
    // The last group's missing input channels must have zero weights.
    let tail = geom.input.c % GROUP;
    if tail != 0 {
        let group = geom.output.c * GROUP;
        let last = (q::groups(geom.input.c) - 1) * group;
        let per_tap = q::groups(geom.input.c) * group;
        for tap in weight.chunks_exact(per_tap) {
            let padded = tap[last..]
                .chunks_exact(GROUP)
                .any(|w| w[tail..].iter().any(|&b| b != 0));
            if padded {
                return Err(values(P::Weight));
            }
        }
    }
    Ok(())
}

/// The conv op for a geometry, parameters attached later.
fn conv_op(geom: ConvGeom, path: ConvPath) -> Op<'static> {
    Op::Conv {
        geom,
        weight: &[],
        bias: &[],
        weight_scale: &[],
        relu: false,
        path,
    }
}

/// Splits the scratch into the current activation (`len` values at the front or
/// the back) and the rest.
fn split_active<T>(s: &mut [T], front: bool, len: usize) -> (&mut [T], &mut [T]) {
    if front {
        s.split_at_mut(len)
    } else {
        let n = s.len() - len;
        let (free, x) = s.split_at_mut(n);
        (x, free)
    }
}

/// Assigns one header entry to its layer and slot, checking it.
// Not inlined: its locals would otherwise add to `from_bytes`'s stack
// frame for the whole load, which matters on a microcontroller.
#[inline(never)]
fn place_tensor<const N: usize>(
    model: &Model<'_, N>,
    spec: &Spec<N>,
    t: &TensorEntry<'_>,
    data_len: usize,
    found: &mut Found<N>,
) -> Result<(), Error> {
    let unexpected = Error::UnexpectedTensor {
        offset: t.key_offset,
    };
    // `{name}.{suffix}`: the name may itself contain dots, the suffix not.
    let key = t.key.ok_or(unexpected)?;
    let dot = key.iter().rposition(|&b| b == b'.').ok_or(unexpected)?;
    let (name, suffix) = (&key[..dot], &key[dot + 1..]);
    let param = Param::from_suffix(suffix).ok_or(unexpected)?;
    let (layer, slot) = spec
        .layers()
        .iter()
        .enumerate()
        .filter(|(_, l)| l.name.as_bytes() == name)
        .find_map(|(i, l)| {
            let slot = params_of(&l.kind, model.precision)
                .iter()
                .position(|&p| p == param)?;
            Some((i, slot))
        })
        .ok_or(unexpected)?;
    let problem = |problem| Error::Tensor {
        layer,
        param,
        problem,
    };
    if found[layer][slot].is_some() {
        return Err(problem(TensorProblem::Duplicate));
    }
    // The layer has `param` (found above), so it is a parameter layer with that shape.
    let (shape, dtype) = param_layer(&spec.layers()[layer].kind, &model.layers[layer])
        .and_then(|l| l.tensor(param, model.precision))
        .ok_or(problem(TensorProblem::Shape))?;
    if t.dtype != Some(dtype) {
        return Err(problem(TensorProblem::Dtype));
    }
    let dims = shape.dims();
    let (got, got_rank) = t.shape.ok_or(problem(TensorProblem::Shape))?;
    if got_rank != dims.len()
        || got[..got_rank]
            .iter()
            .zip(dims)
            .any(|(&g, &d)| g != d as u64)
    {
        return Err(problem(TensorProblem::Shape));
    }
    // Size in bytes from the shape; the shape matched sizes we already computed
    // without overflow, but the product with the value size is checked too.
    let bytes = shape
        .num_bytes_as(dtype)
        .ok_or(problem(TensorProblem::Offsets))?;
    let (b, e) = t.offsets;
    if b > e || e > data_len as u64 || e - b != bytes as u64 {
        return Err(problem(TensorProblem::Offsets));
    }
    found[layer][slot] = Some((b as usize, e as usize));
    Ok(())
}

/// The sizes that fix a planned layer's tensor shapes (FORMAT.md's, from
/// `model_format`); `None` for a layer without parameters.
fn param_layer(kind: &Kind, layer: &Layer<'_>) -> Option<ParamLayer> {
    match (*kind, &layer.op) {
        (Kind::Conv2d { .. }, Op::Conv { geom, .. }) => Some(ParamLayer::Conv2d {
            kernel: geom.k,
            in_channels: geom.input.c,
            filters: geom.output.c,
        }),
        (Kind::Dense { units }, _) => Some(ParamLayer::Dense {
            in_features: layer.in_len,
            units,
        }),
        (Kind::BatchNorm { .. }, _) => Some(ParamLayer::BatchNorm {
            channels: layer.channels,
        }),
        _ => None,
    }
}

/// Every `f32` tensor is finite (a NaN or infinite weight would give NaN or
/// backend-dependent probabilities, never a usable answer), and no batch-norm
/// variance is negative.
// Not inlined: its locals would otherwise add to `from_bytes`'s stack
// frame for the whole load, which matters on a microcontroller.
#[inline(never)]
fn check_values<const N: usize>(
    model: &Model<'_, N>,
    spec: &Spec<N>,
    found: &Found<N>,
    data: &[u8],
) -> Result<(), Error> {
    for (layer, l) in spec.layers().iter().enumerate() {
        for (slot, &param) in params_of(&l.kind, model.precision).iter().enumerate() {
            let Some((b, e)) = found[layer][slot] else {
                continue;
            };
            let dtype = param_layer(&l.kind, &model.layers[layer])
                .and_then(|p| p.tensor(param, model.precision))
                .map(|(_, d)| d);
            if dtype != Some(model_format::Dtype::F32) {
                continue;
            }
            let bad = data[b..e].chunks_exact(4).any(|c| {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                !v.is_finite() || (param == Param::MovingVariance && v < 0.0)
            });
            if bad {
                return Err(Error::Tensor {
                    layer,
                    param,
                    problem: TensorProblem::Values,
                });
            }
        }
    }
    Ok(())
}

/// Every expected tensor is present, and no two overlap.
// Not inlined: its locals would otherwise add to `from_bytes`'s stack
// frame for the whole load, which matters on a microcontroller.
#[inline(never)]
fn check_overlaps<const N: usize>(
    spec: &Spec<N>,
    found: &Found<N>,
    precision: Precision,
) -> Result<(), Error> {
    for (layer, l) in spec.layers().iter().enumerate() {
        for (slot, &param) in params_of(&l.kind, precision).iter().enumerate() {
            let Some((b, e)) = found[layer][slot] else {
                return Err(Error::Tensor {
                    layer,
                    param,
                    problem: TensorProblem::Missing,
                });
            };
            // Compare with every range listed after this one (each pair once).
            let later = found[layer][slot + 1..]
                .iter()
                .chain(found[layer + 1..spec.layers().len()].iter().flatten());
            if later.flatten().any(|&(b2, e2)| b < e2 && b2 < e) {
                return Err(Error::Tensor {
                    layer,
                    param,
                    problem: TensorProblem::Overlap,
                });
            }
        }
    }
    Ok(())
}

/// Checks the `class_names` metadata (either form): one name per class.
fn class_names(raw: &[u8], num_classes: usize) -> Result<ClassNames<'_>, Error> {
    let names = ClassNames::parse_escaped(raw).map_err(Error::Metadata)?;
    if names.len() != num_classes {
        return Err(Error::Metadata(
            "class_names does not list one name per class",
        ));
    }
    Ok(names)
}
