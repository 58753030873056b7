//! What `--from`/`--to` and `--*-mode` accept, parsed: label selectors in kubectl's syntax
//! (`app=a,tier in (x,y),!canary,env!=prod`), `svc/[NS/]NAME`, CIDRs, `any`; modes.

use crate::{
    fault::spec::FieldError,
    k8s::resource::{LabelSelector, Mode, Operator, Requirement},
};

/// One side as typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    Pods(LabelSelector),
    Service {
        name: String,
        namespace: Option<String>,
    },
    Cidrs(Vec<String>),
    Any,
}

fn fe(flag: &str, msg: impl Into<String>) -> FieldError {
    FieldError {
        field: flag.to_string(),
        msg: msg.into(),
    }
}

/// `--from`/`--to`'s value: `any`, `svc/NAME`, `svc/NS/NAME`, CIDRs (comma-separated), or else a
/// label selector. CIDRs are told apart by their first character (a digit, or ':' in IPv6).
pub fn parse_target(flag: &str, v: &str) -> Result<Parsed, FieldError> {
    let t = v.trim();
    if t == "any" {
        return Ok(Parsed::Any);
    }
    if let Some(rest) = ["svc/", "service/", "services/"]
        .iter()
        .find_map(|p| t.strip_prefix(p))
    {
        let parts: Vec<&str> = rest.split('/').collect();
        return match parts[..] {
            [name] if !name.is_empty() => Ok(Parsed::Service {
                name: name.to_string(),
                namespace: None,
            }),
            [ns, name] if !ns.is_empty() && !name.is_empty() => Ok(Parsed::Service {
                name: name.to_string(),
                namespace: Some(ns.to_string()),
            }),
            _ => Err(fe(
                flag,
                format!("'{v}': write svc/NAME or svc/NAMESPACE/NAME (e.g. svc/payments-db)"),
            )),
        };
    }
    if looks_like_address(t) {
        return Ok(Parsed::Cidrs(
            t.split(',').map(|c| c.trim().to_string()).collect(),
        ));
    }
    parse_selector(flag, t).map(Parsed::Pods)
}

/// An address or CIDR list: no selector operator, and a digit or ':' first.
fn looks_like_address(t: &str) -> bool {
    let first = t.chars().next().unwrap_or(' ');
    !t.contains(['=', '!', '(']) && (first.is_ascii_digit() || t.contains(':'))
}

/// Splits at commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

const SYNTAX: &str =
    "write key=value, key!=value, key in (a,b), key notin (a,b), key or !key, comma-separated";

/// A label selector in kubectl's syntax: `=`/`==` become matchLabels; `!=`, `in`, `notin`,
/// `key` and `!key` matchExpressions, in the order given. `''` selects everything. Keys and
/// values are checked by the resource's validation (the same rules as the API server's).
pub fn parse_selector(flag: &str, s: &str) -> Result<LabelSelector, FieldError> {
    let mut sel = LabelSelector::default();
    if s.trim().is_empty() {
        return Ok(sel);
    }
    for term in terms(s) {
        let t = term.trim();
        let bad = |why: &str| fe(flag, format!("'{t}' in '{s}': {why}"));
        if t.is_empty() {
            return Err(bad(&format!("an empty requirement; {SYNTAX}")));
        }
        if t.contains(['<', '>']) {
            return Err(bad(
                "Gt/Lt are not in a label selector's matchExpressions; list values with in (a,b)",
            ));
        }
        let req = |key: &str, operator, values: Vec<String>| Requirement {
            key: key.trim().to_string(),
            operator,
            values,
        };
        if let Some(key) = t.strip_prefix('!') {
            sel.match_expressions
                .push(req(key, Operator::DoesNotExist, vec![]));
        } else if let Some((k, v)) = t.split_once("!=") {
            sel.match_expressions
                .push(req(k, Operator::NotIn, vec![v.trim().to_string()]));
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if let Some(old) = sel.match_labels.get(&k).filter(|old| **old != v) {
                return Err(bad(&format!(
                    "'{k}' is also {old}: no pod has both; write {k} in ({old},{v})"
                )));
            }
            sel.match_labels.insert(k, v);
        } else if let Some((k, rest)) = t.split_once(char::is_whitespace) {
            let rest = rest.trim_start();
            let (op, list) = if let Some(l) = rest.strip_prefix("notin") {
                (Operator::NotIn, l)
            } else if let Some(l) = rest.strip_prefix("in") {
                (Operator::In, l)
            } else {
                return Err(bad(SYNTAX));
            };
            let inner = list
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| bad("the values go in parentheses: key in (a,b)"))?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                return Err(bad("list at least one value: key in (a,b)"));
            }
            sel.match_expressions.push(req(k, op, values));
        } else if t.contains(['(', ')']) {
            return Err(bad(SYNTAX));
        } else {
            sel.match_expressions.push(req(t, Operator::Exists, vec![]));
        }
    }
    Ok(sel)
}

/// `all`, `one`, `fixed=N` or `percent=P` (also `percent=P%`).
pub fn parse_mode(flag: &str, v: &str) -> Result<(Mode, Option<u32>), FieldError> {
    let t = v.trim();
    let usage = || {
        fe(
            flag,
            format!("'{v}': use all, one, fixed=N (N pods) or percent=P (P% of them, rounded up)"),
        )
    };
    let (mode, value) = match t.split_once('=') {
        None => match t {
            "all" => return Ok((Mode::All, None)),
            "one" => return Ok((Mode::One, None)),
            "fixed" | "percent" => {
                return Err(fe(
                    flag,
                    format!("'{v}' needs a value: {t}=N (e.g. fixed=2, percent=30)"),
                ));
            }
            _ => return Err(usage()),
        },
        Some(("fixed", n)) => (Mode::Fixed, n.trim()),
        Some(("percent", n)) => (Mode::Percent, n.trim().trim_end_matches('%')),
        Some(_) => return Err(usage()),
    };
    let n: u32 = value.parse().map_err(|_| {
        fe(
            flag,
            format!("'{v}': '{value}' is not a whole number (e.g. fixed=2, percent=30)"),
        )
    })?;
    Ok((mode, Some(n)))
}
