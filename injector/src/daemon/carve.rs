//! Protected targets (the node's addresses, the API server, cluster DNS, the operator's list) and
//! carving them out of a fault: what no fault may touch unless forced.

use serde::Serialize;

use super::{faultset::ApiError, records::Carved};
use crate::{fault::spec::Fault, parse::Cidr};

/// A destination no fault may touch unless forced.
#[derive(Clone, Debug, Serialize)]
pub struct Protected {
    pub cidr: String,
    pub why: String,
    #[serde(skip)]
    pub net: Cidr,
}

/// Carves the protected targets a fault would reach out of it. A protected CIDR is reached when
/// it overlaps a destination set (`to`, and `from` for a both-ways fault); it is then carved out
/// of both `to` and `from` (an exception on each set it overlaps), so the fault leaves every
/// packet of a conversation with it alone: a ping to the node is untouched, request and reply,
/// by a fault on the node's pod subnet. Refused (the field, what it reaches, the fix) when a set
/// is left with no address.
pub(super) fn carve(f: &Fault, protected: &[Protected], at: &str) -> Result<Vec<Carved>, ApiError> {
    let (to, from) = (Cidr::whole(&f.to), Cidr::whole(&f.from));
    let mut dests = vec![(&to, &f.to_except)];
    if f.both_ways {
        dests.push((&from, &f.from_except));
    }
    let reached: Vec<&Protected> = protected
        .iter()
        .filter(|p| {
            dests.iter().any(|(d, except)| {
                d.iter().any(|c| c.overlaps(&p.net)) && !except.iter().any(|e| e.contains(&p.net))
            })
        })
        .collect();
    let mut out = Vec::new();
    for (field, set, cidrs, except) in [
        ("to", &f.to, &to, &f.to_except),
        ("from", &f.from, &from, &f.from_except),
    ] {
        let hit: Vec<&Protected> = reached
            .iter()
            .copied()
            .filter(|p| cidrs.iter().any(|c| c.overlaps(&p.net)))
            .filter(|p| !except.iter().any(|e| e.contains(&p.net)))
            .collect();
        let mut all: Vec<Cidr> = except.clone();
        all.extend(hit.iter().map(|p| p.net));
        if !hit.is_empty() && cidrs.iter().all(|c| c.covered_by(&all)) {
            let what = if set.is_empty() {
                "any address".to_string()
            } else {
                set.iter()
                    .map(Cidr::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let prot: Vec<String> = hit
                .iter()
                .map(|p| format!("{} ({})", p.cidr, p.why))
                .collect();
            return Err(ApiError::Forbidden(format!(
                "{at}{field}: {what} lies entirely in protected {}: nothing is left to target; name other targets, or force it (force=true, --force)",
                prot.join(", ")
            )));
        }
        out.extend(hit.iter().map(|p| Carved {
            field: field.to_string(),
            cidr: p.cidr.clone(),
            why: p.why.clone(),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fault::spec::FaultSpec, parse::cidr};

    fn p(c: &str) -> Protected {
        Protected {
            cidr: c.into(),
            why: "test".into(),
            net: cidr("", c).unwrap(),
        }
    }

    fn fault(json: &str) -> Fault {
        serde_json::from_str::<FaultSpec>(json)
            .unwrap()
            .validate("")
            .unwrap()
    }

    #[test]
    fn protected_targets_are_carved_out_and_a_fault_left_with_nothing_is_refused() {
        let prot = [p("10.42.1.1/32"), p("10.43.0.10/32"), p("10.42.1.0/32")];
        let carved = |j: &str| {
            carve(&fault(j), &prot, "")
                .map(|c| {
                    c.into_iter()
                        .map(|c| format!("{}:{}", c.field, c.cidr))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())
        };
        let ok = |v: &[&str]| Ok(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // Reaching no protected target: nothing carved, also not from the sources.
        assert_eq!(
            carved(r#"{"name":"a","to":["10.42.2.7"],"blackhole":true,"for":"1m"}"#),
            ok(&[])
        );
        // A node's pod subnet: the bridge's and flannel.1's addresses carved out of the
        // destinations and, so their replies pass too, of the (any) sources.
        assert_eq!(
            carved(r#"{"name":"a","to":["10.42.1.0/24"],"blackhole":true,"for":"1m"}"#),
            ok(&[
                "to:10.42.1.1/32",
                "to:10.42.1.0/32",
                "from:10.42.1.1/32",
                "from:10.42.1.0/32"
            ])
        );
        // Sources that do not hold the target are left as they are.
        assert_eq!(
            carved(
                r#"{"name":"a","from":["10.42.2.0/24"],"to":["10.42.1.0/24"],"blackhole":true,"for":"1m"}"#
            ),
            ok(&["to:10.42.1.1/32", "to:10.42.1.0/32"])
        );
        // Any destination: every protected target, from both sets.
        let all = carve(
            &fault(r#"{"name":"a","blackhole":true,"for":"1m"}"#),
            &prot,
            "",
        );
        assert_eq!(all.unwrap().len(), 6);
        // Sources are destinations of a both-ways fault's other direction.
        assert_eq!(
            carved(
                r#"{"name":"a","from":["10.43.0.0/24"],"to":["10.42.2.7"],"blackhole":true,"for":"1m"}"#
            ),
            ok(&[])
        );
        assert_eq!(
            carved(
                r#"{"name":"a","from":["10.43.0.0/24"],"to":["10.42.2.7"],"both_ways":true,"blackhole":true,"for":"1m"}"#
            ),
            ok(&["from:10.43.0.10/32"])
        );
        // Nothing left: refused, naming the field and the protected target.
        let e =
            carved(r#"{"name":"a","to":["10.42.1.1"],"blackhole":true,"for":"1m"}"#).unwrap_err();
        assert!(
            e.starts_with("to: 10.42.1.1/32 lies entirely in protected 10.42.1.1/32"),
            "{e}"
        );
        // A user's exception already covering the target is not carved again.
        assert_eq!(
            carved(
                r#"{"name":"a","to":["10.42.1.0/24"],"to_except":["10.42.1.0/30"],"blackhole":true,"for":"1m"}"#
            ),
            ok(&[])
        );
        // Families never overlap.
        assert_eq!(
            carved(r#"{"name":"a","to":["fd00::/8"],"blackhole":true,"for":"1m"}"#),
            ok(&[])
        );
    }
}
