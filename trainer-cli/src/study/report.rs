//! The study's report: `RESULTS.md` and its charts, regenerated from
//! the finished runs' `result.json` files. Every figure in it is computed;
//! the only typed-in numbers are the reference figures in [`super::RUNS`].

use super::*;

/// Reads the `result.json` of every run of the study that has one.
pub fn load_results(study_dir: &Path) -> Result<Vec<StudyResult>, StudyError> {
    let mut out = Vec::new();
    for run in &RUNS {
        let path = RunPaths::new(study_dir, run.id).result;
        if path.exists() {
            out.push(read_result(&path)?);
        }
    }
    Ok(out)
}

/// Reads one `result.json`.
pub fn read_result(path: &Path) -> Result<StudyResult, StudyError> {
    let bytes = std::fs::read(path).map_err(|source| StudyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StudyError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// One run of `benches/reference/keras_study.py`: the reference's Keras code
/// and settings on our data files, on this machine (an entry of its
/// `results.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct KerasResult {
    pub id: String,
    pub seed: u64,
    pub test_accuracy: f32,
    pub test_loss: f32,
    pub epochs_run: usize,
    pub best_epoch: Option<usize>,
    pub tensorflow: String,
    pub finished: String,
}

/// The Keras runs in `path`, sorted by run then seed; none when the file
/// does not exist (the script has not been run).
pub fn load_keras(path: &Path) -> Result<Vec<KerasResult>, StudyError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StudyError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut runs: Vec<KerasResult> =
        serde_json::from_slice(&bytes).map_err(|source| StudyError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    runs.sort_by(|a, b| (&a.id, a.seed).cmp(&(&b.id, b.seed)));
    Ok(runs)
}

/// Regenerates the report at `results` and its charts in `img/` beside it,
/// with the Keras runs of `keras` (a `keras_study.py` results file) when it
/// exists.
pub fn write_report(
    study_dir: &Path,
    results: &Path,
    keras: &Path,
    command: &str,
) -> Result<(), StudyError> {
    let finished = load_results(study_dir)?;
    let keras_runs = load_keras(keras)?;
    let img_dir = results
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("img");
    let charts = draw_charts(&finished, &img_dir)?;
    let md = render_markdown(
        &finished,
        &keras_runs,
        &charts,
        command,
        &utc_now(),
        &Machine::this(),
    );
    trainer::atomic::write_atomic(results, md.as_bytes()).map_err(|source| StudyError::Write {
        path: results.to_path_buf(),
        source,
    })
}

/// File names (relative to the report's `img/` folder) of the charts drawn.
#[derive(Clone, Debug, Default)]
pub(super) struct Charts {
    compare: Option<String>,
    time: Option<String>,
}

/// Draws each finished run's history and confusion matrix, and the two
/// comparison charts.
fn draw_charts(finished: &[StudyResult], img_dir: &Path) -> Result<Charts, StudyError> {
    for r in finished {
        let title = format!("{} — {}", r.id, r.settings.describe_short());
        plot::history(&img_dir.join(history_png(&r.id)), &title, &r.run.history)?;
        let title = format!(
            "{} — confusion matrix, {} test images",
            r.id,
            thousands(r.run.test_images)
        );
        let names = &r.class_names;
        plot::confusion(
            &img_dir.join(confusion_png(&r.id)),
            &title,
            &r.confusion_matrix(),
            names,
        )?;
    }
    let mut charts = Charts::default();
    let per_model = one_run_per_model(finished);
    if !per_model.is_empty() {
        let name = "compare-models.png".to_string();
        plot::compare(
            &img_dir.join(&name),
            "Validation accuracy per epoch, models 1, 2 and 3",
            &per_model,
        )?;
        charts.compare = Some(name);
    }
    if !finished.is_empty() {
        let name = "accuracy-vs-time.png".to_string();
        // One line per configuration (its first seed), so that each has a
        // colour of its own.
        let all: Vec<(String, Vec<EpochRecord>)> = seed_groups(finished)
            .iter()
            .map(|g| (g[0].id.clone(), g[0].run.history.clone()))
            .collect();
        plot::accuracy_vs_time(
            &img_dir.join(&name),
            "Validation accuracy against wall-clock time",
            &all,
        )?;
        charts.time = Some(name);
    }
    Ok(charts)
}

/// For models 1, 2 and 3, the first finished run in study order
/// (model1-35, model2-50, model3-es when all have finished).
fn one_run_per_model(finished: &[StudyResult]) -> Vec<(String, Vec<EpochRecord>)> {
    ["model1", "model2", "model3"]
        .iter()
        .filter_map(|m| finished.iter().find(|r| r.settings.model == *m))
        .map(|r| (r.id.clone(), r.run.history.clone()))
        .collect()
}

fn history_png(id: &str) -> String {
    format!("{id}-history.png")
}

fn confusion_png(id: &str) -> String {
    format!("{id}-confusion.png")
}

/// The whole report as Markdown.
pub(super) fn render_markdown(
    finished: &[StudyResult],
    keras: &[KerasResult],
    charts: &Charts,
    command: &str,
    date: &str,
    machine: &Machine,
) -> String {
    let mut md = String::new();
    header(&mut md, finished, command, date, machine);
    table(&mut md, finished, keras);
    if let Some(c) = &charts.compare {
        md += "\n## Validation accuracy per epoch, models 1, 2 and 3\n\n";
        md += "One run per model: the first finished of model1-35/model1-es, model2-50, model3-es/model3-10k.\n\n";
        writeln!(md, "![Validation accuracy per epoch](img/{c})").unwrap();
    }
    if let Some(c) = &charts.time {
        md += "\n## Validation accuracy against wall-clock time\n\n";
        md += "Cumulative time of training and validation per epoch, on the machine each run ran on; \
               one line per configuration (of runs that differ only by their seed, the first).\n\n";
        writeln!(md, "![Validation accuracy against time](img/{c})").unwrap();
    }
    for r in finished {
        run_section(&mut md, r);
    }
    md
}

pub(super) fn header(
    md: &mut String,
    finished: &[StudyResult],
    command: &str,
    date: &str,
    m: &Machine,
) {
    md.push_str("# Results of the reference study, and beyond it\n\n");
    md.push_str("<!-- Generated by `trainer study`; do not edit by hand. -->\n\n");
    writeln!(md, "- Generated by: `{}`", as_trainer_command(command)).unwrap();
    writeln!(md, "- Date: {date}").unwrap();
    writeln!(md, "- Machine: {}", m.describe()).unwrap();
    md.push_str(
        "- Reference figures: the Keras study of the same models (TensorFlow/Keras on a \
         Google Colab GPU), test set of 10,000 images. All other figures are computed by \
         this crate (pure Rust, CPU) and read from each run's `result.json`.\n",
    );
    md.push_str(
        "- Every run of the reference study: batch 32, Adam (learning rate 0.001), seed 1, \
         validation on the test set. The runs beyond the study (`fast`, `fast-50`, `fast-12`; \
         `airbench`, `airbench-s2`, `airbench-s3`; `airbench-muon`, `airbench-muon-s2`, \
         `airbench-muon-s3`; `airbench-muon-15`, `airbench-muon-15-s2`, `airbench-muon-15-s3`) train with their spec's own recipe (`models/fast.json`, \
         `models/airbench.json`, `models/airbench-muon.json`), given in their sections; they train \
         for a fixed number of epochs, so the per-epoch test figures choose nothing.\n",
    );
    let smoke: Vec<&StudyResult> = finished
        .iter()
        .filter(|r| !r.settings.overrides.is_empty())
        .collect();
    if !smoke.is_empty() {
        md.push_str("\n> **Warning — smoke-test runs.** These runs did not use the study's settings, so their figures are not comparable with the reference:\n");
        for r in smoke {
            writeln!(md, "> - {}: {}", r.id, r.settings.overrides.describe()).unwrap();
        }
    }
}

/// The comparison table: a row for every run of the study.
pub(super) fn table(md: &mut String, finished: &[StudyResult], keras: &[KerasResult]) {
    md.push_str("\n## Test accuracy and loss\n\n");
    md.push_str("| run | reference test acc | reference test loss | Keras on our data: test acc, loss | our test acc | our test loss | epochs run | best epoch | s/epoch (this machine, threads) |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for run in &RUNS {
        let ours = finished.iter().find(|r| r.id == run.id);
        let theirs: Vec<&KerasResult> = keras.iter().filter(|k| k.id == run.id).collect();
        md.push_str(&table_row(run, &theirs, ours));
    }
    let notes: Vec<String> = RUNS
        .iter()
        .filter_map(|r| Some((r.id, r.reference?.note)))
        .filter(|(_, note)| !note.is_empty())
        .map(|(id, note)| format!("{id}: {note}"))
        .collect();
    if !notes.is_empty() {
        writeln!(md, "\nReference details: {}.", notes.join("; ")).unwrap();
    }
    keras_paragraph(md, keras);
    md.push_str("\nThe runs:\n\n");
    for r in &RUNS {
        match Settings::new(r, &Overrides::default()) {
            Ok(s) => writeln!(md, "- {}: {}, {}", r.id, r.model, s.describe_run_specific()),
            Err(e) => writeln!(md, "- {}: {}, {e}", r.id, r.model),
        }
        .unwrap();
    }
    md.push_str(
        "\nThe runs beyond the study have no reference figures (—). Their \"TTA\" figure is the \
         test accuracy with test-time augmentation, reported beside the plain one: `fast` \
         averages each image with its mirror image, the `airbench` runs its six views (the image and \
         its mirror image, ¼ each, and both shifted by one pixel either way, ⅛ each).\n",
    );
    seeds_paragraph(md, finished);
}

/// `finished` in groups of runs that differ only by their seed
/// ([`Settings::same_but_seed`]), each in study order, groups in the order of
/// their first run.
fn seed_groups(finished: &[StudyResult]) -> Vec<Vec<&StudyResult>> {
    let mut groups: Vec<Vec<&StudyResult>> = Vec::new();
    for r in finished {
        match groups
            .iter_mut()
            .find(|g| g[0].settings.same_but_seed(&r.settings))
        {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups
}

/// Runs of the same model and recipe that differ only by their seed: the
/// mean and range of their test figures (plain and TTA) and wall times.
fn seeds_paragraph(md: &mut String, finished: &[StudyResult]) {
    for group in seed_groups(finished) {
        let seeds: std::collections::BTreeSet<u64> =
            group.iter().map(|r| r.settings.seed).collect();
        if seeds.len() < 2 || seeds.len() != group.len() {
            continue;
        }
        let stats = |values: Vec<f32>| {
            let n = values.len() as f32;
            let mean = values.iter().sum::<f32>() / n;
            let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (mean, lo, hi)
        };
        let acc = stats(group.iter().map(|r| r.run.test_accuracy).collect());
        let tta: Vec<f32> = group
            .iter()
            .filter_map(|r| r.run.tta.map(|t| t.accuracy))
            .collect();
        let wall: Vec<f32> = group.iter().filter_map(|r| r.wall_seconds).collect();
        let first = group[0];
        write!(
            md,
            "\nOver {} seeds ({}), {} for {} epochs: test accuracy mean {} (from {} to {})",
            group.len(),
            seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            first.settings.model,
            first.settings.epochs,
            percent(acc.0),
            percent(acc.1),
            percent(acc.2)
        )
        .unwrap();
        if tta.len() == group.len() {
            let t = stats(tta);
            write!(
                md,
                "; with TTA mean {} (from {} to {})",
                percent(t.0),
                percent(t.1),
                percent(t.2)
            )
            .unwrap();
        }
        if wall.len() == group.len() {
            let w = stats(wall);
            write!(
                md,
                "; wall time mean {} (from {} to {})",
                minutes(w.0),
                minutes(w.1),
                minutes(w.2)
            )
            .unwrap();
        }
        md.push_str(".\n");
    }
}

/// What the "Keras on our data" column is, and each Keras run's epochs and speed.
fn keras_paragraph(md: &mut String, keras: &[KerasResult]) {
    md.push_str(
        "\n\"Keras on our data\": the reference's models and settings in its own framework \
         (TensorFlow/Keras, the architectures built from our `models/*.json`, Keras' default \
         initialisation) trained on the same CIFAR-10 files as ours, on this machine, by \
         `benches/reference/keras_study.py`; one figure per seed (s1 = seed 1). It separates \
         what the data does from what the trainer does. (Its speed is not compared here: the \
         runs shared the machine with other work; docs/PERFORMANCE.md compares speeds.)",
    );
    if keras.is_empty() {
        md.push_str(" Not run yet (—).\n");
        return;
    }
    let versions: std::collections::BTreeSet<&str> =
        keras.iter().map(|k| k.tensorflow.as_str()).collect();
    let runs: Vec<String> = keras
        .iter()
        .map(|k| {
            let best = k
                .best_epoch
                .map_or(String::new(), |b| format!(", best epoch {b}"));
            format!(
                "{} s{}: {} epochs{best}, finished {}",
                k.id, k.seed, k.epochs_run, k.finished
            )
        })
        .collect();
    writeln!(
        md,
        " TensorFlow {}. Keras runs: {}.",
        versions.into_iter().collect::<Vec<_>>().join(", "),
        runs.join("; ")
    )
    .unwrap();
}

/// "76.01 %, 0.712 (s1); 75.80 %, 0.720 (s2)", or "—".
fn keras_cell(theirs: &[&KerasResult]) -> String {
    if theirs.is_empty() {
        return "—".to_string();
    }
    theirs
        .iter()
        .map(|k| {
            format!(
                "{}, {:.3} (s{})",
                percent(k.test_accuracy),
                k.test_loss,
                k.seed
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn table_row(
    run: &StudyRun,
    theirs: &[&KerasResult],
    ours: Option<&StudyResult>,
) -> String {
    // A smoke-test run is marked in the run column, so it cannot pass for a real one.
    let smoke = ours.is_some_and(|r| !r.settings.overrides.is_empty());
    let (ref_acc, ref_loss) = match run.reference {
        Some(r) => (percent(r.accuracy), format!("{:.3}", r.loss)),
        None => ("—".to_string(), "—".to_string()),
    };
    let reference = format!(
        "| {}{} | {ref_acc} | {ref_loss} | {} |",
        run.id,
        if smoke { " ⚠ smoke test" } else { "" },
        keras_cell(theirs),
    );
    let Some(r) = ours else {
        return format!("{reference} not run yet | | | | |\n");
    };
    let mut test_note = if r.run.test_images == 10_000 {
        String::new()
    } else {
        format!(" (on {} test images)", thousands(r.run.test_images))
    };
    if let Some(t) = r.run.tta {
        write!(test_note, "; TTA {}", percent(t.accuracy)).unwrap();
    }
    let epochs = if r.run.stopped_early {
        format!("{} (stopped early)", r.run.epochs_run)
    } else {
        r.run.epochs_run.to_string()
    };
    let best = r.run.best_epoch.map_or("—".to_string(), |b| b.to_string());
    format!(
        "{reference} {}{test_note} | {:.3} | {epochs} | {best} | {:.1} s ({} threads) |\n",
        percent(r.run.test_accuracy),
        r.run.test_loss,
        r.run.seconds_per_epoch,
        r.run.threads
    )
}

/// 10000 → "10,000".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 0.7678 → "76.78 %".
pub fn percent(fraction: f32) -> String {
    format!("{:.2} %", fraction * 100.0)
}

/// A finished run's section: settings, charts, per-class report.
pub(super) fn run_section(md: &mut String, r: &StudyResult) {
    writeln!(md, "\n## {}\n", r.id).unwrap();
    writeln!(
        md,
        "- Model: `{}`; {}",
        r.settings.model,
        r.settings.describe()
    )
    .unwrap();
    if !r.settings.overrides.is_empty() {
        writeln!(
            md,
            "- **Smoke-test overrides: {}**",
            r.settings.overrides.describe()
        )
        .unwrap();
    }
    let stop = if r.run.stopped_early {
        format!("stopped early after epoch {}", r.run.epochs_run)
    } else {
        format!("ran {} epochs", r.run.epochs_run)
    };
    writeln!(
        md,
        "- Trained on {} images, {stop}; saved weights of epoch {}.",
        thousands(r.run.train_images),
        r.run.final_epoch
    )
    .unwrap();
    writeln!(
        md,
        "- Test loss {:.4}, test accuracy {} on {} test images.",
        r.run.test_loss,
        percent(r.run.test_accuracy),
        thousands(r.run.test_images)
    )
    .unwrap();
    if let Some(t) = r.run.tta {
        let views = RUNS
            .iter()
            .find(|run| run.id == r.id)
            .and_then(|run| run.tta)
            .unwrap_or_default();
        writeln!(
            md,
            "- With test-time augmentation ({}): test loss {:.4}, test accuracy {}.",
            views.describe(),
            t.loss,
            percent(t.accuracy)
        )
        .unwrap();
    }
    writeln!(
        md,
        "- {:.1} s per epoch with {} threads on {}; finished {}.",
        r.run.seconds_per_epoch,
        r.run.threads,
        r.machine.describe(),
        r.finished
    )
    .unwrap();
    if let Some(w) = r.wall_seconds {
        writeln!(
            md,
            "- Wall time of the whole run (data loading, training, validation after every \
             epoch, final evaluations): {} ({w:.0} s).",
            minutes(w)
        )
        .unwrap();
    }
    writeln!(md, "- Command: `{}`", as_trainer_command(&r.command)).unwrap();
    writeln!(md, "![{} history](img/{})\n", r.id, history_png(&r.id)).unwrap();
    writeln!(
        md,
        "![{} confusion matrix](img/{})\n",
        r.id,
        confusion_png(&r.id)
    )
    .unwrap();
    // The reference's 75 %, and the 90 % of the recipes beyond it.
    let best = r
        .run
        .history
        .iter()
        .max_by(|a, b| a.val_accuracy.total_cmp(&b.val_accuracy));
    for threshold in [0.75, 0.90] {
        let name = format!("{:.0} %", threshold * 100.0);
        match (first_reached(&r.run.history, threshold), best) {
            (Some((epoch, t)), _) => writeln!(
                md,
                "- Time to {name} validation accuracy: {} (after epoch {epoch}; training and \
                 validation time of the epochs).",
                minutes(t)
            ),
            (None, Some(b)) => writeln!(
                md,
                "- {name} validation accuracy not reached (best {} after epoch {}).",
                percent(b.val_accuracy),
                b.epoch
            ),
            (None, None) => Ok(()),
        }
        .unwrap();
    }
    md.push('\n');
    if r.settings.recipe.is_some() {
        accuracy_vs_time(md, r);
    }
    let report = r.confusion_matrix().report(&r.class_names);
    writeln!(md, "Per-class report (saved weights, test images):\n").unwrap();
    writeln!(md, "```text\n{report}```").unwrap();
}

/// The first epoch whose validation accuracy is at least `threshold`, and
/// the cumulative time (training and validation) at its end.
pub(super) fn first_reached(history: &[EpochRecord], threshold: f32) -> Option<(usize, f32)> {
    let mut elapsed = 0.0;
    for e in history {
        elapsed += e.seconds;
        if e.val_accuracy >= threshold {
            return Some((e.epoch, elapsed));
        }
    }
    None
}

/// "12 min 05 s".
pub(super) fn minutes(seconds: f32) -> String {
    let s = seconds.round() as u64;
    format!("{} min {:02} s", s / 60, s % 60)
}

/// The accuracy-against-time table of a run: after every epoch, the
/// cumulative wall time and the accuracy of the weights at that point on the
/// validation images (the test set: these runs have no early stopping and
/// nothing is chosen on these figures), then the first time each threshold
/// was reached.
pub(super) fn accuracy_vs_time(md: &mut String, r: &StudyResult) {
    md.push_str("Accuracy against wall-clock time (cumulative training and validation time; \
                 the accuracy of the weights at the end of each epoch on the validation images):\n\n");
    md.push_str("| epoch | elapsed | learning rate | train loss | val accuracy |\n");
    md.push_str("|---:|---:|---:|---:|---:|\n");
    let mut elapsed = 0.0;
    for e in &r.run.history {
        elapsed += e.seconds;
        writeln!(
            md,
            "| {} | {} | {:.4} | {:.4} | {} |",
            e.epoch,
            minutes(elapsed),
            e.lr,
            e.loss,
            percent(e.val_accuracy)
        )
        .unwrap();
    }
    md.push('\n');
    for threshold in [0.80, 0.85, 0.90, 0.93] {
        match first_reached(&r.run.history, threshold) {
            Some((epoch, t)) => writeln!(
                md,
                "- {} first reached after epoch {epoch}, at {}.",
                percent(threshold),
                minutes(t)
            ),
            None => writeln!(md, "- {} not reached.", percent(threshold)),
        }
        .unwrap();
    }
    md.push('\n');
}

/// A recorded command line as users type it: whatever the binary was called
/// when the run was made (a development build's name, say), it is `trainer`.
fn as_trainer_command(command: &str) -> String {
    match command.split_once(' ') {
        Some((_, rest)) => format!("trainer {rest}"),
        None => "trainer".into(),
    }
}

#[cfg(test)]
mod command_tests {
    #[test]
    fn commands_show_the_trainer_binary() {
        assert_eq!(
            super::as_trainer_command("trainer-study-bin study --only model1-35 --quiet"),
            "trainer study --only model1-35 --quiet"
        );
        assert_eq!(super::as_trainer_command("trainer study"), "trainer study");
    }
}
