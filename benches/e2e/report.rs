//! The results: medians over runs, the printed table, `results.json` and the SVG chart.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::common::median;
use crate::sample::{Sample, Variant};
use crate::scenarios::{Kind, Scenario};

/// Every run of one variant of one scenario, and their median.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VariantResult {
    /// The variant.
    pub(crate) variant: Variant,
    /// Its name in the table.
    pub(crate) label: &'static str,
    /// Per-field medians (`lost`: the worst run; `ready`: the worst run).
    pub(crate) median: Sample,
    /// Median `cpu_us_per_msg` over raw rumqttc's median `cpu_us_per_msg` (fan-in only;
    /// 1 for raw itself).
    pub(crate) cpu_x_raw: Option<f64>,
    /// Every run.
    pub(crate) runs: Vec<Sample>,
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScenarioResult {
    /// Its name.
    pub(crate) name: String,
    /// Per variant, raw first.
    pub(crate) variants: Vec<VariantResult>,
}

impl ScenarioResult {
    /// Aggregates the runs of `sc`.
    pub(crate) fn new(sc: &Scenario, runs: Vec<(Variant, Vec<Sample>)>) -> Self {
        let mut variants: Vec<VariantResult> = runs
            .into_iter()
            .map(|(variant, runs)| VariantResult {
                variant,
                label: variant.as_str(),
                median: aggregate(&runs),
                cpu_x_raw: None,
                runs,
            })
            .collect();
        let raw_cpu = variants
            .iter()
            .find(|v| v.variant == Variant::Raw)
            .and_then(|v| v.median.cpu_us_per_msg)
            .filter(|&c| c > 0.0);
        for v in &mut variants {
            v.cpu_x_raw = raw_cpu.and_then(|r| Some(v.median.cpu_us_per_msg? / r));
        }
        ScenarioResult {
            name: sc.name.clone(),
            variants,
        }
    }

    /// The variant the others are compared with: raw rumqttc, or else the scenario's
    /// first (forwarding: mosquitto's bridge).
    fn reference(&self) -> Option<&VariantResult> {
        self.variants
            .iter()
            .find(|v| v.variant == Variant::Raw)
            .or_else(|| self.variants.first())
    }
}

fn aggregate(runs: &[Sample]) -> Sample {
    let f = |get: fn(&Sample) -> Option<f64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(get).collect();
        median(&mut v)
    };
    let u = |get: fn(&Sample) -> Option<u64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(get).map(|x| x as f64).collect();
        median(&mut v).map(|m| m.round() as u64)
    };
    Sample {
        msgs_per_s: f(|s| s.msgs_per_s),
        published: u(|s| s.published),
        received: u(|s| s.received),
        lost: runs.iter().filter_map(|s| s.lost).max(),
        duplicates: runs.iter().filter_map(|s| s.duplicates).max(),
        dropped: runs.iter().filter_map(|s| s.dropped).max(),
        p50_us: f(|s| s.p50_us),
        p99_us: f(|s| s.p99_us),
        ready_s: f(|s| s.ready_s),
        ready: runs.iter().filter_map(|s| s.ready).min(),
        kb_per_session: f(|s| s.kb_per_session),
        threads: u(|s| s.threads),
        cpu_us_per_msg: f(|s| s.cpu_us_per_msg),
        note: runs.iter().find_map(|s| s.note.clone()),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// The table, as Markdown (also readable in a terminal). *x ref*: against raw rumqttc,
/// or, in a scenario without it, against its first variant (forwarding: the bridge);
/// the p50 and p99 columns show the difference to the same reference.
pub(crate) fn table(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | variant | msgs/s | x ref | CPU µs/msg (x raw) | lost (dropped) | p50 µs | p99 µs | ready s | KB/session | threads | note |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for sc in results {
        let reference = sc.reference();
        let raw = reference.map(|r| r.median.clone()).unwrap_or_default();
        for v in &sc.variants {
            let m = &v.median;
            let is_raw = reference.is_some_and(|r| r.variant == v.variant);
            let ratio = match (m.msgs_per_s, raw.msgs_per_s) {
                (Some(a), Some(b)) if !is_raw && b > 0.0 => format!("{:.3}", a / b),
                (Some(_), Some(_)) if is_raw => "1".to_string(),
                _ => "-".to_string(),
            };
            let delta = |x: Option<f64>, r: Option<f64>| match (x, r) {
                (Some(x), Some(r)) if !is_raw => format!("{x:.0} ({:+.0})", x - r),
                (Some(x), _) => format!("{x:.0}"),
                _ => "-".to_string(),
            };
            let kb = match (m.kb_per_session, raw.kb_per_session) {
                (Some(x), Some(r)) if !is_raw && r > 0.0 => format!("{x:.1} (x{:.2})", x / r),
                (Some(x), _) => format!("{x:.1}"),
                _ => "-".to_string(),
            };
            let ready = match (m.ready_s, m.ready) {
                (Some(s), Some(n)) => format!("{s:.2} ({n} ready)"),
                (s, _) => opt(s, 2),
            };
            let cpu = match (m.cpu_us_per_msg, v.cpu_x_raw) {
                (Some(c), Some(r)) if !is_raw => format!("{c:.2} (x{r:.2})"),
                (c, _) => opt(c, 2),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                sc.name,
                v.label,
                opt(m.msgs_per_s, 0),
                ratio,
                cpu,
                match (m.lost, m.dropped, m.duplicates) {
                    (Some(l), Some(d), _) if d > 0 => format!("{l} ({d})"),
                    (Some(l), _, Some(dup)) if dup > 0 => format!("{l}, {dup} dup"),
                    (Some(l), _, _) => l.to_string(),
                    _ => "-".to_string(),
                },
                delta(m.p50_us, raw.p50_us),
                delta(m.p99_us, raw.p99_us),
                ready,
                kb,
                m.threads.map_or_else(|| "-".to_string(), |t| t.to_string()),
                m.note.as_deref().unwrap_or("").replace('|', "/"),
            );
        }
    }
    out
}

/// Writes `value` as pretty JSON to `path` (creating its directory).
pub(crate) fn write_json(path: &Path, value: &impl Serialize) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the results directory");
    }
    let json = serde_json::to_string_pretty(value).expect("json");
    std::fs::write(path, json + "\n").expect("write results");
}

fn color(v: Variant) -> &'static str {
    match v {
        Variant::Raw => "#888888",
        Variant::RawHop => "#bbbbbb",
        Variant::Listen => "#1f77b4",
        Variant::Handle => "#ff7f0e",
        Variant::HandleInline => "#d4a017",
        Variant::Library => "#2ca02c",
        Variant::LibraryBounded => "#9467bd",
        Variant::LibraryStore => "#8c564b",
        Variant::LibraryOnWorker => "#98df8a",
        Variant::LibraryHandleRoutes => "#ff7f0e",
        Variant::LibraryInlineRoutes => "#d4a017",
        Variant::LibraryWorkers1 => "#17becf",
        Variant::LibraryWorkersN => "#bcbd22",
        Variant::LibraryWorkersNInline => "#8c6d31",
        Variant::NeighbourQuiet => "#d4a017",
        Variant::NeighbourSpinInline => "#d62728",
        Variant::NeighbourSpinHandle => "#ff7f0e",
        Variant::Bridge => "#7f7f7f",
        Variant::RawForwarder => "#aec7e8",
        Variant::Daemon => "#e377c2",
        Variant::DaemonStore => "#d62728",
    }
}

/// One bar group: a label and `(variant, value)` bars.
type Group = (String, Vec<(Variant, f64)>);

/// A bar chart panel at `(x, y)` of size `w`×`h`; `lines` are horizontal reference lines.
fn panel(
    svg: &mut String,
    (x, y, w, h): (f64, f64, f64, f64),
    title: &str,
    groups: &[Group],
    lines: &[(f64, &str)],
    unit: &str,
) {
    let ymax = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|(_, v)| *v))
        .chain(lines.iter().map(|(v, _)| *v))
        .fold(0.0_f64, f64::max)
        * 1.15;
    let ymax = if ymax > 0.0 { ymax } else { 1.0 };
    let (left, bottom, top) = (50.0, 40.0, 30.0);
    let (px, pw) = (x + left, w - left - 10.0);
    let (py, ph) = (y + top, h - top - bottom);
    let yof = |v: f64| py + ph - v / ymax * ph;
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{title}</text>"#,
        x + 10.0,
        y + 18.0
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{px:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000"/>"##,
        py + ph,
        px + pw,
        py + ph
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{px:.1}" y1="{py:.1}" x2="{px:.1}" y2="{:.1}" stroke="#000"/>"##,
        py + ph
    );
    for i in 0..=4 {
        let v = ymax / 4.0 * f64::from(i);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"#,
            px - 4.0,
            yof(v) + 3.0,
            short(v)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="10" transform="rotate(-90 {:.1} {:.1})" text-anchor="middle">{unit}</text>"#,
        x + 12.0,
        py + ph / 2.0,
        x + 12.0,
        py + ph / 2.0
    );
    for (i, (v, label)) in lines.iter().enumerate() {
        let ly = yof(*v);
        // Alternate labels above and below their lines: reference lines sit close together.
        let label_y = if i % 2 == 0 { ly - 3.0 } else { ly + 11.0 };
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
            px + pw
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#d62728" text-anchor="end">{label}</text>"##,
            px + pw,
            label_y
        );
    }
    let gw = pw / groups.len().max(1) as f64;
    for (gi, (label, bars)) in groups.iter().enumerate() {
        let gx = px + gw * gi as f64;
        let bw = (gw * 0.8) / bars.len().max(1) as f64;
        for (bi, (variant, value)) in bars.iter().enumerate() {
            let bx = gx + gw * 0.1 + bw * bi as f64;
            let by = yof(*value);
            let _ = writeln!(
                svg,
                r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                bw * 0.9,
                py + ph - by,
                color(*variant),
                label,
                variant.as_str(),
                short(*value)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                bx + bw * 0.45,
                by - 2.0,
                short(*value)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{label}</text>"#,
            gx + gw / 2.0,
            py + ph + 14.0
        );
    }
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The chart: throughput ratio to raw rumqttc per throughput scenario, and latency
/// (p50, p99) of each variant per latency scenario.
pub(crate) fn svg(results: &[ScenarioResult], scenarios: &[Scenario], subtitle: &str) -> String {
    let kind = |name: &str| scenarios.iter().find(|s| s.name == name).map(|s| &s.kind);
    let mut ratio_groups: Vec<Group> = Vec::new();
    let mut latency_groups: Vec<Group> = Vec::new();
    for sc in results {
        let raw = sc.reference().map(|r| r.median.clone()).unwrap_or_default();
        match kind(&sc.name) {
            Some(Kind::FanIn { .. } | Kind::FanInSessions { .. } | Kind::PublishQos1) => {
                let bars = sc
                    .variants
                    .iter()
                    .filter(|v| v.variant != Variant::Raw)
                    .filter_map(|v| Some((v.variant, v.median.msgs_per_s? / raw.msgs_per_s?)))
                    .collect();
                ratio_groups.push((sc.name.clone(), bars));
            }
            Some(Kind::Latency { .. }) => {
                for (q, get) in [
                    ("p50", (|s: &Sample| s.p50_us) as fn(&Sample) -> Option<f64>),
                    ("p99", |s: &Sample| s.p99_us),
                ] {
                    let bars = sc
                        .variants
                        .iter()
                        .filter_map(|v| Some((v.variant, get(&v.median)?)))
                        .collect();
                    latency_groups.push((format!("{} {q}", sc.name.replace(" 1000/s", "")), bars));
                }
            }
            _ => {}
        }
    }
    let w = 1100.0;
    // The legend, in as many rows as it needs below the panels; then the subtitle.
    let mut legend = String::new();
    let (mut lx, mut ly) = (60.0, 338.0);
    for v in [
        Variant::Raw,
        Variant::RawHop,
        Variant::Listen,
        Variant::Handle,
        Variant::HandleInline,
        Variant::Library,
        Variant::LibraryStore,
        Variant::LibraryWorkers1,
        Variant::LibraryWorkersN,
        Variant::LibraryWorkersNInline,
    ] {
        let width = 40.0 + 6.0 * v.as_str().len() as f64;
        if lx + width > w {
            (lx, ly) = (60.0, ly + 18.0);
        }
        let _ = writeln!(
            legend,
            r#"<rect x="{lx}" y="{ly}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            color(v),
            lx + 16.0,
            ly + 10.0,
            v.as_str()
        );
        lx += width;
    }
    let h = ly + 42.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    panel(
        &mut svg,
        (0.0, 0.0, 600.0, 330.0),
        "Throughput, x raw rumqttc (target >= 0.95)",
        &ratio_groups,
        &[(1.0, "raw"), (0.95, "0.95")],
        "x raw",
    );
    panel(
        &mut svg,
        (600.0, 0.0, 500.0, 330.0),
        "Latency at 1000 msg/s, µs",
        &latency_groups,
        &[],
        "µs",
    );
    svg.push_str(&legend);
    let _ = writeln!(
        svg,
        r##"<text x="60" y="{}" font-size="10" fill="#555">{subtitle}</text>"##,
        h - 10.0
    );
    svg.push_str("</svg>\n");
    svg
}
