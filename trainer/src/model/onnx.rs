//! ONNX export of an `f32` network ([`to_onnx`]) or of an int8 model file in
//! QDQ form ([`to_onnx_int8`]): the graph other tools load (ONNX Runtime,
//! OpenVINO, TensorRT, PyTorch via `onnx2torch`, …), opset 17.
//!
//! The graph takes what those tools expect: a float tensor `input` of shape
//! `[N, C, H, W]` (NCHW, any batch size `N`) holding the pixels scaled to
//! `[0, 1]` (`byte / 255`, the trainer's own input), and gives `logits`,
//! `[N, classes]` (softmax them for probabilities). Layer by layer:
//!
//! | spec | ONNX |
//! |---|---|
//! | `conv2d` | `Conv`, weight permuted from `[k, k, ci, co]` (HWIO) to `[co, ci, k, k]` (OIHW), explicit `pads` (TensorFlow's `same`: the odd cell after) |
//! | `batchnorm` | `BatchNormalization` (evaluation: the moving statistics) |
//! | `relu` | `Relu` |
//! | `gelu` | `x · (1 + Erf(x / √2)) · 0.5` in five nodes (`Gelu` is opset 20; ONNX Runtime fuses these into its `Gelu`) |
//! | `maxpool2d` | `MaxPool` (padded cells never win, as here) |
//! | `global_avg_pool` | `GlobalAveragePool`, then `Flatten` to `[N, C]` |
//! | `flatten` | `Transpose` to NHWC, then `Flatten`: the trainer flattens in `(h, w, c)` order |
//! | `dropout` | nothing (identity at inference) |
//! | `dense` | `Gemm` with the `[in, units]` weight as it is |
//! | `add` | `Add` |
//!
//! A layer reads the ONNX tensor of the activation it reads in the spec (the
//! previous layer's, or the one its `input` names), so a DAG exports as one.
//! The class names and the spec go in the model's metadata
//! (`class_names` as a JSON array, `architecture`).
//!
//! The protobuf messages are declared here with `prost`'s derive (the field
//! numbers of onnx.proto), so no `.proto` compiler is needed to build.

use super::network::{encode_class_names, Network};
use super::quantize::{Int8Conv, Int8Reference};
use super::spec::{LayerSpec, ModelSpec};
use crate::kernels::tensor::ImageShape;
use model_format::quant::ActQuant;
use prost::Message;
use std::collections::HashMap;

/// The opset the graph is written against.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 (ONNX 1.12+, opset ≤ 17).
const IR_VERSION: i64 = 8;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(string, tag = "6")]
    doc_string: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

/// `AttributeProto.AttributeType`.
const ATTR_FLOAT: i32 = 1;
const ATTR_INT: i32 = 2;
const ATTR_INTS: i32 = 7;

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(float, tag = "2")]
    f: f32,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(int32, tag = "20")]
    r#type: i32,
}

/// `TensorProto.DataType`: `FLOAT`, `UINT8`, `INT8`, `INT32`, `INT64`.
const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT32: i32 = 6;
const INT64: i32 = 7;

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
    /// Little-endian values, row-major.
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: ATTR_INT,
        ..Default::default()
    }
}

fn ints(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints,
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: ATTR_FLOAT,
        ..Default::default()
    }
}

/// A float tensor of the batch dimension `N` and fixed other dimensions.
fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        dim_value: None,
        dim_param: Some("N".into()),
    }];
    dim.extend(dims.iter().map(|&d| Dimension {
        dim_value: Some(d as i64),
        dim_param: None,
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

/// Builds the graph: nodes, and initializers named `{layer}.{param}`.
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op.to_string(),
            attribute,
        });
    }

    fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len());
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.typed_initializer(name, dims, FLOAT, raw);
    }

    /// The name of a float scalar initializer holding `value` (added once).
    fn scalar(&mut self, name: &str, value: f32) -> String {
        if !self.initializers.iter().any(|t| t.name == name) {
            self.initializer(name, &[], &[value]);
        }
        name.to_string()
    }

    /// An initializer of `data_type` from its little-endian bytes.
    fn typed_initializer(&mut self, name: &str, dims: &[usize], data_type: i32, raw: Vec<u8>) {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            name: name.to_string(),
            raw_data: raw,
        });
    }

    /// `x` rounded to activation `a`'s int8 grid and back:
    /// `QuantizeLinear` (round half to even, saturating to `[0, 255]`) then
    /// `DequantizeLinear`, written to `out`. The scale and zero point are
    /// scalar initializers `act{a}.scale`, `act{a}.zero_point`.
    fn requantize(&mut self, x: &str, a: usize, q: ActQuant, out: &str) {
        let (scale, zero) = (format!("act{a}.scale"), format!("act{a}.zero_point"));
        if !self.initializers.iter().any(|t| t.name == scale) {
            self.initializer(&scale, &[], &[q.scale]);
            self.typed_initializer(&zero, &[], UINT8, vec![q.zero_point]);
        }
        let quantized = format!("{out}_q");
        self.node("QuantizeLinear", &[x, &scale, &zero], &quantized, vec![]);
        self.node(
            "DequantizeLinear",
            &[&quantized, &scale, &zero],
            out,
            vec![],
        );
    }

    /// `{name}.weight` and `{name}.bias` of an int8 layer as `DequantizeLinear`
    /// nodes (per output channel, along `axis` of the weight): int8 weights
    /// times their scales, int32 biases times input scale × weight scale.
    /// Returns the two float tensors' names.
    fn int8_params(
        &mut self,
        name: &str,
        dims: &[usize],
        axis: i64,
        weight: Vec<i8>,
        p: &Int8Conv,
        input_scale: f32,
    ) -> (String, String) {
        let co = p.bias.len();
        let (w, ws) = (format!("{name}.weight"), format!("{name}.weight_scale"));
        let (b, bs) = (format!("{name}.bias"), format!("{name}.bias_scale"));
        self.typed_initializer(&w, dims, INT8, weight.iter().map(|&v| v as u8).collect());
        self.initializer(&ws, &[co], p.weight_scale);
        let bias = p.bias.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.typed_initializer(&b, &[co], INT32, bias);
        let bias_scale: Vec<f32> = p.weight_scale.iter().map(|s| input_scale * s).collect();
        self.initializer(&bs, &[co], &bias_scale);
        let (wf, bf) = (format!("{w}_dq"), format!("{b}_dq"));
        self.node("DequantizeLinear", &[&w, &ws], &wf, vec![int("axis", axis)]);
        self.node("DequantizeLinear", &[&b, &bs], &bf, vec![int("axis", 0)]);
        (wf, bf)
    }
}

/// A convolution's weights from the trainer's `[ky][kx][ci][co]` (HWIO) to
/// ONNX's `[co][ci][ky][kx]` (OIHW).
fn hwio_to_oihw<T: Copy + Default>(w: &[T], k: usize, ci: usize, co: usize) -> Vec<T> {
    let mut oihw = vec![T::default(); w.len()];
    for ky in 0..k {
        for kx in 0..k {
            for c in 0..ci {
                for o in 0..co {
                    oihw[((o * ci + c) * k + ky) * k + kx] = w[((ky * k + kx) * ci + c) * co + o];
                }
            }
        }
    }
    oihw
}

/// ONNX `pads` `[top, left, bottom, right]` of a window of `k` cells moved by
/// `s` over `input` (TensorFlow's rule: the odd cell goes after).
fn pads(padding: super::spec::Padding, input: ImageShape, k: usize, s: usize) -> Vec<i64> {
    let along = |len: usize| {
        let (out, before) = padding.output_and_pad(len, k, s).expect("a validated spec");
        let total = ((out - 1) * s + k).saturating_sub(len);
        (before as i64, (total - before) as i64)
    };
    let (top, bottom) = along(input.height);
    let (left, right) = along(input.width);
    vec![top, left, bottom, right]
}

/// An ONNX tensor of the graph: its name and rank, 4 (`[N, C, H, W]`) or 2
/// (`[N, C]`: what the spec calls a vector, after a flatten, a global pooling
/// or a dense layer).
#[derive(Clone)]
struct Value {
    name: String,
    rank: usize,
}

impl Graph {
    /// `x` as `[N, C, H, W]`: a `[N, C]` vector gets `H = W = 1`.
    fn as_image(&mut self, x: &Value) -> String {
        if x.rank == 4 {
            return x.name.clone();
        }
        if !self.initializers.iter().any(|t| t.name == "axes_2_3") {
            self.initializers.push(TensorProto {
                dims: vec![2],
                data_type: INT64,
                name: "axes_2_3".into(),
                raw_data: [2i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
            });
        }
        let out = format!("{}_nchw", x.name);
        self.node("Unsqueeze", &[&x.name, "axes_2_3"], &out, vec![]);
        out
    }

    /// `x` as `[N, C]`, for an `x` the spec calls a vector (`H = W = 1`, so
    /// NCHW and NHWC order agree).
    fn as_vector(&mut self, x: &Value) -> String {
        if x.rank == 2 {
            return x.name.clone();
        }
        let out = format!("{}_flat", x.name);
        self.node("Flatten", &[&x.name], &out, vec![int("axis", 1)]);
        out
    }
}

/// Where the graph's parameters come from.
enum Params<'a> {
    /// An `f32` network's tensors by name (`{layer}.{param}`).
    F32(HashMap<String, (Vec<usize>, &'a [f32])>),
    /// An int8 model file: QDQ form.
    Int8(&'a Int8Reference),
}

/// The ONNX model of `net` (`f32`), as bytes.
pub fn to_onnx(net: &Network) -> Vec<u8> {
    let tensors = net
        .named_tensors()
        .into_iter()
        .map(|(n, s, d)| (n, (s, d)))
        .collect();
    build(net.spec(), &net.class_names, &Params::F32(tensors))
}

/// The ONNX model of an int8 model file, as bytes, in the **QDQ** form that
/// ONNX Runtime, OpenVINO and TensorRT turn into integer kernels: the same
/// float input and logits as [`to_onnx`]; the int8 weights and int32 biases
/// stored as such, each read through a `DequantizeLinear` (per output
/// channel); the input and every layer's output passed through `QuantizeLinear` →
/// `DequantizeLinear` with the file's scale and zero point (a conv2d's or
/// dense layer's after its fused relu), so that each operator reads
/// `DequantizeLinear → op → QuantizeLinear`, the shape engines replace by an
/// integer kernel.
///
/// The graph states the file's quantization exactly; an engine's integer
/// arithmetic rounds its requantizations its own way (ONNX Runtime: in float,
/// half to even; this format: fixed point, half up), so engines agree with
/// `infer` to within a step of an activation's grid here and there, not bit
/// for bit (measured in tests/onnx.rs).
pub fn to_onnx_int8(model: &Int8Reference) -> Vec<u8> {
    build(model.spec(), &model.class_names, &Params::Int8(model))
}

fn build(spec: &ModelSpec, class_names: &[String], params: &Params) -> Vec<u8> {
    let shapes = spec.shapes().expect("a network's spec is valid");
    let inputs = spec.inputs();
    let tensor = |layer: &str, param: &str| {
        let Params::F32(tensors) = params else {
            unreachable!("an int8 model's parameters are read by conv_params")
        };
        let key = format!("{layer}.{param}");
        tensors
            .get(&key)
            .unwrap_or_else(|| panic!("a network holds {key}"))
            .clone()
    };
    let acts: &[ActQuant] = match params {
        Params::F32(_) => &[],
        Params::Int8(r) => r.activations(),
    };
    let mut g = Graph {
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    // The ONNX tensor of each activation: 0 the input, i + 1 layer i's output.
    let mut values = vec![Value {
        name: "input".into(),
        rank: 4,
    }];
    if let Some(&q) = acts.first() {
        g.requantize("input", 0, q, "input_dq");
        values[0].name = "input_dq".into();
    }
    let last = spec.layers.len() - 1;
    for (i, layer) in spec.layers.iter().enumerate() {
        let x = values[inputs[i]].clone();
        let input = match inputs[i] {
            0 => spec.input,
            a => shapes[a - 1],
        };
        let out = if i == last {
            "logits".to_string()
        } else {
            format!("{}_{i}", layer.name().unwrap_or(layer.kind()))
        };
        // In the QDQ form every layer writes its float result here, then
        // rounds it to its activation's grid into `out`: where the layer
        // keeps its input's grid (relu, max-pooling, flatten) that changes no
        // value, and it gives each operator the `DequantizeLinear → op →
        // QuantizeLinear` shape that engines replace by an integer kernel.
        let int8 = match params {
            Params::Int8(r) => Some(*r),
            Params::F32(_) => None,
        };
        let name = out;
        let out = if int8.is_some() {
            format!("{name}_f")
        } else {
            name.clone()
        };
        let rank = match layer {
            LayerSpec::Conv2d {
                name,
                kernel,
                stride,
                padding,
                ..
            } => {
                let name = name.as_deref().expect("parameter layers are named");
                let (k, ci) = (*kernel, input.channels);
                let (wn, bn) = match params {
                    Params::F32(_) => {
                        let (dims, w) = tensor(name, "weight");
                        let oihw = hwio_to_oihw(w, k, ci, dims[3]);
                        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
                        g.initializer(&wn, &[dims[3], ci, k, k], &oihw);
                        g.initializer(&bn, &[dims[3]], tensor(name, "bias").1);
                        (wn, bn)
                    }
                    Params::Int8(r) => {
                        let p = r.conv_params(i).expect("a conv2d layer");
                        let co = p.bias.len();
                        let oihw = hwio_to_oihw(p.weight, k, ci, co);
                        let x_scale = acts[inputs[i]].scale;
                        g.int8_params(name, &[co, ci, k, k], 0, oihw, &p, x_scale)
                    }
                };
                let x = g.as_image(&x);
                g.node(
                    "Conv",
                    &[&x, &wn, &bn],
                    &out,
                    vec![
                        ints("kernel_shape", vec![*kernel as i64; 2]),
                        ints("strides", vec![*stride as i64; 2]),
                        ints("pads", pads(*padding, input, *kernel, *stride)),
                    ],
                );
                4
            }
            LayerSpec::BatchNorm { name, epsilon, .. } => {
                let name = name.as_deref().expect("parameter layers are named");
                let mut ins = vec![x.name.clone()];
                for param in ["gamma", "beta", "moving_mean", "moving_variance"] {
                    let (dims, v) = tensor(name, param);
                    let key = format!("{name}.{param}");
                    g.initializer(&key, &dims, v);
                    ins.push(key);
                }
                let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                g.node(
                    "BatchNormalization",
                    &ins,
                    &out,
                    vec![float("epsilon", *epsilon)],
                );
                x.rank
            }
            LayerSpec::Relu { .. } => {
                g.node("Relu", &[&x.name], &out, vec![]);
                x.rank
            }
            LayerSpec::Gelu { .. } => {
                // x · ½ · (1 + erf(x/√2)), in the node order ONNX Runtime's
                // GELU fusion recognises.
                let sqrt2 = g.scalar("gelu_sqrt2", std::f32::consts::SQRT_2);
                let one = g.scalar("gelu_one", 1.0);
                let half = g.scalar("gelu_half", 0.5);
                let (scaled, erf) = (format!("{out}_scaled"), format!("{out}_erf"));
                let (plus1, prod) = (format!("{out}_plus1"), format!("{out}_prod"));
                g.node("Div", &[&x.name, &sqrt2], &scaled, vec![]);
                g.node("Erf", &[&scaled], &erf, vec![]);
                g.node("Add", &[&erf, &one], &plus1, vec![]);
                g.node("Mul", &[&x.name, &plus1], &prod, vec![]);
                g.node("Mul", &[&prod, &half], &out, vec![]);
                x.rank
            }
            LayerSpec::Dropout { .. } => {
                g.node("Identity", &[&x.name], &out, vec![]);
                x.rank
            }
            LayerSpec::MaxPool2d {
                size,
                stride,
                padding,
                ..
            } => {
                let x = g.as_image(&x);
                g.node(
                    "MaxPool",
                    &[&x],
                    &out,
                    vec![
                        ints("kernel_shape", vec![*size as i64; 2]),
                        ints("strides", vec![*stride as i64; 2]),
                        ints("pads", pads(*padding, input, *size, *stride)),
                    ],
                );
                4
            }
            LayerSpec::GlobalAvgPool { .. } => {
                let x = g.as_image(&x);
                let pooled = format!("{out}_nchw");
                g.node("GlobalAveragePool", &[&x], &pooled, vec![]);
                let pooled = match acts.get(i + 1) {
                    // Rounded before the flatten, so the pooling reads
                    // DequantizeLinear → GlobalAveragePool → QuantizeLinear.
                    Some(&q) => {
                        let rounded = format!("{pooled}_q");
                        g.requantize(&pooled, i + 1, q, &rounded);
                        rounded
                    }
                    None => pooled,
                };
                g.node("Flatten", &[&pooled], &out, vec![int("axis", 1)]);
                2
            }
            LayerSpec::Flatten { .. } if input.height == 1 && input.width == 1 => {
                let x = g.as_vector(&x);
                g.node("Identity", &[&x], &out, vec![]);
                2
            }
            LayerSpec::Flatten { .. } => {
                // The trainer flattens in (h, w, c) order.
                let nhwc = format!("{out}_nhwc");
                g.node(
                    "Transpose",
                    &[&x.name],
                    &nhwc,
                    vec![ints("perm", vec![0, 2, 3, 1])],
                );
                g.node("Flatten", &[&nhwc], &out, vec![int("axis", 1)]);
                2
            }
            LayerSpec::Dense { name, .. } => {
                let name = name.as_deref().expect("parameter layers are named");
                let (wn, bn) = match params {
                    Params::F32(_) => {
                        let (dims, w) = tensor(name, "weight");
                        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
                        g.initializer(&wn, &dims, w);
                        g.initializer(&bn, &[dims[1]], tensor(name, "bias").1);
                        (wn, bn)
                    }
                    Params::Int8(r) => {
                        let p = r.conv_params(i).expect("a dense layer");
                        let dims = [input.len(), p.bias.len()];
                        let x_scale = acts[inputs[i]].scale;
                        // Gemm's B is [in, units]: its output channels are axis 1.
                        g.int8_params(name, &dims, 1, p.weight.to_vec(), &p, x_scale)
                    }
                };
                // A dense layer reads a vector (validated).
                let x = g.as_vector(&x);
                g.node("Gemm", &[&x, &wn, &bn], &out, vec![]);
                2
            }
            LayerSpec::Add { from, .. } => {
                let s = spec.source_of(i, from).expect("validated");
                let skip = values[s + 1].clone();
                if x.rank == skip.rank {
                    g.node("Add", &[&x.name, &skip.name], &out, vec![]);
                    x.rank
                } else {
                    // Two vectors, one of them still [N, C, 1, 1].
                    let (a, b) = (g.as_vector(&x), g.as_vector(&skip));
                    g.node("Add", &[&a, &b], &out, vec![]);
                    2
                }
            }
        };
        let out = match int8 {
            Some(r) => {
                let fused_relu = r.conv_params(i).is_some_and(|p| p.relu_fused);
                let mut x = out;
                if fused_relu {
                    let relu = format!("{x}_relu");
                    g.node("Relu", &[&x], &relu, vec![]);
                    x = relu;
                }
                g.requantize(&x, i + 1, acts[i + 1], &name);
                name
            }
            None => out,
        };
        values.push(Value { name: out, rank });
    }
    let image = [spec.input.channels, spec.input.height, spec.input.width];
    let classes = shapes.last().map_or(0, |s| s.len());
    let class_names = encode_class_names(class_names);
    let mut metadata_props = vec![
        StringStringEntryProto {
            key: "class_names".into(),
            value: class_names,
        },
        StringStringEntryProto {
            key: model_format::KEY_ARCHITECTURE.into(),
            value: spec.to_json(),
        },
    ];
    if let Params::Int8(_) = params {
        metadata_props.push(StringStringEntryProto {
            key: model_format::quant::KEY_QUANTIZATION.into(),
            value: format!("QDQ of an {} model file", model_format::quant::SCHEME),
        });
    }
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "cifar-cnn trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "{}: input float [N, {}, {}, {}] = pixel / 255 (NCHW); output logits [N, {classes}]",
            spec.name, image[0], image[1], image[2]
        ),
        graph: Some(GraphProto {
            node: g.nodes,
            name: spec.name.clone(),
            initializer: g.initializers,
            input: vec![value_info("input", &image)],
            output: vec![value_info("logits", &[classes])],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props,
    };
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes decode back to the same messages, with one node per layer
    /// (two for a global pooling or an image flatten) and every tensor.
    #[test]
    fn round_trips_through_protobuf() {
        let spec = crate::train::spec_file::SpecFile::builtin("resnet8")
            .unwrap()
            .model;
        let net = Network::new(&spec, 1).unwrap();
        let bytes = to_onnx(&net);
        let model = ModelProto::decode(&bytes[..]).unwrap();
        assert_eq!(model.opset_import[0].version, OPSET);
        let graph = model.graph.unwrap();
        assert_eq!(graph.node.len(), spec.layers.len() + 1);
        assert_eq!(graph.output[0].name, "logits");
        let params: usize = net.named_tensors().len();
        assert_eq!(graph.initializer.len(), params);
        // The main path's first convolution of stack 2 reads stack1's relu.
        let conv = graph
            .node
            .iter()
            .find(|n| n.op_type == "Conv" && n.input[0].starts_with("stack1"))
            .expect("convolutions read stack1");
        assert_eq!(conv.input[0], "stack1_9");
        assert_eq!(
            graph
                .node
                .iter()
                .filter(|n| n.input.contains(&"stack1_9".to_string()))
                .count(),
            2
        );
    }

    /// The QDQ form of an int8 file: weights stored as INT8 and biases as
    /// INT32 (a quarter of the f32 bytes), and every convolution and dense
    /// layer reads `DequantizeLinear` outputs only and feeds (through its
    /// fused relu, if any) a `QuantizeLinear`: the pattern engines fuse.
    #[test]
    fn int8_files_export_as_qdq() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/resnet8-int8.safetensors"
        );
        let bytes = std::fs::read(path).unwrap();
        let model = Int8Reference::from_bytes(&bytes, path).unwrap();
        let graph = ModelProto::decode(&to_onnx_int8(&model)[..])
            .unwrap()
            .graph
            .unwrap();
        let producer = |t: &str| graph.node.iter().find(|n| n.output[0] == t);
        let consumers = |t: &str| -> Vec<&NodeProto> {
            graph
                .node
                .iter()
                .filter(|n| n.input.iter().any(|x| x == t))
                .collect()
        };
        let mut layers = 0;
        for node in graph
            .node
            .iter()
            .filter(|n| ["Conv", "Gemm"].contains(&n.op_type.as_str()))
        {
            layers += 1;
            for input in &node.input {
                let op = producer(input).map(|p| p.op_type.as_str());
                assert_eq!(op, Some("DequantizeLinear"), "{} reads {input}", node.name);
            }
            let mut next = consumers(&node.output[0]);
            if next.len() == 1 && next[0].op_type == "Relu" {
                next = consumers(&next[0].output[0]);
            }
            assert!(
                next.len() == 1 && next[0].op_type == "QuantizeLinear",
                "{} feeds {next:?}",
                node.name
            );
        }
        assert_eq!(layers, 10, "ResNet-8: 9 convolutions and a dense layer");
        let weights: Vec<_> = graph
            .initializer
            .iter()
            .filter(|t| t.name.ends_with(".weight"))
            .collect();
        assert_eq!(weights.len(), 10);
        assert!(weights.iter().all(|t| t.data_type == INT8));
        assert!(graph
            .initializer
            .iter()
            .filter(|t| t.name.ends_with(".bias"))
            .all(|t| t.data_type == INT32));
    }
}
