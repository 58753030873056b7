//! The report as one self-contained HTML page: the verdict, the steps, every probe over time and
//! the faults' drop/delay rates as inline SVG (steps shaded, the abort marked). No script, no CDN.

use std::fmt::Write as _;

use super::{
    Conclusion, Report, rates,
    svg::{Chart, Series, chart, esc},
};

const COLORS: [&str; 6] = [
    "#1f6fb2", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f8c8d",
];

fn verdict_text(r: &Report) -> (String, &'static str) {
    let v = &r.verdict;
    let head = match (v.result, v.step) {
        (Conclusion::Held, _) => "Hypothesis held".to_string(),
        (Conclusion::Rejected, Some(k)) => format!("Hypothesis rejected at step {k}"),
        (Conclusion::Rejected, None) => "Hypothesis rejected".to_string(),
        (Conclusion::NotStarted, _) => "Not started".to_string(),
        (Conclusion::Interrupted, _) => "Interrupted".to_string(),
        (Conclusion::DryRun, _) => "Dry run".to_string(),
        (Conclusion::Failed, _) => "Failed".to_string(),
    };
    let color = match v.result {
        Conclusion::Held | Conclusion::DryRun => "#2e7d32",
        Conclusion::Rejected | Conclusion::Failed => "#c0392b",
        _ => "#8a6d00",
    };
    (head, color)
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms"))
        .unwrap_or_else(|| "-".into())
}

fn secs(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} s")).unwrap_or_else(|| "-".into())
}

/// The page.
pub fn render(r: &Report) -> String {
    let (head, color) = verdict_text(r);
    let x_max = r.ended_s.max(1.0);
    let bands: Vec<(f64, f64, String)> = r
        .steps
        .iter()
        .filter_map(|s| {
            let a = s.start_s?;
            Some((
                a,
                s.end_s.unwrap_or(a + s.planned_s),
                format!("{}. {}", s.index, s.name),
            ))
        })
        .collect();
    let mut marks: Vec<(f64, String, &'static str)> = Vec::new();
    if let Some(a) = &r.abort {
        marks.push((a.breach_s, "breach".into(), "#c0392b"));
        if let Some(t) = a.restored_s {
            marks.push((t, "restored".into(), "#2e7d32"));
        }
    } else if let Some(t) = r.recovery.removed_s {
        marks.push((t, "faults removed".into(), "#555"));
    }
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Experiment {name}: {head}</title>
<style>body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1000px}}
h1{{font-size:22px;margin:0 0 4px}}.verdict{{color:#fff;background:{color};padding:10px 14px;border-radius:6px;margin:12px 0}}
.verdict b{{font-size:18px}}table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f5f5f5}}.chart{{display:block;margin:6px 0 18px;border:1px solid #eee}}code{{font-size:12px}}.muted{{color:#666}}</style></head><body>
<h1>Experiment {name}</h1><div class="muted">hypothesis</div><p>{hyp}</p>
<div class="verdict" id="verdict"><b>{head}</b><br>{reason}</div>"#,
        name = esc(&r.name),
        hyp = esc(&r.hypothesis),
        reason = esc(&r.verdict.reason),
    );
    let wher = match &r.run {
        Some(run) => format!(
            "NetworkFaults in {}, run {} (label injector.dev/experiment-run={})",
            esc(&r.daemons.join(", ")),
            esc(run),
            esc(run)
        ),
        None => format!(
            "{} daemon(s): {}",
            r.daemons.len(),
            esc(&r.daemons.join(", "))
        ),
    };
    let _ = write!(
        h,
        r#"<p class="muted">{wher} &middot; {:.1} s in all{}</p>"#,
        r.ended_s,
        if r.dry_run { " &middot; dry run" } else { "" }
    );
    if let Some(a) = &r.abort {
        let _ = write!(
            h,
            r#"<h2>Abort</h2><table id="abort"><tr><th>rule</th><td>{}</td></tr><tr><th>step</th><td>{}</td></tr>
<tr><th>first failing run</th><td>{:.2} s</td></tr><tr><th>breach (the rule held)</th><td>{:.2} s</td></tr>
<tr><th>every fault removed</th><td>{:.2} s, {} after the breach</td></tr><tr><th>traffic restored</th><td>{}, {} after the breach</td></tr></table>"#,
            esc(&a.rule),
            a.step,
            a.first_failure_s,
            a.breach_s,
            a.removed_s,
            ms(Some(a.removal_ms)),
            secs(a.restored_s),
            ms(a.restore_ms)
        );
        if !a.nodes.is_empty() {
            h += "<table id=\"abort-nodes\"><tr><th>node</th><th>no fault of the experiment left, after the breach</th></tr>";
            for n in &a.nodes {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    esc(&n.node),
                    ms(n.removed_ms)
                );
            }
            h += "</table>";
        }
    }
    h += "<h2>Steps</h2><table id=\"steps\"><tr><th>#</th><th>step</th><th>planned</th><th>ran</th><th>faults</th></tr>";
    for s in &r.steps {
        let ran = match (s.start_s, s.end_s) {
            (Some(a), Some(b)) => format!("{a:.1} s .. {b:.1} s"),
            _ => "not run".into(),
        };
        let faults: Vec<String> = s
            .faults
            .iter()
            .map(|f| {
                format!(
                    "<code>{}: {} for {}</code>",
                    esc(f.name()),
                    esc(&f.action_text()),
                    esc(f.lifetime())
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.0} s</td><td>{ran}</td><td>{}</td></tr>",
            s.index,
            esc(&s.name),
            s.planned_s,
            faults.join("<br>")
        );
    }
    h += "</table><h2>Probes</h2>";
    for (i, p) in r.probes.iter().enumerate() {
        let fails = p.samples.iter().filter(|s| !s.ok).count();
        let series = vec![Series {
            name: p.name.clone(),
            color: COLORS[i % COLORS.len()],
            points: p.samples.iter().map(|s| (s.t_s, s.value, s.ok)).collect(),
        }];
        h += &chart(&Chart {
            id: format!("probe-{}", p.name),
            title: format!("{} ({}): {}", p.name, p.kind, p.threshold),
            unit: p.unit.clone(),
            x_max,
            bands: &bands,
            marks: &marks,
            hlines: p
                .limits
                .iter()
                .map(|l| (l.value, format!("{} {}", l.kind, l.value)))
                .collect(),
            series,
        });
        if p.kind == "http" {
            h += &chart(&Chart {
                id: format!("latency-{}", p.name),
                title: format!("{}: p50 latency of the answered requests", p.name),
                unit: "ms".into(),
                x_max,
                bands: &bands,
                marks: &marks,
                hlines: Vec::new(),
                series: vec![Series {
                    name: format!("{} p50 latency (ms)", p.name),
                    color: "#7f8c8d",
                    points: p
                        .samples
                        .iter()
                        .filter_map(|s| s.latency_ms.map(|l| (s.t_s, Some(l), s.ok)))
                        .collect(),
                }],
            });
        }
        let _ = write!(
            h,
            r#"<p class="muted">{} runs, {fails} failed, every {:.1} s{}</p>"#,
            p.samples.len(),
            p.interval_s,
            p.netns
                .as_ref()
                .map(|n| format!(", from netns {}", esc(n)))
                .unwrap_or_default()
        );
    }
    h += "<h2>Faults</h2>";
    let mut series = Vec::new();
    for (i, f) in r.faults.iter().enumerate() {
        series.push(Series {
            name: format!("{} dropped/s", f.name),
            color: COLORS[i % COLORS.len()],
            points: rates(&f.samples, |c| c.dropped)
                .into_iter()
                .map(|(t, v)| (t, Some(v), true))
                .collect(),
        });
        if f.samples.iter().any(|c| c.delayed > 0) {
            series.push(Series {
                name: format!("{} delayed/s", f.name),
                color: COLORS[(i + 3) % COLORS.len()],
                points: rates(&f.samples, |c| c.delayed)
                    .into_iter()
                    .map(|(t, v)| (t, Some(v), true))
                    .collect(),
            });
        }
    }
    let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
    h += &chart(&Chart {
        id: "faults".into(),
        title: format!("faults: {}", names.join(", ")),
        unit: "packets/s, all daemons".into(),
        x_max,
        bands: &bands,
        marks: &marks,
        hlines: Vec::new(),
        series,
    });
    h += "<table id=\"counters\"><tr><th>fault</th><th>matched</th><th>dropped</th><th>delayed</th></tr>";
    for f in &r.faults {
        let (m, d, l) = f.samples.iter().fold((0, 0, 0), |a, c| {
            (a.0.max(c.matched), a.1.max(c.dropped), a.2.max(c.delayed))
        });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{m}</td><td>{d}</td><td>{l}</td></tr>",
            esc(&f.name)
        );
    }
    h += "</table><p class=\"muted\">Counters: the highest read of each step's fault, summed over hooks and daemons. Report schema ";
    h += &esc(&r.schema);
    h += ".</p></body></html>\n";
    h
}
