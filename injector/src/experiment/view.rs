//! The live terminal view: the step and its time left as a progress bar, each probe's last value
//! against its threshold, the faults' counters and rates. Redrawn in place on a terminal; on a
//! pipe, only the events (steps, failures, the abort, the verdict) as lines.

use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    time::Duration,
};

use super::{backend::Counts, file::Experiment, probe::Outcome};
use crate::cli::output::columns;

/// What the view shows; the runner keeps it current.
#[derive(Default)]
pub struct Live {
    /// 0-based step running, with its elapsed time.
    pub step: Option<(usize, Duration)>,
    pub phase: String,
    /// Per probe: the last outcome and the failure streak.
    pub last: Vec<Option<(Outcome, u32)>>,
    pub counters: BTreeMap<String, Counts>,
    /// Dropped and delayed packets per second, per fault.
    pub rates: BTreeMap<String, (f64, f64)>,
}

pub struct View {
    tty: bool,
    drawn: usize,
}

impl Default for View {
    fn default() -> Self {
        View {
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
        }
    }
}

/// `[#########-----------]` for `done` of 1.
pub fn bar(done: f64, width: usize) -> String {
    let n = ((done.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(n), "-".repeat(width - n))
}

impl View {
    /// A line that stays (above the live block on a terminal).
    pub fn event(&mut self, line: &str) {
        let mut out = std::io::stdout().lock();
        self.clear(&mut out);
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn clear(&mut self, out: &mut impl std::io::Write) {
        if self.tty && self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// Redraws the live block (terminal only).
    pub fn draw(&mut self, exp: &Experiment, live: &Live) {
        if !self.tty {
            return;
        }
        let text = render(exp, live);
        let mut out = std::io::stdout().lock();
        self.clear(&mut out);
        let _ = write!(out, "{text}");
        let _ = out.flush();
        self.drawn = text.lines().count();
    }
}

/// The live block as text.
pub fn render(exp: &Experiment, live: &Live) -> String {
    let mut s = String::new();
    match live.step {
        Some((k, el)) => {
            let st = &exp.steps[k];
            let left = st.duration.saturating_sub(el).as_secs_f64();
            s += &format!(
                "step {}/{} {:<16} {} {:>5.1}s left   (Ctrl-C aborts)\n",
                k + 1,
                exp.steps.len(),
                st.name,
                bar(el.as_secs_f64() / st.duration.as_secs_f64(), 30),
                left
            );
        }
        None => s += &format!("{}\n", live.phase),
    }
    let mut rows = vec![
        ["PROBE", "LAST", "THRESHOLD", "STATE", "FAILS"]
            .map(String::from)
            .to_vec(),
    ];
    for (i, p) in exp.probes.iter().enumerate() {
        let (last, state, fails) = match live.last.get(i).and_then(Option::as_ref) {
            Some((o, f)) => (
                o.detail.clone(),
                if o.ok { "ok" } else { "FAIL" }.to_string(),
                f.to_string(),
            ),
            None => ("-".into(), "-".into(), "0".into()),
        };
        let last: String = last.chars().take(60).collect();
        rows.push(vec![p.name.clone(), last, p.threshold(), state, fails]);
    }
    s += &columns(&rows);
    if !live.counters.is_empty() {
        let mut rows = vec![
            [
                "FAULT",
                "MATCHED",
                "DROPPED",
                "DELAYED",
                "DROPPED/s",
                "DELAYED/s",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for (name, c) in &live.counters {
            let (d, l) = live.rates.get(name).copied().unwrap_or_default();
            rows.push(vec![
                name.clone(),
                c[0].to_string(),
                c[1].to_string(),
                c[2].to_string(),
                format!("{d:.0}"),
                format!("{l:.0}"),
            ]);
        }
        s += &columns(&rows);
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::experiment::{file::load, probe::Outcome};

    #[test]
    fn the_live_block_shows_step_bar_probes_and_counters() {
        let exp = load(
            "t.yaml",
            "hypothesis: h\nsteady_state: [{name: web, command: {run: ['true']}}]\nsteps: [{name: small, duration: 10s, faults: [{name: w, to: [10.42.2.2], loss: 1%}]}]\n",
        )
        .unwrap();
        let live = Live {
            step: Some((0, Duration::from_secs(5))),
            last: vec![Some((
                Outcome {
                    value: Some(1.0),
                    ok: false,
                    latency_ms: None,
                    detail: "exit 1".into(),
                },
                2,
            ))],
            counters: [("w".to_string(), [100, 1, 0])].into(),
            rates: [("w".to_string(), (10.0, 0.0))].into(),
            ..Live::default()
        };
        let t = render(&exp, &live);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("step 1/1 small"), "{t}");
        assert!(
            lines[0].contains(&bar(0.5, 30)) && lines[0].contains("5.0s left"),
            "{t}"
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["web", "exit", "1", "exit", "0", "FAIL", "2"]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["w", "100", "1", "0", "10", "0"]
        );
        assert_eq!(bar(0.25, 8), "[##------]");
    }
}
