//! Charts of training runs, written as PNG files: the loss and accuracy
//! history of one run, a confusion-matrix heatmap, validation accuracy of
//! several runs per epoch, and validation accuracy against wall-clock time.
//!
//! Charts are drawn with `plotters` into an RGB buffer, encoded as PNG with
//! `image`, and written with [`trainer::atomic::write_atomic`], so a chart on
//! disk is always complete. Text uses DejaVu Sans, embedded in the binary and
//! registered with plotters' `ab_glyph` text renderer: no system fonts are
//! needed (a fresh CI machine often has none).

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use trainer::train::metrics::ConfusionMatrix;
use trainer::train::EpochRecord;

/// Size in pixels (width, height) of [`history`] charts.
pub const HISTORY_SIZE: (u32, u32) = (1400, 560);
/// Size in pixels of [`confusion`] heatmaps.
pub const CONFUSION_SIZE: (u32, u32) = (1000, 860);
/// Size in pixels of [`compare`] and [`accuracy_vs_time`] charts.
pub const COMPARE_SIZE: (u32, u32) = (1100, 620);

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`).
const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family name every text style here uses; the embedded font is registered under it.
const FONT: &str = "sans-serif";

/// Line colours: the "tab10" palette (readable on white and to most
/// colour-blind readers), then black and three darker shades, so that the
/// study's accuracy-against-time chart (one line per configuration) repeats
/// none.
const PALETTE: [RGBColor; 14] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(16, 40, 110),
    RGBColor(120, 60, 0),
    RGBColor(0, 100, 60),
];

/// Grid lines: faint minor lines, light major ones, so the data stands out.
const LIGHT_LINES: RGBAColor = RGBAColor(0, 0, 0, 0.03);
const BOLD_LINES: RGBAColor = RGBAColor(0, 0, 0, 0.15);

/// Why a chart could not be written; every variant names the output file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot draw {path}: nothing to plot ({what})")]
    Empty { path: PathBuf, what: &'static str },
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("cannot draw {path}: the embedded font is unusable")]
    Font { path: PathBuf },
    #[error("cannot encode {path} as PNG")]
    Encode {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Result of drawing onto the canvas; the error is plotters' message, which
/// [`render`] turns into a [`PlotError::Draw`] naming the file.
type DrawResult = Result<(), String>;

/// Converts any plotters error into its message.
fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// One run's training history: loss per epoch (left) and accuracy per epoch
/// (right), training and validation, side by side.
pub fn history(path: &Path, title: &str, records: &[EpochRecord]) -> Result<(), PlotError> {
    if records.is_empty() {
        return empty(path, "no epochs");
    }
    render(path, HISTORY_SIZE, |root| {
        let root = root
            .titled(title, (FONT, 26))
            .map_err(msg)?
            .margin(0, 10, 10, 10);
        let (left, right) = root.split_horizontally(HISTORY_SIZE.0 / 2);
        let epochs = |f: fn(&EpochRecord) -> f32| -> Vec<(f64, f64)> {
            records
                .iter()
                .map(|r| (r.epoch as f64, f(r) as f64))
                .collect()
        };
        let loss = [
            ("training loss", epochs(|r| r.loss)),
            ("validation loss", epochs(|r| r.val_loss)),
        ];
        let accuracy = [
            ("training accuracy", epochs(|r| r.accuracy)),
            ("validation accuracy", epochs(|r| r.val_accuracy)),
        ];
        epoch_panel(&left, "Loss", "loss (cross-entropy)", &loss, Scale::Plain)?;
        epoch_panel(&right, "Accuracy", "accuracy", &accuracy, Scale::Percent)
    })
}

/// Validation accuracy per epoch of several runs on one chart.
pub fn compare(
    path: &Path,
    title: &str,
    runs: &[(String, Vec<EpochRecord>)],
) -> Result<(), PlotError> {
    if runs.iter().all(|(_, h)| h.is_empty()) {
        return empty(path, "no run has any epoch");
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(name, h)| {
            let points = h
                .iter()
                .map(|r| (r.epoch as f64, r.val_accuracy as f64))
                .collect();
            (name.as_str(), points)
        })
        .collect();
    render(path, COMPARE_SIZE, |root| {
        let root = root.margin(0, 10, 10, 10);
        epoch_panel(&root, title, "validation accuracy", &series, Scale::Percent)
    })
}

/// Validation accuracy of several runs against cumulative wall-clock time
/// (training and validation time of each epoch, summed), in seconds, minutes
/// or hours, whichever suits the longest run.
pub fn accuracy_vs_time(
    path: &Path,
    title: &str,
    runs: &[(String, Vec<EpochRecord>)],
) -> Result<(), PlotError> {
    if runs.iter().all(|(_, h)| h.is_empty()) {
        return empty(path, "no run has any epoch");
    }
    let total_seconds = runs
        .iter()
        .map(|(_, h)| h.iter().map(|r| r.seconds as f64).sum::<f64>())
        .fold(0.0, f64::max);
    let (unit, unit_seconds) = time_unit(total_seconds);
    let series: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(name, h)| (name.as_str(), cumulative_time(h, unit_seconds)))
        .collect();
    // 4 % of room on the right so the last point is not on the frame.
    let x_end = (total_seconds / unit_seconds * 1.04).max(1e-3);
    let x_range = 0.0..x_end;
    let x_labels = 10;
    let y_range = padded_range(
        series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y)),
        true,
    );
    render(path, COMPARE_SIZE, |root| {
        let root = root.margin(0, 10, 10, 10);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 24))
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, y_range.clone())
            .map_err(msg)?;
        let y_fmt = percent_formatter(&y_range);
        let decimals = label_decimals(x_end, x_labels);
        let x_fmt = |v: &f64| format!("{v:.decimals$}");
        chart
            .configure_mesh()
            .x_desc(format!("wall-clock time ({unit}, training + validation)"))
            .y_desc("validation accuracy")
            .x_labels(x_labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(LIGHT_LINES)
            .bold_line_style(BOLD_LINES)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(msg)?;
        for (i, (name, points)) in series.iter().enumerate() {
            draw_series(&mut chart, name, points, PALETTE[i % PALETTE.len()])?;
        }
        let position = quiet_corner(&chart, &series);
        draw_legend(&mut chart, position)
    })
}

/// Heatmap of a confusion matrix, rows = true class, columns = predicted.
/// Each cell shows its count; its colour is the share of the row (the true
/// class) it holds, so the diagonal reads as per-class recall.
pub fn confusion(
    path: &Path,
    title: &str,
    matrix: &ConfusionMatrix,
    names: &[String],
) -> Result<(), PlotError> {
    let n = matrix.classes;
    if n == 0 {
        return empty(path, "a confusion matrix with no classes");
    }
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    render(path, CONFUSION_SIZE, |root| {
        let root = root
            .titled(title, (FONT, 24))
            .map_err(msg)?
            .margin(0, 10, 10, 10);
        let (grid, bar) = root.split_horizontally(CONFUSION_SIZE.0 - 130);
        heatmap_grid(&grid, matrix, &name)?;
        colour_bar(&bar)
    })
}

/// The cells of the confusion heatmap, with class names on both axes.
fn heatmap_grid(
    area: &DrawingArea<BitMapBackend, Shift>,
    matrix: &ConfusionMatrix,
    name: &dyn Fn(usize) -> String,
) -> DrawResult {
    let n = matrix.classes as i32;
    // Cell (row i, column j) spans x in [j, j+1] and y in [n-1-i, n-i]: row 0 on
    // top. A segmented `0..n-1` axis has n segments and maps `Exact(n)` to its end.
    let segments = || (0..n - 1).into_segmented();
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(60)
        .y_label_area_size(110)
        .build_cartesian_2d(segments(), segments())
        .map_err(msg)?;
    let col_label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(j) if *j < n => name(*j as usize),
        _ => String::new(),
    };
    let row_label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(y) if *y < n => name((n - 1 - y) as usize),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n as usize)
        .y_labels(n as usize)
        .x_label_formatter(&col_label)
        .y_label_formatter(&row_label)
        .x_desc("predicted class")
        .y_desc("true class")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(msg)?;

    let counts = &matrix.counts;
    for (i, row) in counts.iter().enumerate() {
        let total = row.iter().sum::<u64>().max(1) as f64;
        let y = n - 1 - i as i32;
        for (j, &count) in row.iter().enumerate() {
            let share = count as f64 / total;
            let x = j as i32;
            let corners = [
                (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
            ];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    corners,
                    heat_colour(share).filled(),
                )))
                .map_err(msg)?;
            let text_colour = if share > 0.5 { WHITE } else { BLACK };
            let style = TextStyle::from((FONT, 15))
                .color(&text_colour)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .draw_series(std::iter::once(Text::new(
                    count.to_string(),
                    (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                    style,
                )))
                .map_err(msg)?;
        }
    }
    Ok(())
}

/// The colour scale of the heatmap: a vertical bar from 0 % (bottom) to 100 % (top).
fn colour_bar(area: &DrawingArea<BitMapBackend, Shift>) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .margin_top(10)
        .margin_bottom(70)
        .margin_right(10)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(msg)?;
    let fmt = |v: &f64| format!("{:.0}%", v * 100.0);
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&fmt)
        .set_all_tick_mark_size(6)
        .y_desc("share of the true class")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(msg)?;
    let steps = 100;
    chart
        .draw_series((0..steps).map(|k| {
            let lo = k as f64 / steps as f64;
            let hi = (k + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, lo), (1.0, hi)], heat_colour(lo).filled())
        }))
        .map_err(msg)?;
    let border = Rectangle::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.6).stroke_width(1));
    chart.draw_series(std::iter::once(border)).map_err(msg)?;
    Ok(())
}

/// White → dark blue, through light blue (like matplotlib's "Blues").
fn heat_colour(share: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 3] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.35, [107.0, 174.0, 214.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let t = share.clamp(0.0, 1.0);
    let k = if t <= STOPS[1].0 { 0 } else { 1 };
    let (t0, c0) = STOPS[k];
    let (t1, c1) = STOPS[k + 1];
    let f = (t - t0) / (t1 - t0);
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(mix(c0[0], c1[0]), mix(c0[1], c1[1]), mix(c0[2], c1[2]))
}

/// How the y axis labels its values.
#[derive(Clone, Copy)]
enum Scale {
    Plain,
    Percent,
}

/// A chart of per-epoch series (x = epoch 1, 2, …), with a legend.
fn epoch_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    scale: Scale,
) -> DrawResult {
    let last_epoch = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(1.0, f64::max);
    let values = series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let y_range = padded_range(values, matches!(scale, Scale::Percent));
    // Half an epoch of room on each side so no point sits on the frame; at most
    // one label per epoch, and only whole epochs are labelled.
    let x_range = 0.5..last_epoch + 0.5;
    let x_fmt = |v: &f64| {
        if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(10)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range.clone())
        .map_err(msg)?;
    let percent = percent_formatter(&y_range);
    let plain = |v: &f64| format!("{v:.2}");
    let y_fmt: &dyn Fn(&f64) -> String = match scale {
        Scale::Percent => &percent,
        Scale::Plain => &plain,
    };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels((last_epoch as usize).clamp(2, 18))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(y_fmt)
        .light_line_style(LIGHT_LINES)
        .bold_line_style(BOLD_LINES)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(msg)?;
    for (i, (name, points)) in series.iter().enumerate() {
        draw_series(&mut chart, name, points, PALETTE[i % PALETTE.len()])?;
    }
    let position = quiet_corner(&chart, series);
    draw_legend(&mut chart, position)
}

type Chart<'a, X, Y> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>;

/// One labelled line with a dot on every point.
fn draw_series<X, Y>(
    chart: &mut Chart<'_, X, Y>,
    name: &str,
    points: &[(X::ValueType, Y::ValueType)],
    colour: RGBColor,
) -> DrawResult
where
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    let line = colour.stroke_width(2);
    chart
        .draw_series(LineSeries::new(points.iter().cloned(), line))
        .map_err(msg)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
    chart
        .draw_series(
            points
                .iter()
                .map(|p| Circle::new(p.clone(), 3, colour.filled())),
        )
        .map_err(msg)?;
    Ok(())
}

/// Where the legend hides the fewest data: the candidate box (sized for the
/// legend of `series`) that the fewest points of the lines fall into, sampling
/// each segment, in order of preference when tied.
fn quiet_corner(
    chart: &Chart<'_, RangedCoordf64, RangedCoordf64>,
    series: &[(&str, Vec<(f64, f64)>)],
) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    let (px_w, px_h) = chart.plotting_area().dim_in_pixel();
    let longest = series
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    // Legend size as a fraction of the plot (glyphs ~9 px, rows ~21 px at 16 px type).
    let w = ((60 + 9 * longest) as f64 / px_w.max(1) as f64).min(1.0);
    let h = ((30 + 21 * series.len()) as f64 / px_h.max(1) as f64).min(1.0);
    let (xr, yr) = (chart.x_range(), chart.y_range());
    let norm = |(x, y): (f64, f64)| {
        (
            (x - xr.start) / (xr.end - xr.start),
            (y - yr.start) / (yr.end - yr.start),
        )
    };
    let samples: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| {
            let first = p.first().map(|&q| norm(q));
            first.into_iter().chain(p.windows(2).flat_map(move |s| {
                let (a, b) = (norm(s[0]), norm(s[1]));
                (1..=8).map(move |k| {
                    let t = k as f64 / 8.0;
                    (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
                })
            }))
        })
        .collect();
    // (position, left edge, bottom edge) in plot fractions, y upwards.
    let mid = (1.0 - w) / 2.0;
    let candidates = [
        (UpperRight, 1.0 - w, 1.0 - h),
        (LowerRight, 1.0 - w, 0.0),
        (UpperLeft, 0.0, 1.0 - h),
        (LowerLeft, 0.0, 0.0),
        (UpperMiddle, mid, 1.0 - h),
        (LowerMiddle, mid, 0.0),
    ];
    let covered = |x0: f64, y0: f64| {
        samples
            .iter()
            .filter(|&&(x, y)| x >= x0 && x <= x0 + w && y >= y0 && y <= y0 + h)
            .count()
    };
    candidates
        .into_iter()
        .map(|(pos, x0, y0)| (covered(x0, y0), pos))
        .enumerate()
        .min_by_key(|&(rank, (count, _))| (count, rank))
        .map(|(_, (_, pos))| pos)
        .unwrap_or(UpperRight)
}

/// The legend box of the labelled series.
fn draw_legend<X: Ranged, Y: Ranged>(
    chart: &mut Chart<'_, X, Y>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .margin(12)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .draw()
        .map_err(msg)
}

/// The range spanned by `values` plus 5 % on each side; clipped to [0, 1] for
/// accuracies; never empty.
fn padded_range(values: impl Iterator<Item = f64>, accuracy: bool) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(0.01);
    let (mut lo, mut hi) = (lo - pad, hi + pad);
    if accuracy {
        lo = lo.max(0.0);
        hi = hi.min(1.0);
    } else {
        lo = lo.max(0.0).min(hi - 0.02);
    }
    lo..hi
}

/// A label formatter showing fractions as percentages, with one decimal when
/// the axis spans less than 10 points.
fn percent_formatter(range: &Range<f64>) -> impl Fn(&f64) -> String {
    let decimals = if range.end - range.start < 0.1 { 1 } else { 0 };
    move |v: &f64| format!("{:.*}%", decimals, v * 100.0)
}

/// The unit (name, seconds in one) for a time axis up to `seconds` long.
fn time_unit(seconds: f64) -> (&'static str, f64) {
    if seconds < 120.0 {
        ("seconds", 1.0)
    } else if seconds < 3.0 * 3600.0 {
        ("minutes", 60.0)
    } else {
        ("hours", 3600.0)
    }
}

/// Decimals that tell apart the labels of an axis from 0 to `span` with at
/// most `labels` labels (plotters steps by 1, 2 or 5 × 10^k).
fn label_decimals(span: f64, labels: usize) -> usize {
    let step = span / labels.max(1) as f64;
    if step >= 1.0 || step <= 0.0 {
        0
    } else {
        (-step.log10()).ceil().min(6.0) as usize
    }
}

/// (time since the start of the run in units of `unit_seconds`, validation
/// accuracy) after each epoch.
fn cumulative_time(history: &[EpochRecord], unit_seconds: f64) -> Vec<(f64, f64)> {
    let mut seconds = 0.0f64;
    history
        .iter()
        .map(|r| {
            seconds += r.seconds as f64;
            (seconds / unit_seconds, r.val_accuracy as f64)
        })
        .collect()
}

fn empty(path: &Path, what: &'static str) -> Result<(), PlotError> {
    Err(PlotError::Empty {
        path: path.to_path_buf(),
        what,
    })
}

/// Registers the embedded font with plotters (once per process).
fn register_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok())
}

/// Draws `size` pixels with `draw` on a white canvas, encodes the picture as
/// PNG and writes it atomically to `path`.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> DrawResult,
) -> Result<(), PlotError> {
    if !register_font() {
        return Err(PlotError::Font {
            path: path.to_path_buf(),
        });
    }
    let draw_error = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_error(msg(e)))?;
        draw(&root).map_err(draw_error)?;
        root.present().map_err(|e| draw_error(msg(e)))?;
    }
    let png = encode_png(pixels, size).map_err(|source| PlotError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    trainer::atomic::write_atomic(path, &png).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// RGB pixels → PNG bytes.
fn encode_png(pixels: Vec<u8>, (w, h): (u32, u32)) -> Result<Vec<u8>, image::ImageError> {
    let img = image::RgbImage::from_raw(w, h, pixels).expect("buffer sized for the canvas");
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible history: loss falls, accuracy rises, validation overfits late.
    fn fake_history(epochs: usize, offset: f32) -> Vec<EpochRecord> {
        (1..=epochs)
            .map(|e| {
                let t = e as f32;
                EpochRecord {
                    epoch: e,
                    loss: 1.6 / t.sqrt(),
                    accuracy: 1.0 - 0.6 / t.sqrt(),
                    val_loss: 1.2 / t.sqrt() + 0.02 * t,
                    val_accuracy: 0.7 - offset - 0.35 / t,
                    seconds: 50.0 + 10.0 * offset,
                    lr: 1e-3,
                }
            })
            .collect()
    }

    /// Where the test charts go: `$TRAINER_PLOT_DIR` when set (to look at
    /// them), else a temporary folder removed when the guard drops.
    fn out_dir() -> (PathBuf, Option<tempfile::TempDir>) {
        match std::env::var_os("TRAINER_PLOT_DIR") {
            Some(d) => {
                std::fs::create_dir_all(&d).unwrap();
                (PathBuf::from(d), None)
            }
            None => {
                let t = tempfile::tempdir().unwrap();
                (t.path().to_path_buf(), Some(t))
            }
        }
    }

    fn names() -> Vec<String> {
        trainer::model::network::CIFAR10_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// A matrix with a strong diagonal and some confusion between classes 3 and 5.
    fn fake_matrix() -> ConfusionMatrix {
        let mut m = ConfusionMatrix::new(10);
        for i in 0..10 {
            for j in 0..10 {
                m.counts[i][j] = if i == j {
                    700 + 20 * i as u64
                } else {
                    30 - i as u64
                };
            }
        }
        m.counts[3][5] = 180;
        m
    }

    /// The file is a PNG of the expected size, and not blank.
    fn check_png(path: &Path, size: (u32, u32)) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), size);
        let dark = img
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 1000, "{} looks blank", path.display());
    }

    #[test]
    fn history_chart() {
        let (dir, _guard) = out_dir();
        let path = dir.join("history.png");
        history(&path, "model1 — 35 epochs", &fake_history(35, 0.0)).unwrap();
        check_png(&path, HISTORY_SIZE);
        // A single epoch still has a drawable range.
        let path = dir.join("history-1.png");
        history(&path, "one epoch", &fake_history(1, 0.0)).unwrap();
        check_png(&path, HISTORY_SIZE);
    }

    #[test]
    fn confusion_heatmap() {
        let (dir, _guard) = out_dir();
        let path = dir.join("confusion.png");
        confusion(&path, "model1 — confusion matrix", &fake_matrix(), &names()).unwrap();
        check_png(&path, CONFUSION_SIZE);
    }

    #[test]
    fn comparison_charts() {
        let (dir, _guard) = out_dir();
        let runs = vec![
            ("model1-35".to_string(), fake_history(35, 0.0)),
            ("model2-50".to_string(), fake_history(50, 0.03)),
            ("model3-es".to_string(), fake_history(20, 0.01)),
        ];
        let path = dir.join("compare.png");
        compare(&path, "Validation accuracy per epoch", &runs).unwrap();
        check_png(&path, COMPARE_SIZE);
        let path = dir.join("time.png");
        accuracy_vs_time(&path, "Validation accuracy against time", &runs).unwrap();
        check_png(&path, COMPARE_SIZE);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.png");
        let e = history(&path, "empty", &[]).unwrap_err();
        assert!(matches!(e, PlotError::Empty { .. }));
        assert!(e.to_string().contains("none.png"), "{e}");
        assert!(!path.exists());
        // The parent is a file: writing fails with an I/O error naming the path.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let bad = blocker.join("x.png");
        let e = compare(&bad, "t", &[("a".into(), fake_history(3, 0.0))]).unwrap_err();
        assert!(matches!(e, PlotError::Io { .. }), "{e}");
        assert!(e.to_string().contains("x.png"), "{e}");
    }

    #[test]
    fn time_axis_units_and_decimals() {
        assert_eq!(time_unit(5.0).0, "seconds");
        assert_eq!(time_unit(600.0).0, "minutes");
        assert_eq!(time_unit(5.0 * 3600.0).0, "hours");
        assert_eq!(label_decimals(40.0, 10), 0);
        assert_eq!(label_decimals(2.1, 10), 1);
        assert_eq!(label_decimals(0.036, 10), 3);
    }

    #[test]
    fn heat_colours_go_from_white_to_dark_blue() {
        assert_eq!(heat_colour(0.0), RGBColor(247, 251, 255));
        assert_eq!(heat_colour(1.0), RGBColor(8, 48, 107));
        assert_eq!(heat_colour(0.35), RGBColor(107, 174, 214));
    }
}
