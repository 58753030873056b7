//! Inline SVG line charts for the HTML report: time on x, the steps shaded, threshold lines,
//! vertical marks (breach, removal, restore), failing samples in red. No script, no fonts to load.

use std::fmt::Write as _;

pub const W: f64 = 960.0;
pub const H: f64 = 240.0;
const L: f64 = 64.0;
const R: f64 = 16.0;
const T: f64 = 24.0;
const B: f64 = 34.0;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// (t, value, ok); `None`: nothing measured (drawn as a red cross on the x axis).
    pub points: Vec<(f64, Option<f64>, bool)>,
}

pub struct Chart<'a> {
    pub id: String,
    pub title: String,
    pub unit: String,
    pub x_max: f64,
    /// Steps: (start, end, label).
    pub bands: &'a [(f64, f64, String)],
    /// Vertical lines: (t, label, colour).
    pub marks: &'a [(f64, String, &'static str)],
    /// Threshold lines: (value, label).
    pub hlines: Vec<(f64, String)>,
    pub series: Vec<Series>,
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub fn chart(c: &Chart) -> String {
    let data = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1));
    let (dlo, dhi) = data.fold((0.0f64, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let dhi = if dhi <= dlo { dlo + 1.0 } else { dhi };
    // A threshold far from the data would flatten it: such lines are pinned to the edge.
    let near = |v: f64| v >= dlo - (dhi - dlo) * 2.0 && v <= dhi + (dhi - dlo) * 2.0;
    let (mut lo, mut hi) = c
        .hlines
        .iter()
        .map(|h| h.0)
        .filter(|&v| near(v))
        .fold((dlo, dhi), |(a, b), v| (a.min(v), b.max(v)));
    if hi <= lo {
        hi = lo + 1.0;
    }
    hi += (hi - lo) * 0.08;
    lo -= if lo < 0.0 { (hi - lo) * 0.05 } else { 0.0 };
    let xm = c.x_max.max(1e-3);
    let x = |t: f64| L + (t / xm).clamp(0.0, 1.0) * (W - L - R);
    let y = |v: f64| T + (1.0 - (v - lo) / (hi - lo)) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg id="{}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img"><title>{}</title><rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>"##,
        esc(&c.id),
        esc(&c.title)
    );
    for (i, (a, b, label)) in c.bands.iter().enumerate() {
        let fill = if i % 2 == 0 { "#fde7c8" } else { "#fcd6a4" };
        let _ = write!(
            s,
            r##"<rect class="step" x="{:.1}" y="{T}" width="{:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#8a5a14">{}</text>"##,
            x(*a),
            (x(*b) - x(*a)).max(1.0),
            H - T - B,
            x(*a) + 3.0,
            T + 12.0,
            esc(label)
        );
    }
    // Axes and grid.
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{}</text>"##,
            W - R,
            y(v),
            y(v),
            L - 6.0,
            y(v) + 4.0,
            nice(v)
        );
    }
    let ticks = 8;
    for i in 0..=ticks {
        let t = xm * f64::from(i) / f64::from(ticks);
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#555">{:.0}s</text>"##,
            x(t),
            H - B + 16.0,
            t
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{L}" x2="{L}" y1="{T}" y2="{:.1}" stroke="#333"/><line x1="{L}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#333"/><text x="{L}" y="14" font-size="12" font-weight="bold">{}</text><text x="{:.1}" y="14" font-size="11" text-anchor="end" fill="#555">{}</text>"##,
        H - B,
        W - R,
        H - B,
        H - B,
        esc(&c.title),
        W - R,
        esc(&c.unit)
    );
    for (v, label) in &c.hlines {
        let (v, label) = match (near(*v), *v > hi) {
            (true, _) => (*v, label.clone()),
            (false, true) => (hi, format!("{label} (above the chart)")),
            (false, false) => (lo, format!("{label} (below the chart)")),
        };
        let (v, label) = (&v, &label);
        let _ = write!(
            s,
            r##"<line class="threshold" x1="{L}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#c0392b">{}</text>"##,
            W - R,
            y(*v),
            y(*v),
            W - R - 2.0,
            y(*v) - 3.0,
            esc(label)
        );
    }
    for (i, (t, label, color)) in c.marks.iter().enumerate() {
        // Marks close together (breach, restored) put their labels on different lines.
        let ly = H - B - 4.0 - 14.0 * i as f64;
        let _ = write!(
            s,
            r##"<line class="mark" x1="{:.1}" x2="{:.1}" y1="{T}" y2="{:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{color}">{}</text>"##,
            x(*t),
            x(*t),
            H - B,
            x(*t) + 3.0,
            ly,
            esc(label)
        );
    }
    for se in &c.series {
        let mut d = String::new();
        let mut pen = false;
        for (t, v, _) in &se.points {
            match v {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen { "L" } else { "M" },
                        x(*t),
                        y(*v)
                    );
                    pen = true;
                }
                None => pen = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                s,
                r##"<path class="series" d="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></path>"##,
                d.trim_end(),
                se.color,
                esc(&se.name)
            );
        }
        for (t, v, ok) in &se.points {
            match v {
                Some(v) => {
                    let _ = write!(
                        s,
                        r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"##,
                        x(*t),
                        y(*v),
                        if *ok { se.color } else { "#c0392b" }
                    );
                }
                None => {
                    let (cx, cy) = (x(*t), H - B);
                    let _ = write!(
                        s,
                        r##"<path class="missing" d="M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}" stroke="#c0392b" stroke-width="2"/>"##,
                        cx - 4.0,
                        cy - 4.0,
                        cx + 4.0,
                        cy + 4.0,
                        cx - 4.0,
                        cy + 4.0,
                        cx + 4.0,
                        cy - 4.0
                    );
                }
            }
        }
    }
    s += "</svg>";
    s
}
