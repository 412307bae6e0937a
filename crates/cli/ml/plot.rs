//! Self-contained SVG charts (plotters' SVG backend: text stays `<text>`, no fonts are
//! loaded): a metric across compared refs (`compare --plot`) and the change of every
//! tensor that differs (`diff --plot`).

use anyhow::{anyhow, Result};
use gitmodel_ml::metrics::fmt_num;
use gitmodel_ml::tensor::{ModelDiff, TensorChange};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const BAR: RGBColor = RGBColor(0x3b, 0x6e, 0xa8);
const BASELINE: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
const ACCENT: RGBColor = RGBColor(0xc0, 0x5a, 0x2a);
const FONT: &str = "sans-serif";

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

/// Bars of `metric` for each compared ref (`None`: that ref has no such metric), the
/// baseline (the first) also drawn as a dashed line.
pub fn compare_chart(metric: &str, rows: &[(String, Option<f64>)]) -> Result<String> {
    let values: Vec<f64> = rows.iter().filter_map(|(_, v)| *v).collect();
    if values.is_empty() {
        return Err(anyhow!("no compared version has the metric {metric:?}"));
    }
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    // Differences between runs are small next to the values: zoom on them, but keep zero
    // in view when it is close.
    let span = (hi - lo).max(hi.abs() * 0.02).max(1e-9);
    let mut bottom = lo - span * 0.6;
    if lo >= 0.0 && bottom < 0.0 {
        bottom = 0.0;
    }
    let top = hi + span * 0.35;
    let n = rows.len();
    let longest = rows.iter().map(|(r, _)| r.len()).max().unwrap_or(4);
    let width = (160 + n * 110).max(480) as u32;
    let label_area = (24 + longest.min(40) * 2) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{metric} by version"), (FONT, 22))
            .margin(16)
            .x_label_area_size(label_area)
            .y_label_area_size(70)
            // An integer range is inclusive: 0..n-1 gives n bars.
            .build_cartesian_2d((0..n as i32 - 1).into_segmented(), bottom..top)
            .map_err(err)?;
        let names: Vec<String> = rows.iter().map(|(r, _)| r.clone()).collect();
        let x_label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&x_label)
            .x_label_style((FONT, 13))
            .y_desc(metric)
            .y_label_formatter(&|v| fmt_num(*v))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().filter_map(|(i, (_, v))| {
                let v = (*v)?;
                let colour = if i == 0 { BASELINE } else { BAR };
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i as i32), bottom),
                        (SegmentValue::Exact(i as i32 + 1), v),
                    ],
                    colour.filled(),
                );
                bar.set_margin(0, 0, 14, 14);
                Some(bar)
            }))
            .map_err(err)?;
        let baseline = rows[0].1;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
                let text = match (v, baseline) {
                    (Some(v), Some(b)) if i > 0 => {
                        format!("{} ({})", fmt_num(*v), gitmodel_ml::metrics::signed(v - b))
                    }
                    (Some(v), _) => fmt_num(*v),
                    (None, _) => "n/a".into(),
                };
                let y = v.unwrap_or(bottom);
                Text::new(
                    text,
                    (SegmentValue::CenterOf(i as i32), y),
                    TextStyle::from((FONT, 13).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(err)?;
        if let Some(b) = baseline {
            chart
                .draw_series(DashedLineSeries::new(
                    [(SegmentValue::Exact(0), b), (SegmentValue::Last, b)],
                    6,
                    4,
                    BASELINE.stroke_width(1),
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One row of the diff chart.
struct TensorBar {
    name: String,
    value: Option<f64>,
    note: String,
}

fn bars(d: &ModelDiff) -> Vec<TensorBar> {
    d.tensors
        .iter()
        .map(|t| {
            let (value, note) = match &t.change {
                TensorChange::Changed {
                    relative_l2: Some(r),
                    fraction_changed,
                    ..
                } => (
                    Some(*r),
                    format!("{r:.4} ({:.1}% of elements)", fraction_changed * 100.0),
                ),
                TensorChange::Changed {
                    fraction_changed, ..
                } => (
                    None,
                    format!("{:.1}% of elements changed", fraction_changed * 100.0),
                ),
                TensorChange::Added { dtype, shape, .. } => {
                    (None, format!("added {dtype} {shape:?}"))
                }
                TensorChange::Removed { dtype, shape, .. } => {
                    (None, format!("removed {dtype} {shape:?}"))
                }
                TensorChange::Retyped {
                    old_dtype,
                    new_dtype,
                    old_shape,
                    new_shape,
                } => (
                    None,
                    format!("{old_dtype} {old_shape:?} → {new_dtype} {new_shape:?}"),
                ),
            };
            TensorBar {
                name: t.name.clone(),
                value,
                note,
            }
        })
        .collect()
}

/// Tensors drawn per model at most (the rest are counted in the caption).
const MAX_BARS: usize = 60;
const ROW: u32 = 24;

/// Horizontal bars of the relative L2 change of every tensor that differs, one panel
/// per model file; added, removed and retyped tensors are listed with what happened.
pub fn diff_chart(models: &[(String, &ModelDiff)]) -> Result<String> {
    if models.is_empty() {
        return Err(anyhow!("no model file differs: nothing to plot"));
    }
    let panels: Vec<(String, Vec<TensorBar>, usize)> = models
        .iter()
        .map(|(path, d)| {
            let mut b = bars(d);
            let hidden = b.len().saturating_sub(MAX_BARS);
            b.truncate(MAX_BARS);
            (path.clone(), b, hidden)
        })
        .collect();
    let longest = panels
        .iter()
        .flat_map(|(_, b, _)| b.iter().map(|t| t.name.len()))
        .max()
        .unwrap_or(8);
    let label_area = (20 + longest.min(60) * 7) as u32;
    let width = label_area + 640;
    let heights: Vec<u32> = panels
        .iter()
        .map(|(_, b, _)| 110 + ROW * b.len().max(1) as u32)
        .collect();
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (width, heights.iter().sum())).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut rest = root.clone();
        for ((path, bars, hidden), h) in panels.iter().zip(&heights) {
            let (area, below) = rest.split_vertically(*h);
            rest = below;
            let d = &models.iter().find(|(p, _)| p == path).expect("same list").1;
            let n = bars.len().max(1);
            let max = bars
                .iter()
                .filter_map(|b| b.value)
                .fold(0.0f64, f64::max)
                .max(1e-6);
            let mut caption = format!(
                "{path}: {} of {} tensors differ",
                d.tensors.len(),
                d.tensors.len() + d.unchanged
            );
            if *hidden > 0 {
                caption.push_str(&format!(" ({hidden} not drawn)"));
            }
            let mut chart = ChartBuilder::on(&area)
                .caption(caption, (FONT, 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(label_area)
                .build_cartesian_2d(0.0..max * 1.6, (0..n as i32 - 1).into_segmented())
                .map_err(err)?;
            // Top to bottom in file order.
            let row_of = |i: usize| (n - 1 - i) as i32;
            let y_label = |v: &SegmentValue<i32>| match v {
                SegmentValue::CenterOf(i) => (n as i32 - 1 - *i)
                    .try_into()
                    .ok()
                    .and_then(|k: usize| bars.get(k))
                    .map(|b| b.name.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(n)
                .y_label_formatter(&y_label)
                .y_label_style((FONT, 12))
                .x_desc("relative L2 change ‖new − old‖ / ‖old‖")
                .x_label_formatter(&|v| fmt_num(*v))
                .draw()
                .map_err(err)?;
            chart
                .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
                    let v = b.value?;
                    let mut r = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(row_of(i))),
                            (v, SegmentValue::Exact(row_of(i) + 1)),
                        ],
                        BAR.filled(),
                    );
                    r.set_margin(4, 4, 0, 0);
                    Some(r)
                }))
                .map_err(err)?;
            chart
                .draw_series(bars.iter().enumerate().map(|(i, b)| {
                    let colour: &RGBColor = if b.value.is_some() { &BLACK } else { &ACCENT };
                    Text::new(
                        format!("  {}", b.note),
                        (b.value.unwrap_or(0.0), SegmentValue::CenterOf(row_of(i))),
                        TextStyle::from((FONT, 12).into_font())
                            .color(colour)
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )
                }))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_chart_names_refs_and_values() {
        let svg = compare_chart(
            "accuracy",
            &[
                ("main".into(), Some(0.9)),
                ("exp/a".into(), Some(0.91)),
                ("exp/b".into(), None),
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "accuracy by version",
            "main",
            "exp/a",
            "exp/b",
            "0.91 (+0.01)",
            "n/a",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(compare_chart("loss", &[("main".into(), None)]).is_err());
    }
}
