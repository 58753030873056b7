//! A fault's action: which of the action fields of a [`FaultSpec`] are given (one a fault, or
//! loss with delay), its validated form ([`Action`], an entry of the action table) with its
//! modifiers (burst, reorder), and its text in tables.

use std::time::Duration;

use injector_common::{Outcome, Reply, dns::Answer};

use super::{
    dns::{self, Dns},
    loss::{self, Loss},
    rate::{self, Rate},
    spec::{FaultSpec, FieldError, Proto, duration, err, percent},
};

/// Longest delay a fault may add; fq's horizon is sized above it.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Drop: independently or in bursts.
    Drop(Loss),
    Blackhole,
    Delay {
        latency: Duration,
        jitter: Duration,
        /// The share sent at once, without the delay (netem's reorder); 0: none.
        reorder: f64,
        /// Lost first, as netem's loss with delay; `None`: none.
        loss: Option<Loss>,
    },
    /// Answer the sender instead of delivering.
    Reject(Reply),
    /// Send twice with this probability (0, 1].
    Duplicate(f64),
    /// Flip a payload bit with this probability (0, 1].
    Corrupt(f64),
    /// Let the matched traffic through at a rate (paced or policed, by node).
    Rate(Rate),
    /// Answer DNS questions for the fault's names with an error, drop or delay the answers.
    Dns(Dns),
}

impl Action {
    /// The entry of the action table (`injector_common::Action`) this action is.
    pub fn kind(&self) -> injector_common::Action {
        use injector_common::Action as K;
        match self {
            Action::Drop(_) => K::Drop,
            Action::Blackhole => K::Blackhole,
            Action::Delay { .. } => K::Delay,
            Action::Reject(_) => K::Reject,
            Action::Duplicate(_) => K::Duplicate,
            Action::Corrupt(_) => K::Corrupt,
            Action::Rate(_) => K::Rate,
            Action::Dns(_) => K::Dns,
        }
    }

    /// How long the action may hold a packet (EDT: the node needs fq and the stamp), if it
    /// holds packets: a delay, or a DNS fault that delays answers.
    pub fn hold(&self) -> Option<Duration> {
        match self {
            Action::Delay {
                latency, jitter, ..
            } => Some(*latency + *jitter),
            Action::Dns(d) if d.answer == Answer::Delay => Some(d.latency + d.jitter),
            _ => None,
        }
    }
}

/// The outcome columns tables show for `specs`: matched, then what their actions (and
/// modifiers) can do, in the action table's order (six actions would be too wide a table to
/// show them all).
pub fn outcome_columns<'a>(specs: impl IntoIterator<Item = &'a FaultSpec>) -> Vec<Outcome> {
    let mut v: Vec<Outcome> = specs.into_iter().flat_map(FaultSpec::outcomes).collect();
    v.push(Outcome::Matched);
    v.sort();
    v.dedup();
    v
}

/// `reject_with`: the reply, `Auto` (by protocol) when not given. A TCP reset answers only TCP.
fn reject_with(field: &str, v: Option<&str>, proto: Proto) -> Result<Reply, FieldError> {
    let Some(v) = v else {
        return Ok(Reply::Auto);
    };
    let r = Reply::ALL
        .into_iter()
        .filter(|r| *r != Reply::Auto)
        .find(|r| r.name() == v.trim().to_ascii_lowercase())
        .ok_or_else(|| {
            err(
                field,
                format!("'{v}': use tcp-reset, icmp-port, icmp-host or icmp-admin"),
            )
        })?;
    if r == Reply::TcpReset && proto != Proto::Tcp {
        return Err(err(
            field,
            "tcp-reset answers only TCP: set proto tcp, or leave the reply out (TCP then gets a \
             reset, other protocols ICMP port unreachable)",
        ));
    }
    Ok(r)
}

/// The action fields that combine in one fault, in table order: a loss with a delay (lost
/// first, the rest delayed; netem's loss and delay). Every other pair is two faults with the
/// same match (the kernel applies both; a drop or reject ends a packet).
const COMBINE: [&str; 2] = ["loss", "delay"];

impl FaultSpec {
    /// The action fields given, with the action-table entry each one is, in table order
    /// (`loss_model` is a loss).
    fn given_actions(&self) -> Vec<(&'static str, injector_common::Action)> {
        use injector_common::Action as K;
        [
            (
                "loss",
                self.loss.is_some() || self.loss_model.is_some(),
                K::Drop,
            ),
            ("blackhole", self.blackhole, K::Blackhole),
            // A dns fault's delay is how long it holds answers, not an action.
            (
                "delay",
                self.delay.is_some() && self.dns.is_none(),
                K::Delay,
            ),
            ("reject", self.reject, K::Reject),
            ("duplicate", self.duplicate.is_some(), K::Duplicate),
            ("corrupt", self.corrupt.is_some(), K::Corrupt),
            ("rate", self.rate.is_some(), K::Rate),
            ("dns", self.dns.is_some(), K::Dns),
        ]
        .into_iter()
        .filter(|(_, given, _)| *given)
        .map(|(field, _, kind)| (field, kind))
        .collect()
    }

    /// The action-table entry of the action given, if any (a loss with a delay is a delay).
    pub fn action_kind(&self) -> Option<injector_common::Action> {
        let g = self.given_actions();
        g.last()
            .filter(|(f, _)| *f == "delay")
            .or(g.first())
            .map(|(_, k)| *k)
    }

    /// What a packet of this fault can count as besides matched and passed, from the action
    /// table, plus dropped for a delay's loss and reordered for its reorder share: the columns
    /// tables show for it.
    pub fn outcomes(&self) -> Vec<Outcome> {
        let mut v: Vec<Outcome> = self
            .given_actions()
            .iter()
            .map(|(_, k)| match (k, self.dns_answer()) {
                (injector_common::Action::Dns, Some(Answer::Drop)) => Outcome::Dropped,
                (injector_common::Action::Dns, Some(Answer::Delay)) => Outcome::Delayed,
                _ => k.outcome(),
            })
            .collect();
        if self.reorder.is_some() {
            v.push(Outcome::Reordered);
        }
        if self.rate.is_some() {
            // Policed, or beyond a paced fault's queue.
            v.push(Outcome::Dropped);
        }
        v
    }

    /// The action as tables show it, in the user's words: `delay 100ms±10ms`, `loss 5%`, `loss
    /// 5% burst 4`, `loss ge:1%,25%`, `blackhole`, `reject`, `reject icmp-host`, `duplicate
    /// 5%`, `corrupt 1%`, `loss 1% + delay 50ms reorder 25%`, with `pulse 10s/30s` and `(dry
    /// run)`.
    pub fn action_text(&self) -> String {
        let mut a = self.dns_text().unwrap_or_else(|| self.other_text());
        if let Some(p) = &self.pulse {
            a += &format!(" pulse {p}");
        }
        if self.dry_run {
            a += " (dry run)";
        }
        a
    }

    /// The `dns` answer word, if it is one.
    fn dns_answer(&self) -> Option<Answer> {
        self.dns.as_deref().and_then(|d| dns::answer("", d).ok())
    }

    /// A DNS fault's text: `dns nxdomain db.local,.svc.cluster.local`, `dns delay 2s±1s db.local`.
    fn dns_text(&self) -> Option<String> {
        let d = self.dns.as_deref()?;
        let mut t = format!("dns {d}");
        if let Some(l) = &self.delay {
            t += &format!(" {l}");
            if let Some(j) = &self.jitter {
                t += &format!("±{j}");
            }
        }
        Some(format!("{t} {}", self.dns_name.join(",")))
    }

    /// The text of the other actions.
    fn other_text(&self) -> String {
        let loss = loss::text(
            self.loss.as_deref(),
            self.burst.as_deref(),
            self.loss_model.as_deref(),
        );
        let delay = self.delay.as_ref().map(|d| {
            let mut t = match &self.jitter {
                Some(j) => format!("delay {d}±{j}"),
                None => format!("delay {d}"),
            };
            if let Some(r) = &self.reorder {
                t += &format!(" reorder {r}");
            }
            t
        });
        match (loss, delay) {
            (Some(l), Some(d)) => format!("{l} + {d}"),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => match (self.reject, &self.duplicate, &self.corrupt, &self.rate) {
                (true, _, _, _) => match &self.reject_with {
                    Some(w) => format!("reject {w}"),
                    None => "reject".to_string(),
                },
                (false, Some(d), _, _) => format!("duplicate {d}"),
                (false, None, Some(c), _) => format!("corrupt {c}"),
                (false, None, None, Some(r)) => match &self.rate_burst {
                    Some(b) => format!("rate {r} burst {b}"),
                    None => format!("rate {r}"),
                },
                (false, None, None, None) => "blackhole".to_string(),
            },
        }
    }

    /// Validates the action fields (`at` prefixes field names): one action, or loss with
    /// delay ([`COMBINE`]), each with its parameters and modifiers. Other pairs are refused
    /// naming both and saying how to have them: two faults with the same match (the kernel
    /// applies both; a drop or reject ends a packet).
    pub(super) fn action(&self, at: &str, proto: Proto) -> Result<Action, FieldError> {
        let f = |name: &str| format!("{at}{name}");
        let given = self.given_actions();
        let Some(&(a, _)) = given.first() else {
            return Err(err(
                &f("action"),
                "give one of loss (e.g. 5%), blackhole, delay (e.g. 100ms), reject, \
                 duplicate (e.g. 5%), corrupt (e.g. 1%), rate (e.g. 10mbit) or dns (e.g. nxdomain, \
                 with dns_name); loss and delay combine",
            ));
        };
        if let Some(&(b, _)) = given[1..]
            .iter()
            .find(|(b, _)| !(COMBINE.contains(&a) && COMBINE.contains(b)))
        {
            return Err(err(
                &f(b),
                format!(
                    "a fault has one action (or loss with delay) and {a} is given too; for {a} \
                     and {b} together use two faults with the same match, one with {a} and one \
                     with {b}"
                ),
            ));
        }
        if self.reorder.is_some() && self.delay.is_none() {
            return Err(err(
                &f("reorder"),
                format!(
                    "'{}': sends that share without the delay, so it needs one: add delay \
                     (e.g. delay 50ms with reorder {0})",
                    self.reorder.as_deref().unwrap_or_default()
                ),
            ));
        }
        let loss = loss::validate(
            &f,
            self.loss.as_deref(),
            self.burst.as_deref(),
            self.loss_model.as_deref(),
        )?;
        let rate = rate::validate(&f, self.rate.as_deref(), self.rate_burst.as_deref())?;
        if self.jitter.is_some() && self.delay.is_none() {
            return Err(err(&f("jitter"), "jitter needs a delay"));
        }
        if self.reject_with.is_some() && !self.reject {
            return Err(err(&f("reject_with"), "a reply is for reject only"));
        }
        // A probability: more than 0% (a fault that never acts only counts: that is dry_run).
        let share = |field: &str, v: &str| -> Result<f64, FieldError> {
            let p = percent(&f(field), v)?;
            if p == 0.0 {
                return Err(err(
                    &f(field),
                    format!("'{v}': must be more than 0% (use dry_run to only count)"),
                ));
            }
            Ok(p)
        };
        Ok(if let (Some(l), None) = (loss, &self.delay) {
            Action::Drop(l)
        } else if self.blackhole {
            Action::Blackhole
        } else if self.reject {
            Action::Reject(reject_with(
                &f("reject_with"),
                self.reject_with.as_deref(),
                proto,
            )?)
        } else if let Some(d) = &self.duplicate {
            Action::Duplicate(share("duplicate", d)?)
        } else if let Some(c) = &self.corrupt {
            Action::Corrupt(share("corrupt", c)?)
        } else if let Some(r) = rate {
            Action::Rate(r)
        } else if let Some(d) = &self.dns {
            Action::Dns(self.dns_action(&f, d)?)
        } else {
            let d = self.delay.as_deref().unwrap_or_default();
            let (latency, jitter) = self.latency_and_jitter(&f, d)?;
            let reorder = match &self.reorder {
                None => 0.0,
                Some(r) => percent(&f("reorder"), r)?,
            };
            Action::Delay {
                latency,
                jitter,
                reorder,
                loss,
            }
        })
    }
}

impl FaultSpec {
    /// The delay `d` (1us..=10s) and the fault's jitter (up to the delay; none if absent).
    fn latency_and_jitter(
        &self,
        f: &dyn Fn(&str) -> String,
        d: &str,
    ) -> Result<(Duration, Duration), FieldError> {
        let latency = duration(
            &f("delay"),
            d,
            (Duration::from_micros(1), "1us"),
            (MAX_DELAY, "10s"),
        )?;
        let jitter = match &self.jitter {
            None => Duration::ZERO,
            Some(j) => duration(
                &f("jitter"),
                j,
                (Duration::ZERO, "0s"),
                (latency, "the delay"),
            )?,
        };
        Ok((latency, jitter))
    }

    /// A DNS fault's answer, and for `delay` how long (the fault's `delay` and `jitter`).
    fn dns_action(&self, f: &dyn Fn(&str) -> String, d: &str) -> Result<Dns, FieldError> {
        let answer = dns::answer(&f("dns"), d)?;
        if self.reorder.is_some() {
            return Err(err(&f("reorder"), "reorder is for delay faults, not dns"));
        }
        let (latency, jitter) = match (answer, &self.delay) {
            (Answer::Delay, None) => {
                return Err(err(
                    &f("delay"),
                    "dns delay holds answers for the fault's delay: add one (e.g. dns delay with \
                     delay 2s)",
                ));
            }
            (Answer::Delay, Some(l)) => self.latency_and_jitter(f, l)?,
            (a, Some(l)) => {
                return Err(err(
                    &f("delay"),
                    format!(
                        "'{l}': a dns {} answer is not held; to hold answers write dns delay \
                         (with delay {l}), or use two faults",
                        a.name()
                    ),
                ));
            }
            (_, None) => (Duration::ZERO, Duration::ZERO),
        };
        Ok(Dns {
            answer,
            latency,
            jitter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::spec::tests::bad;

    #[test]
    fn one_action_a_fault_and_each_action_checked() {
        bad(
            |s| s.blackhole = true,
            "faults[0].blackhole: a fault has one action (or loss with delay) and loss is given \
             too; for loss and blackhole together use two faults with the same match, one with \
             loss and one with blackhole",
        );
        bad(
            |s| s.loss = None,
            "action: give one of loss (e.g. 5%), blackhole",
        );
        bad(
            |s| {
                s.delay = Some("10ms".into());
                s.corrupt = Some("1%".into());
            },
            "faults[0].corrupt: a fault has one action (or loss with delay) and loss is given \
             too; for loss and corrupt together use two faults",
        );
        bad(
            |s| s.reorder = Some("25%".into()),
            "faults[0].reorder: '25%': sends that share without the delay, so it needs one: add \
             delay (e.g. delay 50ms with reorder 25%)",
        );
        bad(
            |s| {
                s.loss = None;
                s.blackhole = true;
                s.burst = Some("4".into());
            },
            "faults[0].burst: '4': a mean burst length is for loss",
        );
        bad(
            |s| s.pulse = Some("10s".into()),
            "faults[0].pulse: '10s': write ON/PERIOD",
        );
        bad(
            |s| {
                s.loss = None;
                s.duplicate = Some("5%".into());
                s.corrupt = Some("1%".into());
            },
            "faults[0].corrupt: a fault has one action (or loss with delay) and duplicate is \
             given too",
        );
        bad(
            |s| {
                s.loss = None;
                s.duplicate = Some("0%".into());
            },
            "duplicate: '0%': must be more than 0%",
        );
        bad(
            |s| {
                s.loss = None;
                s.corrupt = Some("101%".into());
            },
            "corrupt: '101%': must be between 0% and 100%",
        );
        bad(
            |s| {
                s.loss = None;
                s.reject = true;
                s.reject_with = Some("icmp-frob".into());
            },
            "reject_with: 'icmp-frob': use tcp-reset, icmp-port, icmp-host or icmp-admin",
        );
        bad(
            |s| {
                s.loss = None;
                s.reject = true;
                s.reject_with = Some("tcp-reset".into());
            },
            "reject_with: tcp-reset answers only TCP: set proto tcp",
        );
        bad(
            |s| s.reject_with = Some("icmp-port".into()),
            "reject_with: a reply is for reject only",
        );
    }

    #[test]
    fn a_rate_is_an_action_of_its_own_and_its_bucket_is_not_the_loss_burst() {
        let v = |j: &str| {
            let s: FaultSpec = serde_json::from_str(j).unwrap();
            let f = s.validate("").unwrap();
            (f.action, s.action_text(), s.action_kind(), s.outcomes())
        };
        let (a, text, kind, outcomes) =
            v(r#"{"name":"x","rate":"10mbit","rate_burst":"32kb","for":"1m"}"#);
        assert_eq!(
            a,
            Action::Rate(Rate {
                bytes_per_s: 1_250_000,
                burst: 32 * 1024
            })
        );
        assert_eq!(text, "rate 10mbit burst 32kb");
        assert_eq!(kind, Some(injector_common::Action::Rate));
        assert_eq!(outcomes, [Outcome::Delayed, Outcome::Dropped]);
        bad(
            |s| s.rate = Some("10mbit".into()),
            "faults[0].rate: a fault has one action (or loss with delay) and loss is given too; \
             for loss and rate together use two faults",
        );
        bad(
            |s| {
                s.loss = None;
                s.rate = Some("10mbit".into());
                s.burst = Some("32kb".into());
            },
            "faults[0].burst: '32kb': burst is the mean length of a loss burst (packets); a \
             rate's bucket is rate_burst (e.g. rate 10mbit with rate_burst 32kb)",
        );
        bad(
            |s| {
                s.loss = None;
                s.rate = Some("10 mbps".into());
            },
            "faults[0].rate: '10 mbps' is not a rate",
        );
    }

    #[test]
    fn loss_with_delay_is_one_fault_and_modifiers_read_back_in_tables() {
        let v = |j: &str| {
            let s: FaultSpec = serde_json::from_str(j).unwrap();
            let f = s.validate("").unwrap();
            (f.action, s.action_text(), s.action_kind(), s.outcomes())
        };
        let (a, text, kind, outcomes) = v(
            r#"{"name":"x","loss":"1%","delay":"50ms","jitter":"5ms","reorder":"25%","pulse":"10s/30s","for":"1m"}"#,
        );
        assert_eq!(
            a,
            Action::Delay {
                latency: Duration::from_millis(50),
                jitter: Duration::from_millis(5),
                reorder: 0.25,
                loss: Some(Loss::Random(0.01)),
            }
        );
        assert_eq!(text, "loss 1% + delay 50ms±5ms reorder 25% pulse 10s/30s");
        assert_eq!(kind, Some(injector_common::Action::Delay));
        assert_eq!(
            outcomes,
            [Outcome::Dropped, Outcome::Delayed, Outcome::Reordered]
        );
        let (a, text, _, _) = v(r#"{"name":"x","loss":"5%","burst":"4","for":"1m"}"#);
        assert!(
            matches!(a, Action::Drop(Loss::Bursty(g)) if g.r == 0.25),
            "{a:?}"
        );
        assert_eq!(text, "loss 5% burst 4");
        let (a, text, kind, _) = v(r#"{"name":"x","loss_model":"ge:1%,25%","for":"1m"}"#);
        assert!(matches!(a, Action::Drop(Loss::Bursty(_))));
        assert_eq!(
            (text.as_str(), kind),
            ("loss ge:1%,25%", Some(injector_common::Action::Drop))
        );
        let (_, text, _, _) = v(r#"{"name":"x","reject":true,"pulse":"1s/2s","for":"1m"}"#);
        assert_eq!(text, "reject pulse 1s/2s");
        let specs: Vec<FaultSpec> = serde_json::from_str(
            r#"[{"name":"a","blackhole":true,"for":"1m"},{"name":"b","delay":"1ms","reorder":"5%","for":"1m"}]"#,
        )
        .unwrap();
        assert_eq!(
            outcome_columns(&specs),
            [
                Outcome::Matched,
                Outcome::Dropped,
                Outcome::Delayed,
                Outcome::Reordered
            ]
        );
    }

    #[test]
    fn reject_duplicate_and_corrupt_validate_and_read_back_in_tables() {
        let v = |j: &str| {
            let s: FaultSpec = serde_json::from_str(j).unwrap();
            (s.validate("").unwrap().action, s.action_text())
        };
        assert_eq!(
            v(r#"{"name":"r","reject":true,"for":"1m"}"#),
            (Action::Reject(Reply::Auto), "reject".into())
        );
        assert_eq!(
            v(r#"{"name":"r","proto":"tcp","reject":true,"reject_with":"tcp-reset","for":"1m"}"#),
            (Action::Reject(Reply::TcpReset), "reject tcp-reset".into())
        );
        assert_eq!(
            v(r#"{"name":"r","reject":true,"reject_with":"ICMP-Admin","for":"1m"}"#).0,
            Action::Reject(Reply::IcmpAdmin)
        );
        assert_eq!(
            v(r#"{"name":"d","duplicate":"5%","for":"1m"}"#),
            (Action::Duplicate(0.05), "duplicate 5%".into())
        );
        assert_eq!(
            v(r#"{"name":"c","corrupt":"1%","dry_run":true,"for":"1m"}"#),
            (Action::Corrupt(0.01), "corrupt 1% (dry run)".into())
        );
        let s: FaultSpec =
            serde_json::from_str(r#"{"name":"r","reject":true,"for":"1m"}"#).unwrap();
        assert_eq!(s.action_kind(), Some(injector_common::Action::Reject));
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            !json.contains("reject_with") && !json.contains("duplicate"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<FaultSpec>(&json).unwrap(), s);
    }

    #[test]
    fn dns_faults_validate_their_answer_names_and_hold() {
        use crate::fault::spec::{PortRange, Proto};
        let v = |j: &str| {
            let s: FaultSpec = serde_json::from_str(j).unwrap();
            (s.validate("").unwrap(), s.action_text(), s.outcomes())
        };
        let (f, text, outcomes) = v(
            r#"{"name":"x","dns":"NXDOMAIN","dns_name":["db.local",".svc.cluster.local"],"for":"1m"}"#,
        );
        assert_eq!(
            f.action,
            Action::Dns(Dns {
                answer: Answer::NxDomain,
                latency: Duration::ZERO,
                jitter: Duration::ZERO
            })
        );
        assert_eq!(
            (f.proto, f.sport.as_slice()),
            (Proto::Udp, &[PortRange { lo: 53, hi: 53 }][..])
        );
        assert_eq!(f.dns_names.len(), 2);
        assert_eq!(f.action.hold(), None);
        assert_eq!(text, "dns NXDOMAIN db.local,.svc.cluster.local");
        assert_eq!(outcomes, [Outcome::Rejected]);
        let (f, text, outcomes) = v(
            r#"{"name":"x","dns":"delay","delay":"2s","jitter":"100ms","dns_name":["db.local"],"sport":["5353"],"for":"1m"}"#,
        );
        assert_eq!(f.action.hold(), Some(Duration::from_millis(2100)));
        assert_eq!(f.sport, [PortRange { lo: 5353, hi: 5353 }]);
        assert_eq!(text, "dns delay 2s±100ms db.local");
        assert_eq!(outcomes, [Outcome::Delayed]);
        let (_, _, outcomes) = v(r#"{"name":"x","dns":"drop","dns_name":["a.b"],"for":"1m"}"#);
        assert_eq!(outcomes, [Outcome::Dropped]);
        let dns = |s: &mut FaultSpec, a: &str| {
            s.loss = None;
            s.dns = Some(a.into());
            s.dns_name = vec!["db.local".into()];
        };
        bad(
            |s| {
                dns(s, "nxdomain");
                s.dns_name.clear();
            },
            "faults[0].dns_name: a DNS fault needs the names it answers for",
        );
        bad(
            |s| dns(s, "delay"),
            "faults[0].delay: dns delay holds answers for the fault's delay: add one",
        );
        bad(
            |s| {
                dns(s, "servfail");
                s.delay = Some("1s".into());
            },
            "faults[0].delay: '1s': a dns servfail answer is not held; to hold answers write dns \
             delay",
        );
        bad(
            |s| {
                dns(s, "nxdomain");
                s.proto = Some("tcp".into());
            },
            "faults[0].proto: a dns fault judges answers over UDP (TCP answers pass): leave proto \
             out or write udp",
        );
        bad(
            |s| {
                dns(s, "nxdomain");
                s.both_ways = true;
            },
            "faults[0].both_ways: a dns fault judges the answers that reach the pods in to; \
             both_ways does not apply: remove it",
        );
        bad(
            |s| {
                dns(s, "timeout");
            },
            "faults[0].dns: 'timeout': use nxdomain, servfail, refused, drop or delay",
        );
        bad(
            |s| s.dns_name = vec!["db.local".into()],
            "faults[0].dns_name: names are for dns faults: add dns nxdomain (or servfail, \
             refused, drop, delay)",
        );
        bad(
            |s| {
                s.dns = Some("nxdomain".into());
                s.dns_name = vec!["db.local".into()];
            },
            "faults[0].dns: a fault has one action (or loss with delay) and loss is given too",
        );
    }
}
