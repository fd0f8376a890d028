//! Test support: random models described independently of `infer`, written
//! to safetensors by a small writer of our own, and a naive `f64` reference
//! forward pass written straight from the formulas in `docs/FORMAT.md`.
#![allow(dead_code)]

use std::collections::HashMap;

pub mod int8;

/// xorshift64*: deterministic, dependency-free randomness for tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    /// Uniform integer in `[lo, hi]`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[derive(Clone, Debug)]
pub enum L {
    Conv {
        filters: usize,
        k: usize,
        stride: usize,
        same: bool,
    },
    Relu,
    Gelu,
    MaxPool {
        size: usize,
        stride: usize,
        same: bool,
    },
    Gap,
    Bn {
        eps: f32,
    },
    Flatten,
    Dropout,
    Dense {
        units: usize,
    },
    /// Residual connection: adds the output of layer `from` (an earlier index).
    Add {
        from: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// `(out, pad_before)` along one axis, TensorFlow's rule.
pub fn out_and_pad(input: usize, k: usize, s: usize, same: bool) -> Option<(usize, usize)> {
    if same {
        let out = input.div_ceil(s);
        let total = ((out - 1) * s + k).saturating_sub(input);
        Some((out, total / 2))
    } else if input >= k {
        Some(((input - k) / s + 1, 0))
    } else {
        None
    }
}

/// A model: architecture plus named parameter tensors.
#[derive(Clone, Debug)]
pub struct TestModel {
    pub input: Shape,
    pub layers: Vec<L>,
    /// Layer names: every parameter layer's, and `skip{i}` for the other
    /// layers that an add reads (`None` for the rest).
    pub names: Vec<Option<String>>,
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub class_names: Vec<String>,
}

impl TestModel {
    /// Output shape of every layer; `None` if the architecture does not fit.
    pub fn shapes(input: Shape, layers: &[L]) -> Option<Vec<Shape>> {
        let mut s = input;
        let mut out = vec![];
        for l in layers {
            s = match *l {
                L::Add { from } => {
                    if *out.get(from)? != s {
                        return None;
                    }
                    s
                }
                L::Conv {
                    filters,
                    k,
                    stride,
                    same,
                } => Shape {
                    h: out_and_pad(s.h, k, stride, same)?.0,
                    w: out_and_pad(s.w, k, stride, same)?.0,
                    c: filters,
                },
                L::MaxPool { size, stride, same } => Shape {
                    h: out_and_pad(s.h, size, stride, same)?.0,
                    w: out_and_pad(s.w, size, stride, same)?.0,
                    c: s.c,
                },
                L::Gap => Shape { h: 1, w: 1, c: s.c },
                L::Flatten => Shape {
                    h: 1,
                    w: 1,
                    c: s.h * s.w * s.c,
                },
                L::Dense { units } => {
                    if s.h != 1 || s.w != 1 {
                        return None;
                    }
                    Shape {
                        h: 1,
                        w: 1,
                        c: units,
                    }
                }
                L::Relu | L::Gelu | L::Bn { .. } | L::Dropout => s,
            };
            out.push(s);
        }
        Some(out)
    }

    /// Random parameters (scaled by `1/√fan_in` so activations stay O(1)).
    pub fn random(input: Shape, layers: Vec<L>, seed: u64) -> TestModel {
        let shapes = Self::shapes(input, &layers).expect("architecture fits");
        let mut rng = Rng::new(seed);
        let mut counts = HashMap::new();
        let mut names = vec![];
        let mut tensors = vec![];
        let mut prev = input;
        for (l, &out) in layers.iter().zip(&shapes) {
            let mut name = |prefix: &str| {
                let n = counts.entry(prefix.to_string()).or_insert(0);
                *n += 1;
                format!("{prefix}{n}")
            };
            let mut rand = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
                (0..n).map(|_| rng.uniform(lo, hi)).collect()
            };
            match *l {
                L::Conv { filters, k, .. } => {
                    let nm = name("conv");
                    let a = (3.0 / (k * k * prev.c) as f32).sqrt();
                    tensors.push((
                        format!("{nm}.weight"),
                        vec![k, k, prev.c, filters],
                        rand(k * k * prev.c * filters, -a, a),
                    ));
                    tensors.push((
                        format!("{nm}.bias"),
                        vec![filters],
                        rand(filters, -0.1, 0.1),
                    ));
                    names.push(Some(nm));
                }
                L::Dense { units } => {
                    let nm = name("dense");
                    let a = (3.0 / prev.c as f32).sqrt();
                    tensors.push((
                        format!("{nm}.weight"),
                        vec![prev.c, units],
                        rand(prev.c * units, -a, a),
                    ));
                    tensors.push((format!("{nm}.bias"), vec![units], rand(units, -0.1, 0.1)));
                    names.push(Some(nm));
                }
                L::Bn { .. } => {
                    let nm = name("bn");
                    let c = prev.c;
                    tensors.push((format!("{nm}.gamma"), vec![c], rand(c, 0.5, 1.5)));
                    tensors.push((format!("{nm}.beta"), vec![c], rand(c, -0.5, 0.5)));
                    tensors.push((format!("{nm}.moving_mean"), vec![c], rand(c, -0.5, 0.5)));
                    tensors.push((format!("{nm}.moving_variance"), vec![c], rand(c, 0.5, 2.0)));
                    names.push(Some(nm));
                }
                _ => names.push(None),
            }
            prev = out;
        }
        for l in &layers {
            if let L::Add { from } = *l {
                names[from].get_or_insert_with(|| format!("skip{from}"));
            }
        }
        let classes = shapes.last().unwrap().c;
        TestModel {
            input,
            layers,
            names,
            tensors,
            class_names: (0..classes).map(|i| format!("class{i}")).collect(),
        }
    }

    /// The canonical architecture JSON (every field present).
    pub fn arch_json(&self) -> String {
        let pad = |same: bool| if same { "same" } else { "valid" };
        // `,"name":"…"` for a named layer without parameters.
        let named = |n: &Option<String>| {
            n.as_ref()
                .map(|n| format!(r#","name":"{n}""#))
                .unwrap_or_default()
        };
        let layers: Vec<String> = self
            .layers
            .iter()
            .zip(&self.names)
            .map(|(l, n)| match *l {
                L::Conv {
                    filters,
                    k,
                    stride,
                    same,
                } => format!(
                    r#"{{"type":"conv2d","name":"{}","filters":{filters},"kernel":{k},"stride":{stride},"padding":"{}"}}"#,
                    n.as_ref().unwrap(),
                    pad(same)
                ),
                L::Relu => format!(r#"{{"type":"relu"{}}}"#, named(n)),
                L::Gelu => format!(r#"{{"type":"gelu"{}}}"#, named(n)),
                L::MaxPool { size, stride, same } => format!(
                    r#"{{"type":"maxpool2d"{},"size":{size},"stride":{stride},"padding":"{}"}}"#,
                    named(n),
                    pad(same)
                ),
                L::Gap => format!(r#"{{"type":"global_avg_pool"{}}}"#, named(n)),
                L::Bn { eps } => format!(
                    r#"{{"type":"batchnorm","name":"{}","momentum":0.99,"epsilon":{eps}}}"#,
                    n.as_ref().unwrap()
                ),
                L::Flatten => format!(r#"{{"type":"flatten"{}}}"#, named(n)),
                L::Dropout => format!(r#"{{"type":"dropout"{},"rate":0.25}}"#, named(n)),
                L::Dense { units } => format!(
                    r#"{{"type":"dense","name":"{}","units":{units}}}"#,
                    n.as_ref().unwrap()
                ),
                L::Add { from } => format!(
                    r#"{{"type":"add"{},"from":"{}"}}"#,
                    named(n),
                    self.names[from].as_ref().unwrap()
                ),
            })
            .collect();
        format!(
            r#"{{"name":"test","input":{{"height":{},"width":{},"channels":{}}},"layers":[{}]}}"#,
            self.input.h,
            self.input.w,
            self.input.c,
            layers.join(",")
        )
    }

    /// The file's contents, ready to be changed by a test.
    pub fn safetensors(&self) -> SafeTensors {
        SafeTensors {
            metadata: vec![
                ("format".into(), "cifar-cnn/1".into()),
                ("architecture".into(), self.arch_json()),
                ("class_names".into(), self.class_names_json()),
            ],
            tensors: self
                .tensors
                .iter()
                .map(|(n, s, v)| Entry {
                    name: n.clone(),
                    dtype: "F32".into(),
                    shape: s.clone(),
                    data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    offsets: None,
                })
                .collect(),
            metadata_last: false,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.safetensors().to_bytes()
    }

    pub fn input_len(&self) -> usize {
        self.input.h * self.input.w * self.input.c
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The `class_names` metadata value: a JSON array of strings.
    pub fn class_names_json(&self) -> String {
        let names: Vec<String> = self.class_names.iter().map(|n| json_string(n)).collect();
        format!("[{}]", names.join(","))
    }

    pub fn tensor(&self, name: &str) -> &[f32] {
        &self.tensors.iter().find(|t| t.0 == name).unwrap().2
    }

    /// Reference forward pass in `f64`, straight from FORMAT.md. Returns the
    /// probabilities.
    pub fn forward(&self, image: &[u8]) -> Vec<f64> {
        let outputs = self.forward_all(image);
        let x = outputs.last().unwrap();
        let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    /// [`TestModel::forward`]'s every layer output.
    pub fn forward_all(&self, image: &[u8]) -> Vec<Vec<f64>> {
        let mut s = self.input;
        let mut x: Vec<f64> = image.iter().map(|&v| f64::from(v) / 255.0).collect();
        // Every layer's output, for the adds.
        let mut outputs: Vec<Vec<f64>> = vec![];
        for (l, name) in self.layers.iter().zip(&self.names) {
            let p = |suffix: &str| -> Vec<f64> {
                self.tensor(&format!("{}.{suffix}", name.as_ref().unwrap()))
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect()
            };
            let at = |s: Shape, y: usize, x: usize, c: usize| (y * s.w + x) * s.c + c;
            match *l {
                L::Conv {
                    filters,
                    k,
                    stride,
                    same,
                } => {
                    let (oh, pt) = out_and_pad(s.h, k, stride, same).unwrap();
                    let (ow, pl) = out_and_pad(s.w, k, stride, same).unwrap();
                    let o = Shape {
                        h: oh,
                        w: ow,
                        c: filters,
                    };
                    let (w, b) = (p("weight"), p("bias"));
                    let mut y = vec![0.0; oh * ow * filters];
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for co in 0..filters {
                                let mut acc = b[co];
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (oy * stride + ky) as isize - pt as isize;
                                        let ix = (ox * stride + kx) as isize - pl as isize;
                                        if iy < 0
                                            || ix < 0
                                            || iy >= s.h as isize
                                            || ix >= s.w as isize
                                        {
                                            continue;
                                        }
                                        for ci in 0..s.c {
                                            acc += x[at(s, iy as usize, ix as usize, ci)]
                                                * w[((ky * k + kx) * s.c + ci) * filters + co];
                                        }
                                    }
                                }
                                y[at(o, oy, ox, co)] = acc;
                            }
                        }
                    }
                    x = y;
                    s = o;
                }
                L::MaxPool { size, stride, same } => {
                    let (oh, pt) = out_and_pad(s.h, size, stride, same).unwrap();
                    let (ow, pl) = out_and_pad(s.w, size, stride, same).unwrap();
                    let o = Shape {
                        h: oh,
                        w: ow,
                        c: s.c,
                    };
                    let mut y = vec![f64::NEG_INFINITY; oh * ow * s.c];
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for c in 0..s.c {
                                for ky in 0..size {
                                    for kx in 0..size {
                                        let iy = (oy * stride + ky) as isize - pt as isize;
                                        let ix = (ox * stride + kx) as isize - pl as isize;
                                        if iy < 0
                                            || ix < 0
                                            || iy >= s.h as isize
                                            || ix >= s.w as isize
                                        {
                                            continue;
                                        }
                                        let v = x[at(s, iy as usize, ix as usize, c)];
                                        let cell = &mut y[at(o, oy, ox, c)];
                                        *cell = cell.max(v);
                                    }
                                }
                            }
                        }
                    }
                    x = y;
                    s = o;
                }
                L::Gap => {
                    let n = (s.h * s.w) as f64;
                    let mut y = vec![0.0; s.c];
                    for (i, v) in x.iter().enumerate() {
                        y[i % s.c] += v / n;
                    }
                    x = y;
                    s = Shape { h: 1, w: 1, c: s.c };
                }
                L::Bn { eps } => {
                    let (g, b, m, v) = (
                        p("gamma"),
                        p("beta"),
                        p("moving_mean"),
                        p("moving_variance"),
                    );
                    for (i, val) in x.iter_mut().enumerate() {
                        let c = i % s.c;
                        *val = g[c] * (*val - m[c]) / (v[c] + f64::from(eps)).sqrt() + b[c];
                    }
                }
                L::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
                // x · Φ(x), Φ from libm's erfc in f64 (not the format's f32 formula).
                L::Gelu => x
                    .iter_mut()
                    .for_each(|v| *v *= 0.5 * libm::erfc(-*v / std::f64::consts::SQRT_2)),
                L::Flatten => {
                    s = Shape {
                        h: 1,
                        w: 1,
                        c: x.len(),
                    }
                }
                L::Dropout => {}
                L::Add { from } => {
                    for (v, s) in x.iter_mut().zip(&outputs[from]) {
                        *v += s;
                    }
                }
                L::Dense { units } => {
                    let (w, b) = (p("weight"), p("bias"));
                    let y = (0..units)
                        .map(|o| b[o] + (0..s.c).map(|i| x[i] * w[i * units + o]).sum::<f64>())
                        .collect();
                    x = y;
                    s = Shape {
                        h: 1,
                        w: 1,
                        c: units,
                    };
                }
            }
            outputs.push(x.clone());
        }
        outputs
    }
}

/// One tensor entry as the writer will emit it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
    /// Overrides the `data_offsets` written (the data is still laid out in order).
    pub offsets: Option<(u64, u64)>,
}

/// A safetensors file under construction.
#[derive(Clone, Debug)]
pub struct SafeTensors {
    pub metadata: Vec<(String, String)>,
    pub tensors: Vec<Entry>,
    pub metadata_last: bool,
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl SafeTensors {
    /// The header JSON (unpadded) and the data.
    pub fn header_and_data(&self) -> (String, Vec<u8>) {
        let mut data = vec![];
        let mut entries = vec![];
        for t in &self.tensors {
            let (b, e) = (data.len() as u64, (data.len() + t.data.len()) as u64);
            data.extend_from_slice(&t.data);
            let (b, e) = t.offsets.unwrap_or((b, e));
            let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            entries.push(format!(
                r#"{}:{{"dtype":{},"shape":[{}],"data_offsets":[{b},{e}]}}"#,
                json_string(&t.name),
                json_string(&t.dtype),
                shape.join(",")
            ));
        }
        let meta: Vec<String> = self
            .metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        let meta = format!(r#""__metadata__":{{{}}}"#, meta.join(","));
        if self.metadata_last {
            entries.push(meta);
        } else {
            entries.insert(0, meta);
        }
        (format!("{{{}}}", entries.join(",")), data)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let (header, data) = self.header_and_data();
        raw_file(&header, &data)
    }
}

/// `[u64 LE length][header padded with spaces to a multiple of 8][data]`.
pub fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Model 1 of the project (FORMAT.md), with random weights.
pub fn model1(seed: u64) -> TestModel {
    let conv = |filters| L::Conv {
        filters,
        k: 3,
        stride: 1,
        same: true,
    };
    let pool = L::MaxPool {
        size: 2,
        stride: 2,
        same: false,
    };
    let layers = vec![
        conv(32),
        L::Relu,
        conv(32),
        L::Relu,
        pool.clone(),
        conv(64),
        L::Relu,
        conv(64),
        L::Relu,
        pool.clone(),
        conv(128),
        L::Relu,
        conv(128),
        L::Relu,
        pool,
        L::Flatten,
        L::Dropout,
        L::Dense { units: 128 },
        L::Relu,
        L::Dense { units: 10 },
    ];
    TestModel::random(Shape { h: 32, w: 32, c: 3 }, layers, seed)
}

/// A random architecture that fits its input (small, to keep the reference fast).
pub fn random_architecture(rng: &mut Rng) -> (Shape, Vec<L>) {
    loop {
        let input = Shape {
            h: rng.range(1, 13),
            w: rng.range(1, 13),
            c: rng.range(1, 4),
        };
        let mut layers = vec![];
        for _ in 0..rng.range(1, 5) {
            layers.push(match rng.range(0, 6) {
                0 | 1 => L::Conv {
                    filters: rng.range(1, 40),
                    k: rng.range(1, 5),
                    stride: rng.range(1, 2),
                    same: rng.range(0, 1) == 0,
                },
                2 => L::MaxPool {
                    size: rng.range(1, 3),
                    stride: rng.range(1, 3),
                    same: rng.range(0, 1) == 0,
                },
                3 => L::Relu,
                4 => L::Bn {
                    eps: [1e-3, 1e-5, 0.1][rng.range(0, 2)],
                },
                5 => L::Gelu,
                _ => L::Dropout,
            });
        }
        layers.push(if rng.range(0, 2) == 0 {
            L::Gap
        } else {
            L::Flatten
        });
        if rng.range(0, 1) == 0 {
            layers.push(L::Dense {
                units: rng.range(1, 40),
            });
            layers.push(L::Relu);
        }
        layers.push(L::Dense {
            units: rng.range(1, 12),
        });
        if TestModel::shapes(input, &layers).is_some() {
            return (input, layers);
        }
    }
}

/// A random architecture with residual connections: each `add` reads a random
/// earlier layer of the current shape (possibly the one just before it, a conv
/// or dense whose relu must then not be fused, or one read by several adds).
pub fn random_residual_architecture(rng: &mut Rng) -> (Shape, Vec<L>) {
    loop {
        let input = Shape {
            h: rng.range(1, 9),
            w: rng.range(1, 9),
            c: rng.range(1, 4),
        };
        let mut layers: Vec<L> = vec![];
        let mut adds = 0;
        let mut body = |layers: &mut Vec<L>, rng: &mut Rng, steps: usize| {
            for _ in 0..steps {
                let shapes = TestModel::shapes(input, layers).unwrap();
                let current = shapes.last().copied().unwrap_or(input);
                let sources: Vec<usize> = (0..shapes.len())
                    .filter(|&i| shapes[i] == current)
                    .collect();
                let layer = if !sources.is_empty() && rng.range(0, 2) == 0 {
                    adds += 1;
                    L::Add {
                        from: sources[rng.range(0, sources.len() - 1)],
                    }
                } else {
                    match rng.range(0, 7) {
                        0..=2 => L::Conv {
                            filters: if rng.range(0, 1) == 0 {
                                current.c
                            } else {
                                rng.range(1, 24)
                            },
                            k: rng.range(1, 3),
                            stride: rng.range(1, 2),
                            same: rng.range(0, 3) > 0,
                        },
                        3 => L::MaxPool {
                            size: rng.range(1, 3),
                            stride: rng.range(1, 2),
                            same: true,
                        },
                        4 => L::Bn { eps: 1e-3 },
                        5 => L::Relu,
                        6 => L::Gelu,
                        _ => L::Dropout,
                    }
                };
                layers.push(layer);
                if TestModel::shapes(input, layers).is_none() {
                    layers.pop();
                }
            }
        };
        let steps = rng.range(2, 10);
        body(&mut layers, rng, steps);
        layers.push(if rng.range(0, 1) == 0 {
            L::Gap
        } else {
            L::Flatten
        });
        // A dense block on the vector: dense, relu, add (reads the dense's
        // pre-relu output or the vector before it, when the widths agree).
        if rng.range(0, 1) == 0 {
            let width = TestModel::shapes(input, &layers).unwrap().last().unwrap().c;
            let units = if rng.range(0, 1) == 0 {
                width
            } else {
                rng.range(1, 30)
            };
            layers.push(L::Dense { units });
            layers.push(L::Relu);
            body(&mut layers, rng, 2);
        }
        layers.push(L::Dense {
            units: rng.range(1, 12),
        });
        if adds > 0 && TestModel::shapes(input, &layers).is_some() {
            return (input, layers);
        }
    }
}
