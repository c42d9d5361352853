//! Charts of a run of the `peers` bench, drawn as SVG from its `--json`
//! file.
//!
//! A standard-tier run gives `standard.svg`: a grid of bar charts, one per
//! workload (W1 to W9), a bar per system; the floors (the bare parts, with
//! no registry around them) are grey bars with a dashed line across the
//! chart at their figure. A scale-tier run (`--scale`) gives `scale.svg`:
//! W1 (starts per second) and W2 (bytes per idle worker) against N, both
//! axes logarithmic, a line per system, the floors dashed. Each chart is
//! labelled with what the JSON records of its run: tier and mode, date,
//! commit, cores and load average.
//!
//! The JSON is what the bench writes with `--json`: an object whose `rows`
//! are `{system, metric, value, unit}` (and `n` in the scale tier), with
//! the run's facts beside them (see [`render`]). A bare array of rows, as
//! earlier runs wrote, is drawn too, labelled as having no such facts.
//!
//! From a saved JSON:
//! `cargo run --release -p gen_registry_peers --bin charts -- JSON OUTDIR`.

use crate::{Metric, fmt_value};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// A chart drawn from a run's JSON.
#[derive(Debug)]
pub struct Chart {
    /// The name the chart is written under: `standard.svg` or `scale.svg`.
    pub file_name: &'static str,
    /// The SVG document.
    pub svg: String,
}

/// Why a JSON file gave no chart.
#[derive(Debug)]
pub enum ChartError {
    /// The JSON file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it gave.
        error: std::io::Error,
    },
    /// The text is not JSON.
    Json(serde_json::Error),
    /// The JSON is not a run's: what is wrong, and where.
    Format(String),
    /// The run has none of the figures a chart shows.
    Empty(String),
    /// The chart could not be drawn.
    Draw(String),
    /// The chart could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// What writing it gave.
        error: std::io::Error,
    },
}

impl fmt::Display for ChartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChartError::Read { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            ChartError::Json(e) => write!(f, "not JSON: {e}"),
            ChartError::Format(what) => write!(f, "not the JSON of a benchmark run: {what}"),
            ChartError::Empty(what) => write!(f, "nothing to draw: {what}"),
            ChartError::Draw(e) => write!(f, "drawing the chart failed: {e}"),
            ChartError::Write { path, error } => {
                write!(f, "cannot write {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for ChartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChartError::Read { error, .. } | ChartError::Write { error, .. } => Some(error),
            ChartError::Json(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads the JSON of a run at `json`, draws its chart, and writes it into
/// `out_dir` (created if missing) under [`Chart::file_name`]; returns the
/// chart's path.
///
/// ```no_run
/// use std::path::Path;
///
/// let path = gen_registry_peers::charts::write_chart(
///     Path::new("guide/src/benchmarks/standard.json"),
///     Path::new("/tmp/charts"),
/// )?;
/// println!("drew {}", path.display());
/// # Ok::<(), gen_registry_peers::charts::ChartError>(())
/// ```
pub fn write_chart(json: &Path, out_dir: &Path) -> Result<PathBuf, ChartError> {
    let text = std::fs::read_to_string(json).map_err(|error| ChartError::Read {
        path: json.to_owned(),
        error,
    })?;
    let chart = render(&text)?;
    let path = out_dir.join(chart.file_name);
    std::fs::create_dir_all(out_dir)
        .and_then(|()| std::fs::write(&path, &chart.svg))
        .map_err(|error| ChartError::Write {
            path: path.clone(),
            error,
        })?;
    Ok(path)
}

/// Draws the chart of a run from the text of its JSON.
///
/// The run's facts are optional fields beside `rows`: `tier` ("standard"
/// or "scale"; without it, rows with an `n` make a scale run), `mode`,
/// `runs`, `started`, `commit`, `cores` and `load` (`before`, `min`,
/// `max`).
///
/// ```
/// use gen_registry_peers::charts::render;
///
/// let json = r#"{
///     "tier": "standard", "started": "2026-12-07 06:30 UTC", "commit": "abc1234",
///     "rows": [
///         {"system": "gen_registry", "metric": "W1", "value": 700000, "unit": "starts/s"},
///         {"system": "floor_bastion_proc", "metric": "W1", "value": 1400000, "unit": "starts/s"}
///     ]
/// }"#;
/// let chart = render(json)?;
/// assert_eq!(chart.file_name, "standard.svg");
/// assert!(chart.svg.contains("700,000"));
///
/// // Bad input is an error that says what is wrong.
/// let err = render(r#"[{"system": "gen_registry", "value": 1}]"#).unwrap_err();
/// assert!(err.to_string().contains("metric"));
/// # Ok::<(), gen_registry_peers::charts::ChartError>(())
/// ```
pub fn render(json: &str) -> Result<Chart, ChartError> {
    let run = Run::parse(json)?;
    match run.tier {
        Tier::Standard => Ok(Chart {
            file_name: "standard.svg",
            svg: standard_chart(&run)?,
        }),
        Tier::Scale => Ok(Chart {
            file_name: "scale.svg",
            svg: scale_chart(&run)?,
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tier {
    Standard,
    Scale,
}

/// One figure of a run.
struct Row {
    system: String,
    metric: String,
    /// The size the figure was taken at (scale tier).
    n: Option<f64>,
    /// `None`: the system has no such operation.
    value: Option<f64>,
}

/// A run as its JSON gives it.
struct Run {
    tier: Tier,
    /// What the chart's second line says of the run.
    label: String,
    /// The systems, in the bench's column order.
    systems: Vec<String>,
    rows: Vec<Row>,
}

impl Run {
    fn parse(text: &str) -> Result<Run, ChartError> {
        let doc: Value = serde_json::from_str(text).map_err(ChartError::Json)?;
        let (head, rows) = match &doc {
            Value::Array(rows) => (None, rows),
            Value::Object(o) => match o.get("rows") {
                Some(Value::Array(rows)) => (Some(o), rows),
                Some(_) => return Err(format_error("\"rows\" is not an array")),
                None => return Err(format_error("an object without \"rows\"")),
            },
            _ => {
                return Err(format_error(
                    "neither an array of rows nor an object with \"rows\"",
                ));
            }
        };
        let rows = rows
            .iter()
            .enumerate()
            .map(|(i, r)| parse_row(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let tier = match head.and_then(|h| h.get("tier")) {
            None | Some(Value::Null) => {
                if rows.iter().any(|r| r.n.is_some()) {
                    Tier::Scale
                } else {
                    Tier::Standard
                }
            }
            Some(Value::String(t)) if t == "standard" => Tier::Standard,
            Some(Value::String(t)) if t == "scale" => Tier::Scale,
            Some(other) => {
                return Err(format_error(format!(
                    "\"tier\" is {other}, not \"standard\" or \"scale\""
                )));
            }
        };
        let mut systems: Vec<String> = Vec::new();
        for r in &rows {
            if !systems.contains(&r.system) {
                systems.push(r.system.clone());
            }
        }
        // The bench's column order, whatever the order of the rows; the
        // systems it does not know after those, as they came.
        let known = crate::SYSTEMS
            .iter()
            .copied()
            .chain(crate::scale::SYSTEMS.iter().map(|(s, _)| *s));
        let known: Vec<&str> = known.collect();
        systems.sort_by_key(|s| known.iter().position(|k| k == s).unwrap_or(usize::MAX));
        Ok(Run {
            tier,
            label: run_label(tier, head),
            systems,
            rows,
        })
    }

    fn value(&self, system: &str, metric: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.system == system && r.metric == metric && r.n.is_none())
            .and_then(|r| r.value)
            .filter(|v| *v >= 0.0)
    }
}

/// The magnitudes of the figures a chart draws (and 0): far wider than any
/// benchmark gives, and narrow enough that every axis stays finite.
const MAGNITUDES: std::ops::RangeInclusive<f64> = 1e-12..=1e15;

fn format_error(what: impl Into<String>) -> ChartError {
    ChartError::Format(what.into())
}

fn parse_row(i: usize, v: &Value) -> Result<Row, ChartError> {
    let obj = v
        .as_object()
        .ok_or_else(|| format_error(format!("row {i} is not an object")))?;
    let text = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format_error(format!("row {i} has no \"{key}\" string")))
    };
    let system = text("system")?;
    let metric = text("metric")?;
    let number = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(x)) => match x.as_f64() {
            Some(v) if v == 0.0 || (MAGNITUDES.contains(&v.abs())) => Ok(Some(v)),
            _ => Err(format_error(format!(
                "row {i} ({system} {metric}): \"{key}\" is {x}, outside the figures a chart can show ({:e} to {:e})",
                MAGNITUDES.start(),
                MAGNITUDES.end()
            ))),
        },
        Some(other) => Err(format_error(format!(
            "row {i} ({system} {metric}): \"{key}\" is {other}, not a number"
        ))),
    };
    Ok(Row {
        n: number("n")?,
        value: number("value")?,
        system,
        metric,
    })
}

/// The second line of a chart: the run's facts the JSON records.
fn run_label(tier: Tier, head: Option<&serde_json::Map<String, Value>>) -> String {
    let Some(h) = head else {
        return "date, commit and load of this run not recorded in its JSON".to_owned();
    };
    let text = |k: &str| h.get(k).and_then(Value::as_str);
    let count = |k: &str| h.get(k).and_then(Value::as_u64);
    let mut parts = Vec::new();
    let runs = match (tier, count("runs")) {
        (Tier::Scale, _) => "one run per system and N".to_owned(),
        (Tier::Standard, Some(1)) => "one run per system".to_owned(),
        (Tier::Standard, Some(k)) => format!("median of {k} runs per system"),
        (Tier::Standard, None) => "runs per system not recorded".to_owned(),
    };
    parts.push(format!("{} run, {runs}", text("mode").unwrap_or("a")));
    parts.push(text("started").unwrap_or("date not recorded").to_owned());
    parts.push(match text("commit") {
        Some(c) => format!("commit {c}"),
        None => "commit not recorded".to_owned(),
    });
    let load = |k: &str| h.get("load")?.get(k)?.as_f64();
    parts.push(match (load("before"), load("min"), load("max")) {
        (Some(b), Some(lo), Some(hi)) => {
            format!("load average {b:.1} before, {lo:.1}–{hi:.1} during the run")
        }
        _ => "load not recorded".to_owned(),
    });
    if let Some(c) = count("cores") {
        parts.push(format!("{c} cores"));
    }
    parts.join(" · ")
}

/// The metrics of the standard chart, one panel each, with the metric
/// drawn as an outline behind the bar (W6's p99 behind its p50).
const BAR_PANELS: &[(&str, Option<&str>)] = &[
    ("W1", None),
    ("W2", None),
    ("W3", None),
    ("W4", None),
    ("W5", None),
    ("W6p50", Some("W6p99")),
    ("W7", None),
    ("W8", None),
    ("W9", None),
];

/// The metrics of the scale chart, one panel each, against N.
const SCALE_PANELS: &[&str] = &["W1", "W2"];

const WIDTH: u32 = 1260;
const COLUMNS: usize = 3;
const HEAD: u32 = 58;
const FOOT: u32 = 34;
const FONT: &str = "sans-serif";

fn is_floor(system: &str) -> bool {
    system.starts_with("floor_")
}

/// A system's colour: the same in every chart; greys for the floors.
fn color(system: &str, index: usize) -> RGBColor {
    match system {
        "gen_registry" => RGBColor(31, 119, 180),
        "gen_registry_tokio" => RGBColor(23, 168, 190),
        "ractor" => RGBColor(255, 127, 14),
        "kameo" => RGBColor(44, 160, 44),
        "bastion_group_per_id" => RGBColor(148, 103, 189),
        "elixir_registry" => RGBColor(214, 39, 40),
        s if is_floor(s) && s.contains("tokio") => RGBColor(170, 170, 170),
        s if is_floor(s) && s.contains("rwlock") => RGBColor(140, 140, 140),
        s if is_floor(s) => RGBColor(100, 100, 100),
        _ => {
            let RGBAColor(r, g, b, _) = Palette99::pick(index).to_rgba();
            RGBColor(r, g, b)
        }
    }
}

/// Text of `size` pixels, centred vertically on its point and placed
/// horizontally as `h` says.
fn centred(size: u32, h: HPos) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(h, VPos::Center))
}

fn draw_error(e: impl fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

fn metric_of(metrics: &'static [Metric], id: &str) -> Option<&'static Metric> {
    metrics.iter().find(|m| m.id == id)
}

/// A panel's caption: the metric's label and unit.
fn caption(metrics: &'static [Metric], id: &str) -> String {
    match metric_of(metrics, id) {
        Some(m) => format!("{} ({})", m.label, m.unit),
        None => id.to_owned(),
    }
}

/// A figure on an axis: 1.2M, 350k, 0.5.
fn short(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if a >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 1.0 || a == 0.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

/// The title and the run's label at the top of a chart.
fn draw_head<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    label: &str,
) -> Result<(), ChartError> {
    area.draw(&Text::new(title, (14, 10), (FONT, 20).into_font()))
        .map_err(draw_error)?;
    area.draw(&Text::new(
        label,
        (14, 36),
        (FONT, 14).into_font().color(&RGBColor(80, 80, 80)),
    ))
    .map_err(draw_error)
}

/// A bar of a panel: a system and its figures.
struct Bar<'a> {
    system: &'a str,
    index: usize,
    value: Option<f64>,
    /// A second figure drawn as an outline behind the bar.
    behind: Option<f64>,
}

impl Bar<'_> {
    /// The figure written right of the bar.
    fn figure(&self) -> String {
        match (self.value, self.behind) {
            (Some(v), Some(p)) => format!("{} (p99 {})", fmt_value(v), fmt_value(p)),
            (Some(v), None) => fmt_value(v),
            (None, _) => "—".to_owned(),
        }
    }

    /// Where the bar (or the outline behind it) ends.
    fn end(&self) -> f64 {
        self.behind
            .into_iter()
            .chain(self.value)
            .fold(0.0, f64::max)
    }
}

/// The width left of a bar panel for the systems' names, in pixels.
const NAMES: u32 = 150;
/// The gap between a bar and its figure, in pixels.
const LABEL_GAP: f64 = 5.0;
/// About the width of a character of a bar's figure (12 px sans-serif),
/// for the room kept right of the bars; a little more than the average.
const CHAR_WIDTH: f64 = 7.0;

fn standard_chart(run: &Run) -> Result<String, ChartError> {
    let panels: Vec<(&str, Vec<Bar>)> = BAR_PANELS
        .iter()
        .map(|(id, behind)| {
            let bars = run
                .systems
                .iter()
                .enumerate()
                .map(|(index, s)| Bar {
                    system: s,
                    index,
                    value: run.value(s, id),
                    behind: behind.and_then(|b| run.value(s, b)),
                })
                .collect::<Vec<_>>();
            (*id, bars)
        })
        .filter(|(_, bars)| bars.iter().any(|b| b.value.is_some()))
        .collect();
    if panels.is_empty() {
        return Err(ChartError::Empty(
            "no figure of W1 to W9 in this run".to_owned(),
        ));
    }
    let rows = panels.len().div_ceil(COLUMNS);
    let panel_height = 78 + 22 * run.systems.len() as u32;
    let height = HEAD + rows as u32 * panel_height + FOOT;
    let title = match run.systems.iter().find_map(|s| run.value(s, "N")) {
        Some(n) => format!(
            "gen_registry and its peers, standard tier: N = {} ids",
            fmt_value(n)
        ),
        None => "gen_registry and its peers, standard tier".to_owned(),
    };
    document(height, &title, &run.label, |rest| {
        let (grid, foot) = rest.split_vertically(rows as u32 * panel_height);
        for ((id, bars), area) in panels.iter().zip(grid.split_evenly((rows, COLUMNS))) {
            let title = match BAR_PANELS.iter().find(|(p, _)| p == id) {
                Some((_, Some(behind))) => format!(
                    "{}, {} outlined",
                    caption(crate::METRICS, id),
                    behind.trim_start_matches("W6")
                ),
                _ => caption(crate::METRICS, id),
            };
            bar_panel(&area, &title, bars)?;
        }
        foot.draw(&Text::new(
            "Grey bars and dashed lines: floors, the bare parts with no registry around them. \
             ↑ higher is better, ↓ lower is better. —: no such operation, or not run.",
            (14, 10),
            (FONT, 13).into_font().color(&RGBColor(80, 80, 80)),
        ))
        .map_err(draw_error)
    })
}

/// An SVG document `height` pixels high: `title` and the run's `label` at
/// the top, and what `body` draws under them.
fn document(
    height: u32,
    title: &str,
    label: &str,
    body: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (head, rest) = root.split_vertically(HEAD);
        draw_head(&head, title, label)?;
        body(&rest)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// One panel of the standard chart: a horizontal bar per system, top to
/// bottom in the run's order, its figure at its end.
fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    bars: &[Bar],
) -> Result<(), ChartError> {
    let k = bars.len() as f64;
    // The x axis ends where every bar's figure fits right of it.
    let plot_width = f64::from(area.dim_in_pixel().0.saturating_sub(NAMES + 2 * 8)).max(1.0);
    let x_max = bars
        .iter()
        .map(|b| {
            let room = plot_width - LABEL_GAP - CHAR_WIDTH * b.figure().chars().count() as f64;
            b.end() * plot_width / room.max(plot_width / 4.0)
        })
        .fold(0.0, f64::max);
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 15))
        .margin(8)
        .x_label_area_size(22)
        .y_label_area_size(NAMES)
        .build_cartesian_2d(0.0..x_max, 0.0..k)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(4)
        .x_label_formatter(&|x| short(*x))
        .x_label_style((FONT, 11))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()
        .map_err(draw_error)?;
    let label_left = centred(12, HPos::Left);
    let label_right = centred(12, HPos::Right);
    for (i, bar) in bars.iter().enumerate() {
        // The first system at the top.
        let y = k - 1.0 - i as f64;
        let c = color(bar.system, bar.index);
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((0.0, y + 0.5))
                    + Text::new(bar.system.to_owned(), (-6, 0), label_right.clone()),
            ))
            .map_err(draw_error)?;
        if let Some(p) = bar.behind {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.2), (p, y + 0.8)],
                    c.stroke_width(1),
                )))
                .map_err(draw_error)?;
        }
        let (figure, end) = (bar.figure(), bar.end());
        if let Some(v) = bar.value {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.2), (v, y + 0.8)],
                    c.filled(),
                )))
                .map_err(draw_error)?;
        }
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((end, y + 0.5))
                    + Text::new(figure, (LABEL_GAP as i32, 0), label_left.clone()),
            ))
            .map_err(draw_error)?;
    }
    // Each floor's figure, across the whole panel.
    for bar in bars.iter().filter(|b| is_floor(b.system)) {
        if let Some(v) = bar.value {
            chart
                .draw_series(DashedLineSeries::new(
                    [(v, 0.0), (v, k)],
                    5,
                    4,
                    color(bar.system, bar.index).stroke_width(1),
                ))
                .map_err(draw_error)?;
        }
    }
    Ok(())
}

/// A system's line in a panel of the scale chart.
struct Line<'a> {
    /// The system's place in the run (its colour when it has none of its own).
    index: usize,
    system: &'a str,
    /// (N, figure), by N.
    points: Vec<(f64, f64)>,
}

fn scale_chart(run: &Run) -> Result<String, ChartError> {
    // Per panel, per system: its (N, value) points, by N.
    let panels: Vec<(&str, Vec<Line>)> = SCALE_PANELS
        .iter()
        .map(|id| {
            let lines = run
                .systems
                .iter()
                .enumerate()
                .filter_map(|(index, s)| {
                    let mut points: Vec<(f64, f64)> = run
                        .rows
                        .iter()
                        .filter(|r| &r.system == s && r.metric == *id)
                        .filter_map(|r| Some((r.n?, r.value?)))
                        .filter(|(n, v)| *n > 0.0 && *v > 0.0)
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    (!points.is_empty()).then_some(Line {
                        index,
                        system: s.as_str(),
                        points,
                    })
                })
                .collect::<Vec<_>>();
            (*id, lines)
        })
        .filter(|(_, lines)| !lines.is_empty())
        .collect();
    if panels.is_empty() {
        return Err(ChartError::Empty(
            "no W1 or W2 figure with an N in this run".to_owned(),
        ));
    }
    let drawn: Vec<(usize, &str)> = run
        .systems
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            panels
                .iter()
                .any(|(_, l)| l.iter().any(|line| line.system == s.as_str()))
        })
        .map(|(i, s)| (i, s.as_str()))
        .collect();
    let height = HEAD + 440 + FOOT + 26 * drawn.len().div_ceil(4) as u32;
    let title = "gen_registry and its peers, scale tier: starts and memory against N";
    document(height, title, &run.label, |rest| {
        let (grid, foot) = rest.split_vertically(440);
        for ((id, lines), area) in panels
            .iter()
            .zip(grid.split_evenly((1, SCALE_PANELS.len())))
        {
            line_panel(&area, &caption(crate::scale::METRICS, id), lines)?;
        }
        legend(&foot, &drawn)
    })
}

/// One panel of the scale chart: a line per system over N, log–log.
fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    lines: &[Line],
) -> Result<(), ChartError> {
    let points = || lines.iter().flat_map(|l| l.points.iter());
    let (n_lo, n_hi) = points().fold((f64::INFINITY, 0.0f64), |(lo, hi), (n, _)| {
        (lo.min(*n), hi.max(*n))
    });
    let (v_lo, v_hi) = points().fold((f64::INFINITY, 0.0f64), |(lo, hi), (_, v)| {
        (lo.min(*v), hi.max(*v))
    });
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title} against N"), (FONT, 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (n_lo / 2.0..n_hi * 2.0).log_scale(),
            (decade_below(v_lo)..v_hi * 2.0).log_scale(),
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("N (ids)")
        // Few enough labels that only the powers of 10 get one.
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|x| short(*x))
        .y_label_formatter(&|y| short(*y))
        .label_style((FONT, 12))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(230, 230, 230))
        .draw()
        .map_err(draw_error)?;
    let label_style = centred(11, HPos::Left);
    for Line {
        index,
        system,
        points,
    } in lines
    {
        let c = color(system, *index);
        let style = c.stroke_width(2);
        if is_floor(system) {
            chart
                .draw_series(DashedLineSeries::new(points.iter().copied(), 6, 4, style))
                .map_err(draw_error)?;
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 4, c.stroke_width(2))))
                .map_err(draw_error)?;
        } else {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(draw_error)?;
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 4, c.filled())))
                .map_err(draw_error)?;
        }
        // gen_registry's own figures (on either executor), written beside
        // its points: above a point, or below it where the other
        // executor's figure at that N is higher, so that the two stay apart.
        let other = match *system {
            "gen_registry" => "gen_registry_tokio",
            "gen_registry_tokio" => "gen_registry",
            _ => continue,
        };
        let other: &[(f64, f64)] = lines
            .iter()
            .find(|l| l.system == other)
            .map_or(&[], |l| &l.points);
        chart
            .draw_series(points.iter().map(|p| {
                let below = other.iter().any(|o| o.0 == p.0 && o.1 > p.1);
                let dy = if below { 9 } else { -9 };
                EmptyElement::at(*p) + Text::new(fmt_value(p.1), (7, dy), label_style.clone())
            }))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// The power of 10 at or below `v` ÷ 1.2, so that a log axis starts on a
/// labelled value below the lowest point.
fn decade_below(v: f64) -> f64 {
    10f64.powf((v / 1.2).log10().floor())
}

/// The systems of the scale chart, four a line: a swatch (dashed for a
/// floor) and the name.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    systems: &[(usize, &str)],
) -> Result<(), ChartError> {
    for (slot, (index, system)) in systems.iter().enumerate() {
        let x = 80 + (slot % 4) as i32 * 290;
        let y = 12 + (slot / 4) as i32 * 26;
        let style = color(system, *index).stroke_width(2);
        let swatch = [(x, y), (x + 30, y)];
        if is_floor(system) {
            area.draw(&Circle::new((x + 15, y), 4, style))
                .map_err(draw_error)?;
            for dash in 0..3 {
                let x0 = x + dash * 11;
                area.draw(&PathElement::new([(x0, y), (x0 + 6, y)], style))
                    .map_err(draw_error)?;
            }
        } else {
            area.draw(&PathElement::new(swatch, style))
                .map_err(draw_error)?;
            area.draw(&Circle::new((x + 15, y), 4, color(system, *index).filled()))
                .map_err(draw_error)?;
        }
        let name = if is_floor(system) {
            format!("{system} (floor)")
        } else {
            (*system).to_owned()
        };
        area.draw(&Text::new(name, (x + 38, y), centred(13, HPos::Left)))
            .map_err(draw_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standard run of three systems (one a floor) on W1, W2 and W6.
    const STANDARD: &str = r#"{
        "tier": "standard", "mode": "full", "runs": 5,
        "started": "2026-12-07 06:30 UTC", "commit": "abc1234", "cores": 2,
        "load": {"before": 1.25, "min": 1.0, "max": 3.5},
        "rows": [
            {"system": "gen_registry", "metric": "N", "value": 100000, "unit": "ids"},
            {"system": "gen_registry", "metric": "W1", "value": 728086, "unit": "starts/s"},
            {"system": "gen_registry", "metric": "W2", "value": 446, "unit": "B/worker"},
            {"system": "gen_registry", "metric": "W6p50", "value": 0.801, "unit": "µs"},
            {"system": "gen_registry", "metric": "W6p99", "value": 1.51, "unit": "µs"},
            {"system": "ractor", "metric": "W1", "value": 42534, "unit": "starts/s"},
            {"system": "ractor", "metric": "W2", "value": 7033, "unit": "B/worker"},
            {"system": "ractor", "metric": "W5", "value": null, "unit": "ns/op"},
            {"system": "floor_bastion_proc", "metric": "W1", "value": 1400559, "unit": "starts/s"},
            {"system": "floor_bastion_proc", "metric": "W2", "value": 311, "unit": "B/worker"}
        ]
    }"#;

    /// A scale run: two systems and a floor at two sizes.
    const SCALE: &str = r#"{
        "tier": "scale", "mode": "full", "runs": 1,
        "started": "2026-12-07 07:00 UTC", "commit": "abc1234", "cores": 2,
        "load": {"before": 0.5, "min": 0.5, "max": 2.0},
        "rows": [
            {"system": "gen_registry", "n": 100000, "metric": "W1", "value": 546865, "unit": "starts/s"},
            {"system": "gen_registry", "n": 1000000, "metric": "W1", "value": 630975, "unit": "starts/s"},
            {"system": "gen_registry", "n": 100000, "metric": "W2", "value": 443, "unit": "B/worker"},
            {"system": "gen_registry", "n": 1000000, "metric": "W2", "value": 434, "unit": "B/worker"},
            {"system": "ractor", "n": 100000, "metric": "W1", "value": 33000, "unit": "starts/s"},
            {"system": "ractor", "n": 1000000, "metric": "W1", "value": 21920, "unit": "starts/s"},
            {"system": "floor_probe_msg", "n": 100000, "metric": "W1", "value": 726252, "unit": "starts/s"},
            {"system": "floor_probe_msg", "n": 1000000, "metric": "W1", "value": 1217942, "unit": "starts/s"}
        ]
    }"#;

    fn rgb(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// The SVG parsed as XML (a malformed document fails the test).
    fn parse(svg: &str) -> roxmltree::Document<'_> {
        let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or_default().trim().to_owned())
            .collect()
    }

    /// The elements named `tag` whose `attr` is `value` (case-insensitive).
    fn count(doc: &roxmltree::Document, tag: &str, attr: &str, value: &str) -> usize {
        doc.descendants()
            .filter(|n| n.has_tag_name(tag))
            .filter(|n| {
                n.attribute(attr)
                    .is_some_and(|a| a.eq_ignore_ascii_case(value))
            })
            .count()
    }

    #[test]
    fn a_standard_run_gives_a_bar_per_figure_in_each_system_colour() {
        let chart = render(STANDARD).unwrap();
        assert_eq!(chart.file_name, "standard.svg");
        let doc = parse(&chart.svg);
        let filled = |system| count(&doc, "rect", "fill", &rgb(color(system, 0)));
        // gen_registry: W1, W2 and W6's p50; ractor: W1 and W2 (its W5 is
        // absent); the floor: W1 and W2.
        assert_eq!(filled("gen_registry"), 3);
        assert_eq!(filled("ractor"), 2);
        assert_eq!(filled("floor_bastion_proc"), 2);
        // W6's p99, outlined behind its p50.
        assert_eq!(
            count(&doc, "rect", "stroke", &rgb(color("gen_registry", 0))),
            1
        );
        let texts = texts(&doc);
        assert!(
            texts
                .iter()
                .any(|t| t.ends_with("standard tier: N = 100,000 ids"))
        );
        for figure in [
            "728,086",
            "42,534",
            "1,400,559",
            "7,033",
            "0.801 (p99 1.51)",
        ] {
            assert!(
                texts.iter().any(|t| t == figure),
                "{figure} not in {texts:?}"
            );
        }
        // One panel per workload with figures: W1, W2, W6 (W5 has none).
        let captions: Vec<_> = texts.iter().filter(|t| t.contains(" (")).collect();
        assert!(
            captions.iter().any(|t| t.starts_with("W1 start")),
            "{captions:?}"
        );
        assert!(
            captions.iter().any(|t| t.starts_with("W2 memory")),
            "{captions:?}"
        );
        assert!(
            captions.iter().any(|t| t.starts_with("W6 call")),
            "{captions:?}"
        );
        assert!(
            !captions.iter().any(|t| t.starts_with("W5")),
            "{captions:?}"
        );
        // Each panel names every system, and the run is labelled.
        assert_eq!(texts.iter().filter(|t| *t == "ractor").count(), 3);
        let label = texts
            .iter()
            .find(|t| t.contains("commit"))
            .expect("a label");
        for fact in [
            "median of 5 runs",
            "2026-12-07 06:30 UTC",
            "commit abc1234",
            "load average 1.2",
            "1.0–3.5",
            "2 cores",
        ] {
            assert!(label.contains(fact), "{fact} not in {label:?}");
        }
    }

    #[test]
    fn a_floor_is_marked_by_a_dashed_line_across_its_panel() {
        let chart = render(STANDARD).unwrap();
        let doc = parse(&chart.svg);
        let grey = rgb(color("floor_bastion_proc", 0));
        // Dashes are short segments in the floor's grey, several per panel
        // (W1 and W2), and no other system has any.
        let dashes = count(&doc, "polyline", "stroke", &grey);
        assert!(dashes >= 6, "{dashes} dashes");
        assert_eq!(
            count(&doc, "polyline", "stroke", &rgb(color("ractor", 0))),
            0
        );
    }

    #[test]
    fn a_scale_run_gives_a_line_per_system_over_n() {
        let chart = render(SCALE).unwrap();
        assert_eq!(chart.file_name, "scale.svg");
        let doc = parse(&chart.svg);
        let lines = |system| count(&doc, "polyline", "stroke", &rgb(color(system, 0)));
        // gen_registry in W1 and W2, ractor in W1 only: solid lines (and
        // each a swatch in the legend).
        assert_eq!(lines("gen_registry"), 2 + 1);
        assert_eq!(lines("ractor"), 1 + 1);
        // The floor is dashed: many short segments (a solid line would be
        // one, beside the legend's three dashes).
        assert!(
            lines("floor_probe_msg") > 3 + 6,
            "{}",
            lines("floor_probe_msg")
        );
        // A point per figure.
        let points = count(&doc, "circle", "fill", &rgb(color("gen_registry", 0)));
        assert_eq!(points, 4 + 1, "four figures and the legend's swatch");
        let texts = texts(&doc);
        assert!(texts.iter().any(|t| t == "630,975"), "{texts:?}");
        assert!(
            texts.iter().any(|t| t == "floor_probe_msg (floor)"),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t == "1M"), "N axis: {texts:?}");
        assert!(texts.iter().any(|t| t.contains("one run per system and N")));
    }

    #[test]
    fn rows_with_an_n_make_a_scale_run_even_without_the_run_facts() {
        let rows = r#"[
            {"system": "gen_registry", "n": 100000, "metric": "W1", "value": 500000, "unit": "starts/s"},
            {"system": "gen_registry", "n": 1000000, "metric": "W1", "value": 600000, "unit": "starts/s"}
        ]"#;
        let chart = render(rows).unwrap();
        assert_eq!(chart.file_name, "scale.svg");
        assert!(
            texts(&parse(&chart.svg))
                .iter()
                .any(|t| t.contains("not recorded"))
        );
    }

    #[test]
    fn the_systems_keep_the_bench_column_order_whatever_the_order_of_the_rows() {
        let rows = r#"[
            {"system": "zeta_peer", "metric": "W3", "value": 3, "unit": "ns/op"},
            {"system": "ractor", "metric": "W3", "value": 2, "unit": "ns/op"},
            {"system": "gen_registry", "metric": "W3", "value": 1, "unit": "ns/op"}
        ]"#;
        let run = Run::parse(rows).unwrap();
        assert_eq!(run.systems, ["gen_registry", "ractor", "zeta_peer"]);
    }

    #[test]
    fn a_bare_array_of_rows_as_earlier_runs_wrote_is_drawn() {
        let rows = r#"[{"system": "kameo", "metric": "W3", "value": 2435, "unit": "ns/op"}]"#;
        let chart = render(rows).unwrap();
        assert_eq!(chart.file_name, "standard.svg");
        let texts = texts(&parse(&chart.svg));
        assert!(texts.iter().any(|t| t == "2,435"), "{texts:?}");
        assert!(
            texts.iter().any(|t| t.contains("not recorded")),
            "{texts:?}"
        );
    }

    fn error(json: &str) -> String {
        render(json).expect_err(json).to_string()
    }

    #[test]
    fn bad_input_is_an_error_that_says_what_is_wrong() {
        assert!(error("").starts_with("not JSON"), "{}", error(""));
        assert!(error("{\"rows\": [").starts_with("not JSON"));
        assert!(error("42").contains("neither an array"));
        assert!(error("{\"tier\": \"standard\"}").contains("without \"rows\""));
        assert!(error("{\"rows\": {}}").contains("not an array"));
        assert!(error("[3]").contains("row 0 is not an object"));
        let missing = error(r#"[{"metric": "W1", "value": 1}]"#);
        assert!(missing.contains("row 0 has no \"system\""), "{missing}");
        let text = error(
            r#"[{"system": "a", "metric": "W1", "value": 1},
                            {"system": "b", "metric": "W1", "value": "fast"}]"#,
        );
        assert!(
            text.contains("row 1 (b W1): \"value\" is \"fast\", not a number"),
            "{text}"
        );
        for value in ["1e300", "-1e16", "1e-300"] {
            let e = error(&format!(
                r#"[{{"system": "a", "metric": "W1", "value": {value}}}]"#
            ));
            assert!(e.contains("row 0 (a W1): \"value\" is "), "{e}");
            assert!(e.contains("outside the figures a chart can show"), "{e}");
        }
        let tier = error(r#"{"tier": "huge", "rows": []}"#);
        assert!(tier.contains("\"tier\" is \"huge\""), "{tier}");
    }

    #[test]
    fn a_run_without_the_figures_a_chart_shows_is_an_error() {
        assert!(error("[]").starts_with("nothing to draw"));
        // Only metrics no panel shows.
        let other = r#"[{"system": "a", "metric": "W11", "value": 1}]"#;
        assert!(error(other).contains("no figure of W1 to W9"));
        let scale = r#"{"tier": "scale", "rows": [{"system": "a", "metric": "W1", "value": 1}]}"#;
        assert!(
            error(scale).contains("no W1 or W2 figure with an N"),
            "{}",
            error(scale)
        );
    }

    #[test]
    fn write_chart_names_the_file_it_cannot_read_and_writes_into_a_new_folder() {
        let dir = std::env::temp_dir().join(format!("gen_registry_charts_{}", std::process::id()));
        let missing = dir.join("missing.json");
        let e = write_chart(&missing, &dir).unwrap_err();
        assert!(matches!(e, ChartError::Read { .. }));
        assert!(e.to_string().contains("missing.json"), "{e}");

        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("run.json");
        std::fs::write(&json, SCALE).unwrap();
        let out = dir.join("charts");
        let path = write_chart(&json, &out).unwrap();
        assert_eq!(path, out.join("scale.svg"));
        parse(&std::fs::read_to_string(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_axis_figures() {
        assert_eq!(short(1_000_000.0), "1M");
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(short(350_000.0), "350k");
        assert_eq!(short(100.0), "100");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.25), "0.25");
    }
}
