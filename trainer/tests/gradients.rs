//! Finite-difference checks of every layer's backward pass: input gradients
//! and parameter gradients, over random shapes and values (proptest).
//!
//! For a layer `y = f(x; θ)` we take the scalar `L = Σ r ⊙ y` with a fixed
//! random `r`, so `∂L/∂y = r`. Backward gives `∂L/∂x` and `∂L/∂θ`; each is
//! compared with the central difference `(L(v + h) − L(v − h)) / 2h`.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainer::kernels::tensor::{ImageShape, Tensor};
use trainer::layers::{self, Layer, Mode, Params};
use trainer::model::loss::{
    softmax_cross_entropy, softmax_cross_entropy_smoothed, softmax_cross_entropy_targets,
    softmax_in_place, Targets,
};
use trainer::model::spec::{ModelSpec, Padding};

const H: f32 = 1e-2;

fn close(numeric: f64, analytic: f64) -> bool {
    (numeric - analytic).abs() <= 2e-3 + 1e-2 * analytic.abs()
}

fn random_tensor(n: usize, shape: ImageShape, rng: &mut ChaCha8Rng) -> Tensor {
    let mut t = Tensor::zeros(n, shape);
    t.data
        .iter_mut()
        .for_each(|v| *v = rng.random_range(-1.0..1.0));
    t
}

/// Values spaced at least 0.05 apart in shuffled order, and at least 0.025 from
/// zero: a step of `H` never changes which input wins a max or passes a ReLU.
fn kink_free_tensor(n: usize, shape: ImageShape, rng: &mut ChaCha8Rng) -> Tensor {
    use rand::seq::SliceRandom;
    let mut t = Tensor::zeros(n, shape);
    let len = t.data.len();
    let mut values: Vec<f32> = (0..len)
        .map(|i| (i as f32 - (len / 2) as f32) * 0.05 + 0.025)
        .collect();
    values.shuffle(rng);
    t.data.copy_from_slice(&values);
    t
}

/// Indices to probe: all of them when few, else a random sample.
fn probe(len: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if len <= 24 {
        (0..len).collect()
    } else {
        (0..24).map(|_| rng.random_range(0..len)).collect()
    }
}

fn weighted_sum(layer: &mut dyn Layer, x: &Tensor, r: &[f32], mode: Mode, seed: u64) -> f64 {
    let mut y = Tensor::default();
    layer.reseed(seed);
    layer.forward(x, &mut y, mode);
    y.data
        .iter()
        .zip(r)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Checks input and parameter gradients of `layer` at `x`.
fn check_layer(
    layer: &mut dyn Layer,
    x: &Tensor,
    mode: Mode,
    rng: &mut ChaCha8Rng,
) -> Result<(), TestCaseError> {
    let seed = 7;
    let mut y = Tensor::default();
    layer.reseed(seed);
    layer.forward(x, &mut y, mode);
    prop_assert_eq!(y.image_shape(), layer.output_shape());
    let mut r = Tensor::zeros(y.n, y.image_shape());
    r.data
        .iter_mut()
        .for_each(|v| *v = rng.random_range(-1.0..1.0));
    let mut dx = Tensor::default();
    layer.backward(x, &y, &r, Some(&mut dx));
    prop_assert_eq!(dx.data.len(), x.data.len());
    // Parameter gradients: from this backward, and from one without an input
    // gradient, as a network's first layer runs it (some layers then take
    // another route). Both before any other forward pass changes what the
    // layer remembers.
    let mut grads = Vec::new();
    layer.visit_params(&mut |_, _, g, _| grads.push(g.to_vec()));
    layer.backward(x, &y, &r, None);
    let mut first_layer = Vec::new();
    layer.visit_params(&mut |_, _, g, _| first_layer.push(g.to_vec()));

    // Input gradient.
    for i in probe(x.data.len(), rng) {
        let mut xp = x.clone();
        xp.data[i] += H;
        let up = weighted_sum(layer, &xp, &r.data, mode, seed);
        xp.data[i] -= 2.0 * H;
        let down = weighted_sum(layer, &xp, &r.data, mode, seed);
        let numeric = (up - down) / (2.0 * H as f64);
        prop_assert!(
            close(numeric, dx.data[i] as f64),
            "dx[{}]: numeric {} vs analytic {}",
            i,
            numeric,
            dx.data[i]
        );
    }

    // Parameter gradients.
    for (p, grad) in grads.iter().enumerate() {
        for j in probe(grad.len(), rng) {
            let original = layer.tensors_mut()[p][j];
            layer.tensors_mut()[p][j] = original + H;
            let up = weighted_sum(layer, x, &r.data, mode, seed);
            layer.tensors_mut()[p][j] = original - H;
            let down = weighted_sum(layer, x, &r.data, mode, seed);
            layer.tensors_mut()[p][j] = original;
            let numeric = (up - down) / (2.0 * H as f64);
            prop_assert!(
                close(numeric, grad[j] as f64),
                "param {} [{}]: numeric {} vs analytic {}",
                p,
                j,
                numeric,
                grad[j]
            );
            let g = first_layer[p][j] as f64;
            prop_assert!(
                close(numeric, g),
                "param {} [{}] without dx: numeric {} vs analytic {}",
                p,
                j,
                numeric,
                g
            );
        }
    }
    Ok(())
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![Just(Padding::Same), Just(Padding::Valid)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn conv2d(n in 1usize..4, h in 3usize..9, w in 3usize..9, cin in 1usize..5, cout in 1usize..5,
              kernel in 1usize..4, stride in 1usize..3, padding in padding(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let input = ImageShape::new(h, w, cin);
        let mut layer = layers::Conv2d::new(input, cout, kernel, stride, padding, &mut rng);
        // Non-zero bias so its gradient path is exercised with real values.
        layer.bias.iter_mut().for_each(|b| *b = rng.random_range(-0.5..0.5));
        let x = random_tensor(n, input, &mut rng);
        check_layer(&mut layer, &x, Mode::Train, &mut rng)?;
    }

    /// The Winograd route of 3×3 stride-1 layers, forced on at any channel count.
    #[test]
    fn conv2d_winograd(n in 1usize..4, h in 1usize..9, w in 1usize..9, cin in 1usize..6, cout in 1usize..6,
                       padding in padding(), seed in any::<u64>()) {
        prop_assume!(padding == Padding::Same || (h >= 3 && w >= 3));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let input = ImageShape::new(h, w, cin);
        let mut layer = layers::Conv2d::new(input, cout, 3, 1, padding, &mut rng);
        prop_assert!(layer.set_algorithm(layers::ConvAlgorithm::Winograd));
        layer.bias.iter_mut().for_each(|b| *b = rng.random_range(-0.5..0.5));
        let x = random_tensor(n, input, &mut rng);
        check_layer(&mut layer, &x, Mode::Train, &mut rng)?;
    }

    /// The direct route, forced on at any channel count, with kernels up to
    /// 5 and channel counts that fill one, two or part of a 16-lane vector.
    #[test]
    fn conv2d_direct(n in 1usize..3, h in 1usize..9, w in 1usize..11, cin in 1usize..6,
                     cout in prop::sample::select(vec![1usize, 3, 16, 20, 33]),
                     kernel in 1usize..6, stride in 1usize..3, padding in padding(), seed in any::<u64>()) {
        prop_assume!(padding == Padding::Same || (h >= kernel && w >= kernel));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let input = ImageShape::new(h, w, cin);
        let mut layer = layers::Conv2d::new(input, cout, kernel, stride, padding, &mut rng);
        prop_assert!(layer.set_algorithm(layers::ConvAlgorithm::Direct));
        layer.bias.iter_mut().for_each(|b| *b = rng.random_range(-0.5..0.5));
        let x = random_tensor(n, input, &mut rng);
        check_layer(&mut layer, &x, Mode::Train, &mut rng)?;
    }

    #[test]
    fn dense(n in 1usize..5, inputs in 1usize..20, units in 1usize..10, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layer = layers::Dense::new(ImageShape::vector(inputs), units, &mut rng);
        let x = random_tensor(n, ImageShape::vector(inputs), &mut rng);
        check_layer(&mut layer, &x, Mode::Train, &mut rng)?;
    }

    #[test]
    fn maxpool(n in 1usize..3, h in 1usize..8, w in 1usize..8, c in 1usize..4, padding in padding(), seed in any::<u64>()) {
        prop_assume!(padding == Padding::Same || (h >= 2 && w >= 2));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let input = ImageShape::new(h, w, c);
        let mut layer = layers::MaxPool2d::new(input, 2, 2, padding);
        let x = kink_free_tensor(n, input, &mut rng);
        check_layer(&mut layer, &x, Mode::Train, &mut rng)?;
    }

    #[test]
    fn relu(n in 1usize..3, h in 1usize..5, c in 1usize..5, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = ImageShape::new(h, h, c);
        let x = kink_free_tensor(n, shape, &mut rng);
        check_layer(&mut layers::Relu::new(shape), &x, Mode::Train, &mut rng)?;
    }

    #[test]
    fn gelu(n in 1usize..3, h in 1usize..5, c in 1usize..5, spread in 0.5f32..4.0, seed in any::<u64>()) {
        // Smooth everywhere; `spread` reaches the tails, where Φ saturates.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = ImageShape::new(h, h, c);
        let mut x = random_tensor(n, shape, &mut rng);
        x.data.iter_mut().for_each(|v| *v *= spread);
        check_layer(&mut layers::Gelu::new(shape), &x, Mode::Train, &mut rng)?;
    }

    #[test]
    fn global_avg_pool(n in 1usize..3, h in 1usize..6, w in 1usize..6, c in 1usize..5, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = ImageShape::new(h, w, c);
        let x = random_tensor(n, shape, &mut rng);
        check_layer(&mut layers::GlobalAvgPool::new(shape), &x, Mode::Train, &mut rng)?;
    }

    #[test]
    fn batchnorm(n in 2usize..6, h in 1usize..4, c in 1usize..5, train in any::<bool>(), seed in any::<u64>()) {
        // At least 4 values per channel: with 2, two close draws make the
        // batch variance comparable to ε, where a step of H is too coarse for
        // a finite difference (CI drew n = 2, h = 1: numeric −8.15 vs −8.25).
        prop_assume!(n * h * h >= 4);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = ImageShape::new(h, h, c);
        let mut layer = layers::BatchNorm::new(shape, 0.99, 1e-3);
        layer.gamma.iter_mut().for_each(|g| *g = rng.random_range(0.5..1.5));
        layer.beta.iter_mut().for_each(|b| *b = rng.random_range(-0.5..0.5));
        layer.moving_mean.iter_mut().for_each(|m| *m = rng.random_range(-0.5..0.5));
        layer.moving_variance.iter_mut().for_each(|v| *v = rng.random_range(0.5..2.0));
        // Spread-out inputs keep the batch variance away from zero.
        let mut x = random_tensor(n, shape, &mut rng);
        x.data.iter_mut().for_each(|v| *v *= 3.0);
        let mode = if train { Mode::Train } else { Mode::Eval };
        check_layer(&mut layer, &x, mode, &mut rng)?;
    }

    #[test]
    fn dropout(n in 1usize..3, len in 1usize..40, train in any::<bool>(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = ImageShape::vector(len);
        let mut layer = layers::Dropout::new(shape, 0.3, seed);
        let x = random_tensor(n, shape, &mut rng);
        let mode = if train { Mode::Train } else { Mode::Eval };
        check_layer(&mut layer, &x, mode, &mut rng)?;
    }

    #[test]
    fn flatten(n in 1usize..3, h in 1usize..5, c in 1usize..4, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = ImageShape::new(h, h + 1, c);
        let x = random_tensor(n, shape, &mut rng);
        check_layer(&mut layers::Flatten::new(shape), &x, Mode::Train, &mut rng)?;
    }

    #[test]
    fn softmax_cross_entropy_gradient(n in 1usize..5, classes in 2usize..12, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z = random_tensor(n, ImageShape::vector(classes), &mut rng);
        let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..classes as u8)).collect();
        let mut g = Tensor::default();
        softmax_cross_entropy(&z, &labels, Some(&mut g));
        for i in 0..z.data.len() {
            let mut zp = z.clone();
            zp.data[i] += H;
            let up = softmax_cross_entropy(&zp, &labels, None).loss as f64;
            zp.data[i] -= 2.0 * H;
            let down = softmax_cross_entropy(&zp, &labels, None).loss as f64;
            let numeric = (up - down) / (2.0 * H as f64);
            prop_assert!(close(numeric, g.data[i] as f64), "dz[{}]: {} vs {}", i, numeric, g.data[i]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Label smoothing: the gradient `(p − q)/n` against finite differences of
    /// the smoothed loss `−Σ q log p`.
    #[test]
    fn label_smoothing_gradient(n in 1usize..5, classes in 2usize..12, eps in 0.0f32..0.5, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut z = random_tensor(n, ImageShape::vector(classes), &mut rng);
        z.data.iter_mut().for_each(|v| *v *= 3.0);
        let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..classes as u8)).collect();
        let mut g = Tensor::default();
        let loss = softmax_cross_entropy_smoothed(&z, &labels, eps, Some(&mut g)).loss as f64;
        // The loss itself, from its definition.
        let mut direct = 0.0f64;
        for (row, &t) in z.data.chunks_exact(classes).zip(&labels) {
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            for (c, &v) in row.iter().enumerate() {
                let q = (1.0 - eps as f64) * f64::from(u8::from(c == t as usize)) + eps as f64 / classes as f64;
                direct -= q * (v as f64 - lse);
            }
        }
        prop_assert!((loss - direct / n as f64).abs() < 1e-5, "{} vs {}", loss, direct / n as f64);
        for i in 0..z.data.len() {
            let mut zp = z.clone();
            zp.data[i] += H;
            let up = softmax_cross_entropy_smoothed(&zp, &labels, eps, None).loss as f64;
            zp.data[i] -= 2.0 * H;
            let down = softmax_cross_entropy_smoothed(&zp, &labels, eps, None).loss as f64;
            let numeric = (up - down) / (2.0 * H as f64);
            prop_assert!(close(numeric, g.data[i] as f64), "dz[{}]: {} vs {}", i, numeric, g.data[i]);
        }
        // Each row of the gradient sums to zero, and ε = 0 is the plain loss, bit for bit.
        for row in g.data.chunks_exact(classes) {
            prop_assert!(row.iter().sum::<f32>().abs() < 1e-5);
        }
        let (mut g0, mut g1) = (Tensor::default(), Tensor::default());
        let plain = softmax_cross_entropy(&z, &labels, Some(&mut g0));
        let zero = softmax_cross_entropy_smoothed(&z, &labels, 0.0, Some(&mut g1));
        prop_assert_eq!(plain, zero);
        prop_assert_eq!(g0.data, g1.data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Distillation: the target `q = (1 − α)·((1 − ε)·onehot + ε/K) + α·r`
    /// mixes a teacher's probabilities `r` in; the loss is `−Σ q log p` and
    /// its gradient `(p − q)/n`, against finite differences.
    #[test]
    fn distillation_gradient(n in 1usize..5, classes in 2usize..12, eps in 0.0f32..0.5,
                             alpha in 0.0f32..=1.0, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut z = random_tensor(n, ImageShape::vector(classes), &mut rng);
        z.data.iter_mut().for_each(|v| *v *= 3.0);
        let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..classes as u8)).collect();
        let mut r = random_tensor(n, ImageShape::vector(classes), &mut rng).data;
        r.chunks_exact_mut(classes).for_each(softmax_in_place);
        let targets = Targets { labels: &labels, smoothing: eps, soft: Some((&r, alpha)) };
        let mut g = Tensor::default();
        let loss = softmax_cross_entropy_targets(&z, targets, Some(&mut g)).loss as f64;
        let mut direct = 0.0f64;
        for (i, (row, &t)) in z.data.chunks_exact(classes).zip(&labels).enumerate() {
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            for (c, &v) in row.iter().enumerate() {
                let label = (1.0 - eps as f64) * f64::from(u8::from(c == t as usize)) + eps as f64 / classes as f64;
                let q = (1.0 - alpha as f64) * label + alpha as f64 * r[i * classes + c] as f64;
                direct -= q * (v as f64 - lse);
            }
        }
        prop_assert!((loss - direct / n as f64).abs() < 1e-5, "{} vs {}", loss, direct / n as f64);
        for i in 0..z.data.len() {
            let mut zp = z.clone();
            zp.data[i] += H;
            let up = softmax_cross_entropy_targets(&zp, targets, None).loss as f64;
            zp.data[i] -= 2.0 * H;
            let down = softmax_cross_entropy_targets(&zp, targets, None).loss as f64;
            let numeric = (up - down) / (2.0 * H as f64);
            prop_assert!(close(numeric, g.data[i] as f64), "dz[{}]: {} vs {}", i, numeric, g.data[i]);
        }
        // α = 0 is label smoothing alone, bit for bit.
        let (mut g0, mut g1) = (Tensor::default(), Tensor::default());
        softmax_cross_entropy_smoothed(&z, &labels, eps, Some(&mut g0));
        let none = Targets { soft: Some((&r, 0.0)), ..targets };
        softmax_cross_entropy_targets(&z, none, Some(&mut g1));
        prop_assert_eq!(g0.data, g1.data);
    }
}

/// Dropout in training keeps about `1 − rate` of the values, scaled by `1/(1 − rate)`;
/// in evaluation it is the identity.
#[test]
fn dropout_is_inverted_and_identity_at_eval() {
    let shape = ImageShape::vector(10_000);
    let mut layer = layers::Dropout::new(shape, 0.2, 1);
    let x = Tensor {
        n: 1,
        shape: Some(shape),
        data: vec![1.0; 10_000],
    };
    let mut y = Tensor::default();
    layer.forward(&x, &mut y, Mode::Train);
    let kept = y.data.iter().filter(|&&v| v != 0.0).count() as f32 / 10_000.0;
    assert!((kept - 0.8).abs() < 0.02, "kept {kept}");
    assert!(y.data.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
    layer.forward(&x, &mut y, Mode::Eval);
    assert_eq!(y.data, x.data);
}

/// The whole network's gradient (through every layer type at once, in training
/// mode), against finite differences of the real loss.
#[test]
fn whole_network_gradient() {
    let spec = ModelSpec::from_json_str(
        r#"{"name":"t","input":{"height":7,"width":7,"channels":3},"layers":[
            {"type":"conv2d","filters":4,"kernel":3,"stride":2,"padding":"valid"},
            {"type":"batchnorm"},
            {"type":"relu"},
            {"type":"conv2d","filters":5,"kernel":2,"padding":"same"},
            {"type":"maxpool2d","padding":"same"},
            {"type":"flatten"},
            {"type":"dropout","rate":0.25},
            {"type":"dense","units":6},
            {"type":"relu"},
            {"type":"dense","units":3}]}"#,
    )
    .unwrap();
    network_gradient_check(&spec);
}

/// Relus fused into the layer before them (network-level): convolutions by
/// both algorithms (3 input channels: im2col; 16: Winograd where that is the
/// default, i.e. on AVX-512), the second with a relu whose output is a skip
/// input (allowed), and a batch norm.
#[test]
fn fused_relu_network_gradient() {
    let spec = ModelSpec::from_json_str(
        r#"{"name":"fused","input":{"height":6,"width":5,"channels":3},"layers":[
            {"type":"conv2d","filters":16,"kernel":3},
            {"type":"relu"},
            {"type":"conv2d","filters":4,"kernel":3},
            {"type":"relu","name":"r2"},
            {"type":"batchnorm"},
            {"type":"relu"},
            {"type":"add","from":"r2"},
            {"type":"flatten"},
            {"type":"dense","units":3}]}"#,
    )
    .unwrap();
    network_gradient_check(&spec);
}

/// GELU fused into a batch norm, and one standing alone after a
/// convolution (network-level).
#[test]
fn fused_gelu_network_gradient() {
    let spec = ModelSpec::from_json_str(
        r#"{"name":"gelu","input":{"height":6,"width":5,"channels":3},"layers":[
            {"type":"conv2d","filters":6,"kernel":3},
            {"type":"batchnorm"},
            {"type":"gelu"},
            {"type":"conv2d","filters":4,"kernel":3},
            {"type":"gelu"},
            {"type":"flatten"},
            {"type":"dense","units":3}]}"#,
    )
    .unwrap();
    network_gradient_check(&spec);
}

/// A residual network: two `add` layers skipping over a conv–BN–ReLU block
/// (one from a named ReLU, one from a named batch norm), and one adding a
/// layer's output to itself; gradients through the skips against finite
/// differences.
#[test]
fn residual_network_gradient() {
    let spec = ModelSpec::from_json_str(
        r#"{"name":"res","input":{"height":6,"width":6,"channels":3},"layers":[
            {"type":"conv2d","filters":4,"kernel":3},
            {"type":"relu","name":"stem"},
            {"type":"conv2d","filters":4,"kernel":3},
            {"type":"batchnorm","name":"mid"},
            {"type":"relu"},
            {"type":"conv2d","filters":4,"kernel":1},
            {"type":"add","from":"stem"},
            {"type":"add","from":"mid","name":"sum2"},
            {"type":"maxpool2d","name":"pool"},
            {"type":"add","from":"pool"},
            {"type":"flatten"},
            {"type":"dense","units":3}]}"#,
    )
    .unwrap();
    network_gradient_check(&spec);
}

/// A ResNet block with a projection shortcut, as a small DAG: a 1×1 stride-2
/// convolution reads the block's input, the main path's first convolution
/// names that same input (`input`), and the add joins the two; the stem's
/// output thus has two readers whose gradients add up. Then a second block
/// whose projection reads a batch norm, and a relu fused into a convolution.
#[test]
fn projection_shortcut_network_gradient() {
    let spec = ModelSpec::from_json_str(
        r#"{"name":"proj","input":{"height":6,"width":6,"channels":3},"layers":[
            {"type":"conv2d","filters":4,"kernel":3},
            {"type":"batchnorm"},
            {"type":"relu","name":"stem"},
            {"type":"conv2d","filters":6,"kernel":1,"stride":2,"name":"proj"},
            {"type":"conv2d","filters":6,"kernel":3,"stride":2,"input":"stem"},
            {"type":"batchnorm"},
            {"type":"relu"},
            {"type":"conv2d","filters":6,"kernel":3},
            {"type":"batchnorm","name":"main"},
            {"type":"add","from":"proj"},
            {"type":"relu","name":"block"},
            {"type":"conv2d","filters":5,"kernel":1,"input":"main"},
            {"type":"add","from":"block","input":"proj","name":"x"},
            {"type":"global_avg_pool","input":"block"},
            {"type":"dense","units":3}]}"#,
    );
    // The second add's output is read by nothing: refused.
    let e = spec.unwrap_err().to_string();
    assert!(e.contains("no layer reads its output"), "{e}");
    let spec = ModelSpec::from_json_str(
        r#"{"name":"proj","input":{"height":6,"width":6,"channels":3},"layers":[
            {"type":"conv2d","filters":4,"kernel":3},
            {"type":"batchnorm"},
            {"type":"relu","name":"stem"},
            {"type":"conv2d","filters":6,"kernel":1,"stride":2,"name":"proj"},
            {"type":"conv2d","filters":6,"kernel":3,"stride":2,"input":"stem"},
            {"type":"batchnorm"},
            {"type":"relu"},
            {"type":"conv2d","filters":6,"kernel":3},
            {"type":"batchnorm","name":"main"},
            {"type":"add","from":"proj"},
            {"type":"relu","name":"block"},
            {"type":"conv2d","filters":6,"kernel":1,"input":"main"},
            {"type":"relu"},
            {"type":"add","from":"block"},
            {"type":"global_avg_pool"},
            {"type":"dense","units":3}]}"#,
    )
    .unwrap();
    network_gradient_check(&spec);
}

/// Every parameter gradient of `spec`'s network (training mode, a batch of 4
/// random images) against finite differences of the loss.
fn network_gradient_check(spec: &ModelSpec) {
    let mut net = trainer::model::network::Network::new(spec, 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = 4;
    let images: Vec<u8> = (0..n * spec.input.len()).map(|_| rng.random()).collect();
    let labels = [0u8, 2, 1, 2];
    let loss_at = |net: &mut trainer::model::network::Network| {
        net.reseed(5);
        net.set_input_u8(&images, n);
        net.forward_backward(&labels).loss as f64
    };
    loss_at(&mut net);
    let mut grads = Vec::new();
    let mut param_ptrs = Vec::new();
    net.visit_params(&mut |p| {
        grads.push(p.grad.to_vec());
        param_ptrs.push(p.value.as_ptr());
    });
    // Position of each trainable parameter among the saved tensors (which also
    // hold the running statistics).
    let saved: Vec<*const f32> = net
        .named_tensors()
        .iter()
        .map(|(_, _, d)| d.as_ptr())
        .collect();
    let base = net.snapshot();
    let mut checked = 0;
    for (q, grad) in grads.iter().enumerate() {
        let p = saved.iter().position(|&s| s == param_ptrs[q]).unwrap();
        for j in probe(grad.len(), &mut rng) {
            let mut w = base.clone();
            // A smaller step than the per-layer tests: with many ReLUs and maxima
            // in a row, a larger one would often step across a kink.
            let h = 2e-4;
            w[p][j] += h;
            net.restore(&w);
            let up = loss_at(&mut net);
            w[p][j] -= 2.0 * h;
            net.restore(&w);
            let down = loss_at(&mut net);
            let numeric = (up - down) / (2.0 * h as f64);
            // f32 rounding over a small step: allow a looser bound than per layer.
            assert!(
                (numeric - grad[j] as f64).abs() <= 5e-3 + 5e-2 * (grad[j] as f64).abs(),
                "tensor {p}[{j}]: numeric {numeric} vs analytic {}",
                grad[j]
            );
            checked += 1;
        }
    }
    net.restore(&base);
    assert!(checked > 50);
}
