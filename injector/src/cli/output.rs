//! Printing what the daemon returns: `-o json` and `-o yaml` as they come, `-o table` laid out for
//! people (faults with their match, action, remaining time and counters summed over hooks).

use injector_common::Outcome;

use crate::fault::action::outcome_columns;
use serde::Serialize;

use super::args::Output;
use crate::{
    api::{FaultView, Status},
    fault::spec::FaultSpec,
};

/// Prints `v` in the chosen format; `table` renders it for people.
pub fn print<T: Serialize>(v: &T, out: Output, table: impl FnOnce(&T) -> String) {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Yaml => print!("{}", serde_saphyr::to_string(v).unwrap_or_default()),
        Output::Table => print!("{}", table(v)),
    }
}

/// Left-aligned columns, two spaces apart.
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = if i + 1 == r.len() { 0 } else { widths[i] }))
            .collect();
        s += line.join("  ").trim_end();
        s.push('\n');
    }
    s
}

/// `10.42.1.0/24 -> 10.42.2.7 tcp :5432` (`<->` both ways).
pub fn matcher(spec: &FaultSpec) -> String {
    let set = |v: &[String]| {
        if v.is_empty() {
            "any".to_string()
        } else {
            v.join(",")
        }
    };
    let arrow = if spec.both_ways { "<->" } else { "->" };
    let mut m = format!("{} {arrow} {}", set(&spec.from), set(&spec.to));
    if let Some(p) = &spec.proto {
        m += &format!(" {p}");
    }
    if !spec.sport.is_empty() {
        m += &format!(" from :{}", spec.sport.join(","));
    }
    if !spec.dport.is_empty() {
        m += &format!(" :{}", spec.dport.join(","));
    }
    m
}

/// The outcomes tables show: matched, then what the listed faults' actions do.
pub fn shown_outcomes(faults: &[FaultView]) -> Vec<Outcome> {
    outcome_columns(faults.iter().map(|f| &f.spec))
}

pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub fn faults_table(faults: &[FaultView]) -> String {
    if faults.is_empty() {
        return "no faults\n".to_string();
    }
    let outcomes = shown_outcomes(faults);
    let mut head: Vec<String> = ["NAME", "ACTION", "MATCH", "FLOWS", "LEFT"]
        .map(String::from)
        .to_vec();
    head.extend(outcomes.iter().map(|o| o.column().to_string()));
    let mut rows = vec![head];
    for f in faults {
        let mut row = vec![
            f.name.clone(),
            f.spec.action_text(),
            matcher(&f.spec),
            f.spec.flows.clone().unwrap_or_else(|| "100%".into()),
            duration(f.remaining_s),
        ];
        row.extend(outcomes.iter().map(|&o| f.total(o).to_string()));
        rows.push(row);
    }
    columns(&rows)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn status_table(v: &Status) -> String {
    let mut s = format!(
        "daemon    injector {}  {}  {}  heartbeat {} ms ago  grace {}s\nkernel    tcx={} fq={} btf={} edt_stamp={}\nbpffs     {}\n",
        v.version,
        if v.ready { "ready" } else { "NOT READY" },
        if v.armed {
            "armed"
        } else {
            "DISARMED (injector arm)"
        },
        v.heartbeat_age_ms,
        v.grace_s,
        yes(v.features.tcx),
        yes(v.features.fq),
        yes(v.features.btf),
        yes(v.features.edt_stamp),
        v.bpffs,
    );
    for why in &v.not_ready {
        s += &format!("not ready {why}\n");
    }
    let mut rows = vec![
        ["INTERFACE", "ROLE", "HOOKS", "ADOPTED", "ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for (name, i) in &v.interfaces {
        rows.push(vec![
            name.clone(),
            i.role.name().to_string(),
            i.hooks.join(","),
            i.adopted.to_string(),
            i.error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    s += "\n";
    s += &columns(&rows);
    s += &format!("\nfaults    {}", v.faults.len());
    let names: Vec<String> = v
        .faults
        .iter()
        .map(|f| format!("{} ({} left)", f.name, duration(f.remaining_s)))
        .collect();
    if !names.is_empty() {
        s += &format!(": {}", names.join(", "));
    }
    s += "\n";
    let prot: Vec<String> = v
        .protected
        .iter()
        .map(|p| format!("{} ({})", p.cidr, p.why))
        .collect();
    s += &format!(
        "protected {}\n",
        if prot.is_empty() {
            "none".into()
        } else {
            prot.join(", ")
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_render_as_a_table() {
        let v: Vec<FaultView> = serde_json::from_str(
            r#"[{"name":"checkout-db","slot":0,"active":true,"forced":false,"remaining_s":299.4,"spec":{"name":"checkout-db","from":["10.42.1.0/24"],"to":["10.42.2.7"],"proto":"tcp","dport":["5432"],"delay":"100ms","jitter":"10ms","for":"5m"},
                 "counters":{"veth_egress":{"matched":{"packets":3,"bytes":1},"delayed":{"packets":3,"bytes":1}},"overlay_egress":{"matched":{"packets":4,"bytes":1},"delayed":{"packets":4,"bytes":1}}}}]"#,
        )
        .unwrap();
        let t = faults_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("NAME") && lines[0].contains("DELAYED"),
            "{t}"
        );
        assert!(
            lines[1].contains("delay 100ms±10ms")
                && lines[1].contains("10.42.1.0/24 -> 10.42.2.7 tcp :5432"),
            "{t}"
        );
        assert!(lines[1].contains("4m59s") && lines[1].ends_with("7"), "{t}");
        assert_eq!(faults_table(&[]), "no faults\n");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(299.6), "5m00s");
        assert_eq!(duration(5400.0), "1h30m");
    }
}
