//! Printing what the daemon returns: `-o json` and `-o yaml` as they come, `-o table` laid out for
//! people (faults with their match, action, remaining time and counters summed over hooks).

use injector_common::{Action, Outcome};
use serde_json::Value;

use super::args::Output;

/// Prints `v` in the chosen format; `table` renders with `table`.
pub fn print(v: &Value, out: Output, table: impl FnOnce(&Value) -> String) {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Yaml => print!("{}", serde_yaml::to_string(v).unwrap_or_default()),
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

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `delay 100ms±10ms`, `loss 5%`, `blackhole`, with `(dry run)`.
pub fn action(spec: &Value) -> String {
    let mut a = if let Some(l) = spec["loss"].as_str() {
        format!("loss {l}")
    } else if let Some(d) = spec["delay"].as_str() {
        match spec["jitter"].as_str() {
            Some(j) => format!("delay {d}±{j}"),
            None => format!("delay {d}"),
        }
    } else {
        "blackhole".to_string()
    };
    if spec["dry_run"].as_bool() == Some(true) {
        a += " (dry run)";
    }
    a
}

/// `10.42.1.0/24 -> 10.42.2.7 tcp :5432` (`<->` both ways).
pub fn matcher(spec: &Value) -> String {
    let set = |k: &str| {
        let v = strs(&spec[k]);
        if v.is_empty() {
            "any".to_string()
        } else {
            v.join(",")
        }
    };
    let arrow = if spec["both_ways"].as_bool() == Some(true) {
        "<->"
    } else {
        "->"
    };
    let mut m = format!("{} {arrow} {}", set("from"), set("to"));
    if let Some(p) = spec["proto"].as_str() {
        m += &format!(" {p}");
    }
    let (sp, dp) = (strs(&spec["sport"]), strs(&spec["dport"]));
    if !sp.is_empty() {
        m += &format!(" from :{}", sp.join(","));
    }
    if !dp.is_empty() {
        m += &format!(" :{}", dp.join(","));
    }
    m
}

/// Packets of one outcome of a fault, summed over its hooks.
pub fn total(f: &Value, o: Outcome) -> u64 {
    f["counters"]
        .as_object()
        .map(|h| {
            h.values()
                .filter_map(|c| c[o.name()]["packets"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// The outcomes tables show, from the action table: matched, then what each action does.
pub fn shown_outcomes() -> Vec<Outcome> {
    let mut v = vec![Outcome::Matched];
    for a in Action::ALL {
        if !v.contains(&a.outcome()) {
            v.push(a.outcome());
        }
    }
    v
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

pub fn faults_table(v: &Value) -> String {
    let outcomes = shown_outcomes();
    let mut head: Vec<String> = ["NAME", "ACTION", "MATCH", "FLOWS", "LEFT"]
        .map(String::from)
        .to_vec();
    head.extend(outcomes.iter().map(|o| o.column().to_string()));
    let mut rows = vec![head];
    let list: Vec<&Value> = match v.as_array() {
        Some(a) => a.iter().collect(),
        None => vec![v],
    };
    for f in list {
        let spec = &f["spec"];
        let mut row = vec![
            f["name"].as_str().unwrap_or("?").to_string(),
            action(spec),
            matcher(spec),
            spec["flows"].as_str().unwrap_or("100%").to_string(),
            duration(f["remaining_s"].as_f64().unwrap_or(0.0)),
        ];
        row.extend(outcomes.iter().map(|&o| total(f, o).to_string()));
        rows.push(row);
    }
    if rows.len() == 1 {
        return "no faults\n".to_string();
    }
    columns(&rows)
}

pub fn status_table(v: &Value) -> String {
    let yes = |b: &Value| {
        if b.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let mut s = format!(
        "daemon    injector {}  {}  {}  heartbeat {} ms ago  grace {}s\nkernel    tcx={} fq={} btf={}\nbpffs     {}\n",
        v["version"].as_str().unwrap_or("?"),
        if v["ready"].as_bool() == Some(true) {
            "ready"
        } else {
            "starting"
        },
        if v["armed"].as_bool() == Some(true) {
            "armed"
        } else {
            "DISARMED (injector arm)"
        },
        v["heartbeat_age_ms"],
        v["grace_s"],
        yes(&v["features"]["tcx"]),
        yes(&v["features"]["fq"]),
        yes(&v["features"]["btf"]),
        v["bpffs"].as_str().unwrap_or("?"),
    );
    let mut rows = vec![
        ["INTERFACE", "ROLE", "HOOKS", "ADOPTED", "ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    if let Some(ifs) = v["interfaces"].as_object() {
        for (name, i) in ifs {
            rows.push(vec![
                name.clone(),
                i["role"].as_str().unwrap_or("?").to_string(),
                strs(&i["hooks"]).join(","),
                i["adopted"].to_string(),
                i["error"].as_str().unwrap_or("-").to_string(),
            ]);
        }
    }
    s += "\n";
    s += &columns(&rows);
    let faults = v["faults"].as_array().map(Vec::len).unwrap_or(0);
    s += &format!("\nfaults    {faults}");
    if let Some(fs) = v["faults"].as_array() {
        let names: Vec<String> = fs
            .iter()
            .map(|f| {
                format!(
                    "{} ({} left)",
                    f["name"].as_str().unwrap_or("?"),
                    duration(f["remaining_s"].as_f64().unwrap_or(0.0))
                )
            })
            .collect();
        if !names.is_empty() {
            s += &format!(": {}", names.join(", "));
        }
    }
    s += "\n";
    let prot: Vec<String> = v["protected"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    format!(
                        "{} ({})",
                        p["cidr"].as_str().unwrap_or("?"),
                        p["why"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
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
        let v: Value = serde_json::from_str(
            r#"[{"name":"checkout-db","remaining_s":299.4,"spec":{"name":"checkout-db","from":["10.42.1.0/24"],"to":["10.42.2.7"],"proto":"tcp","dport":["5432"],"delay":"100ms","jitter":"10ms","for":"5m"},
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
        assert_eq!(faults_table(&Value::Array(vec![])), "no faults\n");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(299.6), "5m00s");
        assert_eq!(duration(5400.0), "1h30m");
    }
}
