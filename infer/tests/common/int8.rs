//! Int8 test models: a [`TestModel`] (without batchnorm) quantized here, by
//! FORMAT.md's "Int8 models" rules, written to an int8 file, and a plain
//! integer reference forward pass (i64 accumulators, every tap visited with
//! the padding as `z_x`) to compare `infer` against.

use super::{out_and_pad, Entry, SafeTensors, Shape, TestModel, L};
use model_format::quant::{self, ActQuant, AddMultipliers, Multiplier, GROUP};

/// A parameter layer's `i8` weights (int8 layout), `i32` biases and `f32`
/// weight scales.
pub type QuantParams = (Vec<i8>, Vec<i32>, Vec<f32>);

/// A quantized [`TestModel`].
pub struct Int8Model {
    pub f32: TestModel,
    /// One pair per activation: the input's, then each layer's output's.
    pub acts: Vec<ActQuant>,
    /// Per parameter layer (by index): `i8` weights in the int8 layout,
    /// `i32` biases, `f32` weight scales.
    pub params: Vec<Option<QuantParams>>,
}

/// Whether an add reads layer `i`'s output.
fn read_by_add(layers: &[L], i: usize) -> bool {
    layers
        .iter()
        .any(|l| matches!(l, L::Add { from } if *from == i))
}

impl Int8Model {
    /// Quantizes `tm` (which must have no batchnorm), calibrating the
    /// activations on `calib` images with min/max ranges. A conv/dense right
    /// before a relu takes the relu's range (zero point 0) when
    /// `fuse_ranges`, unless an add reads it; else its own, pre-relu range.
    pub fn quantize(tm: &TestModel, calib: &[Vec<u8>], fuse_ranges: bool) -> Int8Model {
        let n = tm.layers.len();
        assert!(!tm.layers.iter().any(|l| matches!(l, L::Bn { .. })));
        let mut lo = vec![0f64; n];
        let mut hi = vec![0f64; n];
        for img in calib {
            for (i, out) in tm.forward_all(img).iter().enumerate() {
                for &v in out {
                    lo[i] = lo[i].min(v);
                    hi[i] = hi[i].max(v);
                }
            }
        }
        let mut acts = vec![ActQuant::INPUT];
        for (i, l) in tm.layers.iter().enumerate() {
            let own = ActQuant::from_range(lo[i] as f32, hi[i] as f32);
            let prev = acts[i];
            acts.push(match l {
                L::Relu | L::MaxPool { .. } | L::Gap | L::Flatten | L::Dropout => prev,
                L::Conv { .. } | L::Dense { .. } => {
                    let relu_next = matches!(tm.layers.get(i + 1), Some(L::Relu));
                    if fuse_ranges && relu_next && !read_by_add(&tm.layers, i) {
                        ActQuant::from_range(lo[i + 1] as f32, hi[i + 1] as f32)
                    } else {
                        own
                    }
                }
                L::Add { .. } | L::Gelu => own,
                L::Bn { .. } => unreachable!(),
            });
        }
        let shapes = TestModel::shapes(tm.input, &tm.layers).unwrap();
        let mut params = vec![];
        for (i, l) in tm.layers.iter().enumerate() {
            let prev = if i == 0 { tm.input } else { shapes[i - 1] };
            let (taps, ci, co) = match *l {
                L::Conv { filters, k, .. } => (k * k, prev.c, filters),
                L::Dense { units } => (1, prev.c, units),
                _ => {
                    params.push(None);
                    continue;
                }
            };
            let name = tm.names[i].as_ref().unwrap();
            let w = tm.tensor(&format!("{name}.weight"));
            let b = tm.tensor(&format!("{name}.bias"));
            let scales: Vec<f32> = (0..co)
                .map(|c| {
                    let max = (0..taps * ci)
                        .map(|t| w[t * co + c].abs())
                        .fold(0f32, f32::max);
                    quant::weight_scale(max)
                })
                .collect();
            let groups = quant::groups(ci);
            let mut q = vec![0i8; taps * groups * co * GROUP];
            for t in 0..taps {
                for i_c in 0..ci {
                    for c in 0..co {
                        q[((t * groups + i_c / GROUP) * co + c) * GROUP + i_c % GROUP] =
                            quant::quantize_weight(w[(t * ci + i_c) * co + c], scales[c]);
                    }
                }
            }
            let bias = (0..co)
                .map(|c| quant::quantize_bias(b[c], acts[i].scale, scales[c]))
                .collect();
            params.push(Some((q, bias, scales)));
        }
        Int8Model {
            f32: tm.clone(),
            acts,
            params,
        }
    }

    /// The `quantization` metadata value.
    pub fn quantization_json(&self) -> String {
        let pairs: Vec<String> = self
            .acts
            .iter()
            .map(|q| format!("[{},{}]", q.scale, q.zero_point))
            .collect();
        format!(
            r#"{{"scheme":"{}","activations":[{}]}}"#,
            quant::SCHEME,
            pairs.join(",")
        )
    }

    /// The file's contents, ready to be changed by a test.
    pub fn safetensors(&self) -> SafeTensors {
        let tm = &self.f32;
        let shapes = TestModel::shapes(tm.input, &tm.layers).unwrap();
        let mut tensors = vec![];
        for (i, p) in self.params.iter().enumerate() {
            let Some((w, b, s)) = p else { continue };
            let name = tm.names[i].as_ref().unwrap();
            let prev = if i == 0 { tm.input } else { shapes[i - 1] };
            let groups = quant::groups(prev.c);
            let shape = match tm.layers[i] {
                L::Conv { filters, k, .. } => vec![k, k, groups, filters, GROUP],
                L::Dense { units } => vec![groups, units, GROUP],
                _ => unreachable!(),
            };
            let entry = |suffix: &str, dtype: &str, shape: Vec<usize>, data: Vec<u8>| Entry {
                name: format!("{name}.{suffix}"),
                dtype: dtype.into(),
                shape,
                data,
                offsets: None,
            };
            tensors.push(entry(
                "weight",
                "I8",
                shape,
                w.iter().map(|&v| v as u8).collect(),
            ));
            tensors.push(entry(
                "bias",
                "I32",
                vec![b.len()],
                b.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            tensors.push(entry(
                "weight_scale",
                "F32",
                vec![s.len()],
                s.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        }
        SafeTensors {
            metadata: vec![
                ("format".into(), "cifar-cnn/1".into()),
                ("architecture".into(), tm.arch_json()),
                ("class_names".into(), tm.class_names.join(",")),
                ("quantization".into(), self.quantization_json()),
            ],
            tensors,
            metadata_last: false,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.safetensors().to_bytes()
    }

    /// The integer forward pass, straight from FORMAT.md's "Integer
    /// semantics": returns the last layer's `u8` output.
    pub fn forward(&self, image: &[u8]) -> Vec<u8> {
        let tm = &self.f32;
        let mut s = tm.input;
        let mut x: Vec<u8> = image.to_vec();
        let mut outputs: Vec<Vec<u8>> = vec![];
        let at = |s: Shape, y: usize, x: usize, c: usize| (y * s.w + x) * s.c + c;
        for (i, l) in tm.layers.iter().enumerate() {
            let (qi, qo) = (self.acts[i], self.acts[i + 1]);
            let zx = i64::from(qi.zero_point);
            // (weights, biases, multipliers) of a parameter layer.
            let conv_params = || {
                let (w, b, sc) = self.params[i].as_ref().unwrap();
                let m: Vec<Multiplier> = sc
                    .iter()
                    .map(|&ws| Multiplier::for_conv(qi.scale, ws, qo.scale).unwrap())
                    .collect();
                (w, b, m)
            };
            let requant = |acc: i64, m: Multiplier| {
                let acc = i32::try_from(acc).expect("accumulator fits i32");
                quant::requantize(acc, m, qo.zero_point, 0)
            };
            match *l {
                L::Conv {
                    filters,
                    k,
                    stride,
                    same,
                } => {
                    let (w, b, m) = conv_params();
                    let (oh, pt) = out_and_pad(s.h, k, stride, same).unwrap();
                    let (ow, pl) = out_and_pad(s.w, k, stride, same).unwrap();
                    let o = Shape {
                        h: oh,
                        w: ow,
                        c: filters,
                    };
                    let groups = quant::groups(s.c);
                    let mut y = vec![0u8; oh * ow * filters];
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for co in 0..filters {
                                let mut acc = i64::from(b[co]);
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (oy * stride + ky) as isize - pt as isize;
                                        let ix = (ox * stride + kx) as isize - pl as isize;
                                        let inside = iy >= 0
                                            && ix >= 0
                                            && iy < s.h as isize
                                            && ix < s.w as isize;
                                        for ci in 0..s.c {
                                            // Padding is real 0: the value z_x.
                                            let v = if inside {
                                                i64::from(x[at(s, iy as usize, ix as usize, ci)])
                                            } else {
                                                zx
                                            };
                                            let t = (ky * k + kx) * groups + ci / GROUP;
                                            let wq = w[(t * filters + co) * GROUP + ci % GROUP];
                                            acc += (v - zx) * i64::from(wq);
                                        }
                                    }
                                }
                                y[at(o, oy, ox, co)] = requant(acc, m[co]);
                            }
                        }
                    }
                    x = y;
                    s = o;
                }
                L::Dense { units } => {
                    let (w, b, m) = conv_params();
                    x = (0..units)
                        .map(|o| {
                            let mut acc = i64::from(b[o]);
                            for (ci, &v) in x.iter().enumerate() {
                                let wq = w[((ci / GROUP) * units + o) * GROUP + ci % GROUP];
                                acc += (i64::from(v) - zx) * i64::from(wq);
                            }
                            requant(acc, m[o])
                        })
                        .collect();
                    s = Shape {
                        h: 1,
                        w: 1,
                        c: units,
                    };
                }
                L::MaxPool { size, stride, same } => {
                    let (oh, pt) = out_and_pad(s.h, size, stride, same).unwrap();
                    let (ow, pl) = out_and_pad(s.w, size, stride, same).unwrap();
                    let o = Shape {
                        h: oh,
                        w: ow,
                        c: s.c,
                    };
                    let mut y = vec![0u8; oh * ow * s.c];
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for c in 0..s.c {
                                let mut best: Option<u8> = None;
                                for ky in 0..size {
                                    for kx in 0..size {
                                        let iy = (oy * stride + ky) as isize - pt as isize;
                                        let ix = (ox * stride + kx) as isize - pl as isize;
                                        if iy >= 0
                                            && ix >= 0
                                            && iy < s.h as isize
                                            && ix < s.w as isize
                                        {
                                            let v = x[at(s, iy as usize, ix as usize, c)];
                                            best = Some(best.map_or(v, |b| b.max(v)));
                                        }
                                    }
                                }
                                y[at(o, oy, ox, c)] = best.unwrap();
                            }
                        }
                    }
                    x = y;
                    s = o;
                }
                L::Gap => {
                    let n = (s.h * s.w) as i32;
                    x = (0..s.c)
                        .map(|c| {
                            let sum: i64 = x
                                .iter()
                                .skip(c)
                                .step_by(s.c)
                                .map(|&v| i64::from(v) - zx)
                                .sum();
                            let avg = quant::rounded_div(sum as i32, n);
                            (zx as i32 + avg).clamp(0, 255) as u8
                        })
                        .collect();
                    s = Shape { h: 1, w: 1, c: s.c };
                }
                L::Relu => x.iter_mut().for_each(|v| *v = (*v).max(qi.zero_point)),
                // FORMAT.md: the output byte nearest the format's gelu of the input's value.
                L::Gelu => x
                    .iter_mut()
                    .for_each(|v| *v = qo.quantize(model_format::gelu::gelu(qi.dequantize(*v)))),
                L::Flatten => {
                    s = Shape {
                        h: 1,
                        w: 1,
                        c: x.len(),
                    }
                }
                L::Dropout => {}
                L::Add { from } => {
                    let qs = self.acts[from + 1];
                    let m = AddMultipliers::new(qi, qs, qo).unwrap();
                    for (v, &k) in x.iter_mut().zip(&outputs[from]) {
                        *v = quant::add(*v, qi.zero_point, k, qs.zero_point, qo.zero_point, &m);
                    }
                }
                L::Bn { .. } => unreachable!(),
            }
            outputs.push(x.clone());
        }
        x
    }

    /// The probabilities of [`Int8Model::forward`]'s output: the softmax of
    /// its dequantized values, in `f64`.
    pub fn probabilities(&self, image: &[u8]) -> Vec<f64> {
        let q = *self.acts.last().unwrap();
        let z: Vec<f64> = self
            .forward(image)
            .iter()
            .map(|&v| f64::from(q.dequantize(v)))
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }
}

/// `layers` with every batchnorm replaced by a relu (int8 models have none;
/// folding is the quantizer's job, tested in the trainer).
pub fn without_batchnorm(layers: Vec<L>) -> Vec<L> {
    layers
        .into_iter()
        .map(|l| {
            if matches!(l, L::Bn { .. }) {
                L::Relu
            } else {
                l
            }
        })
        .collect()
}
