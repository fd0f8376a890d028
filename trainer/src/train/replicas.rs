//! Data-parallel training across processes: what [`super::fit_replicated`]
//! needs from the other copies ("replicas") of the run.
//!
//! Every replica holds the same network and optimiser and walks the same
//! seeded shuffle. Each global batch of `B` images is cut into one contiguous
//! shard per replica ([`shard`]); each computes the gradient of its shard, the
//! gradients are summed over the replicas (one all-reduce of one flat buffer
//! per step, [`Replicas::sum_f32`]) with weights `n_r / B`, so the result is the
//! gradient of the mean loss over the whole batch:
//!
//! `g = Σ_r (n_r / B) · ∇ (1/n_r) Σ_{i∈shard r} ℓ_i = ∇ (1/B) Σ_i ℓ_i`,
//!
//! and every replica applies the same optimiser step to the same weights, so
//! they stay equal (checked after every epoch, [`Replicas::agree`]). Batch
//! normalisation uses each shard's own statistics by default (as PyTorch's
//! DDP does), or with [`super::TrainConfig::sync_batch_norm`] the whole
//! batch's (its sums are all-reduced at every batch-norm layer, forward and
//! backward, as PyTorch's `SyncBatchNorm`); the running statistics are
//! averaged over the replicas after every epoch.
//!
//! The engine knows only this trait; the `trainer` command implements it on
//! MPI (rsmpi on Open MPI) behind its `mpi` feature. [`Alone`] is the
//! one-process case, in which every method does nothing.

use std::ops::Range;

/// The other processes of a data-parallel run. Every replica must call the
/// same methods in the same order with buffers of the same lengths (they are
/// collective operations).
pub trait Replicas {
    /// This process's index, `0..size()`; replica 0 reports and saves.
    fn rank(&self) -> usize;
    /// Number of replicas (1: training alone).
    fn size(&self) -> usize;
    /// Replaces `values` by their element-wise sum over all replicas.
    fn sum_f32(&self, values: &mut [f32]);
    /// Replaces `values` by their element-wise sum over all replicas.
    fn sum_f64(&self, values: &mut [f64]);
    /// Whether every replica passed the same `value`.
    fn agree(&self, value: u64) -> bool;
    /// Waits until every replica gets here (for the caller: e.g. replica 0
    /// downloads the data set while the others wait to read it).
    fn barrier(&self) {}
}

/// Training in one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Alone;

impl Replicas for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _values: &mut [f32]) {}
    fn sum_f64(&self, _values: &mut [f64]) {}
    fn agree(&self, _value: u64) -> bool {
        true
    }
}

/// The part of `0..n` that replica `rank` of `size` takes: contiguous, in
/// order, sizes differing by at most one (the first `n % size` replicas take
/// one more).
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// A 64-bit fingerprint of `values`' exact bits (FNV-1a), to check that the
/// replicas' weights are still identical.
pub fn fingerprint<'a>(values: impl IntoIterator<Item = &'a [f32]>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for slice in values {
        for v in slice {
            for b in v.to_bits().to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The shards tile `0..n` in order, and their sizes differ by at most one.
        #[test]
        fn shards_tile_the_batch(n in 0usize..1000, size in 1usize..17) {
            let shards: Vec<_> = (0..size).map(|r| shard(n, r, size)).collect();
            prop_assert_eq!(shards[0].start, 0);
            prop_assert_eq!(shards[size - 1].end, n);
            for w in shards.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
            }
            let (min, max) = (
                shards.iter().map(|s| s.len()).min().unwrap(),
                shards.iter().map(|s| s.len()).max().unwrap(),
            );
            prop_assert!(max - min <= 1);
        }
    }

    #[test]
    fn fingerprints_see_every_bit() {
        let a = [1.0f32, 2.0, 3.0];
        let mut b = a;
        b[2] = f32::from_bits(b[2].to_bits() ^ 1);
        assert_ne!(fingerprint([&a[..]]), fingerprint([&b[..]]));
        assert_eq!(fingerprint([&a[..]]), fingerprint([&a[..2], &a[2..]]));
        // -0.0 and 0.0 are equal numbers but different weights' bits.
        assert_ne!(fingerprint([&[0.0f32][..]]), fingerprint([&[-0.0f32][..]]));
    }
}
