//! Learning-rate schedules: the factor the optimiser's base learning rate is
//! multiplied by at each step, as a function of the fractional epoch `e`
//! (epoch 1 covers `e ∈ [0, 1)`; a step is evaluated at its middle,
//! `e = epoch − 1 + (step + ½) / steps`, see [`step_epoch`]).
//!
//! `factor(e) = warm-up(e) · decay(e)` with, for a warm-up of `w` epochs and
//! `T` epochs in all:
//!
//! - warm-up: `i + (1 − i)·e / w` while `e < w`, then 1 (none when `w = 0`;
//!   `i`, the initial factor, is 0 unless set);
//! - `constant`: 1;
//! - `onecycle`: linear from 1 at `e = w` down to `final_factor` at `e = T`:
//!   with the warm-up, the triangle of fast CIFAR-10 training (up linearly,
//!   then down linearly);
//! - `cosine`: `final + (1 − final) · ½ (1 + cos π p)` with `p = (e − w)/(T − w)`;
//! - `step`: `step_gamma ^ ⌊e / step_epochs⌋`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    #[default]
    Constant,
    #[serde(rename = "onecycle")]
    OneCycle,
    Cosine,
    Step,
}

/// A schedule; the default (constant, no warm-up) keeps the rate fixed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Linear warm-up from 0 to the base rate over this many epochs (for
    /// `onecycle`, the rising side of the triangle).
    pub warmup_epochs: f32,
    /// `onecycle`, `cosine`: the factor reached at the end of the last epoch.
    pub final_factor: f32,
    /// `step`: epochs between two decays.
    pub step_epochs: f32,
    /// `step`: factor of each decay.
    pub step_gamma: f32,
    /// The factor the warm-up starts from.
    pub initial_factor: f32,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Constant,
            warmup_epochs: 0.0,
            final_factor: 0.0,
            step_epochs: 10.0,
            step_gamma: 0.1,
            initial_factor: 0.0,
        }
    }
}

/// The fractional epoch at the middle of `step` (0-based) of `epoch` (1-based)
/// when an epoch has `steps` steps.
pub fn step_epoch(epoch: usize, step: usize, steps: usize) -> f32 {
    (epoch - 1) as f32 + (step as f32 + 0.5) / steps as f32
}

impl Schedule {
    /// The learning-rate factor at fractional epoch `e` of a run of `total` epochs.
    pub fn factor(&self, e: f32, total: f32) -> f32 {
        let w = self.warmup_epochs;
        let i0 = self.initial_factor;
        let warm = if w > 0.0 && e < w {
            i0 + (1.0 - i0) * e / w
        } else {
            1.0
        };
        let progress = || {
            if total > w {
                ((e - w) / (total - w)).clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let fin = self.final_factor;
        let decay = match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::OneCycle => 1.0 - progress() * (1.0 - fin),
            ScheduleKind::Cosine => {
                fin + (1.0 - fin) * 0.5 * (1.0 + (std::f32::consts::PI * progress()).cos())
            }
            ScheduleKind::Step => self.step_gamma.powi((e / self.step_epochs).floor() as i32),
        };
        warm * decay
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(format!(
                "warm-up epochs {} must be 0 or more",
                self.warmup_epochs
            ));
        }
        if !(0.0..=1.0).contains(&self.initial_factor) {
            return Err(format!(
                "initial learning-rate factor {} must be in [0, 1]",
                self.initial_factor
            ));
        }
        if !(0.0..=1.0).contains(&self.final_factor) {
            return Err(format!(
                "final learning-rate factor {} must be in [0, 1]",
                self.final_factor
            ));
        }
        if self.kind == ScheduleKind::Step
            && !(self.step_epochs > 0.0 && self.step_gamma > 0.0 && self.step_gamma.is_finite())
        {
            return Err("step schedule needs step epochs > 0 and gamma > 0".to_string());
        }
        Ok(())
    }

    /// A short description (`constant`; `onecycle, warm-up 5 epochs, to 0×`).
    pub fn describe(&self) -> String {
        let mut s = match self.kind {
            ScheduleKind::Constant => "constant".to_string(),
            ScheduleKind::OneCycle => format!("onecycle to {}×", self.final_factor),
            ScheduleKind::Cosine => format!("cosine to {}×", self.final_factor),
            ScheduleKind::Step => format!(
                "step ×{} every {} epochs",
                self.step_gamma, self.step_epochs
            ),
        };
        if self.warmup_epochs > 0.0 {
            s += &format!(", warm-up {} epochs", self.warmup_epochs);
            if self.initial_factor > 0.0 {
                s += &format!(" from {}×", self.initial_factor);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    fn of(kind: ScheduleKind, warmup_epochs: f32) -> Schedule {
        Schedule {
            kind,
            warmup_epochs,
            ..Schedule::default()
        }
    }

    #[test]
    fn constant_is_exactly_one() {
        let s = Schedule::default();
        for e in [0.0, 0.01, 3.5, 35.0, 100.0] {
            assert_eq!(s.factor(e, 35.0), 1.0);
        }
    }

    #[test]
    fn warmup_is_linear_then_flat() {
        let s = of(ScheduleKind::Constant, 2.0);
        assert_eq!(s.factor(0.0, 10.0), 0.0);
        assert!(close(s.factor(0.5, 10.0), 0.25));
        assert!(close(s.factor(1.0, 10.0), 0.5));
        assert_eq!(s.factor(2.0, 10.0), 1.0);
        assert_eq!(s.factor(7.0, 10.0), 1.0);
    }

    /// airbench's shape: up from 0.2 over the first 23 % of the run, then
    /// down to 0.07.
    #[test]
    fn warmup_from_an_initial_factor() {
        let s = Schedule {
            initial_factor: 0.2,
            final_factor: 0.07,
            ..of(ScheduleKind::OneCycle, 2.3)
        };
        assert!(close(s.factor(0.0, 10.0), 0.2));
        assert!(close(s.factor(1.15, 10.0), 0.6));
        assert!(close(s.factor(2.3, 10.0), 1.0));
        assert!(close(s.factor(10.0, 10.0), 0.07));
        let bad = Schedule {
            initial_factor: 1.5,
            ..Schedule::default()
        };
        assert!(bad.validate().unwrap_err().contains("initial"));
    }

    #[test]
    fn onecycle_is_a_triangle() {
        // Up over 5 epochs, down to 0 at 24 (the fast CIFAR-10 schedule's shape).
        let s = of(ScheduleKind::OneCycle, 5.0);
        assert_eq!(s.factor(0.0, 24.0), 0.0);
        assert!(close(s.factor(2.5, 24.0), 0.5));
        assert!(close(s.factor(5.0, 24.0), 1.0));
        assert!(close(s.factor(14.5, 24.0), 0.5));
        assert!(close(s.factor(24.0, 24.0), 0.0));
        // With a floor, it ends there; without warm-up, it only decays.
        let floored = Schedule {
            final_factor: 0.1,
            ..of(ScheduleKind::OneCycle, 0.0)
        };
        assert!(close(floored.factor(0.0, 10.0), 1.0));
        assert!(close(floored.factor(5.0, 10.0), 0.55));
        assert!(close(floored.factor(10.0, 10.0), 0.1));
    }

    #[test]
    fn cosine_halves_at_mid_run() {
        let s = of(ScheduleKind::Cosine, 0.0);
        assert!(close(s.factor(0.0, 20.0), 1.0));
        assert!(close(s.factor(10.0, 20.0), 0.5));
        assert!(close(s.factor(20.0, 20.0), 0.0));
        assert!(close(
            s.factor(5.0, 20.0),
            0.5 * (1.0 + (0.25f32 * std::f32::consts::PI).cos())
        ));
        let warm = Schedule {
            final_factor: 0.2,
            ..of(ScheduleKind::Cosine, 2.0)
        };
        assert!(close(warm.factor(1.0, 12.0), 0.5));
        assert!(close(warm.factor(2.0, 12.0), 1.0));
        assert!(close(warm.factor(7.0, 12.0), 0.6));
        assert!(close(warm.factor(12.0, 12.0), 0.2));
    }

    #[test]
    fn step_decays_every_n_epochs() {
        let s = Schedule {
            step_epochs: 3.0,
            step_gamma: 0.5,
            ..of(ScheduleKind::Step, 0.0)
        };
        assert_eq!(s.factor(0.0, 10.0), 1.0);
        assert_eq!(s.factor(2.99, 10.0), 1.0);
        assert_eq!(s.factor(3.0, 10.0), 0.5);
        assert_eq!(s.factor(6.5, 10.0), 0.25);
        assert_eq!(s.factor(9.0, 10.0), 0.125);
    }

    #[test]
    fn steps_are_evaluated_at_their_middle() {
        assert!(close(step_epoch(1, 0, 4), 0.125));
        assert!(close(step_epoch(1, 3, 4), 0.875));
        assert!(close(step_epoch(3, 1, 2), 2.75));
    }

    #[test]
    fn validation_and_json() {
        assert!(Schedule::default().validate().is_ok());
        assert!(of(ScheduleKind::Constant, -1.0).validate().is_err());
        let bad_final = Schedule {
            final_factor: 1.5,
            ..Schedule::default()
        };
        assert!(bad_final.validate().is_err());
        let bad_step = Schedule {
            step_epochs: 0.0,
            ..of(ScheduleKind::Step, 0.0)
        };
        assert!(bad_step.validate().is_err());
        let s: Schedule = serde_json::from_str(r#"{"kind":"onecycle","warmup_epochs":5}"#).unwrap();
        assert_eq!(s, of(ScheduleKind::OneCycle, 5.0));
    }
}
