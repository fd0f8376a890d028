//! Evaluation metrics: confusion matrix and the per-class classification
//! report (precision, recall, F1, support), as scikit-learn prints them.

use serde::Serialize;

/// `counts[true][predicted]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    pub classes: usize,
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![vec![0; classes]; classes],
        }
    }

    pub fn from_predictions(classes: usize, truth: &[u8], predicted: &[u8]) -> Self {
        let mut m = Self::new(classes);
        for (&t, &p) in truth.iter().zip(predicted) {
            m.counts[t as usize][p as usize] += 1;
        }
        m
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|i| self.counts[i][i]).sum();
        correct as f64 / self.total().max(1) as f64
    }

    /// The report for these counts, rows named by `names`.
    pub fn report(&self, names: &[String]) -> Report {
        let support: Vec<u64> = self.counts.iter().map(|r| r.iter().sum()).collect();
        let predicted: Vec<u64> = (0..self.classes)
            .map(|j| self.counts.iter().map(|r| r[j]).sum())
            .collect();
        let rows: Vec<ClassRow> = (0..self.classes)
            .map(|i| {
                let tp = self.counts[i][i] as f64;
                let precision = ratio(tp, predicted[i] as f64);
                let recall = ratio(tp, support[i] as f64);
                ClassRow {
                    class: names.get(i).cloned().unwrap_or_else(|| i.to_string()),
                    precision,
                    recall,
                    f1: ratio(2.0 * precision * recall, precision + recall),
                    support: support[i],
                }
            })
            .collect();
        let total = self.total();
        let mean =
            |f: fn(&ClassRow) -> f64| rows.iter().map(f).sum::<f64>() / rows.len().max(1) as f64;
        let weighted = |f: fn(&ClassRow) -> f64| {
            rows.iter().map(|r| f(r) * r.support as f64).sum::<f64>() / total.max(1) as f64
        };
        Report {
            macro_avg: Averages {
                precision: mean(|r| r.precision),
                recall: mean(|r| r.recall),
                f1: mean(|r| r.f1),
            },
            weighted_avg: Averages {
                precision: weighted(|r| r.precision),
                recall: weighted(|r| r.recall),
                f1: weighted(|r| r.f1),
            },
            accuracy: self.accuracy(),
            support: total,
            rows,
        }
    }

    /// The matrix as text, rows = true class, columns = predicted.
    pub fn to_text(&self, names: &[String]) -> String {
        let short: Vec<String> = (0..self.classes)
            .map(|i| {
                names
                    .get(i)
                    .map_or(i.to_string(), |n| n.chars().take(6).collect())
            })
            .collect();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(5).max(10);
        let mut s = format!("{:>width$}", "true \\ pred");
        for n in &short {
            s += &format!(" {n:>6}");
        }
        s.push('\n');
        for (i, row) in self.counts.iter().enumerate() {
            let name = names.get(i).cloned().unwrap_or_else(|| i.to_string());
            s += &format!("{name:>width$}");
            for c in row {
                s += &format!(" {c:>6}");
            }
            s.push('\n');
        }
        s
    }

    /// CSV with a header row of predicted classes and one row per true class.
    pub fn to_csv(&self, names: &[String]) -> String {
        let mut s = String::from("true\\predicted");
        for n in names {
            s += &format!(",{n}");
        }
        s.push('\n');
        for (name, row) in names.iter().zip(&self.counts) {
            s += name;
            for c in row {
                s += &format!(",{c}");
            }
            s.push('\n');
        }
        s
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassRow {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Averages {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub rows: Vec<ClassRow>,
    pub accuracy: f64,
    pub macro_avg: Averages,
    pub weighted_avg: Averages,
    pub support: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self
            .rows
            .iter()
            .map(|r| r.class.len())
            .max()
            .unwrap_or(0)
            .max(12);
        writeln!(
            f,
            "{:>w$} {:>9} {:>9} {:>9} {:>9}",
            "", "precision", "recall", "f1-score", "support"
        )?;
        writeln!(f)?;
        for r in &self.rows {
            writeln!(
                f,
                "{:>w$} {:>9.4} {:>9.4} {:>9.4} {:>9}",
                r.class, r.precision, r.recall, r.f1, r.support
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:>w$} {:>9} {:>9} {:>9.4} {:>9}",
            "accuracy", "", "", self.accuracy, self.support
        )?;
        for (name, a) in [
            ("macro avg", &self.macro_avg),
            ("weighted avg", &self.weighted_avg),
        ] {
            writeln!(
                f,
                "{:>w$} {:>9.4} {:>9.4} {:>9.4} {:>9}",
                name, a.precision, a.recall, a.f1, self.support
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made 3-class confusion, checked against precision/recall counted by hand.
    #[test]
    fn report_matches_a_hand_count() {
        // rows = true, cols = predicted
        let m = ConfusionMatrix {
            classes: 3,
            counts: vec![vec![3, 1, 0], vec![0, 2, 2], vec![1, 0, 1]],
        };
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = m.report(&names);
        let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
        // a: tp 3, predicted 4 (3+0+1), support 4 → P = R = 0.75
        assert!(close(r.rows[0].precision, 0.75) && close(r.rows[0].recall, 0.75));
        // b: tp 2, predicted 3 (1+2+0), support 4 → P = 2/3, R = 1/2, F1 = 4/7
        assert!(close(r.rows[1].precision, 2.0 / 3.0) && close(r.rows[1].recall, 0.5));
        assert!(close(r.rows[1].f1, 4.0 / 7.0));
        // c: tp 1, predicted 3 (0+2+1), support 2 → P = 1/3, R = 1/2, F1 = 0.4
        assert!(close(r.rows[2].precision, 1.0 / 3.0) && close(r.rows[2].f1, 0.4));
        assert_eq!(r.support, 10);
        assert!(close(r.accuracy, 0.6));
        assert!(close(r.macro_avg.recall, (0.75 + 0.5 + 0.5) / 3.0));
        assert!(close(
            r.weighted_avg.recall,
            (0.75 * 4.0 + 0.5 * 4.0 + 0.5 * 2.0) / 10.0
        ));
        assert!(r.to_string().contains("weighted avg"));
    }

    #[test]
    fn from_predictions_counts() {
        let m = ConfusionMatrix::from_predictions(2, &[0, 0, 1, 1], &[0, 1, 1, 1]);
        assert_eq!(m.counts, vec![vec![1, 1], vec![0, 2]]);
        assert_eq!(m.accuracy(), 0.75);
    }
}
