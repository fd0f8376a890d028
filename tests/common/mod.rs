//! Helpers shared by the workspace-level tests.

use rand::{Rng, SeedableRng};
use trainer::Network;

/// Randomises biases and batchnorm parameters/statistics (weights keep their
/// initialisation), so that every tensor matters.
pub fn randomise(net: &mut Network, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let names: Vec<String> = net.named_tensors().into_iter().map(|(n, _, _)| n).collect();
    let mut values = net.snapshot();
    for (name, v) in names.iter().zip(&mut values) {
        let range = match name.rsplit('.').next() {
            Some("bias") => -0.1..0.1,
            Some("gamma") => 0.5..1.5,
            Some("beta") | Some("moving_mean") => -0.3..0.3,
            Some("moving_variance") => 0.3..2.0,
            _ => continue,
        };
        v.iter_mut()
            .for_each(|x| *x = rng.random_range(range.clone()));
    }
    net.restore(&values);
}
