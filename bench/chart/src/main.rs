//! Reads the medians CSV written by `bench/compare.sh` and draws grouped bars
//! of ops per server CPU-second: one panel per workload, one bar per server,
//! each panel with its own y axis (workloads differ by an order of magnitude).
//!
//! usage: chart MEDIANS.csv OUT.svg [TITLE]
//!
//! The CSV needs a header row naming at least the columns `workload`,
//! `server` and `ops_per_cpu_s` (an optional `label` column titles the
//! panels; fields may be double-quoted, as Python's csv writes them); rows
//! keep their order (workloads and the
//! servers within them appear in the order they first occur).

use plotters::prelude::*;
use std::error::Error;

struct Row {
    workload: String,
    label: String,
    server: String,
    value: f64,
}

/// One CSV line into fields: commas separate, double quotes enclose, `""` is a quote.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

fn read_csv(path: &str) -> Result<Vec<Row>, Box<dyn Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split_csv(lines.next().ok_or("empty CSV")?);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| format!("CSV has no column {name:?}"))
    };
    let (w, s, v) = (col("workload")?, col("server")?, col("ops_per_cpu_s")?);
    let l = col("label").ok();
    let mut rows = Vec::new();
    for line in lines {
        let fields = split_csv(line);
        let get = |i: usize| fields.get(i).map(|f| f.trim()).unwrap_or("");
        // A failed run leaves the value empty or "nan": draw no bar for it.
        let value = get(v).parse::<f64>().unwrap_or(f64::NAN);
        let workload = get(w).to_string();
        let label = l
            .map(get)
            .filter(|x| !x.is_empty())
            .unwrap_or(&workload)
            .to_string();
        rows.push(Row {
            workload,
            label,
            server: get(s).to_string(),
            value,
        });
    }
    Ok(rows)
}

fn human(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4), // netloop: always the first colour
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: chart MEDIANS.csv OUT.svg [TITLE]");
        std::process::exit(2);
    }
    let rows = read_csv(&args[1])?;
    let title = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("ops per server CPU-second (median)");

    let mut workloads: Vec<String> = Vec::new();
    let mut servers: Vec<String> = Vec::new();
    for r in &rows {
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload.clone());
        }
        if !servers.contains(&r.server) {
            servers.push(r.server.clone());
        }
    }
    if workloads.is_empty() {
        return Err("no rows in CSV".into());
    }
    // netloop first so it keeps the first colour.
    if let Some(i) = servers.iter().position(|s| s.starts_with("netloop")) {
        let s = servers.remove(i);
        servers.insert(0, s);
    }
    let colour = |server: &str| {
        let i = servers.iter().position(|s| s == server).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };

    let cols = 2usize;
    let panel_rows = workloads.len().div_ceil(cols);
    let (width, height) = (1000u32, 60 + 300 * panel_rows as u32);
    let root = SVGBackend::new(&args[2], (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let panels = root.split_evenly((panel_rows, cols));

    for (workload, area) in workloads.iter().zip(panels.iter()) {
        let bars: Vec<&Row> = rows.iter().filter(|r| &r.workload == workload).collect();
        let top = bars
            .iter()
            .map(|r| r.value)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let top = if top > 0.0 { top * 1.18 } else { 1.0 };
        // A segmented range a..b has b - a + 1 segments.
        let last = (bars.len() as u32).saturating_sub(1).max(1);
        let caption = bars.first().map(|r| r.label.as_str()).unwrap_or(workload);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(62)
            .build_cartesian_2d((0u32..last).into_segmented(), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .y_desc("ops / server CPU-s")
            .y_label_formatter(&|v| human(*v))
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => bars
                    .get(*i as usize)
                    .map(|r| r.server.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()?;
        chart.draw_series(
            bars.iter()
                .enumerate()
                .filter(|(_, r)| r.value.is_finite())
                .map(|(i, r)| {
                    let i = i as u32;
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), r.value),
                        ],
                        colour(&r.server).filled(),
                    );
                    bar.set_margin(0, 0, 14, 14);
                    bar
                }),
        )?;
        chart.draw_series(bars.iter().enumerate().map(|(i, r)| {
            let y = if r.value.is_finite() { r.value } else { 0.0 };
            Text::new(
                human(r.value),
                (SegmentValue::CenterOf(i as u32), y + top * 0.02),
                ("sans-serif", 13).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                ),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
