//! The training loop: shuffled (and augmented) mini-batches, the optimiser,
//! validation after each epoch, early stopping with restore of the best
//! weights. What the caller shows or saves as training goes (a progress bar, a
//! Keras-like line per epoch, checkpoints) it does in an [`Observer`].

pub mod checkpoint;
pub mod distill;
pub mod evaluate;
pub mod groups;
pub mod lookahead;
pub mod metrics;
pub mod recipe;
pub mod replicas;
pub mod spec_file;
pub mod warm_start;
pub mod whitening;

pub use evaluate::{evaluate, evaluate_tta, Evaluation, Tta, EVAL_BATCH};

use crate::data::augment::{self, Augment, Batch, FlipPhase};
use crate::data::Split;
use crate::layers::{BatchSync, Param, Params};
use crate::model::loss::Targets;
use crate::model::network::Network;
use crate::optim::schedule::{self, Schedule};
use crate::optim::Optimizer;
use groups::{Grouped, ParamGroups};
use lookahead::Lookahead;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use replicas::{Alone, Buckets, PendingSum, Replicas};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
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
    /// In a data-parallel run, batch norm normalises by the statistics of the
    /// whole batch (summed over the replicas at every batch-norm layer,
    /// forward and backward) instead of each replica's shard.
    #[serde(default)]
    pub sync_batch_norm: bool,
    /// In a data-parallel run, the gradients are summed over the replicas in
    /// buckets of about this many bytes, each started as soon as backward
    /// has produced it ([`replicas::Buckets`]); 0: one sum of every gradient
    /// once backward is done.
    #[serde(default = "default_bucket_bytes")]
    pub bucket_bytes: usize,
    /// Per-parameter learning-rate multipliers ([`groups`]).
    #[serde(default)]
    pub groups: ParamGroups,
    /// Lookahead averaging of the weights ([`lookahead`]).
    #[serde(default)]
    pub lookahead: Option<Lookahead>,
    /// A whitening first layer: its filters are held fixed, its bias after
    /// `bias_epochs` (the values are set before training, [`whitening`]).
    #[serde(default)]
    pub whitening: Option<whitening::Whitening>,
    /// Dirac initialisation of the convolutions ([`whitening::dirac`]),
    /// applied with the whitening by [`whitening::initialise`].
    #[serde(default)]
    pub dirac: bool,
    /// Multipliers of named layers' initial weights (also applied by
    /// [`whitening::initialise`]).
    #[serde(default)]
    pub init_scales: std::collections::BTreeMap<String, f32>,
    /// A teacher's probabilities of every training image, mixed into the
    /// targets ([`distill`]; not part of a recipe: computed by the caller).
    #[serde(skip)]
    pub distill: Option<std::sync::Arc<distill::Distillation>>,
}

/// [`TrainConfig::bucket_bytes`] by default: 1 MiB.
pub const BUCKET_BYTES: usize = 1 << 20;

fn default_bucket_bytes() -> usize {
    BUCKET_BYTES
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
            sync_batch_norm: false,
            bucket_bytes: BUCKET_BYTES,
            groups: recipe.groups.clone(),
            lookahead: recipe.lookahead,
            whitening: recipe.whitening.clone(),
            dirac: recipe.dirac,
            init_scales: recipe.init_scales.clone(),
            distill: None,
        }
    }
}

impl TrainConfig {
    /// The parameter groups of `epoch` (1-based): the recipe's, with a
    /// whitening layer's filters held, and its bias once its epochs are done.
    pub fn groups_in(&self, epoch: usize) -> ParamGroups {
        let mut groups = self.groups.clone();
        if let Some(w) = &self.whitening {
            let bias = (epoch > w.bias_epochs).then_some("bias");
            for suffix in std::iter::once("weight").chain(bias) {
                groups
                    .held
                    .push((w.layer.clone(), Some(suffix.to_string())));
            }
        }
        groups
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
            sync_batch_norm: false,
            bucket_bytes: BUCKET_BYTES,
            groups: ParamGroups::default(),
            lookahead: None,
            whitening: None,
            dirac: false,
            init_scales: Default::default(),
            distill: None,
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
    #[error("training stopped after epoch {epoch}")]
    Observer {
        epoch: usize,
        #[source]
        source: ObserverError,
    },
    #[error("batch size must be at least 1")]
    ZeroBatch,
    #[error("the training set is empty")]
    EmptyTrainingSet,
    #[error("after epoch {epoch} the weights differ between the processes of this data-parallel run (a replica computed something else: mixed builds or machines?)")]
    ReplicasDiverged { epoch: usize },
    #[error("synchronised batch norm needs every one of the {replicas} processes to get at least one image of every batch: with {images} training images in batches of {batch_size}, {problem}; choose another batch size")]
    ShardTooSmall {
        replicas: usize,
        images: usize,
        batch_size: usize,
        problem: String,
    },
    #[error("the teacher's probabilities cover {rows} images, the training set has {images}")]
    Distillation { rows: usize, images: usize },
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
    /// The lookahead average ([`lookahead`]), one tensor per saved tensor;
    /// empty without lookahead.
    #[serde(skip)]
    pub lookahead: Vec<Vec<f32>>,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub history: Vec<EpochRecord>,
    /// Epoch whose weights the network now holds.
    pub final_epoch: usize,
    pub best_epoch: Option<usize>,
    pub stopped_early: bool,
    /// What data-parallel training cost in communication (`None` alone).
    pub communication: Option<Communication>,
}

/// The all-reduce traffic of a data-parallel run ([`fit_replicated`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Communication {
    /// Bytes each replica contributes to the all-reduces of one step.
    pub bytes_per_step: usize,
    /// All-reduces per step: the gradient buckets ([`Buckets`]), then the
    /// loss and correct count.
    pub buckets: usize,
    /// Steps taken (in this call of [`fit_replicated`]).
    pub steps: usize,
    /// Wall time spent waiting for the all-reduces once backward was done
    /// (the communication that did not overlap backward), summed over the
    /// steps.
    pub seconds: f64,
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
    /// An error (the checkpoint cannot be written, say) stops training:
    /// [`fit`] returns it as [`TrainError::Observer`].
    fn epoch_done(
        &mut self,
        _record: &EpochRecord,
        _net: &Network,
        _opt: &Optimizer,
        _state: &TrainState,
    ) -> Result<(), ObserverError> {
        Ok(())
    }
}

/// Why an [`Observer`] stopped training.
pub type ObserverError = Box<dyn std::error::Error + Send + Sync>;

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
    fit_replicated(&Alone, net, opt, train, val, cfg, state, observer)
}

/// [`fit`] as one of the `replicas` of a data-parallel run (see
/// [`replicas`]): every replica calls it with the same arguments; each
/// trains on its shard of every batch and validates on its shard of `val`,
/// and all see the same figures and end with the same weights. The
/// observer of every replica is called; the caller gives replica 0 the one
/// that reports and saves.
#[allow(clippy::too_many_arguments)]
pub fn fit_replicated(
    replicas: &dyn Replicas,
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
    let (rank, size) = (replicas.rank(), replicas.size());
    let steps = train.len().div_ceil(cfg.batch_size);
    // Synchronised batch norm sums inside every replica's forward and
    // backward, so every replica must run them: no empty shard.
    let sync = (size > 1 && cfg.sync_batch_norm).then_some(Across(replicas));
    let smallest_batch = match train.len() % cfg.batch_size {
        0 => cfg.batch_size.min(train.len()),
        last => last,
    };
    if sync.is_some() && smallest_batch < size {
        return Err(TrainError::ShardTooSmall {
            replicas: size,
            images: train.len(),
            batch_size: cfg.batch_size,
            problem: format!("a batch has only {smallest_batch}"),
        });
    }
    let mut order: Vec<usize> = (0..train.len()).collect();
    // Two batch buffers: one trains while the other is gathered (and augmented).
    // Every replica gathers the whole batch (cheap, and off the critical
    // path) and trains on its shard, so the augmentation of each image is
    // the same however many replicas there are.
    let mut buffers = [
        Batch::with_capacity(cfg.batch_size, train.shape),
        Batch::with_capacity(cfg.batch_size, train.shape),
    ];
    let val_shard = if size > 1 {
        Cow::Owned(val.select(&replicas::shard(val.len(), rank, size).collect::<Vec<_>>()))
    } else {
        Cow::Borrowed(val)
    };
    // The all-reduced buffer: every gradient (in buckets), then the shard's
    // loss sum and correct count.
    let buckets = Buckets::plan(&net.param_lens(), cfg.bucket_bytes);
    let mut reduced: Vec<f32> = vec![0.0; buckets.len() + 2];
    let mut communication = Communication {
        bytes_per_step: std::mem::size_of_val(&reduced[..]),
        buckets: buckets.buckets.len() + 1,
        steps: 0,
        seconds: 0.0,
    };
    let image_len = train.image_len();
    let total_steps = (steps * cfg.epochs) as u64;
    if cfg.lookahead.is_some() && state.lookahead.is_empty() {
        state.lookahead = net.snapshot();
    }
    if let Some(d) = &cfg.distill {
        if d.probs.len() != train.len() * d.classes {
            return Err(TrainError::Distillation {
                rows: d.probs.len() / d.classes.max(1),
                images: train.len(),
            });
        }
    }
    // The teacher's rows of the batch being trained.
    let mut soft_rows: Vec<f32> = Vec::new();

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

        let groups = cfg.groups_in(epoch);
        // A held first layer (whitening, once its bias is done) needs no backward.
        net.skip_held_prefix(&|layer, suffix| groups.lr_scale(layer, suffix) > 0.0);
        let phase = FlipPhase {
            run_seed: cfg.seed,
            epoch,
        };
        observer.epoch_started(epoch, cfg.epochs, steps);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let mut failure = None;
        prefetched_batches(
            train,
            &order,
            cfg.batch_size,
            &cfg.augment,
            epoch_seed,
            phase,
            &mut buffers,
            &mut |step, batch| {
                let part = replicas::shard(batch.len(), rank, size);
                let labels = &batch.labels[part.clone()];
                let soft = cfg.distill.as_ref().map(|d| {
                    let first = step * cfg.batch_size;
                    soft_rows.clear();
                    d.gather(&order[first + part.start..first + part.end], &mut soft_rows);
                    (&soft_rows[..], d.weight)
                });
                let targets = Targets {
                    labels,
                    smoothing: cfg.label_smoothing,
                    soft,
                };
                // Alone, the shard is the whole batch and its weight 1.
                let weight = part.len() as f32 / batch.len() as f32;
                if !part.is_empty() {
                    let images = &batch.images[part.start * image_len..part.end * image_len];
                    net.set_input_u8(images, part.len());
                }
                let sync = sync.as_ref().map(|s| s as &dyn BatchSync);
                // The batch's mean loss and its correct count, over all replicas.
                let (loss, batch_correct) = if size == 1 {
                    let b = net.forward_backward_shard(targets, weight, sync);
                    (b.loss, b.correct)
                } else {
                    let shard = (!part.is_empty()).then_some((targets, weight));
                    let waited =
                        step_replicated(net, replicas, &buckets, &mut reduced, shard, sync);
                    communication.seconds += waited;
                    communication.steps += 1;
                    let k = reduced.len();
                    (reduced[k - 2] / batch.len() as f32, reduced[k - 1] as usize)
                };
                // Every replica sees the same reduced loss, so all stop together.
                if !loss.is_finite() {
                    failure = Some(TrainError::NonFinite {
                        epoch,
                        step: step + 1,
                        value: loss,
                    });
                    return false;
                }
                let e = schedule::step_epoch(epoch, step, steps);
                let factor = cfg.schedule.factor(e, cfg.epochs as f32);
                if size == 1 {
                    opt.step(
                        &mut Grouped {
                            inner: net,
                            groups: &groups,
                        },
                        factor,
                    );
                } else {
                    opt.step(
                        &mut Grouped {
                            inner: &mut WithGradients {
                                net,
                                grads: &reduced[..buckets.len()],
                            },
                            groups: &groups,
                        },
                        factor,
                    );
                }
                if let Some(l) = &cfg.lookahead {
                    let t = ((epoch - 1) * steps + step + 1) as u64;
                    l.after_step(net, &mut state.lookahead, t, total_steps);
                }
                loss_sum += loss as f64 * batch.len() as f64;
                correct += batch_correct;
                let seen = (step * cfg.batch_size + batch.len()) as f64;
                observer.step_done(step, loss_sum / seen, correct as f64 / seen);
                true
            },
        );
        if let Some(e) = failure {
            observer.epoch_failed();
            return Err(e);
        }

        let (val_loss, val_accuracy) = if size == 1 {
            let v = evaluate(net, val, EVAL_BATCH);
            (v.loss, v.accuracy)
        } else {
            average_statistics(net, replicas);
            if !replicas.agree(replicas::fingerprint(
                net.named_tensors().into_iter().map(|(_, _, d)| d),
            )) {
                observer.epoch_failed();
                return Err(TrainError::ReplicasDiverged { epoch });
            }
            let v = evaluate(net, &val_shard, EVAL_BATCH);
            let right = v
                .predictions
                .iter()
                .zip(&val_shard.labels)
                .filter(|(p, t)| p == t)
                .count();
            let mut sums = [f64::from(v.loss) * val_shard.len() as f64, right as f64];
            replicas.sum_f64(&mut sums);
            let n = val.len().max(1) as f64;
            ((sums[0] / n) as f32, (sums[1] / n) as f32)
        };
        let record = EpochRecord {
            epoch,
            loss: (loss_sum / train.len() as f64) as f32,
            accuracy: correct as f32 / train.len() as f32,
            val_loss,
            val_accuracy,
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
        observer
            .epoch_done(&record, net, opt, state)
            .map_err(|source| TrainError::Observer { epoch, source })?;
    }

    // The run's last lookahead update (d = 1) leaves the average in place.
    if cfg.lookahead.is_some() && state.epochs_done == cfg.epochs && !state.lookahead.is_empty() {
        lookahead::blend(net, &mut state.lookahead, 1.0);
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
        communication: (size > 1).then_some(communication),
    })
}

/// The replicas as batch norm sees them when synchronised.
struct Across<'a>(&'a dyn Replicas);

impl BatchSync for Across<'_> {
    fn sum_f64(&self, values: &mut [f64]) {
        self.0.sum_f64(values);
    }
}

/// The network's parameters with the gradients of `grads` (all of them,
/// flat, in [`Params::visit_params`] order) instead of its own: what the
/// optimiser steps in a data-parallel run.
struct WithGradients<'a> {
    net: &'a mut Network,
    grads: &'a [f32],
}

impl Params for WithGradients<'_> {
    fn visit_params(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        let grads = self.grads;
        let mut offset = 0;
        self.net.visit_params(&mut |p| {
            let n = p.value.len();
            f(Param {
                grad: &grads[offset..offset + n],
                ..p
            });
            offset += n;
        });
    }

    fn gemm(&self) -> crate::kernels::gemm::Backend {
        self.net.gemm()
    }
}

/// One replica's forward and backward of its shard of a batch, with the sum
/// of the gradients over the replicas overlapping backward: each bucket is
/// copied into its part of `reduced` and its sum started as soon as backward
/// has produced it; then the shard's loss sum and correct count (the last two
/// values) are summed, and every sum waited for. A replica without images in
/// this batch (`shard` None) contributes zeros. Returns the seconds spent
/// waiting after backward.
fn step_replicated(
    net: &mut Network,
    replicas: &dyn Replicas,
    buckets: &Buckets,
    reduced: &mut [f32],
    shard: Option<(Targets, f32)>,
    sync: Option<&dyn BatchSync>,
) -> f64 {
    let (grads, tail) = reduced.split_at_mut(buckets.len());
    // The buckets' parts of the buffer, in the order they are started.
    let mut parts: Vec<Option<&mut [f32]>> = Vec::with_capacity(buckets.buckets.len());
    let mut rest = grads;
    for (range, _) in &buckets.buckets {
        let (head, part) = rest.split_at_mut(range.start);
        debug_assert_eq!(part.len(), range.len());
        parts.push(Some(part));
        rest = head;
    }
    let mut pending: Vec<Box<dyn PendingSum + '_>> = Vec::with_capacity(parts.len() + 1);
    let mut next = 0;
    let local = shard.map(|(targets, weight)| {
        net.forward_backward_shard_with(targets, weight, sync, &mut |net, i| {
            let layer = &buckets.layers[i];
            if !layer.is_empty() {
                let (range, lowest) = &buckets.buckets[next];
                let part = parts[next].as_deref_mut().expect("not started yet");
                net.copy_layer_grads(
                    i,
                    &mut part[layer.start - range.start..layer.end - range.start],
                );
                if i == *lowest {
                    let part = parts[next].take().expect("not started yet");
                    pending.push(replicas.start_sum_f32(part));
                    next += 1;
                }
            }
            for p in &mut pending {
                p.progress();
            }
        })
    });
    // No images: zeros, in the same buckets, in the same order.
    for part in parts.iter_mut().skip(next) {
        let part = part.take().expect("not started yet");
        part.fill(0.0);
        pending.push(replicas.start_sum_f32(part));
    }
    let (loss, correct) = local.map_or((0.0, 0), |b| (b.loss, b.correct));
    let n = shard.map_or(0, |(targets, _)| targets.labels.len());
    tail.copy_from_slice(&[loss * n as f32, correct as f32]);
    let waited = Instant::now();
    pending.push(replicas.start_sum_f32(tail));
    for p in pending {
        p.wait();
    }
    waited.elapsed().as_secs_f64()
}

/// Replaces the running statistics (batch norm's moving mean and variance)
/// by their mean over the replicas.
fn average_statistics(net: &mut Network, replicas: &dyn Replicas) {
    let mut stats = net.statistics_mut();
    let mut flat: Vec<f32> = stats.iter().flat_map(|s| s.iter().copied()).collect();
    if flat.is_empty() {
        return;
    }
    replicas.sum_f32(&mut flat);
    let scale = 1.0 / replicas.size() as f32;
    let mut values = flat.iter();
    for s in &mut stats {
        for (v, sum) in s.iter_mut().zip(&mut values) {
            *v = sum * scale;
        }
    }
}

/// Calls `train_step(step, batch)` on each batch of `order` in turn (stopping
/// early when it returns `false`), while a scoped thread gathers and augments
/// the next batch into the other buffer: preparing batches stays off the
/// critical path. Batch `step` is augmented with the stream
/// [`augment::batch_seed`]`(epoch_seed, step)`, whichever thread does it.
#[allow(clippy::too_many_arguments)]
fn prefetched_batches(
    train: &Split,
    order: &[usize],
    batch_size: usize,
    aug: &Augment,
    epoch_seed: u64,
    phase: FlipPhase,
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
                    phase,
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
            evaluate_tta(&mut net, &split, 10, Tta::Flip),
            evaluate_tta(&mut net, &flipped, 16, Tta::Flip),
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
            evaluate_tta(&mut net, &split, 7, Tta::Flip),
        );
        assert!((plain.loss - tta.loss).abs() < 1e-5);
        assert_eq!(plain.accuracy, tta.accuracy);
        assert_eq!(plain.predictions, tta.predictions);
    }

    /// A shifted view moves the content by one pixel on both axes, the
    /// border reflected; a mirrored one is then mirrored. Weights sum to 1.
    #[test]
    fn tta_views_shift_and_mirror() {
        let src: Vec<u8> = (0..IMAGE_LEN).map(|i| (i % 251) as u8).collect();
        let px = |img: &[u8], y: usize, x: usize| img[(y * 32 + x) * 3..][..3].to_vec();
        let mut dst = vec![0u8; IMAGE_LEN];
        let views = Tta::FlipTranslate.views();
        for tta in [Tta::Flip, Tta::FlipTranslate] {
            let sum: f32 = tta.views().iter().map(|v| v.weight).sum();
            assert!((sum - 1.0).abs() < 1e-6);
        }
        // (false, −1), content moved up-left: out[y][x] = src[y + 1][x + 1],
        // the last row and column reflected.
        views[2].render(&src, &mut dst, SHAPE);
        assert_eq!(px(&dst, 5, 7), px(&src, 6, 8));
        assert_eq!(px(&dst, 31, 31), px(&src, 30, 30));
        // (false, +1), down-right: out[y][x] = src[y − 1][x − 1], the first
        // row and column reflected.
        views[4].render(&src, &mut dst, SHAPE);
        assert_eq!(px(&dst, 5, 7), px(&src, 4, 6));
        assert_eq!(px(&dst, 0, 0), px(&src, 1, 1));
        // (true, +1): the mirror image of the last one.
        let mut shifted = vec![0u8; IMAGE_LEN];
        views[4].render(&src, &mut shifted, SHAPE);
        views[5].render(&src, &mut dst, SHAPE);
        assert_eq!(px(&dst, 5, 7), px(&shifted, 5, 24));
        assert_ne!(dst, shifted);
        // (false, 0) is the image itself.
        views[0].render(&src, &mut dst, SHAPE);
        assert_eq!(dst, src);
    }

    /// Snapshots of the network after each epoch; stops training after
    /// epoch `stop_after` (as a killed run would).
    struct Snapshots {
        after: Vec<Vec<Vec<f32>>>,
        stop_after: Option<usize>,
    }

    impl Observer for Snapshots {
        fn epoch_done(
            &mut self,
            record: &EpochRecord,
            net: &Network,
            _opt: &Optimizer,
            _state: &TrainState,
        ) -> Result<(), ObserverError> {
            self.after.push(net.snapshot());
            match self.stop_after {
                Some(e) if e == record.epoch => Err("stopped".into()),
                _ => Ok(()),
            }
        }
    }

    /// airbench's techniques together (whitening, Dirac, parameter groups,
    /// lookahead, alternating flips, a warm-up from 0.2): a run stopped after
    /// epoch 1 and continued from its state ends with the uninterrupted
    /// run's weights, bit for bit; the whitening filters never move; its bias
    /// trains in epoch 1 only; batch norm's scales stay 1.
    #[test]
    fn airbench_techniques_hold_what_they_hold_and_resume_exactly() {
        let spec = crate::model::spec::ModelSpec::from_json_str(
            r#"{"name":"w","input":{"height":32,"width":32,"channels":3},"layers":[
                {"type":"conv2d","name":"whiten","filters":24,"kernel":2,"padding":"valid"},
                {"type":"relu"},{"type":"maxpool2d","size":4,"stride":4},
                {"type":"conv2d","name":"c","filters":24,"kernel":3},
                {"type":"batchnorm","name":"n"},{"type":"relu"},
                {"type":"flatten"},{"type":"dense","name":"head","units":10}]}"#,
        )
        .unwrap();
        let recipe: recipe::TrainingSpec = serde_json::from_str(
            r#"{"epochs":3,"batch_size":8,"optimizer":"sgd","lr":0.05,"momentum":0.85,
                "nesterov":true,"weight_decay":0.01,"schedule":"onecycle",
                "warmup_epochs":1,"initial_lr_factor":0.2,"final_lr_factor":0.1,
                "label_smoothing":0.2,"crop_pad":2,"flip":true,"alternate_flip":true,
                "bn_scale":false,"bn_bias_lr_scale":4,"lr_scales":{"head":0.5},
                "init_scales":{"head":0.1},"dirac":true,
                "whitening":{"layer":"whiten","images":20,"bias_epochs":1},
                "lookahead":{"every":2,"decay":0.9}}"#,
        )
        .unwrap();
        let recipe = recipe.resolve().unwrap();
        let cfg = TrainConfig::from_recipe(&recipe, 3, None);
        let (train, val) = (split_of(36), split_of(6));
        let start = || {
            let mut net = Network::new(&spec, 3).unwrap();
            whitening::initialise(&mut net, &cfg, &train).unwrap();
            (net, recipe.optimizer.clone(), TrainState::default())
        };
        let tensor = |snapshot: &[Vec<f32>], net: &Network, name: &str| {
            let i = net
                .named_tensors()
                .iter()
                .position(|(n, _, _)| n == name)
                .unwrap();
            snapshot[i].clone()
        };

        let (mut net, mut opt, mut state) = start();
        let initial = net.snapshot();
        let mut seen = Snapshots {
            after: Vec::new(),
            stop_after: None,
        };
        fit(
            &mut net, &mut opt, &train, &val, &cfg, &mut state, &mut seen,
        )
        .unwrap();
        let done = net.snapshot();

        let (mut again, mut opt2, mut state2) = start();
        let mut stopped = Snapshots {
            after: Vec::new(),
            stop_after: Some(1),
        };
        let err = fit(
            &mut again,
            &mut opt2,
            &train,
            &val,
            &cfg,
            &mut state2,
            &mut stopped,
        );
        assert!(matches!(err, Err(TrainError::Observer { epoch: 1, .. })));
        fit(
            &mut again,
            &mut opt2,
            &train,
            &val,
            &cfg,
            &mut state2,
            &mut (),
        )
        .unwrap();
        // Equal but for the order of parallel float sums, which other tests
        // running at the same time can change (a real run is bit-exact:
        // trainer-cli's crash tests compare the files).
        let apart = largest_difference(&again.snapshot(), &done);
        assert!(apart < 1e-5, "the resumed run ends {apart} away");

        let w = |s: &[Vec<f32>], name: &str| tensor(s, &net, name);
        assert_eq!(w(&done, "whiten.weight"), w(&initial, "whiten.weight"));
        assert_ne!(w(&seen.after[0], "whiten.bias"), w(&initial, "whiten.bias"));
        assert_eq!(w(&done, "whiten.bias"), w(&seen.after[1], "whiten.bias"));
        assert!(w(&done, "n.gamma").iter().all(|&g| g == 1.0));
        assert_ne!(w(&done, "n.beta"), w(&initial, "n.beta"));
        assert_ne!(w(&done, "c.weight"), w(&initial, "c.weight"));
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

    /// Replicas that are threads of this process, summing through shared
    /// memory: what MPI does across processes, for testing
    /// [`fit_replicated`] without it.
    struct ThreadReplicas {
        rank: usize,
        size: usize,
        shared: std::sync::Arc<(std::sync::Barrier, std::sync::Mutex<Vec<f64>>)>,
    }

    impl ThreadReplicas {
        fn team(size: usize) -> Vec<ThreadReplicas> {
            let shared = std::sync::Arc::new((
                std::sync::Barrier::new(size),
                std::sync::Mutex::new(Vec::new()),
            ));
            (0..size)
                .map(|rank| ThreadReplicas {
                    rank,
                    size,
                    shared: shared.clone(),
                })
                .collect()
        }

        fn sum(&self, values: &mut [f64]) {
            let (barrier, acc) = &*self.shared;
            if barrier.wait().is_leader() {
                *acc.lock().unwrap() = vec![0.0; values.len()];
            }
            barrier.wait();
            for (a, v) in acc.lock().unwrap().iter_mut().zip(values.iter()) {
                *a += v;
            }
            barrier.wait();
            values.copy_from_slice(&acc.lock().unwrap());
            barrier.wait();
        }
    }

    impl Replicas for ThreadReplicas {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn sum_f32(&self, values: &mut [f32]) {
            let mut wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            self.sum(&mut wide);
            for (v, w) in values.iter_mut().zip(wide) {
                *v = w as f32;
            }
        }
        fn sum_f64(&self, values: &mut [f64]) {
            self.sum(values);
        }
        fn agree(&self, value: u64) -> bool {
            // Per 16-bit piece: all equal exactly when n·Σv² = (Σv)² (no
            // variance); exact in f64 at these sizes.
            let pieces: Vec<f64> = (0..4)
                .map(|i| ((value >> (16 * i)) & 0xffff) as f64)
                .collect();
            let mut sums: Vec<f64> = pieces
                .iter()
                .chain(&pieces.iter().map(|v| v * v).collect::<Vec<_>>())
                .copied()
                .collect();
            self.sum(&mut sums);
            let n = self.size as f64;
            (0..4).all(|i| n * sums[4 + i] == sums[i] * sums[i])
        }
    }

    /// Trains `make_net()` on `train` as `size` thread replicas; returns each
    /// replica's final weights and history.
    fn train_replicated(
        make_net: fn() -> Network,
        size: usize,
        train: &Split,
        val: &Split,
        cfg: &TrainConfig,
    ) -> Vec<(Vec<Vec<f32>>, Vec<EpochRecord>)> {
        let team = ThreadReplicas::team(size);
        std::thread::scope(|s| {
            let runs: Vec<_> = team
                .iter()
                .map(|r| {
                    s.spawn(move || {
                        let mut net = make_net();
                        let mut opt = Optimizer::Sgd(crate::optim::Sgd::new(0.05, 0.9, true));
                        let mut state = TrainState::default();
                        let out = fit_replicated(
                            r,
                            &mut net,
                            &mut opt,
                            train,
                            val,
                            cfg,
                            &mut state,
                            &mut (),
                        )
                        .unwrap();
                        assert_eq!(out.communication.is_some(), size > 1);
                        (net.snapshot(), out.history)
                    })
                })
                .collect();
            runs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn replicated_config(batch_size: usize) -> TrainConfig {
        TrainConfig {
            epochs: 2,
            batch_size,
            augment: Augment {
                crop_pad: 2,
                pad_mode: PadMode::Reflect,
                flip: true,
                cutout: 0,
                alternate_flip: false,
            },
            ..TrainConfig::default()
        }
    }

    /// Data-parallel training computes what one process computes: the
    /// replicas' summed, weighted gradients are the whole batch's, so the
    /// weights agree to rounding (summation order) — with shards of unequal
    /// sizes, and with a last batch smaller than the team (an empty shard);
    /// with the gradients summed in one bucket or one per layer.
    #[test]
    fn replicas_train_like_one_process() {
        for (size, images, batch, bucket_bytes) in [
            (2, 70, 16, BUCKET_BYTES),
            (3, 70, 16, 4),
            (2, 15, 7, 0),
            (2, 15, 7, 4),
        ] {
            let (train, val) = (split_of(images), split_of(13));
            let cfg = TrainConfig {
                bucket_bytes,
                ..replicated_config(batch)
            };
            let alone = train_replicated(small_net, 1, &train, &val, &cfg);
            let team = train_replicated(small_net, size, &train, &val, &cfg);
            let (w1, h1) = &alone[0];
            for (w, h) in &team {
                // Bit for bit the same on every replica.
                assert_eq!(w, &team[0].0);
                let worst = largest_difference(w1, w);
                assert!(worst < 1e-5, "{size} replicas, batch {batch}: {worst}");
                for (a, b) in h1.iter().zip(h) {
                    assert!((a.loss - b.loss).abs() < 1e-5, "{a:?} vs {b:?}");
                    assert!((a.val_loss - b.val_loss).abs() < 1e-5, "{a:?} vs {b:?}");
                    assert_eq!(a.accuracy, b.accuracy);
                    assert_eq!(a.val_accuracy, b.val_accuracy);
                }
            }
            // Training moved the weights (the comparison is not of two initialisations).
            let init = small_net().snapshot();
            assert!(init
                .iter()
                .flatten()
                .zip(w1.iter().flatten())
                .any(|(a, b)| (a - b).abs() > 1e-3));
        }
    }

    /// Distillation: with weight 0 the teacher changes nothing (bit for
    /// bit); with weight 1 the network learns the teacher's answers, not the
    /// labels (bit for bit as if they were the labels); the replicas gather their shards' rows and train as one
    /// process; probabilities of another split are refused.
    #[test]
    fn distillation_learns_the_teachers_answers() {
        let (train, val) = (split_of(40), split_of(13));
        // A teacher sure of the next class: (label + 1) mod 10.
        let probs: Vec<f32> = train
            .labels
            .iter()
            .flat_map(|&t| (0..10).map(move |c| f32::from(u8::from(c == (t + 1) % 10))))
            .collect();
        let teacher = |weight| {
            Some(std::sync::Arc::new(distill::Distillation {
                probs: probs.clone(),
                classes: 10,
                weight,
                origin: "test".into(),
            }))
        };
        let plain = replicated_config(8);
        let zero = TrainConfig {
            distill: teacher(0.0),
            ..replicated_config(8)
        };
        let (a, b) = (
            train_replicated(small_net, 1, &train, &val, &plain),
            train_replicated(small_net, 1, &train, &val, &zero),
        );
        assert_eq!(a[0].0, b[0].0);

        // Weight 1 with one-hot teacher rows is training on the teacher's
        // classes as labels, bit for bit; and the replicas agree.
        let full = TrainConfig {
            distill: teacher(1.0),
            ..replicated_config(8)
        };
        let shifted = Split {
            labels: train.labels.iter().map(|t| (t + 1) % 10).collect(),
            ..train.clone()
        };
        let alone = train_replicated(small_net, 1, &train, &val, &full);
        let relabelled = train_replicated(small_net, 1, &shifted, &val, &plain);
        assert_eq!(alone[0].0, relabelled[0].0);
        assert_ne!(alone[0].0, a[0].0);
        let team = train_replicated(small_net, 2, &train, &val, &full);
        let worst = largest_difference(&alone[0].0, &team[1].0);
        assert!(worst < 1e-5, "{worst}");

        let short = TrainConfig {
            distill: Some(std::sync::Arc::new(distill::Distillation {
                probs: probs[..390].to_vec(),
                classes: 10,
                weight: 0.5,
                origin: "test".into(),
            })),
            ..replicated_config(8)
        };
        let e = fit(
            &mut small_net(),
            &mut Optimizer::Sgd(crate::optim::Sgd::new(0.05, 0.9, true)),
            &train,
            &val,
            &short,
            &mut TrainState::default(),
            &mut (),
        );
        assert!(matches!(
            e,
            Err(TrainError::Distillation {
                rows: 39,
                images: 40
            })
        ));
    }

    /// A held first layer (as a whitening layer is held): backward stops
    /// above it, and the replicas still sum every bucket, the one holding
    /// both the held layer and trained ones included, and train as one
    /// process does, the held layer unchanged.
    #[test]
    fn replicas_with_a_held_first_layer_train_like_one_process() {
        for bucket_bytes in [BUCKET_BYTES, 4] {
            let (train, val) = (split_of(40), split_of(13));
            let mut cfg = TrainConfig {
                bucket_bytes,
                ..replicated_config(8)
            };
            cfg.groups.held = vec![("conv1".into(), None)];
            let alone = train_replicated(small_net, 1, &train, &val, &cfg);
            let team = train_replicated(small_net, 2, &train, &val, &cfg);
            let init = small_net().snapshot();
            let (w1, _) = &alone[0];
            assert_eq!(w1[0], init[0], "conv1.weight is held");
            assert_ne!(w1[2], init[2], "dense1.weight trains");
            for (w, _) in &team {
                let worst = largest_difference(w1, w);
                assert!(worst < 1e-5, "bucket {bucket_bytes} bytes: {worst}");
            }
        }
    }

    /// With batch norm each replica normalises by its shard's statistics, so
    /// the run differs from one process's; the replicas still end identical,
    /// their running statistics averaged.
    #[test]
    fn replicas_with_batch_norm_stay_identical() {
        let team = train_replicated(
            bn_net,
            2,
            &split_of(40),
            &split_of(10),
            &replicated_config(8),
        );
        assert_eq!(team[0].0, team[1].0);
        let figures = |h: &[EpochRecord]| -> Vec<[f32; 4]> {
            h.iter()
                .map(|r| [r.loss, r.accuracy, r.val_loss, r.val_accuracy])
                .collect()
        };
        assert_eq!(figures(&team[0].1), figures(&team[1].1));
        // The running statistics moved from their initial values.
        assert_ne!(team[0].0[2..4], bn_net().snapshot()[2..4]);
    }

    fn bn_net() -> Network {
        let spec = crate::model::spec::ModelSpec::from_json_str(
            r#"{"name":"tiny-bn","input":{"height":32,"width":32,"channels":3},"layers":[
                {"type":"conv2d","filters":4,"kernel":3},{"type":"batchnorm"},{"type":"relu"},
                {"type":"maxpool2d"},{"type":"conv2d","filters":6,"kernel":3},
                {"type":"batchnorm"},{"type":"relu"},
                {"type":"flatten"},{"type":"dense","units":10}]}"#,
        )
        .unwrap();
        Network::new(&spec, 3).unwrap()
    }

    fn largest_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    }

    /// Synchronised batch norm normalises every shard by the whole batch's
    /// statistics, forward and backward, so replicas train what one process
    /// trains — weights and running statistics — while without it they do
    /// not (which shows the comparison can fail).
    #[test]
    fn synchronised_batch_norm_trains_like_one_process() {
        let (train, val) = (split_of(48), split_of(12));
        let cfg = TrainConfig {
            sync_batch_norm: true,
            // A bucket per layer: their sums interleave with batch norm's.
            bucket_bytes: 4,
            ..replicated_config(12)
        };
        let alone = train_replicated(bn_net, 1, &train, &val, &cfg);
        for size in [2, 3] {
            let team = train_replicated(bn_net, size, &train, &val, &cfg);
            assert_eq!(team[0].0, team[size - 1].0);
            let worst = largest_difference(&alone[0].0, &team[0].0);
            assert!(worst < 1e-5, "{size} replicas: {worst}");
        }
        let unsynchronised = train_replicated(bn_net, 2, &train, &val, &replicated_config(12));
        let apart = largest_difference(&alone[0].0, &unsynchronised[0].0);
        assert!(
            apart > 1e-3,
            "per-shard statistics gave the same weights: {apart}"
        );
    }

    /// A batch too small to give every replica an image is refused up front
    /// with synchronised batch norm (a replica without images could not take
    /// part in the sums).
    #[test]
    fn synchronised_batch_norm_refuses_empty_shards() {
        let cfg = TrainConfig {
            sync_batch_norm: true,
            ..replicated_config(8)
        };
        let team = ThreadReplicas::team(3);
        let mut opt = Optimizer::Sgd(crate::optim::Sgd::new(0.05, 0.9, true));
        // 34 images in batches of 8: the last batch has 2, for 3 replicas.
        let err = fit_replicated(
            &team[0],
            &mut bn_net(),
            &mut opt,
            &split_of(34),
            &split_of(4),
            &cfg,
            &mut TrainState::default(),
            &mut (),
        )
        .unwrap_err();
        assert!(
            matches!(err, TrainError::ShardTooSmall { replicas: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("only 2"), "{err}");
    }

    /// Replicas whose weights differ stop with an error after the epoch.
    #[test]
    fn diverged_replicas_are_an_error() {
        struct Disagreeing;
        impl Replicas for Disagreeing {
            fn rank(&self) -> usize {
                0
            }
            fn size(&self) -> usize {
                2
            }
            fn sum_f32(&self, values: &mut [f32]) {
                values.iter_mut().for_each(|v| *v *= 2.0);
            }
            fn sum_f64(&self, values: &mut [f64]) {
                values.iter_mut().for_each(|v| *v *= 2.0);
            }
            fn agree(&self, _value: u64) -> bool {
                false
            }
        }
        let mut net = small_net();
        let mut opt = Optimizer::Sgd(crate::optim::Sgd::new(0.05, 0.9, true));
        let err = fit_replicated(
            &Disagreeing,
            &mut net,
            &mut opt,
            &split_of(20),
            &split_of(4),
            &replicated_config(8),
            &mut TrainState::default(),
            &mut (),
        )
        .unwrap_err();
        assert!(
            matches!(err, TrainError::ReplicasDiverged { epoch: 1 }),
            "{err}"
        );
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
            alternate_flip: false,
        };
        let mut buffers = [Batch::default(), Batch::default()];
        for _epoch in 0..2 {
            let mut seen = Vec::new();
            let phase = FlipPhase::default();
            prefetched_batches(
                &split,
                &order,
                5,
                &aug,
                42,
                phase,
                &mut buffers,
                &mut |step, b| {
                    let mut expected = Batch::default();
                    let idx = &order[step * 5..(step * 5 + 5).min(23)];
                    augment::gather_batch(
                        &split,
                        idx,
                        &aug,
                        augment::batch_seed(42, step),
                        phase,
                        &mut expected,
                    );
                    assert_eq!(b.images, expected.images);
                    assert_eq!(b.labels, expected.labels);
                    seen.push(step);
                    true
                },
            );
            assert_eq!(seen, [0, 1, 2, 3, 4]);
            // The buffers come back with their capacity.
            assert!(buffers.iter().all(|b| b.images.capacity() >= 3 * IMAGE_LEN));
        }
        let mut steps = 0;
        prefetched_batches(
            &split,
            &order,
            5,
            &aug,
            42,
            FlipPhase::default(),
            &mut buffers,
            &mut |_, _| {
                steps += 1;
                steps < 2
            },
        );
        assert_eq!(steps, 2);
    }
}
