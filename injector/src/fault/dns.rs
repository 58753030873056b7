//! DNS faults: the names a DNS fault answers for (`dns_name`), as written and as the kernel
//! matches them (wire-form hashes, `injector_common::dns`), and the answer it gives (`dns`).

use std::time::Duration;

use injector_common::dns::{self as kdns, Answer, MAX_NAMES_PER_FAULT};

use super::spec::{FieldError, err};

/// A name a DNS fault answers for: exactly this name, or (written with a leading `.` or `*.`)
/// every name under it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DnsName {
    /// Lowercase, without the trailing dot.
    pub name: String,
    pub suffix: bool,
}

impl DnsName {
    /// The name in wire form (each label as a length byte and its bytes, without the root).
    pub fn wire(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(self.name.len() + 1);
        for l in self.name.split('.') {
            w.push(l.len() as u8);
            w.extend_from_slice(l.as_bytes());
        }
        w
    }

    /// The kernel's key for it, without the generation: (suffix, wire length, hash).
    pub fn key(&self) -> (bool, u8, u64) {
        let w = self.wire();
        (self.suffix, w.len() as u8, kdns::hash(&w))
    }
}

impl std::fmt::Display for DnsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.suffix {
            write!(f, ".{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// Parses a `dns_name` value: `payments.default.svc.cluster.local`, `.svc.cluster.local` or
/// `*.svc.cluster.local` (names under it), a trailing dot allowed.
pub fn name(field: &str, v: &str) -> Result<DnsName, FieldError> {
    let t = v.trim().to_ascii_lowercase();
    let (suffix, rest) = if let Some(r) = t.strip_prefix("*.") {
        (true, r)
    } else if let Some(r) = t.strip_prefix('.') {
        (true, r)
    } else {
        (false, t.as_str())
    };
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    let bad = |why: &str| {
        err(
            field,
            format!(
                "'{v}': {why}; write a name such as payments.default.svc.cluster.local, or \
                 .svc.cluster.local for every name under it"
            ),
        )
    };
    if rest.is_empty() {
        return Err(bad("no name"));
    }
    // Wire form: a length byte per label plus the labels, and the root's zero: at most 255.
    if rest.len() + 2 > 255 {
        return Err(bad("longer than a DNS name can be (253 characters)"));
    }
    for l in rest.split('.') {
        if l.is_empty() || l.len() > 63 {
            return Err(bad("each label (between dots) has 1-63 characters"));
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("labels are letters, digits, '-' and '_'"));
        }
    }
    Ok(DnsName {
        name: rest.to_string(),
        suffix,
    })
}

/// A validated DNS fault's action part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dns {
    pub answer: Answer,
    /// For `Answer::Delay`: the hold, uniform +- jitter; zero otherwise.
    pub latency: Duration,
    pub jitter: Duration,
}

/// Parses the `dns` word.
pub fn answer(field: &str, v: &str) -> Result<Answer, FieldError> {
    Answer::ALL
        .into_iter()
        .find(|a| a.name() == v.trim().to_ascii_lowercase())
        .ok_or_else(|| {
            err(
                field,
                format!("'{v}': use nxdomain, servfail, refused, drop or delay (with delay 2s)"),
            )
        })
}

/// Validates the names of a DNS fault: at least one, at most [`MAX_NAMES_PER_FAULT`], sorted,
/// without repeats.
pub fn names(field: &str, vs: &[String]) -> Result<Vec<DnsName>, FieldError> {
    if vs.is_empty() {
        return Err(err(
            field,
            "a DNS fault needs the names it answers for: dns_name payments.default.svc.cluster.local, \
             or .svc.cluster.local for every name under it",
        ));
    }
    if vs.len() > MAX_NAMES_PER_FAULT {
        return Err(err(
            field,
            format!(
                "{} names: a DNS fault answers for at most {MAX_NAMES_PER_FAULT}; use a suffix \
                 (.svc.cluster.local) or another fault",
                vs.len()
            ),
        ));
    }
    let mut out = vs
        .iter()
        .map(|v| name(field, v))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_exact_and_suffix_and_refuse_what_dns_cannot_carry() {
        let n = name("dns_name", "Payments.Default.svc.cluster.local.").unwrap();
        assert_eq!(
            (n.name.as_str(), n.suffix),
            ("payments.default.svc.cluster.local", false)
        );
        assert_eq!(n.to_string(), "payments.default.svc.cluster.local");
        for s in [".svc.cluster.local", "*.svc.cluster.local"] {
            let n = name("dns_name", s).unwrap();
            assert_eq!((n.name.as_str(), n.suffix), ("svc.cluster.local", true));
            assert_eq!(n.to_string(), ".svc.cluster.local");
        }
        assert_eq!(
            name("dns_name", "db.local").unwrap().wire(),
            b"\x02db\x05local"
        );
        for (v, why) in [
            ("", "no name"),
            (".", "no name"),
            ("a..b", "each label"),
            (&"x".repeat(64), "each label"),
            ("db local", "labels are letters"),
        ] {
            let e = name("dns_name", v).unwrap_err().to_string();
            assert!(e.contains(why), "{v}: {e}");
            assert!(e.starts_with("dns_name: "), "{e}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(
            name("dns_name", &long)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
        assert!(
            names("dns_name", &[])
                .unwrap_err()
                .to_string()
                .contains("needs the names")
        );
        let many: Vec<String> = (0..17).map(|i| format!("n{i}.local")).collect();
        assert!(
            names("dns_name", &many)
                .unwrap_err()
                .to_string()
                .contains("at most 16")
        );
        assert_eq!(
            names(
                "dns_name",
                &["b.local".into(), "B.local".into(), "a.local".into()]
            )
            .unwrap()
            .len(),
            2
        );
    }

    #[test]
    fn keys_are_what_the_kernel_computes_for_the_same_name() {
        // The kernel hashes the suffix of the question's wire name from a label on; the
        // compiler hashes the pattern's wire form: the same bytes, so the same key.
        let q = name("q", "api.payments.svc.cluster.local").unwrap().wire();
        let pat = name("p", ".svc.cluster.local").unwrap();
        let at = q.len() - pat.wire().len();
        assert_eq!(kdns::hash(&q[at..]), pat.key().2);
        assert_eq!(pat.key().1 as usize, q.len() - at);
    }

    #[test]
    fn answers_parse_by_name() {
        assert_eq!(answer("dns", "NXDOMAIN").unwrap(), Answer::NxDomain);
        assert_eq!(answer("dns", "delay").unwrap(), Answer::Delay);
        assert!(
            answer("dns", "timeout")
                .unwrap_err()
                .to_string()
                .contains("'timeout': use nxdomain, servfail, refused, drop or delay")
        );
    }
}
