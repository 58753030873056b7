//! Abort rules (`abort_when`): a probe failing N times in a row during the steps. Pure: the runner
//! feeds each probe's samples in, the first rule that holds says why the experiment stops.

use serde::{Deserialize, Serialize};

use super::{file::ferr, probe::Probe};
use crate::fault::spec::FieldError;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The probe's name.
    pub probe: String,
    /// Abort when it fails this many times in a row (default 1).
    #[serde(default = "one")]
    pub failures_in_a_row: u32,
}

fn one() -> u32 {
    1
}

/// Without `abort_when`: any probe failing this many times in a row.
pub const DEFAULT_IN_A_ROW: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Index into the experiment's probes.
    pub probe: usize,
    pub in_a_row: u32,
    /// As the report says it: `probe "web" failed 2 times in a row (abort_when[0])`.
    pub text: String,
}

/// Checks `abort_when` against the probes; none given: every probe, 3 failures in a row.
pub fn validate(specs: Option<&[RuleSpec]>, probes: &[Probe]) -> Result<Vec<Rule>, FieldError> {
    let Some(specs) = specs else {
        return Ok(probes
            .iter()
            .enumerate()
            .map(|(i, p)| Rule {
                probe: i,
                in_a_row: DEFAULT_IN_A_ROW,
                text: format!(
                    "probe \"{}\" failed {DEFAULT_IN_A_ROW} times in a row (the default rule)",
                    p.name
                ),
            })
            .collect());
    };
    specs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("abort_when[{i}]");
            let probe = probes
                .iter()
                .position(|p| p.name == r.probe)
                .ok_or_else(|| {
                    let names: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
                    ferr(
                        format!("{at}.probe"),
                        format!(
                            "'{}' names no probe; the probes are: {}",
                            r.probe,
                            names.join(", ")
                        ),
                    )
                })?;
            if r.failures_in_a_row == 0 {
                return Err(ferr(
                    format!("{at}.failures_in_a_row"),
                    "must be at least 1",
                ));
            }
            let n = r.failures_in_a_row;
            Ok(Rule {
                probe,
                in_a_row: n,
                text: format!(
                    "probe \"{}\" failed {n} time{} in a row ({at})",
                    r.probe,
                    if n == 1 { "" } else { "s" }
                ),
            })
        })
        .collect()
}

/// Failure streaks per probe, counted while the faults run.
#[derive(Clone, Debug)]
pub struct Streaks {
    rules: Vec<Rule>,
    in_a_row: Vec<u32>,
}

impl Streaks {
    pub fn new(rules: &[Rule], probes: usize) -> Streaks {
        Streaks {
            rules: rules.to_vec(),
            in_a_row: vec![0; probes],
        }
    }

    /// Records one sample; returns the first rule that now holds.
    pub fn sample(&mut self, probe: usize, ok: bool) -> Option<&Rule> {
        let n = &mut self.in_a_row[probe];
        *n = if ok { 0 } else { *n + 1 };
        let n = *n;
        self.rules
            .iter()
            .find(|r| r.probe == probe && n >= r.in_a_row)
    }

    /// The current streak of a probe.
    pub fn failing(&self, probe: usize) -> u32 {
        self.in_a_row[probe]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(probe: usize, in_a_row: u32) -> Rule {
        Rule {
            probe,
            in_a_row,
            text: String::new(),
        }
    }

    #[test]
    fn a_rule_holds_after_n_failures_in_a_row_and_a_pass_resets_it() {
        let mut s = Streaks::new(&[rule(0, 3), rule(1, 1)], 2);
        assert!(s.sample(0, false).is_none());
        assert!(s.sample(0, false).is_none());
        assert!(s.sample(0, true).is_none());
        assert_eq!(s.failing(0), 0);
        assert!(s.sample(0, false).is_none());
        assert!(s.sample(0, false).is_none());
        assert_eq!(s.sample(0, false), Some(&rule(0, 3)));
        assert!(s.sample(1, true).is_none());
        assert_eq!(s.sample(1, false), Some(&rule(1, 1)));
    }

    #[test]
    fn a_probe_without_a_rule_never_aborts() {
        let mut s = Streaks::new(&[rule(0, 1)], 2);
        for _ in 0..10 {
            assert!(s.sample(1, false).is_none());
        }
        assert_eq!(s.failing(1), 10);
    }
}
