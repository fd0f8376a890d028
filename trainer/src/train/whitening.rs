//! Initialisations computed from the recipe (and the data) rather than drawn
//! at random, as airbench (Keller Jordan, 2024) uses them:
//!
//! - **whitening**: the first convolution's `k × k × C` filters become the
//!   whitening transform of the image patches it sees. With `Σ` the
//!   covariance of the `d = k²C` values of every `k × k` patch of the first
//!   `images` training images (as the network receives them, `pixel / 255`),
//!   `Σ = Σᵢ λᵢ vᵢ vᵢᵀ` its eigen-decomposition and `s = trace(Σ) / d` the mean
//!   variance, filter `i` is `vᵢ / √(λᵢ/s + ε) / √s` and filter `d + i` its
//!   negative (so a following ReLU keeps both signs): the `2d` outputs are
//!   decorrelated with unit variance (up to `ε`, relative to the mean
//!   variance as in airbench, whose inputs are normalised to unit variance).
//!   The bias is set to `−W·μ` (μ the mean patch), so the outputs have zero
//!   mean, as airbench's normalised inputs give. The filters are then held
//!   fixed; the bias trains for `bias_epochs` epochs and is then held too.
//! - **dirac**: in every other convolution with an odd kernel, the first
//!   `min(C_in, C_out)` filters become the identity (filter `c` copies input
//!   channel `c` through its centre tap), so each block starts close to
//!   passing its input through.

use crate::data::Split;
use crate::layers::Padding;
use crate::model::network::Network;
use crate::model::spec::LayerSpec;
use serde::{Deserialize, Serialize};

/// The recipe's `"whitening"` object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Whitening {
    /// The convolution to set: the first layer, with `2·k²·C` filters.
    pub layer: String,
    /// Training images whose patches give the statistics.
    #[serde(default = "default_images")]
    pub images: usize,
    /// ε, relative to the mean variance of a patch value.
    #[serde(default = "default_epsilon")]
    pub epsilon: f32,
    /// Epochs the bias trains before it is held fixed (0: never trains).
    #[serde(default)]
    pub bias_epochs: usize,
}

fn default_images() -> usize {
    5000
}

fn default_epsilon() -> f32 {
    5e-4
}

impl Whitening {
    /// Checks the setting against the architecture: the layer must be the
    /// first, a convolution of stride 1 without padding (each output is one
    /// patch), with twice as many filters as a patch has values.
    pub fn check(&self, net: &Network) -> Result<(), String> {
        let spec = net.spec();
        let input = spec.input;
        let first = spec.layers.first();
        let ok = match first {
            Some(LayerSpec::Conv2d {
                name: Some(name),
                filters,
                kernel,
                stride: 1,
                padding: Padding::Valid,
                ..
            }) if *name == self.layer => *filters == 2 * kernel * kernel * input.channels,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "whitening layer {}: must be the first layer, a conv2d named so with stride 1, \
                 padding \"valid\" and 2·kernel²·channels filters",
                self.layer
            ));
        }
        if self.images == 0 {
            return Err("whitening images must be at least 1".into());
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(format!(
                "whitening epsilon {} must be positive",
                self.epsilon
            ));
        }
        Ok(())
    }

    /// Sets the layer's filters and bias from the first `images` images of
    /// `train` (see the module's documentation).
    pub fn apply(&self, net: &mut Network, train: &Split) -> Result<(), String> {
        self.check(net)?;
        let kernel = match net.spec().layers[0] {
            LayerSpec::Conv2d { kernel, .. } => kernel,
            _ => unreachable!("checked"),
        };
        let shape = train.shape;
        let d = kernel * kernel * shape.channels;
        let n = self.images.min(train.len());
        if n == 0 {
            return Err("whitening needs training images".into());
        }
        // Mean and second moment of the patches, in f64.
        let (mut sum, mut outer) = (vec![0.0f64; d], vec![0.0f64; d * d]);
        let mut patch = vec![0.0f64; d];
        let mut count = 0usize;
        for i in 0..n {
            let img = train.image(i);
            for y in 0..=shape.height - kernel {
                for x in 0..=shape.width - kernel {
                    for dy in 0..kernel {
                        for dx in 0..kernel {
                            let at = ((y + dy) * shape.width + x + dx) * shape.channels;
                            for c in 0..shape.channels {
                                patch[(dy * kernel + dx) * shape.channels + c] =
                                    f64::from(img[at + c]) / 255.0;
                            }
                        }
                    }
                    for (s, p) in sum.iter_mut().zip(&patch) {
                        *s += p;
                    }
                    for a in 0..d {
                        for b in a..d {
                            outer[a * d + b] += patch[a] * patch[b];
                        }
                    }
                    count += 1;
                }
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
        let mut cov = vec![0.0f64; d * d];
        for a in 0..d {
            for b in a..d {
                let c = outer[a * d + b] / count as f64 - mean[a] * mean[b];
                cov[a * d + b] = c;
                cov[b * d + a] = c;
            }
        }
        let s = (0..d).map(|a| cov[a * d + a]).sum::<f64>() / d as f64;
        let (values, vectors) = symmetric_eigen(&cov, d);
        // HWIO: weight[((dy·k + dx)·C + c)·2d + o].
        let filters = 2 * d;
        let mut weight = vec![0.0f32; d * filters];
        let mut bias = vec![0.0f32; filters];
        for i in 0..d {
            let scale =
                1.0 / ((values[i].max(0.0) / s + f64::from(self.epsilon)).sqrt() * s.sqrt());
            let mut w_mu = 0.0;
            for a in 0..d {
                let w = vectors[a * d + i] * scale;
                weight[a * filters + i] = w as f32;
                weight[a * filters + d + i] = -w as f32;
                w_mu += w * mean[a];
            }
            bias[i] = -w_mu as f32;
            bias[d + i] = w_mu as f32;
        }
        set_tensor(net, &format!("{}.weight", self.layer), &weight);
        set_tensor(net, &format!("{}.bias", self.layer), &bias);
        Ok(())
    }
}

/// The recipe's initialisation of a fresh network: named layers' weights
/// scaled (`cfg.init_scales`), Dirac filters (when `cfg.dirac`), then the
/// whitening layer from the first images of `train`.
pub fn initialise(
    net: &mut Network,
    cfg: &crate::train::TrainConfig,
    train: &Split,
) -> Result<(), String> {
    let whitened = cfg.whitening.as_ref().map(|w| w.layer.as_str());
    for (layer, f) in &cfg.init_scales {
        let name = format!("{layer}.weight");
        if !net.named_tensors().iter().any(|(n, _, _)| *n == name) {
            return Err(format!("init_scales: no layer {layer} with weights"));
        }
        let w: Vec<f32> = get_tensor(net, &name).iter().map(|v| v * f).collect();
        set_tensor(net, &name, &w);
    }
    if cfg.dirac {
        dirac(net, whitened);
    }
    if let Some(w) = &cfg.whitening {
        w.apply(net, train)?;
    }
    Ok(())
}

/// Dirac initialisation of every convolution with an odd kernel except
/// `skip` (see the module's documentation).
pub fn dirac(net: &mut Network, skip: Option<&str>) {
    let shapes = net
        .spec()
        .shapes()
        .expect("a built network's spec is valid");
    let inputs = net.spec().inputs();
    let mut targets = Vec::new();
    for (i, layer) in net.spec().layers.iter().enumerate() {
        if let LayerSpec::Conv2d {
            name: Some(name),
            filters,
            kernel,
            ..
        } = layer
        {
            let cin = match inputs[i] {
                0 => net.spec().input.channels,
                a => shapes[a - 1].channels,
            };
            if kernel % 2 == 1 && Some(name.as_str()) != skip {
                targets.push((format!("{name}.weight"), *kernel, cin, *filters));
            }
        }
    }
    for (tensor, k, cin, cout) in targets {
        let mut w = get_tensor(net, &tensor);
        let centre = (k / 2) * k + k / 2;
        for o in 0..cin.min(cout) {
            for tap in 0..k * k {
                for c in 0..cin {
                    w[(tap * cin + c) * cout + o] = f32::from(tap == centre && c == o);
                }
            }
        }
        set_tensor(net, &tensor, &w);
    }
}

fn tensor_index(net: &Network, name: &str) -> usize {
    net.named_tensors()
        .iter()
        .position(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("the network has a tensor {name}"))
}

fn get_tensor(net: &Network, name: &str) -> Vec<f32> {
    net.named_tensors()[tensor_index(net, name)].2.to_vec()
}

fn set_tensor(net: &mut Network, name: &str, values: &[f32]) {
    let i = tensor_index(net, name);
    net.tensors_mut()[i].copy_from_slice(values);
}

/// Eigenvalues and eigenvectors of the symmetric `d × d` matrix `a` (row
/// major) by cyclic Jacobi rotations: `(λ, V)` with `V` column `i`
/// (`V[r·d + i]`) the unit eigenvector of `λᵢ`, in decreasing order of `λ`.
/// For the small matrices here (12 × 12 for 2 × 2 RGB patches) this is exact
/// to rounding and needs no linear-algebra crate.
pub fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|p| (0..d).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| m[p * d + q] * m[p * d + q])
            .sum();
        let scale: f64 = (0..d).map(|p| m[p * d + p] * m[p * d + p]).sum::<f64>();
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = m[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * d + q] - m[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // m ← Jᵀ m J, rotating rows and columns p, q.
                for k in 0..d {
                    let (mkp, mkq) = (m[k * d + p], m[k * d + q]);
                    m[k * d + p] = c * mkp - s * mkq;
                    m[k * d + q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let (mpk, mqk) = (m[p * d + k], m[q * d + k]);
                    m[p * d + k] = c * mpk - s * mqk;
                    m[q * d + k] = s * mpk + c * mqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| m[j * d + j].total_cmp(&m[i * d + i]));
    let values = order.iter().map(|&i| m[i * d + i]).collect();
    let mut vectors = vec![0.0f64; d * d];
    for (col, &i) in order.iter().enumerate() {
        for r in 0..d {
            vectors[r * d + col] = v[r * d + i];
        }
    }
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tensor::ImageShape;
    use crate::layers::Mode;
    use crate::model::spec::ModelSpec;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `A·vᵢ = λᵢ·vᵢ`, the vectors orthonormal, the values in decreasing order.
    #[test]
    fn eigen_decomposition_reconstructs_the_matrix() {
        let d = 12;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let b: Vec<f64> = (0..d * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        // A = BᵀB: symmetric, positive semi-definite, with spread values.
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                a[i * d + j] = (0..d).map(|k| b[k * d + i] * b[k * d + j]).sum();
            }
        }
        let (values, v) = symmetric_eigen(&a, d);
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
        for i in 0..d {
            for j in 0..d {
                let dot: f64 = (0..d).map(|r| v[r * d + i] * v[r * d + j]).sum();
                assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-10);
                let av: f64 = (0..d).map(|k| a[j * d + k] * v[k * d + i]).sum();
                assert!((av - values[i] * v[j * d + i]).abs() < 1e-9);
            }
        }
    }

    fn whitening_net() -> Network {
        let spec = ModelSpec::from_json_str(
            r#"{"name":"w","input":{"height":8,"width":8,"channels":3},"layers":[
                {"type":"conv2d","name":"whiten","filters":24,"kernel":2,"padding":"valid"},
                {"type":"conv2d","name":"c","filters":30,"kernel":3},
                {"type":"flatten"},{"type":"dense","units":2}]}"#,
        )
        .unwrap();
        Network::new(&spec, 1).unwrap()
    }

    /// Correlated random images (channels share a component, neighbours
    /// too): after whitening, the first 12 outputs over those images have
    /// mean 0 and identity covariance (to ε), the next 12 are their negatives.
    #[test]
    fn whitened_outputs_are_decorrelated() {
        let shape = ImageShape::new(8, 8, 3);
        let mut split = Split::new(shape);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let base: Vec<f32> = (0..64).map(|_| rng.random_range(0.0..1.0)).collect();
            let img: Vec<u8> = (0..64 * 3)
                .map(|i| {
                    let (p, c) = (i / 3, i % 3);
                    let smooth = 0.5 * base[p] + 0.5 * base[(p + 1) % 64];
                    let v = 40.0
                        + 150.0 * smooth
                        + 30.0 * c as f32 * base[p]
                        + rng.random_range(0.0..20.0);
                    v as u8
                })
                .collect();
            split.images.extend_from_slice(&img);
            split.labels.push(0);
        }
        let mut net = whitening_net();
        let w = Whitening {
            layer: "whiten".into(),
            images: 200,
            epsilon: 1e-9,
            bias_epochs: 0,
        };
        w.apply(&mut net, &split).unwrap();
        net.set_input_u8(&split.images, split.len());
        net.forward(Mode::Eval);
        let out = &net.layer_outputs()[0].data;
        let (d, n) = (12, out.len() / 24);
        let mut mean = [0.0f64; 24];
        for row in out.chunks_exact(24) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += f64::from(*v) / n as f64;
            }
        }
        for (i, m) in mean.iter().enumerate() {
            assert!(m.abs() < 1e-3, "output {i} has mean {m}");
        }
        for a in 0..d {
            for b in 0..d {
                let c: f64 = out
                    .chunks_exact(24)
                    .map(|r| f64::from(r[a]) * f64::from(r[b]))
                    .sum::<f64>()
                    / n as f64;
                let expected = f64::from(u8::from(a == b));
                assert!((c - expected).abs() < 1e-3, "cov[{a}][{b}] = {c}");
            }
        }
        for row in out.chunks_exact(24) {
            for i in 0..d {
                assert!((row[i] + row[d + i]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn whitening_needs_a_matching_first_layer() {
        let net = whitening_net();
        let named = |layer: &str| Whitening {
            layer: layer.into(),
            images: 10,
            epsilon: 5e-4,
            bias_epochs: 3,
        };
        assert!(named("whiten").check(&net).is_ok());
        assert!(named("c").check(&net).unwrap_err().contains("first layer"));
    }

    /// With dirac, the first C_in filters of `c` pass their input channel
    /// through; the whitening layer is left alone.
    #[test]
    fn dirac_filters_are_identities() {
        let mut net = whitening_net();
        let before = get_tensor(&net, "whiten.weight");
        dirac(&mut net, Some("whiten"));
        assert_eq!(get_tensor(&net, "whiten.weight"), before);
        let w = get_tensor(&net, "c.weight");
        let (cin, cout) = (24, 30);
        for tap in 0..9 {
            for c in 0..cin {
                for o in 0..cout {
                    let v = w[(tap * cin + c) * cout + o];
                    if o < cin {
                        assert_eq!(v, f32::from(tap == 4 && c == o));
                    }
                }
            }
        }
        // The other filters keep their random values.
        assert!((0..9 * cin).any(|i| w[i * cout + 29] != 0.0));
    }
}
