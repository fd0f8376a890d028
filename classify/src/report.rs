//! The output: text (one line per image, or a short table with `--top`) or
//! one JSON object per line.

use crate::input::Input;
use infer::Model;
use serde_json::json;
use std::path::Path;

/// `p` as JSON, written with the shortest decimal that reads back as the same
/// `f32` (`0.12996161`, not `0.12996160984039307`).
fn prob(p: f32) -> serde_json::Value {
    json!(p.to_string().parse::<f64>().unwrap_or(f64::NAN))
}

/// One ranked class.
pub struct Ranked {
    pub index: usize,
    pub name: String,
    pub probability: f32,
}

/// The `k` most probable classes, most probable first (lower index first on ties).
pub fn ranked(model: &Model<'_>, probs: &[f32], k: usize) -> Vec<Ranked> {
    let mut order: Vec<usize> = (0..model.num_classes()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| Ranked {
            index,
            name: model
                .class_name(index)
                .map_or_else(|| format!("class {index}"), str::to_string),
            probability: probs[index],
        })
        .collect()
}

fn resize_note(image: &Input) -> String {
    if image.resized {
        let ((w, h), (tw, th)) = (image.original, image.size);
        // Same aspect ratio: a plain resize; else centre-cropped first.
        let how = if u64::from(w) * u64::from(th) == u64::from(h) * u64::from(tw) {
            "resized"
        } else {
            "centre-cropped and resized"
        };
        format!(" ({how} from {w}×{h} to {tw}×{th})")
    } else {
        String::new()
    }
}

/// `cat_1.png: cat 87.3%`, or with `--top K` a header line and one line per class.
pub fn text(path: &Path, image: &Input, ranked: &[Ranked]) -> String {
    let name = path.display();
    let note = resize_note(image);
    match ranked {
        [only] => format!(
            "{name}: {} {:.1}%{note}",
            only.name,
            100.0 * only.probability
        ),
        _ => {
            let width = ranked
                .iter()
                .map(|r| r.name.chars().count())
                .max()
                .unwrap_or(0);
            // Rank numbers right-aligned, so that `10.` lines up with ` 9.`.
            let digits = ranked.len().to_string().len();
            let mut out = format!("{name}:{note}");
            for (i, r) in ranked.iter().enumerate() {
                out.push_str(&format!(
                    "\n  {:>digits$}. {:<width$} {:5.1}%",
                    i + 1,
                    r.name,
                    100.0 * r.probability
                ));
            }
            out
        }
    }
}

/// `{"file": …, "class": …, "probability": …, "top": [...], ...}` on one line.
pub fn json_line(path: &Path, image: &Input, ranked: &[Ranked]) -> String {
    let top: Vec<_> = ranked
        .iter()
        .map(|r| json!({"class": r.name, "index": r.index, "probability": prob(r.probability)}))
        .collect();
    // `--top` is at least 1 and a model has at least one class.
    let best = &ranked[0];
    json!({
        "file": path.display().to_string(),
        "class": best.name,
        "index": best.index,
        "probability": prob(best.probability),
        "top": top,
        "width": image.original.0,
        "height": image.original.1,
        "resized": image.resized,
    })
    .to_string()
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV header for `k` ranked classes.
pub fn csv_header(k: usize) -> String {
    let mut cols = vec![
        "file".to_string(),
        "class".into(),
        "index".into(),
        "probability".into(),
    ];
    for i in 2..=k {
        cols.extend([
            format!("class_{i}"),
            format!("index_{i}"),
            format!("probability_{i}"),
        ]);
    }
    cols.join(",")
}

/// One CSV row: the file, then each ranked class's name, index and
/// probability (shortest decimal that reads back as the `f32`).
pub fn csv_row(path: &Path, ranked: &[Ranked]) -> String {
    let mut cols = vec![csv_field(&path.display().to_string())];
    for r in ranked {
        cols.extend([
            csv_field(&r.name),
            r.index.to_string(),
            r.probability.to_string(),
        ]);
    }
    cols.join(",")
}
