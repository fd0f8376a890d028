//! The scratch layout: where the activations, and the layer outputs kept for a
//! later layer (an `add`'s `from`, a layer's `input`), live in the caller's
//! scratch slice.
//!
//! During layer `i` the slice (`len` values, [`crate::Model::scratch_len`]) is
//! cut in two:
//!
//! ```text
//! [0 ...................... region_i)[region_i ...................... len)
//!  working region                      stashes alive during layer i
//! ```
//!
//! - **Working region.** The current activation sits at its front or at its
//!   back. An out-of-place layer (conv, dense, the pools) writes its output at
//!   the other end, so it needs `input + output` values there (a convolution
//!   on a small image also its workspace, between the two); the in-place
//!   layers (relu, flatten, dropout, add) need their data, batchnorm its data and
//!   3 per-channel tables. That is the layer's `need`.
//! - **Stashes.** The output of a layer that a later layer reads (besides the
//!   next one: an `add`'s `from`, an `input`) is copied, right after the layer,
//!   into a stash at the back of the slice, where it stays until the last layer
//!   reading it has run. A layer whose `input` names a stash starts by copying
//!   it to the front of its working region. A new stash goes just below the stashes
//!   that are still alive after its layer (a stack: enough for nested or
//!   consecutive skips). `top_i`, the stash area during layer `i`, is the
//!   largest distance from the end of the slice reached by a stash alive during
//!   layer `i`; `region_i = len − top_i`.
//!
//! So layer `i` needs `top_i + need_i` values, and `len` is the largest of these
//! over the layers (at least the input image, which every first layer's need
//! covers). With one value less, some layer's data and the live stashes would
//! overlap. Taking a stash after layer `i` fits as well: the activation and the
//! stashes alive after it take `top_{i+1} + out_i ≤ top_{i+1} + need_{i+1}`.
//!
//! When the region changes from one layer to the next (a stash was taken or
//! given back), the activation may no longer be at an end of the new region:
//! [`settle`] moves it to the front. The moves and stash copies are plain
//! copies, a few per skip connection.

/// What one layer asks of the scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Demand {
    /// Values the layer needs in the working region (see the module notes).
    pub need: usize,
    /// Values in its output.
    pub out_len: usize,
    /// The earlier layers whose outputs it reads besides the previous one's:
    /// an add's `from`, and the layer its `input` names.
    pub reads: [Option<usize>; 2],
}

/// Where one layer works in the scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Place {
    /// End of the working region during the layer: the stashes alive then lie
    /// in `[region, len)`.
    pub region: usize,
    /// Start of the stash that keeps this layer's output, when a later add
    /// reads it (`out_len` values).
    pub stash: Option<usize>,
}

/// Lays out the scratch for `demands` (at most `N`; an add reads
/// an earlier layer) and an input of `input_len` values: calls `place(i, …)`
/// for every layer and returns the scratch length, or `None` on overflow.
pub(crate) fn layout<const N: usize>(
    input_len: usize,
    demands: &[Demand],
    mut place: impl FnMut(usize, Place),
) -> Option<usize> {
    let n = demands.len();
    // The last layer reading each layer's output (0: none, an add comes after
    // its source). Layer `j`'s stash is alive during layers `j+1 ..= last[j]`.
    let mut last = [0usize; N];
    for (k, d) in demands.iter().enumerate() {
        for j in d.reads.into_iter().flatten() {
            last[j] = k;
        }
    }
    let alive = |j: usize, i: usize| j < i && last[j] >= i;
    // Stash `j` occupies `[len − end[j], len − end[j] + out_len[j])`.
    let mut end = [0usize; N];
    // `top[i]`: the stash area during layer `i`.
    let mut top = [0usize; N];
    let mut len = input_len;
    for (i, d) in demands.iter().enumerate() {
        top[i] = (0..i)
            .filter(|&j| alive(j, i))
            .map(|j| end[j])
            .max()
            .unwrap_or(0);
        len = len.max(top[i].checked_add(d.need)?);
        if last[i] > i {
            // Below the stashes still alive after layer i.
            let below = (0..i)
                .filter(|&j| alive(j, i + 1))
                .map(|j| end[j])
                .max()
                .unwrap_or(0);
            end[i] = below.checked_add(d.out_len)?;
        }
    }
    for i in 0..n {
        place(
            i,
            Place {
                region: len - top[i],
                stash: (last[i] > i).then(|| len - end[i]),
            },
        );
    }
    Some(len)
}

/// Before a layer: moves the activation `s[at..at + len]` to the front of the
/// layer's working region `s[..region]` unless it already sits at one of its
/// ends. Returns its new start.
pub(crate) fn settle<T: Copy>(s: &mut [T], at: usize, len: usize, region: usize) -> usize {
    if at == 0 || at + len == region {
        return at;
    }
    s.copy_within(at..at + len, 0);
    0
}

/// After a layer whose output `s[at..at + len]` a later add reads: copies it
/// to its stash `s[to..to + len]`. The activation stays valid where it is, as
/// the stash is either disjoint from it or exactly where it already lies:
///
/// - If the same stashes are alive during and after the layer, the stash ends
///   where the working region ends, so it is the region's back end: where the
///   activation is, or else disjoint from it (the next layer's need, at least
///   `len`, fits below the stash).
/// - Otherwise the layer is an add whose source stash dies with it; that stash
///   was the topmost (any later one lies above it) and has `len` values, so
///   the new stash, below the survivors, lies wholly above the working region.
pub(crate) fn stash<T: Copy>(s: &mut [T], at: usize, len: usize, to: usize) {
    debug_assert!(to == at || to + len <= at || at + len <= to);
    if to != at {
        s.copy_within(at..at + len, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn plan(input_len: usize, demands: &[Demand]) -> (usize, Vec<Place>) {
        let mut places = std::vec![Place::default(); demands.len()];
        let len = layout::<16>(input_len, demands, |i, p| places[i] = p).unwrap();
        (len, places)
    }

    fn d(need: usize, out_len: usize) -> Demand {
        Demand {
            need,
            out_len,
            reads: [None; 2],
        }
    }

    fn add(len: usize, source: usize) -> Demand {
        Demand {
            need: len,
            out_len: len,
            reads: [Some(source), None],
        }
    }

    #[test]
    fn without_adds_the_largest_need() {
        let (len, places) = plan(12, &[d(20, 8), d(8, 8), d(10, 2)]);
        assert_eq!(len, 20);
        assert!(places.iter().all(|p| p.region == 20 && p.stash.is_none()));
    }

    #[test]
    fn a_stash_counts_while_it_is_alive() {
        // 0: conv 4 → 8 (need 12), 1: conv 8 → 8 (16), 2: add ← 0, 3: dense.
        let (len, places) = plan(4, &[d(12, 8), d(16, 8), add(8, 0), d(10, 2)]);
        // Layer 1 with stash 0 alive: 8 + 16.
        assert_eq!(len, 24);
        assert_eq!(
            places[0],
            Place {
                region: 24,
                stash: Some(16)
            }
        );
        assert_eq!(
            places[1],
            Place {
                region: 16,
                stash: None
            }
        );
        assert_eq!(
            places[2],
            Place {
                region: 16,
                stash: None
            }
        );
        assert_eq!(
            places[3],
            Place {
                region: 24,
                stash: None
            }
        );
    }

    #[test]
    fn nested_and_consecutive_stashes_stack() {
        // 1 and 2 are read by adds 4 and 3 (nested), then 4 by 6 (consecutive).
        let demands = [
            d(10, 6),
            d(12, 6),
            d(12, 6),
            add(6, 2),
            add(6, 1),
            d(12, 6),
            add(6, 4),
            d(8, 2),
        ];
        let (len, places) = plan(4, &demands);
        // Layer 2 with stash 1 (6 + 12), layer 3 with stashes 1 and 2 (12 + 6).
        assert_eq!(len, 18);
        assert_eq!(places[1].stash, Some(12));
        assert_eq!(places[2].stash, Some(6));
        assert_eq!(places[3].region, 6);
        assert_eq!(places[4].region, 12);
        // Stash 1 is given back after layer 4, so stash 4 takes its place.
        assert_eq!(places[4].stash, Some(12));
        assert_eq!(places[5].region, 12);
        assert_eq!(places[7].region, 18);
    }

    #[test]
    fn settle_and_stash_move_the_activation() {
        let mut s: Vec<f32> = (0..10).map(|v| v as f32).collect();
        // At the back of a region of 10: stays; in a region of 8: to the front.
        assert_eq!(settle(&mut s, 7, 3, 10), 7);
        assert_eq!(settle(&mut s, 7, 3, 8), 0);
        assert_eq!(&s[..3], &[7.0, 8.0, 9.0]);
        // A stash is a copy; one where the activation lies is left as it is.
        stash(&mut s, 0, 3, 4);
        assert_eq!(&s[..7], &[7.0, 8.0, 9.0, 3.0, 7.0, 8.0, 9.0]);
        stash(&mut s, 4, 3, 4);
        assert_eq!(&s[4..7], &[7.0, 8.0, 9.0]);
    }
}
