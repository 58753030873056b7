//! Parsing of what people type: CIDRs (`10.42.2.0/24`, `10.42.2.7`, `fd00::/64`) and durations
//! (`250ms`, `30s`, `5m`, `1h`). Errors name the value and say how to fix it.

use std::{borrow::Cow, net::IpAddr, time::Duration};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error(
        "{field}: '{value}' is not an IP address or CIDR; write e.g. 10.42.2.7 or 10.42.2.0/24"
    )]
    BadCidr { field: &'static str, value: String },
    #[error(
        "{field}: prefix length in '{value}' must be 0..={max} for {family}; write e.g. 10.42.2.0/24"
    )]
    BadPrefixLen {
        field: &'static str,
        value: String,
        max: u8,
        family: &'static str,
    },
    #[error("{field}: '{value}' has host bits set; did you mean {fixed}?")]
    HostBits {
        field: &'static str,
        value: String,
        fixed: String,
    },
    #[error("{field}: '{value}' is not a duration; write a number with a unit: 250ms, 30s, 5m, 1h")]
    BadDuration { field: &'static str, value: String },
    #[error("{field}: '{value}' must be between {min} and {max}")]
    DurationRange {
        field: &'static str,
        value: String,
        min: &'static str,
        max: &'static str,
    },
}

/// An IPv4 or IPv6 prefix with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Cidr {
    /// The whole family (`0.0.0.0/0`, `::/0`).
    pub fn any(v6: bool) -> Cidr {
        let addr = if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        };
        Cidr { addr, len: 0 }
    }

    /// Every address of a set of CIDRs, where no CIDR means any (both families). Borrowed when
    /// the set names its CIDRs: a large set is not copied to be checked against a few others.
    pub fn whole(set: &[Cidr]) -> Cow<'_, [Cidr]> {
        if set.is_empty() {
            Cow::Owned(vec![Cidr::any(false), Cidr::any(true)])
        } else {
            Cow::Borrowed(set)
        }
    }

    /// The address as bits and the family's width.
    fn bits(&self) -> (u128, u8) {
        match self.addr {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    }

    /// Whether every address of `o` is in `self` (same family).
    pub fn contains(&self, o: &Cidr) -> bool {
        let ((x, w), (y, w2)) = (self.bits(), o.bits());
        if w != w2 || o.len < self.len {
            return false;
        }
        let shift = u32::from(w - self.len);
        self.len == 0 || (x >> shift) == (y >> shift)
    }

    pub fn overlaps(&self, o: &Cidr) -> bool {
        self.contains(o) || o.contains(self)
    }

    /// Whether the prefixes in `by` together cover every address of `self`.
    pub fn covered_by(&self, by: &[Cidr]) -> bool {
        if by.iter().any(|b| b.contains(self)) {
            return true;
        }
        let (bits, w) = self.bits();
        // Only prefixes strictly inside can cover it piecewise; then both halves must be covered.
        if self.len >= w || !by.iter().any(|b| self.contains(b)) {
            return false;
        }
        let half = |one: bool| {
            let b = if one {
                bits | 1u128 << (u32::from(w - self.len) - 1)
            } else {
                bits
            };
            let addr = if w == 32 {
                IpAddr::V4((b as u32).into())
            } else {
                IpAddr::V6(b.into())
            };
            Cidr {
                addr,
                len: self.len + 1,
            }
        };
        half(false).covered_by(by) && half(true).covered_by(by)
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Parses `ADDR` (a host: /32 or /128) or `ADDR/LEN`. `field` names the flag or key, for errors.
pub fn cidr(field: &'static str, value: &str) -> Result<Cidr, ParseError> {
    let v = value.trim();
    // A byte search, not `split_once('/')`: its char searcher was 5% of applying 100k hosts.
    let (a, l) = match v.bytes().position(|b| b == b'/') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| ParseError::BadCidr {
        field,
        value: value.to_string(),
    })?;
    let (max, family) = if addr.is_ipv4() {
        (32, "IPv4")
    } else {
        (128, "IPv6")
    };
    let len = match l {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(ParseError::BadPrefixLen {
                    field,
                    value: value.to_string(),
                    max,
                    family,
                });
            }
        },
    };
    let masked = mask(addr, len);
    if masked != addr {
        return Err(ParseError::HostBits {
            field,
            value: value.to_string(),
            fixed: Cidr { addr: masked, len }.to_string(),
        });
    }
    Ok(Cidr { addr, len })
}

/// Parses `250ms`, `30s`, `5m`, `1h`, `1h30m`, `1.5s`, bounded by `min..=max`.
pub fn duration(
    field: &'static str,
    value: &str,
    min: (Duration, &'static str),
    max: (Duration, &'static str),
) -> Result<Duration, ParseError> {
    let bad = || ParseError::BadDuration {
        field,
        value: value.to_string(),
    };
    let s = value.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        let after = &rest[num_end..];
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let scale = match &after[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &after[unit_end..];
    }
    let d = Duration::try_from_secs_f64(total).map_err(|_| bad())?;
    if d < min.0 || d > max.0 {
        return Err(ParseError::DurationRange {
            field,
            value: value.to_string(),
            min: min.1,
            max: max.1,
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: (Duration, &str) = (Duration::from_millis(1), "1ms");
    const MAX: (Duration, &str) = (Duration::from_secs(86400), "24h");

    #[test]
    fn cidrs_parse_the_way_people_write_them() {
        let c = cidr("--to", "10.42.2.7").unwrap();
        assert_eq!((c.addr.to_string(), c.len), ("10.42.2.7".into(), 32));
        assert_eq!(cidr("--to", "10.42.0.0/16").unwrap().len, 16);
        assert_eq!(cidr("--to", " fd00:42:2::/64 ").unwrap().len, 64);
        assert_eq!(cidr("--to", "fd00::1").unwrap().len, 128);
        assert_eq!(cidr("--to", "0.0.0.0/0").unwrap().len, 0);
    }

    #[test]
    fn bad_cidrs_name_the_field_value_and_fix() {
        let e = cidr("--to", "10.42.2.7/24").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--to: '10.42.2.7/24' has host bits set; did you mean 10.42.2.0/24?"
        );
        let e = cidr("--to", "10.42.2.0/33").unwrap_err();
        assert!(e.to_string().contains("must be 0..=32 for IPv4"), "{e}");
        let e = cidr("--to", "fd00::/129").unwrap_err();
        assert!(e.to_string().contains("0..=128 for IPv6"), "{e}");
        for v in [
            "",
            "pod-a",
            "10.42.2",
            "10.42.2.256",
            "10.42.2.0/",
            "10.42.2.0/x",
        ] {
            let e = cidr("--to", v).unwrap_err();
            let m = e.to_string();
            assert!(
                m.starts_with("--to: ") && m.contains(&format!("'{v}'")),
                "{v}: {m}"
            );
        }
    }

    #[test]
    fn durations_parse_the_way_people_write_them() {
        let d = |s| duration("--for", s, MIN, MAX).unwrap();
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("1500us"), Duration::from_micros(1500));
    }

    #[test]
    fn bad_durations_are_refused() {
        for v in ["", "5", "ms", "5 minutes", "5x", "-5s", "1..2s"] {
            let e = duration("--for", v, MIN, MAX).unwrap_err();
            assert!(
                e.to_string().contains("write a number with a unit"),
                "{v}: {e}"
            );
        }
        let e = duration("--for", "25h", MIN, MAX).unwrap_err();
        assert_eq!(e.to_string(), "--for: '25h' must be between 1ms and 24h");
        assert!(duration("--for", "0s", MIN, MAX).is_err());
    }

    #[test]
    fn coverage_by_several_prefixes() {
        let c = |v: &str| cidr("", v).unwrap();
        let net = c("10.42.1.0/24");
        assert!(net.contains(&c("10.42.1.7")) && !c("10.42.1.7").contains(&net));
        assert!(!net.contains(&c("fd00::1")));
        assert!(net.covered_by(&[c("10.0.0.0/8")]));
        assert!(net.covered_by(&[c("10.42.1.0/25"), c("10.42.1.128/26"), c("10.42.1.192/26")]));
        assert!(!net.covered_by(&[c("10.42.1.0/25"), c("10.42.1.128/26")]));
        assert!(!net.covered_by(&[c("10.42.1.1"), c("10.42.1.0")]));
        assert!(c("10.42.1.1").covered_by(&[c("10.42.1.1")]));
        assert!(!Cidr::any(true).covered_by(&[c("10.0.0.0/8")]));
    }
}
