//! `support.png`: support (neurons ever fired) per step, one line per area.
//!
//! Design decision: text is rendered with plotters' pure-Rust `ab_glyph`
//! backend from an embedded, freely licensed font (DejaVu Sans, from the
//! `dejavu` crate), never from system fonts: plotters' default `ttf`
//! backend needs fontconfig and installed fonts, which a clean CI machine
//! does not have. Should text rendering fail anyway, the plot is drawn
//! again without any text rather than failing the run.

use crate::plan::Experiment;
use crate::runner::RunOutcome;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// Font family name under which the embedded font is registered.
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Both cannot fail for a valid TrueType file; if they did, drawing
        // text fails and `draw_support` falls back to a text-free plot.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// One line of the plot: an area's (step, support) points.
struct Series {
    name: String,
    points: Vec<(u64, u64)>,
}

fn series(exp: &Experiment, out: &RunOutcome) -> Vec<Series> {
    let mut s: Vec<Series> = exp
        .areas
        .iter()
        .map(|a| Series {
            name: a.clone(),
            points: vec![],
        })
        .collect();
    for st in &out.steps {
        for r in &st.areas {
            s[r.area].points.push((st.step, r.support));
        }
    }
    s.retain(|s| !s.points.is_empty());
    s
}

/// Draws the support plot into `path` (a `.png` file name). Overwrites.
pub fn draw_support(path: &Path, exp: &Experiment, out: &RunOutcome) -> Result<()> {
    register_font();
    let data = series(exp, out);
    match draw(path, &exp.name, &data, true) {
        Ok(()) => Ok(()),
        Err(e) => {
            eprintln!(
                "warning: drawing text into {} failed ({e}); plotting without text",
                path.display()
            );
            draw(path, &exp.name, &data, false)
        }
    }
}

fn draw(path: &Path, title: &str, data: &[Series], text: bool) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting: {e}");
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let max_step = data
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1);
    let max_support = data
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .max()
        .unwrap_or(1)
        .max(1);
    let y_top = max_support + max_support / 20 + 1;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(format!("{title}: support per step"), (FONT, 26).into_font())
            .x_label_area_size(50)
            .y_label_area_size(90);
    } else {
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    let mut chart = builder
        .build_cartesian_2d(0u64..max_step + 1, 0u64..y_top)
        .map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE.mix(0.0));
    if text {
        mesh.x_desc("step")
            .y_desc("support (neurons that ever fired)")
            .label_style((FONT, 16).into_font())
            .axis_desc_style((FONT, 18).into_font());
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| err(&e))?;
    for (i, s) in data.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line = chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
        if text {
            line.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
        if s.points.len() <= 200 {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 16).into_font())
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
