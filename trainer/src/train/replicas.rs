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
    /// Starts replacing `values` by their element-wise sum over all replicas
    /// and returns at once; the sum is in `values` once the returned
    /// [`PendingSum`] is waited for (or dropped). Replicas start their sums in
    /// the same order. Training starts the sum of the last layers' gradients
    /// while backward still runs through the earlier ones. The default sums
    /// at once.
    fn start_sum_f32<'a>(&'a self, values: &'a mut [f32]) -> Box<dyn PendingSum + 'a> {
        self.sum_f32(values);
        Box::new(Summed)
    }
    /// Replaces `values` by their element-wise sum over all replicas.
    fn sum_f64(&self, values: &mut [f64]);
    /// Whether every replica passed the same `value`.
    fn agree(&self, value: u64) -> bool;
    /// Waits until every replica gets here (for the caller: e.g. replica 0
    /// downloads the data set while the others wait to read it).
    fn barrier(&self) {}
}

/// A sum started by [`Replicas::start_sum_f32`], still borrowing its buffer.
pub trait PendingSum {
    /// Lets the sum advance without blocking (MPI moves a non-blocking
    /// collective on mostly inside MPI calls).
    fn progress(&mut self) {}
    /// Blocks until the sum is in the buffer.
    fn wait(self: Box<Self>);
}

/// A sum already done.
struct Summed;

impl PendingSum for Summed {
    fn wait(self: Box<Self>) {}
}

/// The gradient buckets of a data-parallel step: consecutive layers whose
/// gradients are summed over the replicas together, as soon as backward has
/// produced the last of them (the lowest layer), so that their all-reduce
/// overlaps the backward of the layers below (as PyTorch's DDP buckets).
/// Layers are taken from the last down to the first, a bucket closing once
/// it holds at least `bucket_bytes` (0: one bucket for everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buckets {
    /// Where each layer's gradients sit in the flat buffer
    /// (`Params::visit_params` order).
    pub layers: Vec<Range<usize>>,
    /// Each bucket's range of the flat buffer and its lowest layer (whose
    /// backward completes it), from the last bucket of the buffer to the
    /// first: the order they are started in.
    pub buckets: Vec<(Range<usize>, usize)>,
}

impl Buckets {
    /// The buckets of layers with `lens` trained values each.
    pub fn plan(lens: &[usize], bucket_bytes: usize) -> Buckets {
        let mut layers = Vec::with_capacity(lens.len());
        let mut offset = 0;
        for &n in lens {
            layers.push(offset..offset + n);
            offset += n;
        }
        let cap = bucket_bytes.div_ceil(std::mem::size_of::<f32>());
        let lowest = layers.iter().position(|r| !r.is_empty());
        let mut buckets = Vec::new();
        let mut end = offset; // the open bucket is `start..end`
        for (i, r) in layers.iter().enumerate().rev() {
            if r.is_empty() {
                continue;
            }
            if Some(i) == lowest || (cap > 0 && end - r.start >= cap) {
                buckets.push((r.start..end, i));
                end = r.start;
            }
        }
        Buckets { layers, buckets }
    }

    /// Values in all the buckets.
    pub fn len(&self) -> usize {
        self.layers.last().map_or(0, |r| r.end)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

    /// Buckets close once they hold at least the asked bytes, from the last
    /// layer down; layers without values (or frozen) belong to none; the
    /// lowest layer with values always closes the last bucket; 0 bytes: one
    /// bucket.
    #[test]
    fn buckets_from_the_last_layer_down() {
        // Layers of 10, 0, 6, 3 and 8 values: the buffer is 0..27.
        let lens = [10, 0, 6, 3, 8];
        let b = Buckets::plan(&lens, 0);
        assert_eq!(b.layers, [0..10, 10..10, 10..16, 16..19, 19..27]);
        assert_eq!(b.buckets, [(0..27, 0)]);
        assert_eq!(b.len(), 27);
        // At least 9 values (36 bytes) a bucket: 8 + 3, then 6 + 10.
        let b = Buckets::plan(&lens, 36);
        assert_eq!(b.buckets, [(16..27, 3), (0..16, 0)]);
        // 4 bytes: one bucket per layer with values.
        let b = Buckets::plan(&lens, 4);
        assert_eq!(
            b.buckets,
            [(19..27, 4), (16..19, 3), (10..16, 2), (0..10, 0)]
        );
        // Frozen first layers: the last bucket ends at the lowest trained one.
        let b = Buckets::plan(&[0, 0, 5, 2], 1 << 20);
        assert_eq!(b.buckets, [(0..7, 2)]);
        assert!(Buckets::plan(&[0, 0], 4).buckets.is_empty());
    }
}
