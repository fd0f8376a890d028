//! The training loop: shuffled (and augmented) mini-batches, the optimiser,
//! validation after each epoch, early stopping with restore of the best
//! weights. What the caller shows or saves as training goes (a progress bar, a
//! Keras-like line per epoch, checkpoints) it does in an [`Observer`].

pub mod checkpoint;
pub mod evaluate;
pub mod metrics;
pub mod recipe;
pub mod spec_file;
pub mod warm_start;

pub use evaluate::{evaluate, evaluate_tta, Evaluation, EVAL_BATCH};

use crate::data::augment::{self, Augment, Batch};
use crate::data::Split;
use crate::model::network::Network;
use crate::optim::schedule::{self, Schedule};
use crate::optim::Optimizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Which validation figure early stopping watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    ValLoss,
    ValAccuracy,
}

/// Keras' `EarlyStopping(monitor, patience, min_delta, restore_best_weights)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f32,
    /// Put back the weights of the best epoch when training ends.
    pub restore_best: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub early_stopping: Option<EarlyStopping>,
    /// Data augmentation of the training batches (default: none).
    #[serde(default)]
    pub augment: Augment,
    /// Learning-rate schedule over the `epochs` (default: constant).
    #[serde(default)]
    pub schedule: Schedule,
    /// Label smoothing ε of the training loss (validation loss is always
    /// the plain cross-entropy).
    #[serde(default)]
    pub label_smoothing: f32,
}

impl TrainConfig {
    /// The settings of `recipe`, with a seed and early stopping (or none).
    pub fn from_recipe(
        recipe: &crate::train::recipe::Recipe,
        seed: u64,
        early_stopping: Option<EarlyStopping>,
    ) -> Self {
        Self {
            epochs: recipe.epochs,
            batch_size: recipe.batch_size,
            seed,
            early_stopping,
            augment: recipe.augment.clone(),
            schedule: recipe.schedule.clone(),
            label_smoothing: recipe.label_smoothing,
        }
    }
}

impl Default for TrainConfig {
    /// The reference settings: 35 epochs, batch 32, seed 1, no early
    /// stopping, no augmentation.
    fn default() -> Self {
        Self {
            epochs: 35,
            batch_size: 32,
            seed: 1,
            early_stopping: None,
            augment: Augment::default(),
            schedule: Schedule::default(),
            label_smoothing: 0.0,
        }
    }
}

/// One row of the history (`history.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub val_loss: f32,
    pub val_accuracy: f32,
    pub seconds: f32,
    /// Learning rate of the epoch's last step (0 in histories made before it was recorded).
    #[serde(default)]
    pub lr: f32,
}

impl EpochRecord {
    /// Keras' end-of-epoch line.
    pub fn keras_line(&self, epochs: usize) -> String {
        format!(
            "Epoch {}/{} - {:.0}s - loss: {} - accuracy: {:.4} - val_loss: {} - val_accuracy: {:.4}",
            self.epoch,
            epochs,
            self.seconds,
            loss_text(f64::from(self.loss)),
            self.accuracy,
            loss_text(f64::from(self.val_loss)),
            self.val_accuracy
        )
    }

    pub const CSV_HEADER: &'static str = "epoch,loss,accuracy,val_loss,val_accuracy,seconds,lr";

    pub fn csv_row(&self) -> String {
        format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.6e}",
            self.epoch,
            self.loss,
            self.accuracy,
            self.val_loss,
            self.val_accuracy,
            self.seconds,
            self.lr
        )
    }
}

/// A loss as people read it: four decimals, or scientific notation once it
/// has grown out of that range (a diverging run), never 30 digits.
pub fn loss_text(loss: f64) -> String {
    if loss.is_finite() && loss.abs() < 1e4 {
        format!("{loss:.4}")
    } else {
        format!("{loss:.3e}")
    }
}

/// The history as CSV, one row per epoch.
pub fn history_csv(history: &[EpochRecord]) -> String {
    let mut s = format!("{}\n", EpochRecord::CSV_HEADER);
    for r in history {
        s += &r.csv_row();
        s.push('\n');
    }
    s
}

/// Reads a history written by [`history_csv`] (or an older one without the
/// `lr` column); the error names the line and what is wrong with it.
pub fn parse_history_csv(text: &str) -> Result<Vec<EpochRecord>, String> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
    let with_lr = header == EpochRecord::CSV_HEADER;
    if !with_lr && format!("{header},lr") != EpochRecord::CSV_HEADER {
        return Err(format!(
            "line 1 is {header:?}, not a history header ({})",
            EpochRecord::CSV_HEADER
        ));
    }
    let mut records = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if cols.len() != 6 + usize::from(with_lr) {
            return Err(bad("wrong number of columns"));
        }
        let f = |j: usize| cols[j].parse::<f32>().map_err(|_| bad("not a number"));
        records.push(EpochRecord {
            epoch: cols[0].parse().map_err(|_| bad("not an epoch number"))?,
            loss: f(1)?,
            accuracy: f(2)?,
            val_loss: f(3)?,
            val_accuracy: f(4)?,
            seconds: f(5)?,
            lr: if with_lr { f(6)? } else { 0.0 },
        });
    }
    Ok(records)
}

#[cfg(test)]
mod text_tests {
    #[test]
    fn losses_read_well_at_any_size() {
        assert_eq!(super::loss_text(0.123456), "0.1235");
        assert_eq!(super::loss_text(2.5e31), "2.500e31");
        assert_eq!(super::loss_text(f64::INFINITY), "inf");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the loss became {value} at epoch {epoch}, step {step}: training diverged (try a lower learning rate)")]
    NonFinite {
        epoch: usize,
        step: usize,
        value: f32,
    },
    #[error("batch size must be at least 1")]
    ZeroBatch,
    #[error("the training set is empty")]
    EmptyTrainingSet,
}

/// Everything that changes as training goes on; what a checkpoint saves.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished.
    pub epochs_done: usize,
    pub history: Vec<EpochRecord>,
    /// Best monitored value so far and the epoch it was reached.
    pub best: Option<(f32, usize)>,
    /// Epochs since the best.
    pub wait: usize,
    pub stopped_early: bool,
    #[serde(skip)]
    pub best_weights: Option<Vec<Vec<f32>>>,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub history: Vec<EpochRecord>,
    /// Epoch whose weights the network now holds.
    pub final_epoch: usize,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
}

/// What the caller of [`fit`] sees as training goes: to draw progress, print
/// epoch lines, save histories and checkpoints. Every method has a default
/// that does nothing.
pub trait Observer {
    /// Epoch `epoch` of `epochs` starts; it has `steps` steps.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// Step `step` (from 0) finished; `loss` and `accuracy` are the means over
    /// the epoch's images so far.
    fn step_done(&mut self, _step: usize, _loss: f64, _accuracy: f64) {}
    /// The epoch ended early, on an error [`fit`] returns next.
    fn epoch_failed(&mut self) {}
    /// The epoch finished: validated, early stopping updated, `state` current.
    fn epoch_done(
        &mut self,
        _record: &EpochRecord,
        _net: &Network,
        _opt: &Optimizer,
        _state: &TrainState,
    ) {
    }
}

/// An [`Observer`] that does nothing.
impl Observer for () {}

/// Trains `net` on `train`, validating on `val` after each epoch. `state`
/// carries over from a checkpoint (or `TrainState::default()` for a fresh run);
/// `observer` sees every step and epoch.
pub fn fit(
    net: &mut Network,
    opt: &mut Optimizer,
    train: &Split,
    val: &Split,
    cfg: &TrainConfig,
    state: &mut TrainState,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    if cfg.batch_size == 0 {
        return Err(TrainError::ZeroBatch);
    }
    if train.is_empty() {
        return Err(TrainError::EmptyTrainingSet);
    }
    let steps = train.len().div_ceil(cfg.batch_size);
    let mut order: Vec<usize> = (0..train.len()).collect();
    // Two batch buffers: one trains while the other is gathered (and augmented).
    let mut buffers = [
        Batch::with_capacity(cfg.batch_size, train.shape),
        Batch::with_capacity(cfg.batch_size, train.shape),
    ];

    while state.epochs_done < cfg.epochs && !state.stopped_early {
        let epoch = state.epochs_done + 1;
        let started = Instant::now();
        // Each epoch's shuffle, augmentation and dropout masks depend only on
        // (seed, epoch), so a run resumed from a checkpoint repeats exactly.
        let epoch_seed = cfg
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(epoch as u64);
        order.sort_unstable();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(epoch_seed));
        net.reseed(epoch_seed);

        observer.epoch_started(epoch, cfg.epochs, steps);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let mut failure = None;
        prefetched_batches(
            train,
            &order,
            cfg.batch_size,
            &cfg.augment,
            epoch_seed,
            &mut buffers,
            &mut |step, batch| {
                net.set_input_u8(&batch.images, batch.len());
                let b = net.forward_backward_smoothed(&batch.labels, cfg.label_smoothing);
                if !b.loss.is_finite() {
                    failure = Some(TrainError::NonFinite {
                        epoch,
                        step: step + 1,
                        value: b.loss,
                    });
                    return false;
                }
                let e = schedule::step_epoch(epoch, step, steps);
                opt.step(net, cfg.schedule.factor(e, cfg.epochs as f32));
                loss_sum += b.loss as f64 * batch.len() as f64;
                correct += b.correct;
                let seen = (step * cfg.batch_size + batch.len()) as f64;
                observer.step_done(step, loss_sum / seen, correct as f64 / seen);
                true
            },
        );
        if let Some(e) = failure {
            observer.epoch_failed();
            return Err(e);
        }

        let v = evaluate(net, val, EVAL_BATCH);
        let record = EpochRecord {
            epoch,
            loss: (loss_sum / train.len() as f64) as f32,
            accuracy: correct as f32 / train.len() as f32,
            val_loss: v.loss,
            val_accuracy: v.accuracy,
            seconds: started.elapsed().as_secs_f32(),
            lr: opt.learning_rate()
                * cfg.schedule.factor(
                    schedule::step_epoch(epoch, steps - 1, steps),
                    cfg.epochs as f32,
                ),
        };
        state.history.push(record.clone());
        state.epochs_done = epoch;
        if let Some(es) = &cfg.early_stopping {
            early_stopping_update(es, &record, net, state);
        }
        observer.epoch_done(&record, net, opt, state);
    }

    let mut final_epoch = state.epochs_done;
    if let (Some(es), Some((_, best_epoch)), Some(w)) =
        (&cfg.early_stopping, state.best, state.best_weights.as_ref())
    {
        if es.restore_best && best_epoch != state.epochs_done {
            net.restore(w);
            final_epoch = best_epoch;
        }
    }
    Ok(Outcome {
        history: state.history.clone(),
        final_epoch,
        best_epoch: state.best.map(|(_, e)| e),
        stopped_early: state.stopped_early,
    })
}

/// Calls `train_step(step, batch)` on each batch of `order` in turn (stopping
/// early when it returns `false`), while a scoped thread gathers and augments
/// the next batch into the other buffer: preparing batches stays off the
/// critical path. Batch `step` is augmented with the stream
/// [`augment::batch_seed`]`(epoch_seed, step)`, whichever thread does it.
fn prefetched_batches(
    train: &Split,
    order: &[usize],
    batch_size: usize,
    aug: &Augment,
    epoch_seed: u64,
    buffers: &mut [Batch; 2],
    train_step: &mut dyn FnMut(usize, &Batch) -> bool,
) {
    use std::sync::mpsc::sync_channel;
    let spare = std::mem::take(buffers);
    let returned = std::thread::scope(|s| {
        // The channels live inside the scope: if `train_step` panics, they are
        // dropped while unwinding, which lets the batch thread end.
        let (ready_tx, ready_rx) = sync_channel::<(usize, Batch)>(2);
        let (free_tx, free_rx) = sync_channel::<Batch>(2);
        for b in spare {
            free_tx.send(b).expect("the receiver is alive");
        }
        let producer = s.spawn(move || {
            for (step, idx) in order.chunks(batch_size).enumerate() {
                let Ok(mut batch) = free_rx.recv() else {
                    break;
                };
                augment::gather_batch(
                    train,
                    idx,
                    aug,
                    augment::batch_seed(epoch_seed, step),
                    &mut batch,
                );
                if ready_tx.send((step, batch)).is_err() {
                    break;
                }
            }
            free_rx
        });
        for (step, batch) in ready_rx.iter() {
            let go_on = train_step(step, &batch);
            // Never blocks: the channel holds as many batches as there are.
            let _ = free_tx.send(batch);
            if !go_on {
                break;
            }
        }
        drop(ready_rx);
        drop(free_tx);
        producer.join().expect("the batch thread does not panic")
    });
    // Take the buffers back for the next epoch (so they keep their capacity).
    for (slot, b) in buffers.iter_mut().zip(returned.try_iter()) {
        *slot = b;
    }
}

/// Keras' rule: an improvement is `current < best − min_delta` for a loss
/// (`current > best + min_delta` for an accuracy); stop after `patience`
/// epochs without one.
fn early_stopping_update(
    es: &EarlyStopping,
    r: &EpochRecord,
    net: &Network,
    state: &mut TrainState,
) {
    let current = match es.monitor {
        Monitor::ValLoss => r.val_loss,
        Monitor::ValAccuracy => r.val_accuracy,
    };
    let improved = match (state.best, es.monitor) {
        (None, _) => true,
        (Some((best, _)), Monitor::ValLoss) => current < best - es.min_delta,
        (Some((best, _)), Monitor::ValAccuracy) => current > best + es.min_delta,
    };
    if improved {
        state.best = Some((current, r.epoch));
        state.wait = 0;
        if es.restore_best {
            state.best_weights = Some(net.snapshot());
        }
    } else {
        state.wait += 1;
        if state.wait >= es.patience {
            state.stopped_early = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::PadMode;
    use crate::data::cifar10::{IMAGE_LEN, SHAPE};

    fn split_of(n: usize) -> Split {
        Split {
            shape: SHAPE,
            images: (0..n * IMAGE_LEN).map(|i| (i * 7 % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        }
    }

    fn small_net() -> Network {
        let spec = crate::model::spec::ModelSpec::from_json_str(
            r#"{"name":"tiny","input":{"height":32,"width":32,"channels":3},"layers":[
                {"type":"conv2d","filters":4,"kernel":3},{"type":"relu"},
                {"type":"maxpool2d"},{"type":"flatten"},{"type":"dense","units":10}]}"#,
        )
        .unwrap();
        Network::new(&spec, 3).unwrap()
    }

    fn mirrored(split: &Split) -> Split {
        let mut images = vec![0u8; split.images.len()];
        for (src, dst) in split
            .images
            .chunks_exact(IMAGE_LEN)
            .zip(images.chunks_exact_mut(IMAGE_LEN))
        {
            augment::mirror_image(src, dst, SHAPE);
        }
        Split {
            shape: SHAPE,
            images,
            labels: split.labels.clone(),
        }
    }

    /// TTA averages an image with its mirror image, so it gives the same
    /// figures on a split and on the mirrored split — which plain evaluation
    /// does not (the network is not mirror-symmetric).
    #[test]
    fn tta_is_invariant_to_mirroring_the_test_set() {
        let mut net = small_net();
        let split = split_of(37);
        let flipped = mirrored(&split);
        let (a, b) = (
            evaluate_tta(&mut net, &split, 10),
            evaluate_tta(&mut net, &flipped, 16),
        );
        assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
        assert_eq!(a.predictions, b.predictions);
        let (p, q) = (
            evaluate(&mut net, &split, 10),
            evaluate(&mut net, &flipped, 10),
        );
        assert!(
            (p.loss - q.loss).abs() > 1e-4,
            "the test images are symmetric"
        );
        assert!(a.loss.is_finite() && a.predictions.len() == 37);
    }

    /// On images that are their own mirror image, TTA is plain evaluation.
    #[test]
    fn tta_on_symmetric_images_is_plain_evaluation() {
        let mut net = small_net();
        let mut split = split_of(23);
        for img in split.images.chunks_exact_mut(IMAGE_LEN) {
            for y in 0..32 {
                for x in 16..32 {
                    for c in 0..3 {
                        img[(y * 32 + x) * 3 + c] = img[(y * 32 + 31 - x) * 3 + c];
                    }
                }
            }
        }
        assert_eq!(mirrored(&split).images, split.images);
        let (plain, tta) = (
            evaluate(&mut net, &split, 7),
            evaluate_tta(&mut net, &split, 7),
        );
        assert!((plain.loss - tta.loss).abs() < 1e-5);
        assert_eq!(plain.accuracy, tta.accuracy);
        assert_eq!(plain.predictions, tta.predictions);
    }

    #[test]
    fn mirror_image_reverses_each_row_of_pixels() {
        let src: Vec<u8> = (0..IMAGE_LEN).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; IMAGE_LEN];
        augment::mirror_image(&src, &mut dst, SHAPE);
        // Pixel (y=2, x=0) comes from (y=2, x=31), channels kept in order.
        assert_eq!(dst[(2 * 32) * 3..][..3], src[(2 * 32 + 31) * 3..][..3]);
        let mut back = vec![0u8; IMAGE_LEN];
        augment::mirror_image(&dst, &mut back, SHAPE);
        assert_eq!(back, src);
    }

    /// The prefetching thread hands over, in order, exactly the batches that a
    /// plain gather with the same seeds makes, and stops when asked to.
    #[test]
    fn prefetched_batches_match_direct_gather() {
        let split = split_of(23);
        let order: Vec<usize> = (0..23).rev().collect();
        let aug = Augment {
            crop_pad: 2,
            pad_mode: PadMode::Zero,
            flip: true,
            cutout: 4,
        };
        let mut buffers = [Batch::default(), Batch::default()];
        for _epoch in 0..2 {
            let mut seen = Vec::new();
            prefetched_batches(&split, &order, 5, &aug, 42, &mut buffers, &mut |step, b| {
                let mut expected = Batch::default();
                let idx = &order[step * 5..(step * 5 + 5).min(23)];
                augment::gather_batch(
                    &split,
                    idx,
                    &aug,
                    augment::batch_seed(42, step),
                    &mut expected,
                );
                assert_eq!(b.images, expected.images);
                assert_eq!(b.labels, expected.labels);
                seen.push(step);
                true
            });
            assert_eq!(seen, [0, 1, 2, 3, 4]);
            // The buffers come back with their capacity.
            assert!(buffers.iter().all(|b| b.images.capacity() >= 3 * IMAGE_LEN));
        }
        let mut steps = 0;
        prefetched_batches(&split, &order, 5, &aug, 42, &mut buffers, &mut |_, _| {
            steps += 1;
            steps < 2
        });
        assert_eq!(steps, 2);
    }
}
