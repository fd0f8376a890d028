//! The architecture: the model spec stored in the file's `architecture`
//! metadata (see `docs/FORMAT.md`), parsed where it lies through an
//! [`Unescape`] source into fixed-capacity arrays.
//!
//! The parser mirrors the trainer's spec reader: unknown or misplaced fields are
//! errors (the trainer's `deny_unknown_fields`), missing fields take the
//! documented defaults, and unnamed parameter layers are named `conv1, conv2, …,
//! bn1, …, dense1, …` by their rank among the layers of their type. Any layer
//! may carry a `name`; an `add` layer's `from`, and any layer's `input` (the
//! activation it reads instead of the previous layer's output), must name an
//! earlier layer (checked here; the shapes are checked when the model is
//! planned).
//!
//! The format's rules (type tags, defaults, default names, padding modes) come
//! from `model_format`, which the trainer uses too; this module only reads them
//! from the JSON without allocating.

use crate::error::AddProblem;
use crate::json::{JsonError, Parser, Source, Unescape};
use crate::Error;
use model_format::{defaults, DefaultNames, LayerKind, Padding};

/// Most layers an architecture may have (every entry of `layers` counts,
/// `relu` and `dropout` included).
pub const MAX_LAYERS: usize = 64;

/// Longest layer name, in bytes. Parameter tensors are named `{name}.weight` etc.
pub const MAX_NAME: usize = 32;

/// Largest value accepted for any size in the spec (height, filters, kernel, …).
/// Bigger models do not fit on the devices this crate is for, and the bound keeps
/// all shape arithmetic far from overflow.
const MAX_DIM: u64 = 1 << 16;

/// Height × width × channels of an activation (`h = w = 1` for a vector).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Shape {
    /// Number of values, or `None` on overflow.
    pub fn len(self) -> Option<usize> {
        self.h.checked_mul(self.w)?.checked_mul(self.c)
    }
    pub fn is_vector(self) -> bool {
        self.h == 1 && self.w == 1
    }
}

/// What a layer does, with its settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Conv2d {
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    },
    Relu,
    Gelu,
    MaxPool2d {
        size: usize,
        stride: usize,
        padding: Padding,
    },
    GlobalAvgPool,
    BatchNorm {
        epsilon: f32,
    },
    Flatten,
    Dropout,
    Dense {
        units: usize,
    },
    /// Residual connection: adds the output of layer `source` (an earlier one)
    /// to the current activation.
    Add {
        source: usize,
    },
}

impl Kind {
    /// The layer type, without its settings.
    pub fn layer_kind(&self) -> LayerKind {
        match self {
            Kind::Conv2d { .. } => LayerKind::Conv2d,
            Kind::Relu => LayerKind::Relu,
            Kind::Gelu => LayerKind::Gelu,
            Kind::MaxPool2d { .. } => LayerKind::MaxPool2d,
            Kind::GlobalAvgPool => LayerKind::GlobalAvgPool,
            Kind::BatchNorm { .. } => LayerKind::BatchNorm,
            Kind::Flatten => LayerKind::Flatten,
            Kind::Dropout => LayerKind::Dropout,
            Kind::Dense { .. } => LayerKind::Dense,
            Kind::Add { .. } => LayerKind::Add,
        }
    }
}

/// A layer name, stored inline (at most [`MAX_NAME`] bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Name {
    bytes: [u8; MAX_NAME],
    len: u8,
}

impl Name {
    const EMPTY: Name = Name {
        bytes: [0; MAX_NAME],
        len: 0,
    };

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn new(s: &[u8]) -> Option<Name> {
        let mut n = Name::EMPTY;
        n.bytes.get_mut(..s.len())?.copy_from_slice(s);
        n.len = s.len() as u8;
        Some(n)
    }
}

/// One entry of the spec's `layers`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LayerSpec {
    pub kind: Kind,
    /// The layer's name: the parameter-name prefix of a parameter layer (given
    /// or default), the spec's `name` for others (empty when it has none).
    pub name: Name,
    /// The earlier layer whose output this one reads, when its `input` names
    /// one; `None`: the previous layer's output (the image for the first).
    pub input: Option<usize>,
}

impl LayerSpec {
    /// The activation the layer at `index` reads: 0 for the image, `j + 1`
    /// for the output of layer `j`.
    pub fn input_activation(&self, index: usize) -> usize {
        self.input.map_or(index, |j| j + 1)
    }
}

/// A parsed architecture of at most `N` layers.
pub(crate) struct Spec<const N: usize> {
    pub input: Shape,
    layers: [LayerSpec; N],
    len: usize,
}

impl<const N: usize> Spec<N> {
    pub fn layers(&self) -> &[LayerSpec] {
        &self.layers[..self.len]
    }
}

fn arch_err(e: JsonError) -> Error {
    Error::Architecture {
        offset: e.offset,
        problem: e.problem,
    }
}

impl<const N: usize> Spec<N> {
    /// No layers yet.
    pub const EMPTY: Spec<N> = Spec {
        input: Shape { h: 0, w: 0, c: 0 },
        layers: [LayerSpec {
            kind: Kind::Relu,
            name: Name::EMPTY,
            input: None,
        }; N],
        len: 0,
    };
}

/// The first `input` and the first `from` that named no earlier layer while
/// the layers were read: an error once all are read (naming a later layer or
/// none), reported in that order, as the trainer does.
#[derive(Default)]
struct Unresolved {
    input: Option<(usize, Name)>,
    from: Option<(usize, Name)>,
}

/// Parses the raw (still escaped) contents of the `architecture` string, which
/// starts at file offset `base`, into `spec` (filled in place: a `Spec` is a
/// few kilobytes, which a microcontroller's stack should hold once).
// Not inlined: its locals would otherwise add to `Model::from_bytes`'s stack
// frame for the whole load.
#[inline(never)]
pub(crate) fn parse<const N: usize>(
    raw: &[u8],
    base: usize,
    spec: &mut Spec<N>,
) -> Result<(), Error> {
    let mut p = Parser::new(Unescape::new(raw, base));
    spec.len = 0;
    let mut unresolved = Unresolved::default();
    let (mut seen_input, mut seen_layers, mut seen_name) = (false, false, false);
    p.begin_object().map_err(arch_err)?;
    let mut first = true;
    let mut key = [0u8; 8];
    while let Some(k) = p.next_key(&mut first, &mut key).map_err(arch_err)? {
        let seen = match k {
            Some(b"name") => {
                p.skip_string().map_err(arch_err)?;
                &mut seen_name
            }
            Some(b"input") => {
                spec.input = parse_input(&mut p)?;
                &mut seen_input
            }
            Some(b"layers") => {
                parse_layers(&mut p, spec, &mut unresolved)?;
                &mut seen_layers
            }
            _ => return Err(arch_err(p.error("unknown field in the model spec"))),
        };
        if core::mem::replace(seen, true) {
            return Err(arch_err(p.error("duplicate field in the model spec")));
        }
    }
    p.finish().map_err(arch_err)?;
    if !seen_input {
        return Err(arch_err(p.error("the model spec has no `input`")));
    }
    if !seen_layers || spec.len == 0 {
        return Err(arch_err(p.error("the model spec has no layers")));
    }
    check_names(spec)?;
    // A name no earlier layer had: a later one's, or nobody's.
    let find = |name: &Name| spec.layers().iter().position(|l| l.name == *name);
    if let Some((index, name)) = unresolved.input {
        return Err(Error::Layer {
            index,
            problem: match find(&name) {
                Some(_) => "`input` names a layer that does not come before this one",
                None => "`input` names no layer",
            },
        });
    }
    if let Some((index, name)) = unresolved.from {
        return Err(Error::Add {
            index,
            problem: match find(&name) {
                Some(source) => AddProblem::NotEarlier { source },
                None => AddProblem::UnknownSource,
            },
        });
    }
    Ok(())
}

/// A size field: an integer in `1..=MAX_DIM`.
fn dim<S: Source>(p: &mut Parser<S>) -> Result<usize, Error> {
    let v = p.u64().map_err(arch_err)?;
    if (1..=MAX_DIM).contains(&v) {
        Ok(v as usize)
    } else {
        Err(arch_err(p.error("size out of range (1..=65536)")))
    }
}

fn parse_input<S: Source>(p: &mut Parser<S>) -> Result<Shape, Error> {
    let mut dims = [None; 3];
    p.begin_object().map_err(arch_err)?;
    let mut first = true;
    let mut key = [0u8; 8];
    while let Some(k) = p.next_key(&mut first, &mut key).map_err(arch_err)? {
        let slot = match k {
            Some(b"height") => &mut dims[0],
            Some(b"width") => &mut dims[1],
            Some(b"channels") => &mut dims[2],
            _ => return Err(arch_err(p.error("unknown field in `input`"))),
        };
        if slot.replace(dim(p)?).is_some() {
            return Err(arch_err(p.error("duplicate field in `input`")));
        }
    }
    match dims {
        [Some(h), Some(w), Some(c)] => Ok(Shape { h, w, c }),
        _ => Err(arch_err(
            p.error("`input` needs `height`, `width` and `channels`"),
        )),
    }
}

/// The fields a layer object may have, as read (before defaults).
#[derive(Default)]
struct Fields {
    kind: Option<LayerKind>,
    name: Option<Name>,
    filters: Option<usize>,
    kernel: Option<usize>,
    stride: Option<usize>,
    padding: Option<Padding>,
    size: Option<usize>,
    momentum: Option<f32>,
    epsilon: Option<f32>,
    rate: Option<f32>,
    units: Option<usize>,
    from: Option<Name>,
    input: Option<Name>,
}

/// Reads the `layers` array into `spec`, naming each layer as it comes (a
/// given name, or the default one of a parameter layer: `conv1`, … by its
/// rank among its type) and pointing its `input` and an add's `from` at the
/// earlier layer they name; one that names none goes to `unresolved`.
fn parse_layers<S: Source, const N: usize>(
    p: &mut Parser<S>,
    spec: &mut Spec<N>,
    unresolved: &mut Unresolved,
) -> Result<(), Error> {
    let mut defaults = DefaultNames::new();
    p.begin_array().map_err(arch_err)?;
    let mut first = true;
    while p.next_item(&mut first).map_err(arch_err)? {
        let index = spec.len;
        if index == N {
            return Err(Error::TooManyLayers);
        }
        let f = parse_fields(p)?;
        let mut layer = build_layer(index, &f)?;
        // Called for every layer: a named parameter layer takes its number too.
        let default = defaults.next(layer.kind.layer_kind());
        if let (Some(default), 0) = (default, layer.name.len) {
            // `dense` and the digits of a rank: far below MAX_NAME bytes.
            layer.name = Name::new(default.as_str().as_bytes()).ok_or(Error::Layer {
                index,
                problem: "default layer name too long",
            })?;
        }
        let earlier = |name: &Name| spec.layers().iter().position(|l| l.name == *name);
        if let Some(name) = f.input {
            match earlier(&name) {
                Some(source) => layer.input = Some(source),
                None => {
                    unresolved.input.get_or_insert((index, name));
                }
            }
        }
        if let (Some(name), Kind::Add { .. }) = (f.from, layer.kind) {
            match earlier(&name) {
                Some(source) => layer.kind = Kind::Add { source },
                None => {
                    unresolved.from.get_or_insert((index, name));
                }
            }
        }
        spec.layers[index] = layer;
        spec.len += 1;
    }
    Ok(())
}

fn parse_fields<S: Source>(p: &mut Parser<S>) -> Result<Fields, Error> {
    let mut f = Fields::default();
    p.begin_object().map_err(arch_err)?;
    let mut first = true;
    let mut key = [0u8; 8];
    while let Some(k) = p.next_key(&mut first, &mut key).map_err(arch_err)? {
        let dup = match k {
            Some(b"type") => {
                let mut buf = [0u8; 16];
                let kind = p
                    .string(&mut buf)
                    .map_err(arch_err)?
                    .and_then(LayerKind::from_tag)
                    .ok_or_else(|| arch_err(p.error("unknown layer type")))?;
                f.kind.replace(kind).is_some()
            }
            Some(b"name") => {
                let n = name_value(p, "layer name empty or longer than 32 bytes")?;
                f.name.replace(n).is_some()
            }
            Some(b"from") => {
                let n = name_value(p, "`from` empty or longer than 32 bytes")?;
                f.from.replace(n).is_some()
            }
            Some(b"input") => {
                let n = name_value(p, "`input` empty or longer than 32 bytes")?;
                f.input.replace(n).is_some()
            }
            Some(b"filters") => f.filters.replace(dim(p)?).is_some(),
            Some(b"kernel") => f.kernel.replace(dim(p)?).is_some(),
            Some(b"stride") => f.stride.replace(dim(p)?).is_some(),
            Some(b"size") => f.size.replace(dim(p)?).is_some(),
            Some(b"units") => f.units.replace(dim(p)?).is_some(),
            Some(b"padding") => {
                let mut buf = [0u8; 8];
                let v = p
                    .string(&mut buf)
                    .map_err(arch_err)?
                    .and_then(Padding::from_tag)
                    .ok_or_else(|| arch_err(p.error("padding must be \"same\" or \"valid\"")))?;
                f.padding.replace(v).is_some()
            }
            Some(b"momentum") => f.momentum.replace(p.f32().map_err(arch_err)?).is_some(),
            Some(b"epsilon") => f.epsilon.replace(p.f32().map_err(arch_err)?).is_some(),
            Some(b"rate") => f.rate.replace(p.f32().map_err(arch_err)?).is_some(),
            _ => return Err(arch_err(p.error("unknown field in a layer"))),
        };
        if dup {
            return Err(arch_err(p.error("duplicate field in a layer")));
        }
    }
    Ok(f)
}

/// A string value that is a layer name: 1 to [`MAX_NAME`] bytes.
fn name_value<S: Source>(p: &mut Parser<S>, problem: &'static str) -> Result<Name, Error> {
    let mut buf = [0u8; MAX_NAME];
    let n = p.string(&mut buf).map_err(arch_err)?;
    n.filter(|n| !n.is_empty())
        .and_then(Name::new)
        .ok_or_else(|| arch_err(p.error(problem)))
}

/// Checks a layer's fields against its type and fills in the defaults.
fn build_layer(index: usize, f: &Fields) -> Result<LayerSpec, Error> {
    let err = |problem| Error::Layer { index, problem };
    // Which optional fields each type accepts, as a bit set in `Fields` order.
    const NAME: u16 = 1;
    const FILTERS: u16 = 2;
    const KERNEL: u16 = 4;
    const STRIDE: u16 = 8;
    const PADDING: u16 = 16;
    const SIZE: u16 = 32;
    const MOMENTUM: u16 = 64;
    const EPSILON: u16 = 128;
    const RATE: u16 = 256;
    const UNITS: u16 = 512;
    const FROM: u16 = 1024;
    // Any layer may read another layer's output than the previous one's.
    const INPUT: u16 = 2048;
    let present = [
        (NAME, f.name.is_some()),
        (FILTERS, f.filters.is_some()),
        (KERNEL, f.kernel.is_some()),
        (STRIDE, f.stride.is_some()),
        (PADDING, f.padding.is_some()),
        (SIZE, f.size.is_some()),
        (MOMENTUM, f.momentum.is_some()),
        (EPSILON, f.epsilon.is_some()),
        (RATE, f.rate.is_some()),
        (UNITS, f.units.is_some()),
        (FROM, f.from.is_some()),
        (INPUT, f.input.is_some()),
    ]
    .iter()
    .filter(|(_, p)| *p)
    .fold(0, |acc, (bit, _)| acc | bit);
    let (allowed, kind) = match f.kind.ok_or(err("layer has no `type`"))? {
        LayerKind::Conv2d => (
            NAME | FILTERS | KERNEL | STRIDE | PADDING,
            Kind::Conv2d {
                filters: f.filters.ok_or(err("conv2d needs `filters`"))?,
                kernel: f.kernel.ok_or(err("conv2d needs `kernel`"))?,
                stride: f.stride.unwrap_or(defaults::CONV_STRIDE),
                padding: f.padding.unwrap_or(defaults::CONV_PADDING),
            },
        ),
        LayerKind::Relu => (NAME, Kind::Relu),
        LayerKind::Gelu => (NAME, Kind::Gelu),
        LayerKind::MaxPool2d => (
            NAME | SIZE | STRIDE | PADDING,
            Kind::MaxPool2d {
                size: f.size.unwrap_or(defaults::POOL_SIZE),
                stride: f.stride.unwrap_or(defaults::POOL_STRIDE),
                padding: f.padding.unwrap_or(defaults::POOL_PADDING),
            },
        ),
        LayerKind::GlobalAvgPool => (NAME, Kind::GlobalAvgPool),
        LayerKind::BatchNorm => {
            let epsilon = f.epsilon.unwrap_or(defaults::BN_EPSILON);
            if epsilon <= 0.0 {
                return Err(err("batchnorm epsilon must be positive"));
            }
            (NAME | MOMENTUM | EPSILON, Kind::BatchNorm { epsilon })
        }
        LayerKind::Flatten => (NAME, Kind::Flatten),
        LayerKind::Dropout => {
            f.rate.ok_or(err("dropout needs `rate`"))?;
            (NAME | RATE, Kind::Dropout)
        }
        LayerKind::Dense => (
            NAME | UNITS,
            Kind::Dense {
                units: f.units.ok_or(err("dense needs `units`"))?,
            },
        ),
        LayerKind::Add => {
            // The source is resolved by `resolve_sources`, once all layers are named.
            f.from.ok_or(err("add needs `from`"))?;
            (NAME | FROM, Kind::Add { source: 0 })
        }
    };
    if present & !(allowed | INPUT) != 0 {
        return Err(err("field not allowed for this layer type"));
    }
    Ok(LayerSpec {
        kind,
        name: f.name.unwrap_or(Name::EMPTY),
        input: None,
    })
}

/// Rejects duplicate names (among all layers, as the trainer does).
fn check_names<const N: usize>(spec: &Spec<N>) -> Result<(), Error> {
    for (index, layer) in spec.layers().iter().enumerate() {
        let name = layer.name;
        if name.len > 0 && spec.layers[..index].iter().any(|other| other.name == name) {
            return Err(Error::Layer {
                index,
                problem: "duplicate layer name",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::string::String;

    /// The spec as it appears inside the file's JSON string.
    fn escape(s: &str) -> String {
        let mut out = String::new();
        for ch in s.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out
    }

    fn parse_str(s: &str) -> Result<Spec<MAX_LAYERS>, Error> {
        let mut spec = Spec::EMPTY;
        parse(escape(s).as_bytes(), 0, &mut spec).map(|()| spec)
    }

    #[test]
    fn defaults_and_names() {
        let s = parse_str(
            r#"{"name":"t","input":{"height":8,"width":6,"channels":3},"layers":[
            {"type":"conv2d","filters":4,"kernel":3},{"type":"batchnorm"},
            {"type":"conv2d","name":"mine","filters":4,"kernel":1,"stride":2,"padding":"valid"},
            {"type":"conv2d","filters":2,"kernel":3},
            {"type":"maxpool2d"},{"type":"dropout","rate":0.5},{"type":"flatten"},{"type":"dense","units":3}]}"#,
        )
        .unwrap();
        assert_eq!(s.input, Shape { h: 8, w: 6, c: 3 });
        let names: [&[u8]; 8] = [
            b"conv1", b"bn1", b"mine", b"conv3", b"", b"", b"", b"dense1",
        ];
        for (l, n) in s.layers().iter().zip(names) {
            assert_eq!(l.name.as_bytes(), n);
        }
        assert_eq!(
            s.layers()[4].kind,
            Kind::MaxPool2d {
                size: 2,
                stride: 2,
                padding: Padding::Valid
            }
        );
        assert_eq!(s.layers()[1].kind, Kind::BatchNorm { epsilon: 1e-3 });
    }

    #[test]
    fn rejects_bad_specs() {
        let wrap = |layers: &str| {
            let spec = std::format!(
                r#"{{"input":{{"height":4,"width":4,"channels":1}},"layers":[{layers}]}}"#
            );
            parse_str(&spec).err()
        };
        assert!(wrap(r#"{"type":"lstm"}"#).is_some());
        assert!(wrap(r#"{"type":"relu","filters":3}"#).is_some());
        assert!(wrap(r#"{"type":"conv2d","kernel":3}"#).is_some());
        assert!(wrap(r#"{"type":"conv2d","filters":0,"kernel":3}"#).is_some());
        assert!(wrap(r#"{"type":"dense","units":2,"units":3}"#).is_some());
        assert!(wrap(r#"{"type":"dropout"}"#).is_some());
        assert!(wrap(r#"{"type":"batchnorm","epsilon":0}"#).is_some());
        assert!(wrap(
            r#"{"type":"dense","units":2,"name":"a"},{"type":"dense","units":2,"name":"a"}"#
        )
        .is_some());
        assert!(wrap(r#"{"type":"dense","units":2,"bias":true}"#).is_some());
        assert!(wrap(r#"{"type":"dense","units":2}"#).is_none());
        assert_eq!(parse_str("{}").err().map(|_| ()), Some(()));
    }

    /// A spec on a 4×4×1 input with these layers.
    fn with_layers(layers: &str) -> Result<Spec<MAX_LAYERS>, Error> {
        let spec = std::format!(
            r#"{{"input":{{"height":4,"width":4,"channels":1}},"layers":[{layers}]}}"#
        );
        parse_str(&spec)
    }

    #[test]
    fn inputs_name_earlier_layers() {
        let s = with_layers(
            r#"{"type":"relu","name":"a"},{"type":"conv2d","filters":2,"kernel":1},
            {"type":"maxpool2d","input":"a"},{"type":"add","from":"conv1","input":"a"}"#,
        )
        .unwrap();
        let inputs: std::vec::Vec<_> = s.layers().iter().map(|l| l.input).collect();
        assert_eq!(inputs, [None, None, Some(0), Some(0)]);
        assert_eq!(s.layers()[2].input_activation(2), 1);
        assert_eq!(s.layers()[1].input_activation(1), 1);
        let problem = |layers: &str| match with_layers(layers) {
            Err(Error::Layer { index, problem }) => Some((index, problem)),
            other => panic!("{:?}", other.map(|s| s.len)),
        };
        assert_eq!(
            problem(r#"{"type":"relu","input":"x"}"#),
            Some((0, "`input` names no layer"))
        );
        assert_eq!(
            problem(r#"{"type":"relu","input":"b"},{"type":"relu","name":"b"}"#),
            Some((
                0,
                "`input` names a layer that does not come before this one"
            ))
        );
        assert_eq!(
            problem(r#"{"type":"relu","name":"b","input":"b"}"#),
            Some((
                0,
                "`input` names a layer that does not come before this one"
            ))
        );
        assert!(matches!(
            with_layers(r#"{"type":"relu","input":""}"#),
            Err(Error::Architecture { .. })
        ));
    }

    #[test]
    fn names_on_every_layer_and_add_sources() {
        let s = with_layers(
            r#"{"type":"conv2d","filters":2,"kernel":3},{"type":"relu","name":"r"},
            {"type":"maxpool2d","name":"p"},{"type":"batchnorm","name":"b"},
            {"type":"add","from":"p"},{"type":"add","name":"a2","from":"conv1"},
            {"type":"dropout","rate":0.1,"name":"d"},{"type":"global_avg_pool","name":"g"},
            {"type":"flatten","name":"f"},{"type":"dense","units":2}"#,
        )
        .unwrap();
        let names: [&[u8]; 10] = [
            b"conv1", b"r", b"p", b"b", b"", b"a2", b"d", b"g", b"f", b"dense1",
        ];
        for (l, n) in s.layers().iter().zip(names) {
            assert_eq!(l.name.as_bytes(), n);
        }
        // `from` may name a layer by its default name.
        assert_eq!(s.layers()[4].kind, Kind::Add { source: 2 });
        assert_eq!(s.layers()[5].kind, Kind::Add { source: 0 });
    }

    #[test]
    fn rejects_bad_adds() {
        let add_err = |index, problem| Some(Error::Add { index, problem });
        let relu_conv = r#"{"type":"relu","name":"r"},{"type":"conv2d","filters":1,"kernel":1}"#;
        // Unknown name, the add itself, a later layer.
        assert_eq!(
            with_layers(&std::format!(r#"{relu_conv},{{"type":"add","from":"x"}}"#)).err(),
            add_err(2, AddProblem::UnknownSource)
        );
        assert_eq!(
            with_layers(&std::format!(
                r#"{relu_conv},{{"type":"add","name":"a","from":"a"}}"#
            ))
            .err(),
            add_err(2, AddProblem::NotEarlier { source: 2 })
        );
        assert_eq!(
            with_layers(&std::format!(
                r#"{relu_conv},{{"type":"add","from":"conv2"}},{{"type":"conv2d","filters":1,"kernel":1}}"#
            ))
            .err(),
            add_err(2, AddProblem::NotEarlier { source: 3 })
        );
        // Field problems: no `from`, an empty or too long one, `from` elsewhere,
        // an add's unknown field.
        let layer_err = |s: &str| match with_layers(s) {
            Err(Error::Layer { index, .. }) => Some(index),
            Err(Error::Architecture { .. }) => None,
            other => panic!("{s}: {:?}", other.err()),
        };
        assert_eq!(
            layer_err(&std::format!(r#"{relu_conv},{{"type":"add"}}"#)),
            Some(2)
        );
        assert_eq!(layer_err(r#"{"type":"relu","from":"r"}"#), Some(0));
        assert_eq!(layer_err(r#"{"type":"add","from":""}"#), None);
        assert_eq!(
            layer_err(&std::format!(
                r#"{{"type":"add","from":"{}"}}"#,
                "x".repeat(33)
            )),
            None
        );
        assert_eq!(
            layer_err(r#"{"type":"add","from":"r","rate":0.5}"#),
            Some(0)
        );
        // Names are unique across all layers, default names included.
        assert_eq!(
            with_layers(
                r#"{"type":"relu","name":"conv1"},{"type":"conv2d","filters":1,"kernel":1}"#
            )
            .err(),
            Some(Error::Layer {
                index: 1,
                problem: "duplicate layer name"
            })
        );
        assert_eq!(
            with_layers(r#"{"type":"relu","name":"x"},{"type":"flatten","name":"x"}"#).err(),
            Some(Error::Layer {
                index: 1,
                problem: "duplicate layer name"
            })
        );
    }
}
