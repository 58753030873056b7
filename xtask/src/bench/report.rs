//! What a benchmark part returns (a titled table of rows, each injector next to the alternative
//! measured in the same run) and the markdown report with the machine, kernel, date and command.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

pub struct Row {
    pub what: String,
    pub ours: String,
    pub alt: String,
    /// injector relative to the alternative, oriented so that > 1 is better for injector.
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

impl Row {
    pub fn new(what: impl Into<String>, ours: impl Into<String>, alt: impl Into<String>) -> Row {
        Row {
            what: what.into(),
            ours: ours.into(),
            alt: alt.into(),
            ratio: None,
            goal: String::new(),
            met: None,
        }
    }

    pub fn ratio(mut self, r: f64) -> Row {
        self.ratio = Some(r);
        self
    }

    /// A goal and whether this run met it.
    pub fn goal(mut self, goal: impl Into<String>, met: bool) -> Row {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
}

pub struct Section {
    pub title: String,
    /// What the alternative column holds (e.g. "iptables + ipset").
    pub alt_name: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: &str, alt_name: &str) -> Section {
        Section {
            title: title.into(),
            alt_name: alt_name.into(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("## {}\n\n", self.title);
        let _ = writeln!(
            s,
            "| measurement | injector | {} | ratio | goal | met |\n|---|---|---|---|---|---|",
            self.alt_name
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                r.what,
                r.ours,
                r.alt,
                r.ratio.map_or("".into(), |x| format!("{x:.2}x")),
                r.goal,
                match r.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                }
            );
        }
        for n in &self.notes {
            let _ = write!(s, "\n{n}\n");
        }
        s
    }

    /// One line of JSON, for a part measured inside the VM and reported by the host.
    pub fn to_json(&self) -> String {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({"what": r.what, "ours": r.ours, "alt": r.alt, "ratio": r.ratio,
                       "goal": r.goal, "met": r.met})
            })
            .collect();
        json!({"title": self.title, "alt_name": self.alt_name, "rows": rows, "notes": self.notes})
            .to_string()
    }

    pub fn from_json(line: &str) -> Result<Section> {
        let v: Value = serde_json::from_str(line).context("a section line from the VM")?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Ok(Section {
            title: text(&v["title"]),
            alt_name: text(&v["alt_name"]),
            rows: v["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Row {
                    what: text(&r["what"]),
                    ours: text(&r["ours"]),
                    alt: text(&r["alt"]),
                    ratio: r["ratio"].as_f64(),
                    goal: text(&r["goal"]),
                    met: r["met"].as_bool(),
                })
                .collect(),
            notes: v["notes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect(),
        })
    }
}

fn first_line(prog: &str, args: &[&str]) -> String {
    std::process::Command::new(prog)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The whole report: a header naming the machine, kernels, date, commit and command, then
/// every section.
pub fn document(sections: &[Section], command: &str, vm_kernel: &str, quick: bool) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .map_or("?".into(), |kb| format!("{} GiB", kb / 1024 / 1024));
    let mut s = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        s,
        "Generated by `{command}`{}. Every number next to its alternative was measured in the same \
         run on the same lab; absolute numbers on this shared machine are noise, the ratios are \
         the result.\n",
        if quick {
            " (quick mode: short runs, a smoke test, not a result)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "- date: {}",
        first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        s,
        "- machine: {} x {cpu}, {mem}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(s, "- host kernel: {}", first_line("uname", &["-r"]));
    let _ = writeln!(
        s,
        "- VM kernel (delay fidelity): {vm_kernel}, QEMU TCG -icount shift=0"
    );
    let _ = writeln!(
        s,
        "- commit: {}",
        first_line("git", &["describe", "--always", "--dirty"])
    );
    let _ = writeln!(
        s,
        "- reproduce: `{command}` (as root; installs what it needs)\n"
    );
    for sec in sections {
        s += &sec.markdown();
        s += "\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_survives_the_trip_out_of_the_vm() {
        let mut s = Section::new("5. t", "netem");
        s.rows
            .push(Row::new("a | b", "1", "2").ratio(0.5).goal(">= 1", false));
        s.rows.push(Row::new("c", "3", ""));
        s.notes.push("n".into());
        let back = Section::from_json(&s.to_json()).unwrap();
        assert_eq!(back.markdown(), s.markdown());
        assert!(s.markdown().contains("| 0.50x | >= 1 | **no** |"));
        assert!(Section::from_json("not json").is_err());
    }
}
