//! Parameter initialisation, as Keras does it.

use rand::Rng;

/// Glorot (Xavier) uniform: `U(−l, l)` with `l = sqrt(6 / (fan_in + fan_out))`.
pub fn glorot_uniform(fan_in: usize, fan_out: usize, len: usize, rng: &mut impl Rng) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
    (0..len).map(|_| rng.random_range(-limit..limit)).collect()
}
