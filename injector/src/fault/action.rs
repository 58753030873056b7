//! A fault's action: which of the action fields of a [`FaultSpec`] is given (one a fault), its
//! validated form ([`Action`], an entry of the action table), and its text in tables.

use std::time::Duration;

use injector_common::Reply;

use super::spec::{FaultSpec, FieldError, Proto, duration, err, percent};

/// Longest delay a fault may add; fq's horizon is sized above it.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Drop with this probability (0, 1].
    Drop(f64),
    Blackhole,
    Delay {
        latency: Duration,
        jitter: Duration,
    },
    /// Answer the sender instead of delivering.
    Reject(Reply),
    /// Send twice with this probability (0, 1].
    Duplicate(f64),
    /// Flip a payload bit with this probability (0, 1].
    Corrupt(f64),
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
        }
    }
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

impl FaultSpec {
    /// The action fields given, with the action-table entry each one is, in table order.
    fn given_actions(&self) -> Vec<(&'static str, injector_common::Action)> {
        use injector_common::Action as K;
        [
            ("loss", self.loss.is_some(), K::Drop),
            ("blackhole", self.blackhole, K::Blackhole),
            ("delay", self.delay.is_some(), K::Delay),
            ("reject", self.reject, K::Reject),
            ("duplicate", self.duplicate.is_some(), K::Duplicate),
            ("corrupt", self.corrupt.is_some(), K::Corrupt),
        ]
        .into_iter()
        .filter(|(_, given, _)| *given)
        .map(|(field, _, kind)| (field, kind))
        .collect()
    }

    /// The action-table entry of the (first) action given, if any.
    pub fn action_kind(&self) -> Option<injector_common::Action> {
        self.given_actions().first().map(|(_, k)| *k)
    }

    /// The action as tables show it, in the user's words: `delay 100ms±10ms`, `loss 5%`,
    /// `blackhole`, `reject`, `reject icmp-host`, `duplicate 5%`, `corrupt 1%`, with `(dry run)`.
    pub fn action_text(&self) -> String {
        let mut a = match (&self.loss, &self.delay, &self.jitter) {
            (Some(l), _, _) => format!("loss {l}"),
            (None, Some(d), Some(j)) => format!("delay {d}±{j}"),
            (None, Some(d), None) => format!("delay {d}"),
            (None, None, _) => match (self.reject, &self.duplicate, &self.corrupt) {
                (true, _, _) => match &self.reject_with {
                    Some(w) => format!("reject {w}"),
                    None => "reject".to_string(),
                },
                (false, Some(d), _) => format!("duplicate {d}"),
                (false, None, Some(c)) => format!("corrupt {c}"),
                (false, None, None) => "blackhole".to_string(),
            },
        };
        if self.dry_run {
            a += " (dry run)";
        }
        a
    }

    /// Validates the action fields (`at` prefixes field names): exactly one action, each with
    /// its parameters. Two actions are refused naming both and saying how to have them: two
    /// faults with the same match (the kernel applies both; a drop or reject ends a packet).
    pub(super) fn action(&self, at: &str, proto: Proto) -> Result<Action, FieldError> {
        let f = |name: &str| format!("{at}{name}");
        match self.given_actions()[..] {
            [] => {
                return Err(err(
                    &f("action"),
                    "give one of loss (e.g. 5%), blackhole, delay (e.g. 100ms), reject, \
                     duplicate (e.g. 5%) or corrupt (e.g. 1%)",
                ));
            }
            [_] => {}
            [(a, _), (b, _), ..] => {
                return Err(err(
                    &f(b),
                    format!(
                        "a fault has one action and {a} is given too; for {a} and {b} together \
                         use two faults with the same match, one with {a} and one with {b}"
                    ),
                ));
            }
        }
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
        Ok(if let Some(l) = &self.loss {
            Action::Drop(share("loss", l)?)
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
        } else {
            let d = self.delay.as_deref().unwrap_or_default();
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
            Action::Delay { latency, jitter }
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
            "faults[0].blackhole: a fault has one action and loss is given too; for loss and \
             blackhole together use two faults with the same match",
        );
        bad(
            |s| s.loss = None,
            "action: give one of loss (e.g. 5%), blackhole",
        );
        bad(
            |s| s.delay = Some("10ms".into()),
            "faults[0].delay: a fault has one action and loss is given too; for loss and delay \
             together use two faults",
        );
        bad(
            |s| {
                s.loss = None;
                s.duplicate = Some("5%".into());
                s.corrupt = Some("1%".into());
            },
            "faults[0].corrupt: a fault has one action and duplicate is given too",
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
}
