//! The user's vocabulary: a fault as written in a file or on the command line ([`FaultSpec`],
//! strings as people write them), and its validated form ([`Fault`]). Validation errors name the
//! field, the value and the fix.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::{
    action::{Action, MAX_DELAY},
    dns::{Dns, DnsName},
    loss::{Ge, Loss},
    pulse::Pulse,
    rate::Rate,
};
use crate::parse::{self, Cidr};

/// A fault as written: `{"name": "db-loss", "to": ["10.42.2.7"], "proto": "tcp", "dport": ["5432"],
/// "loss": "5%", "for": "5m"}`. One action: `loss`, `blackhole`, `delay`, `reject`,
/// `duplicate`, `corrupt`, `rate` or `dns` (with `dns_name`), or `loss` with `delay` (two faults with the same match combine the
/// others); modifiers: `burst`/`loss_model` (loss), `reorder` (delay), `pulse` (any). The same
/// struct is `injector fault add`'s flags (`--to`, `--loss`, ...), so files, the API and the
/// command line share one definition; each field's doc is its `--help` line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FaultSpec {
    /// The fault's name (a-z, 0-9, '-', '.', '_').
    pub name: String,
    /// Source CIDRs (comma-separated or repeated); default: any.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nonempty_from"
    )]
    #[arg(long, value_delimiter = ',')]
    pub from: Vec<String>,
    /// Destination CIDRs; default: any. Protected addresses they reach are carved out (--force
    /// includes them).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nonempty_to"
    )]
    #[arg(long, value_delimiter = ',')]
    pub to: Vec<String>,
    /// CIDRs inside `from` the fault leaves alone (as NetworkPolicy's `ipBlock.except`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[arg(long, value_delimiter = ',')]
    pub from_except: Vec<String>,
    /// CIDRs inside `to` the fault leaves alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[arg(long, value_delimiter = ',')]
    pub to_except: Vec<String>,
    /// tcp, udp, icmp (ICMP and ICMPv6) or any (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub proto: Option<String>,
    /// Source ports or ranges: 53, 8000-8080 (comma-separated); default: any.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nonempty_sport"
    )]
    #[arg(long, value_delimiter = ',')]
    pub sport: Vec<String>,
    /// Destination ports or ranges: 5432, 8000-8080.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nonempty_dport"
    )]
    #[arg(long, value_delimiter = ',')]
    pub dport: Vec<String>,
    /// Also the reverse direction (from <-> to, sport <-> dport).
    #[serde(default)]
    #[arg(long)]
    pub both_ways: bool,
    /// Drop this share of packets: 5%, 0.01%. With --delay: lost first, the rest delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub loss: Option<String>,
    /// Losses come in bursts of this mean length (packets, >= 1): a Gilbert-Elliott model with
    /// the mean loss of --loss: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub burst: Option<String>,
    /// Instead of --loss: the Gilbert-Elliott model itself, ge:p,r[,h[,k]] in percent as netem's
    /// gemodel (p = P(good->bad), r = P(bad->good), h/k = P(delivered) in bad/good; defaults
    /// 0%, 100%): ge:1%,25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub loss_model: Option<String>,
    /// Drop every packet, silently.
    #[serde(default)]
    #[arg(long)]
    pub blackhole: bool,
    /// Hold packets this long: 100ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub delay: Option<String>,
    /// Uniform +- jitter around the delay: 10ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub jitter: Option<String>,
    /// Send this share of a delay's packets at once, without the delay, so later packets
    /// overtake the delayed ones (netem's reorder): 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub reorder: Option<String>,
    /// Answer the sender at once instead of delivering: a TCP reset for TCP, ICMP port
    /// unreachable for the rest (see --reject-with).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[arg(long)]
    pub reject: bool,
    /// The answer: tcp-reset, icmp-port, icmp-host or icmp-admin (default: by protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, requires = "reject")]
    pub reject_with: Option<String>,
    /// Send this share of packets twice: 5%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub duplicate: Option<String>,
    /// Flip one random payload bit in this share of packets, checksums left as they were (the
    /// receiver discards them): 1%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub corrupt: Option<String>,
    /// Let the matched traffic through at this rate, in aggregate: 10mbit (tc's units). Paced
    /// in fq where the node has it, else policed (above the rate dropped); the reply says which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub rate: Option<String>,
    /// The rate's bucket: bytes that may leave at once after a pause: 32kb (default: 256kb, or
    /// 10 ms at the rate if more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, requires = "rate")]
    pub rate_burst: Option<String>,
    /// Answer DNS questions for --dns-name with this instead of the resolver's answer:
    /// nxdomain, servfail, refused, drop (the client times out and retries) or delay (with
    /// --delay). Acts on answers over UDP from port 53 (see --sport) to the pods in --to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub dns: Option<String>,
    /// The names a --dns fault answers for: payments.default.svc.cluster.local, or
    /// .svc.cluster.local for every name under it (comma-separated or repeated; at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[arg(long, value_delimiter = ',')]
    pub dns_name: Vec<String>,
    /// Act only ON of every PERIOD from the fault's start, with any action (the kernel keeps
    /// the beat, also with the daemon gone): 10s/30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub pulse: Option<String>,
    /// Hit only this share of flows (connections), chosen by a seeded hash: 20%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub flows: Option<String>,
    /// Seed of the flow choice (same seed, same flows).
    #[serde(default)]
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Lifetime from when it is applied; the kernel ends the fault then: 30s, 5m, 1h (at most 24h).
    #[serde(rename = "for")]
    #[arg(long = "for", default_value = "5m")]
    pub lifetime: String,
    /// Count what the fault would hit; touch nothing.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// A validated fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub name: String,
    /// Sources (empty: any), less `from_except`.
    pub from: Vec<Cidr>,
    pub from_except: Vec<Cidr>,
    /// Destinations (empty: any), less `to_except`.
    pub to: Vec<Cidr>,
    pub to_except: Vec<Cidr>,
    pub proto: Proto,
    pub sport: Vec<PortRange>,
    pub dport: Vec<PortRange>,
    pub both_ways: bool,
    pub action: Action,
    /// The names a DNS fault answers for (empty for other actions).
    pub dns_names: Vec<DnsName>,
    /// Acts only in on-windows; `None`: always.
    pub pulse: Option<Pulse>,
    /// Share of flows hit, in parts per million.
    pub flows_ppm: u32,
    pub seed: u32,
    pub lifetime: Duration,
    pub dry_run: bool,
}

/// A validation error: `field: message`, where the message names the value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {msg}")]
pub struct FieldError {
    pub field: String,
    pub msg: String,
}

pub(super) fn err(field: &str, msg: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        msg: msg.into(),
    }
}

pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Parses `5%`, `0.0001%`, `100%` into a fraction in [0, 1].
pub fn percent(field: &str, v: &str) -> Result<f64, FieldError> {
    let bad = || {
        err(
            field,
            format!("'{v}' is not a percentage; write e.g. 5% or 0.1%"),
        )
    };
    let n: f64 = v
        .trim()
        .strip_suffix('%')
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if !n.is_finite() || !(0.0..=100.0).contains(&n) {
        return Err(err(field, format!("'{v}': must be between 0% and 100%")));
    }
    Ok(n / 100.0)
}

/// Parses `5432` or `8000-8080`.
pub fn port_range(field: &str, v: &str) -> Result<PortRange, FieldError> {
    let p = |s: &str| -> Result<u16, FieldError> {
        match s.trim().parse::<u32>() {
            Ok(n) if n <= 65535 => Ok(n as u16),
            _ => Err(err(
                field,
                format!("'{v}': ports are 0-65535; write e.g. 5432 or 8000-8080"),
            )),
        }
    };
    let (lo, hi) = match v.split_once('-') {
        Some((a, b)) => (p(a)?, p(b)?),
        None => {
            let x = p(v)?;
            (x, x)
        }
    };
    if lo > hi {
        return Err(err(
            field,
            format!("'{v}': range is backwards; write {hi}-{lo}"),
        ));
    }
    Ok(PortRange { lo, hi })
}

/// A duration field bounded by `min..=max`, the error naming `field` (also the experiment file's).
pub(crate) fn duration(
    field: &str,
    v: &str,
    min: (Duration, &'static str),
    max: (Duration, &'static str),
) -> Result<Duration, FieldError> {
    // parse::duration names its field as a static str; rebuild the message with ours.
    parse::duration("", v, min, max)
        .map_err(|e| err(field, e.to_string().trim_start_matches(": ").to_string()))
}

fn cidrs(field: &str, vs: &[String]) -> Result<Vec<Cidr>, FieldError> {
    vs.iter()
        .map(|v| {
            parse::cidr("", v)
                .map_err(|e| err(field, e.to_string().trim_start_matches(": ").to_string()))
        })
        .collect()
}

/// Checks `set`'s exceptions (named `{field}_except`): each lies inside a CIDR of `set` (or `set`
/// is any), and they leave some address of `set`.
fn excepts(at: &str, field: &str, set: &[Cidr], except: &[Cidr]) -> Result<Vec<Cidr>, FieldError> {
    let fe = format!("{at}{field}_except");
    for e in except {
        if !set.is_empty() && !set.iter().any(|c| c.contains(e)) {
            return Err(err(
                &fe,
                format!(
                    "'{e}' lies outside every CIDR of {field}; an exception must be inside one of them"
                ),
            ));
        }
    }
    if !except.is_empty() && Cidr::whole(set).iter().all(|c| c.covered_by(except)) {
        return Err(err(
            &fe,
            format!(
                "covers every address of {field}: the fault could match nothing; remove some exceptions"
            ),
        ));
    }
    Ok(except.to_vec())
}

fn is_valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
}

impl FaultSpec {
    /// Validates every field; `at` prefixes field names (e.g. `faults[2].`).
    pub fn validate(&self, at: &str) -> Result<Fault, FieldError> {
        let f = |name: &str| format!("{at}{name}");
        if !is_valid_name(&self.name) {
            return Err(err(
                &f("name"),
                format!(
                    "'{}': use 1-63 characters of a-z, 0-9, '-', '.', '_' (e.g. checkout-db)",
                    self.name
                ),
            ));
        }
        let from = cidrs(&f("from"), &self.from)?;
        let to = cidrs(&f("to"), &self.to)?;
        let from_except = excepts(
            at,
            "from",
            &from,
            &cidrs(&f("from_except"), &self.from_except)?,
        )?;
        let to_except = excepts(at, "to", &to, &cidrs(&f("to_except"), &self.to_except)?)?;
        let families = |c: &[Cidr]| {
            (
                c.is_empty() || c.iter().any(|c| c.addr.is_ipv4()),
                c.is_empty() || c.iter().any(|c| c.addr.is_ipv6()),
            )
        };
        let (fv4, fv6) = families(&from);
        let (tv4, tv6) = families(&to);
        if !((fv4 && tv4) || (fv6 && tv6)) {
            return Err(err(
                &f("to"),
                "from and to share no address family (one is IPv4, the other IPv6): no packet can match",
            ));
        }
        let proto = match self
            .proto
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("any") => Proto::Any,
            Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some("icmp") | Some("icmpv6") => Proto::Icmp,
            Some(other) => {
                return Err(err(
                    &f("proto"),
                    format!("'{other}': use tcp, udp, icmp or any"),
                ));
            }
        };
        // A DNS fault judges answers: UDP (an answer over TCP is not judged), from port 53
        // unless the sport says otherwise, in one direction.
        let proto = if self.dns.is_some() {
            if !matches!(proto, Proto::Any | Proto::Udp) {
                return Err(err(
                    &f("proto"),
                    "a dns fault judges answers over UDP (TCP answers pass): leave proto out or \
                     write udp",
                ));
            }
            if self.both_ways {
                return Err(err(
                    &f("both_ways"),
                    "a dns fault judges the answers that reach the pods in to; both_ways does not \
                     apply: remove it",
                ));
            }
            Proto::Udp
        } else {
            proto
        };
        let mut sport = self
            .sport
            .iter()
            .map(|v| port_range(&f("sport"), v))
            .collect::<Result<Vec<_>, _>>()?;
        if self.dns.is_some() && sport.is_empty() {
            sport.push(PortRange { lo: 53, hi: 53 });
        }
        let dns_names = match (&self.dns, self.dns_name.is_empty()) {
            (Some(_), _) => super::dns::names(&f("dns_name"), &self.dns_name)?,
            (None, true) => Vec::new(),
            (None, false) => {
                return Err(err(
                    &f("dns_name"),
                    "names are for dns faults: add dns nxdomain (or servfail, refused, drop, \
                     delay)",
                ));
            }
        };
        let dport = self
            .dport
            .iter()
            .map(|v| port_range(&f("dport"), v))
            .collect::<Result<Vec<_>, _>>()?;
        if (!sport.is_empty() || !dport.is_empty()) && !matches!(proto, Proto::Tcp | Proto::Udp) {
            return Err(err(
                &f("proto"),
                "port ranges need proto tcp or udp (ports exist only there)",
            ));
        }
        let action = self.action(at, proto)?;
        let pulse = self
            .pulse
            .as_deref()
            .map(|p| super::pulse::parse(&f("pulse"), p))
            .transpose()?;
        let flows_ppm = match &self.flows {
            None => 1_000_000,
            Some(v) => {
                let p = percent(&f("flows"), v)?;
                let ppm = (p * 1e6).round() as u32;
                if ppm == 0 {
                    // Flows are chosen in parts per million: less would silently match nothing.
                    return Err(err(
                        &f("flows"),
                        format!("'{v}': the smallest share of flows is 0.0001% (1 in a million)"),
                    ));
                }
                ppm
            }
        };
        let lifetime = duration(
            &f("for"),
            &self.lifetime,
            (Duration::from_millis(1), "1ms"),
            (MAX_LIFETIME, "24h"),
        )?;
        Ok(Fault {
            name: self.name.clone(),
            from,
            from_except,
            to,
            to_except,
            proto,
            sport,
            dport,
            both_ways: self.both_ways,
            action,
            dns_names,
            pulse,
            flows_ppm,
            seed: self.seed,
            lifetime,
            dry_run: self.dry_run,
        })
    }
}

/// A match list given explicitly must not be empty: `"to": []` would otherwise read as the
/// absent field's "any" and widen the fault to every destination (or port).
fn nonempty<'de, D: serde::Deserializer<'de>>(d: D, field: &str) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom(format!(
            "{field}: an empty list; omit `{field}` to match any, or list at least one value"
        )));
    }
    Ok(v)
}

fn nonempty_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    nonempty(d, "from")
}

fn nonempty_to<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    nonempty(d, "to")
}

fn nonempty_sport<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    nonempty(d, "sport")
}

fn nonempty_dport<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    nonempty(d, "dport")
}

/// Requests at least this large are split into their faults and parsed on every CPU.
const PARALLEL_FROM: usize = 256 * 1024;

/// A JSON list of faults. A large one (100k prefixes is ~2 MB) is cut into its elements first
/// (a scan that allocates no string) and the faults parsed in parallel. A small one is parsed in
/// place: no thread is woken for the common one-fault request.
fn parse_array(text: &str) -> serde_json::Result<Vec<FaultSpec>> {
    if text.len() < PARALLEL_FROM {
        return serde_json::from_str(text);
    }
    let parts: Vec<&serde_json::value::RawValue> = serde_json::from_str(text)?;
    crate::par::map(&parts, true, |_, p| serde_json::from_str(p.get()))
        .into_iter()
        .collect()
}

impl FaultSpec {
    /// Whether `specs` name CIDRs enough (4096) that validating, carving and storing them is
    /// worth spreading over every CPU ([`crate::par::map`]).
    pub fn large<'a>(specs: impl IntoIterator<Item = &'a FaultSpec>) -> bool {
        specs
            .into_iter()
            .map(|s| s.from.len() + s.to.len() + s.from_except.len() + s.to_except.len())
            .sum::<usize>()
            >= 4096
    }
}

/// Reads faults from JSON: a list, `{"faults": [...]}`, or one fault. Errors name `faults[i]`.
pub fn parse_list(text: &str) -> Result<Vec<FaultSpec>, String> {
    // A list straight into the specs: a 100k-prefix request no longer builds a `Value` of 100k
    // strings first and moves them over (medians 4.5 ms -> 3.1 ms). Anything it refuses goes the
    // way below, which accepts the same and words the errors (`faults[i]: ...`).
    if text.trim_start().starts_with('[')
        && let Ok(list) = parse_array(text)
    {
        return Ok(list);
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = match v {
        serde_json::Value::Array(l) => l,
        serde_json::Value::Object(mut o) if o.contains_key("faults") => match o.remove("faults") {
            Some(serde_json::Value::Array(l)) => l,
            _ => return Err("faults: must be a list of faults".into()),
        },
        o @ serde_json::Value::Object(_) => vec![o],
        _ => return Err("expected a fault, a list of faults, or {\"faults\": [...]}".into()),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, f)| {
            serde_json::from_value::<FaultSpec>(f).map_err(|e| format!("faults[{i}]: {e}"))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn an_explicit_empty_match_list_is_refused_not_read_as_any() {
        for f in ["from", "to", "sport", "dport"] {
            let e = parse_list(&format!(
                r#"{{"name":"a","{f}":[],"blackhole":true,"for":"1m"}}"#
            ))
            .unwrap_err();
            assert!(
                e.contains(&format!("{f}: an empty list; omit `{f}` to match any")),
                "{e}"
            );
        }
    }

    #[test]
    fn lists_documents_and_single_faults_are_read() {
        let one = r#"{"name":"a","blackhole":true,"for":"1m"}"#;
        assert_eq!(parse_list(one).unwrap().len(), 1);
        assert_eq!(parse_list(&format!("[{one},{one}]")).unwrap().len(), 2);
        assert_eq!(
            parse_list(&format!(r#"{{"faults":[{one}]}}"#))
                .unwrap()
                .len(),
            1
        );
        assert!(parse_list("[1]").unwrap_err().starts_with("faults[0]: "));
        // What the direct read of a list refuses, the general way still reads as it always did
        // (a repeated key: the last one).
        let twice = parse_list(r#"[{"name":"a","name":"b","blackhole":true,"for":"1m"}]"#);
        assert_eq!(twice.unwrap()[0].name, "b");
        assert!(parse_list("{").unwrap_err().starts_with("not JSON"));
        assert!(
            parse_list(r#"[{"name":"a","for":"1m","colour":"red"}]"#)
                .unwrap_err()
                .contains("unknown field `colour`")
        );
    }

    /// A list past `PARALLEL_FROM` (parsed per fault on rayon's pool) reads as a small one does,
    /// in order, and its errors are worded the same way.
    #[test]
    fn a_large_list_is_read_in_order_and_words_its_errors() {
        let to: Vec<String> = (0..4000u32)
            .map(|i| format!("\"10.{}.{}.{}\"", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let faults: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    r#"{{"name":"f{i}","to":[{}],"blackhole":true,"for":"1m"}}"#,
                    to.join(",")
                )
            })
            .collect();
        let text = format!("[{}]", faults.join(","));
        assert!(text.len() >= PARALLEL_FROM);
        let list = parse_list(&text).unwrap();
        let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        assert_eq!(
            list.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            names
        );
        assert!(
            list.iter()
                .all(|s| s.to.len() == 4000 && s.to[4] == "10.0.0.4")
        );
        let bad = text.replacen(r#""name":"f7""#, r#""name":"f7","colour":"red""#, 1);
        let e = parse_list(&bad).unwrap_err();
        assert!(e.starts_with("faults[7]: ") && e.contains("colour"), "{e}");
    }

    /// A valid fault to edit into bad ones (also action.rs's tests).
    pub(crate) fn spec() -> FaultSpec {
        FaultSpec {
            name: "db".into(),
            to: vec!["10.42.2.7".into()],
            loss: Some("5%".into()),
            lifetime: "5m".into(),
            ..Default::default()
        }
    }

    /// `edit` makes [`spec`] invalid with a message containing `want`, prefixed with its path.
    pub(crate) fn bad(mut edit: impl FnMut(&mut FaultSpec), want: &str) {
        let mut s = spec();
        edit(&mut s);
        let e = s.validate("faults[0].").unwrap_err().to_string();
        assert!(e.contains(want), "want '{want}' in '{e}'");
        assert!(e.starts_with("faults[0]."), "{e}");
    }

    #[test]
    fn a_good_fault_validates() {
        let f = spec().validate("").unwrap();
        assert_eq!(f.action, Action::Drop(Loss::Random(0.05)));
        assert_eq!(f.flows_ppm, 1_000_000);
        assert_eq!(f.lifetime, Duration::from_secs(300));
        assert_eq!(f.to[0].len, 32);
    }

    #[test]
    fn bad_faults_name_field_value_and_fix() {
        bad(
            |s| s.loss = Some("150%".into()),
            "loss: '150%': must be between 0% and 100%",
        );
        bad(
            |s| s.loss = Some("5".into()),
            "loss: '5' is not a percentage; write e.g. 5% or 0.1%",
        );
        bad(|s| s.loss = Some("0%".into()), "must be more than 0%");
        bad(
            |s| s.to = vec!["10.42.2.7/24".into()],
            "to: '10.42.2.7/24' has host bits set; did you mean 10.42.2.0/24?",
        );
        bad(
            |s| s.from = vec!["pod-a".into()],
            "from: 'pod-a' is not an IP address or CIDR",
        );
        bad(
            |s| s.from = vec!["fd00::1".into()],
            "share no address family",
        );
        bad(
            |s| s.proto = Some("sctp".into()),
            "proto: 'sctp': use tcp, udp, icmp or any",
        );
        bad(
            |s| s.dport = vec!["5432".into()],
            "port ranges need proto tcp or udp",
        );
        bad(
            |s| {
                s.proto = Some("tcp".into());
                s.dport = vec!["70000".into()];
            },
            "dport: '70000': ports are 0-65535",
        );
        bad(
            |s| {
                s.proto = Some("tcp".into());
                s.dport = vec!["9000-8000".into()];
            },
            "range is backwards; write 8000-9000",
        );
        bad(
            |s| s.loss = None,
            "action: give one of loss (e.g. 5%), blackhole",
        );
        bad(
            |s| {
                s.loss = None;
                s.delay = Some("20s".into());
            },
            "delay: '20s' must be between 1us and 10s",
        );
        bad(
            |s| {
                s.loss = None;
                s.delay = Some("10ms".into());
                s.jitter = Some("20ms".into());
            },
            "jitter: '20ms' must be between 0s and the delay",
        );
        bad(|s| s.jitter = Some("1ms".into()), "jitter needs a delay");
        bad(
            |s| s.flows = Some("120%".into()),
            "flows: '120%': must be between 0% and 100%",
        );
        bad(
            |s| s.lifetime = "forever".into(),
            "for: 'forever' is not a duration",
        );
        bad(|s| s.lifetime = "25h".into(), "must be between 1ms and 24h");
        bad(
            |s| s.name = "Bad Name".into(),
            "name: 'Bad Name': use 1-63 characters",
        );
    }

    #[test]
    fn ports_and_percentages_parse_the_way_people_write_them() {
        assert_eq!(
            port_range("p", "8000-8080").unwrap(),
            PortRange { lo: 8000, hi: 8080 }
        );
        assert_eq!(port_range("p", "53").unwrap(), PortRange { lo: 53, hi: 53 });
        assert_eq!(percent("p", "0.0001%").unwrap(), 0.000001);
        assert_eq!(percent("p", " 100% ").unwrap(), 1.0);
    }

    #[test]
    fn specs_read_from_json() {
        let s: FaultSpec = serde_json::from_str(
            r#"{"name":"x","to":["10.42.2.0/24"],"proto":"tcp","dport":["5432"],"delay":"100ms","jitter":"10ms","for":"5m","both_ways":true}"#,
        )
        .unwrap();
        let f = s.validate("").unwrap();
        assert_eq!(
            f.action,
            Action::Delay {
                latency: Duration::from_millis(100),
                jitter: Duration::from_millis(10),
                reorder: 0.0,
                loss: None,
            }
        );
        assert!(f.both_ways);
        let e = serde_json::from_str::<FaultSpec>(r#"{"name":"x","lose":"5%","for":"1m"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `lose`"), "{e}");
    }

    #[test]
    fn exceptions_lie_inside_their_set_and_leave_something() {
        let v = |j: &str| {
            serde_json::from_str::<FaultSpec>(j)
                .unwrap()
                .validate("faults[0].")
                .map(|f| f.to_except.len())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            v(
                r#"{"name":"a","to":["10.42.1.0/24"],"to_except":["10.42.1.1","10.42.1.128/25"],"blackhole":true,"for":"1m"}"#
            ),
            Ok(2)
        );
        assert_eq!(
            v(r#"{"name":"a","to_except":["10.0.0.0/8"],"blackhole":true,"for":"1m"}"#),
            Ok(1)
        );
        let e = v(r#"{"name":"a","to":["10.42.1.0/24"],"to_except":["10.42.2.1"],"blackhole":true,"for":"1m"}"#)
            .unwrap_err();
        assert!(
            e.starts_with("faults[0].to_except: '10.42.2.1/32' lies outside"),
            "{e}"
        );
        let e = v(r#"{"name":"a","to":["10.42.1.0/24"],"to_except":["10.42.1.0/25","10.42.1.128/25"],"blackhole":true,"for":"1m"}"#)
            .unwrap_err();
        assert!(
            e.starts_with("faults[0].to_except: covers every address of to"),
            "{e}"
        );
        let e = v(r#"{"name":"a","from":["10.42.1.0/24"],"from_except":["bad"],"blackhole":true,"for":"1m"}"#)
            .unwrap_err();
        assert!(e.starts_with("faults[0].from_except: "), "{e}");
    }

    #[test]
    fn a_flow_share_below_one_in_a_million_is_refused() {
        let mut s = spec();
        s.flows = Some("0.00004%".into());
        let e = s.validate("").unwrap_err().to_string();
        assert!(
            e.starts_with("flows: '0.00004%': the smallest share of flows is 0.0001%"),
            "{e}"
        );
        s.flows = Some("0.0001%".into());
        assert_eq!(s.validate("").unwrap().flows_ppm, 1);
    }
}
