//! Bandwidth: `rate: 10mbit` with an optional `rate_burst: 32kb`, in tc's units (`tc-tbf(8)`,
//! `tc(8)` "PARAMETERS"): rates in bit (`bit`, `kbit`, `mbit`, `gbit`, `tbit`, powers of 1000),
//! sizes in bytes (`b`, `kb`/`k`, `mb`/`m`, `gb`/`g`, powers of 1024). The rate counts IP bytes,
//! headers included (every segment of a GSO packet). The kernel side is GCRA over one schedule
//! per fault (`injector_common::RateState`); `rate_burst` is its tolerance: how many bytes may
//! leave at once after a pause.

use super::spec::{FieldError, err};

/// Slowest rate: 8 kbit/s (1000 bytes a second).
pub const MIN_BITS: u64 = 8_000;
/// Fastest rate: 100 Gbit/s.
pub const MAX_BITS: u64 = 100_000_000_000;
/// The default bucket: four of the largest GSO packets a device hands on (64 KiB each), or 10 ms
/// at the rate where that is more. A policer drops a GSO packet whole (BPF cannot split it): with
/// a 64 KiB bucket a TCP sender on the lab's veths kept 2.7 Mbit/s of a 10mbit rate, with 256
/// KiB 10.5 (3 MB transfers, `rate_lab`).
pub const MIN_DEFAULT_BURST: u64 = 256 * 1024;

/// A validated rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Bytes per second.
    pub bytes_per_s: u64,
    /// The bucket, in bytes.
    pub burst: u64,
}

impl Rate {
    /// The bucket as time at the rate (GCRA's tolerance), in ns.
    pub fn burst_ns(&self) -> u64 {
        (u128::from(self.burst) * 1_000_000_000 / u128::from(self.bytes_per_s)) as u64
    }
}

/// Splits `10mbit` into (10.0, "mbit"), the unit lower-cased.
fn number_unit(v: &str) -> Option<(f64, String)> {
    let v = v.trim();
    let at = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let n: f64 = v[..at].parse().ok()?;
    n.is_finite()
        .then(|| (n, v[at..].trim().to_ascii_lowercase()))
}

/// A number with one of `units` (name, multiplier), rounded, within `range`; `what` and `fix`
/// word the errors (`'10mbps' is not a rate: write ...`).
fn scaled(
    field: &str,
    v: &str,
    units: &[(&str, f64)],
    (what, fix): (&str, &str),
    (lo, hi, range_text): (u64, u64, &str),
) -> Result<u64, FieldError> {
    let (n, mult) = number_unit(v)
        .and_then(|(n, u)| {
            units
                .iter()
                .find(|(name, _)| *name == u)
                .map(|(_, m)| (n, *m))
        })
        .ok_or_else(|| err(field, format!("'{v}' is not a {what}: {fix}")))?;
    let x = (n * mult).round();
    if !(lo as f64..=hi as f64).contains(&x) {
        return Err(err(field, format!("'{v}': must be between {range_text}")));
    }
    Ok(x as u64)
}

/// `rate`: bits per second.
fn bits(field: &str, v: &str) -> Result<u64, FieldError> {
    const UNITS: [(&str, f64); 5] = [
        ("bit", 1.0),
        ("kbit", 1e3),
        ("mbit", 1e6),
        ("gbit", 1e9),
        ("tbit", 1e12),
    ];
    scaled(
        field,
        v,
        &UNITS,
        (
            "rate",
            "write a number and bit, kbit, mbit or gbit (tc's units, powers of 1000), e.g. 10mbit",
        ),
        (MIN_BITS, MAX_BITS, "8kbit and 100gbit"),
    )
}

/// `rate_burst`: bytes.
fn size(field: &str, v: &str) -> Result<u64, FieldError> {
    const K: f64 = 1024.0;
    const UNITS: [(&str, f64); 8] = [
        ("", 1.0),
        ("b", 1.0),
        ("k", K),
        ("kb", K),
        ("m", K * K),
        ("mb", K * K),
        ("g", K * K * K),
        ("gb", K * K * K),
    ];
    scaled(
        field,
        v,
        &UNITS,
        (
            "size",
            "write a number and b, kb, mb (tc's units, powers of 1024), e.g. 32kb",
        ),
        (1500, 1 << 30, "1500b (one full packet) and 1gb"),
    )
}

/// Validates `rate` and `rate_burst` (`f` names a field).
pub fn validate(
    f: &dyn Fn(&str) -> String,
    rate: Option<&str>,
    burst: Option<&str>,
) -> Result<Option<Rate>, FieldError> {
    let Some(r) = rate else {
        return match burst {
            Some(b) => Err(err(
                &f("rate_burst"),
                format!("'{b}': the bucket of a rate: give rate too (e.g. rate 10mbit)"),
            )),
            None => Ok(None),
        };
    };
    let bytes_per_s = bits(&f("rate"), r)? / 8;
    let burst = match burst {
        Some(b) => size(&f("rate_burst"), b)?,
        None => MIN_DEFAULT_BURST.max(bytes_per_s / 100),
    };
    Ok(Some(Rate { bytes_per_s, burst }))
}

/// Whether `v` reads as a size (`32kb`), not a burst length: the `burst` field's mistake.
pub fn looks_like_size(v: &str) -> bool {
    number_unit(v).is_some_and(|(_, u)| matches!(u.as_str(), "b" | "k" | "kb" | "m" | "mb"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rate: &str, burst: Option<&str>) -> Result<Option<Rate>, FieldError> {
        validate(&|n| format!("faults[0].{n}"), Some(rate), burst)
    }

    #[test]
    fn rates_and_buckets_read_as_tc_writes_them() {
        let r = v("10mbit", None).unwrap().unwrap();
        assert_eq!(r.bytes_per_s, 1_250_000);
        assert_eq!(r.burst, 262_144, "256 KiB is more than 10 ms at 10mbit");
        assert_eq!(r.burst_ns(), 209_715_200);
        let r = v(" 1.5Gbit ", Some("32kb")).unwrap().unwrap();
        assert_eq!((r.bytes_per_s, r.burst), (187_500_000, 32 * 1024));
        assert_eq!(
            v("10gbit", None).unwrap().unwrap().burst,
            12_500_000,
            "10 ms at 10gbit"
        );
        assert_eq!(
            v("8kbit", Some("1500b")).unwrap().unwrap().burst_ns(),
            1_500_000_000
        );
    }

    #[test]
    fn bad_rates_and_buckets_name_the_field_value_and_fix() {
        let e = |rate: &str, burst: Option<&str>, want: &str| {
            let got = v(rate, burst).unwrap_err().to_string();
            assert!(got.contains(want), "want '{want}' in '{got}'");
        };
        e(
            "10mbps",
            None,
            "faults[0].rate: '10mbps' is not a rate: write a number and bit, kbit, mbit or gbit",
        );
        e("fast", None, "'fast' is not a rate");
        e(
            "1kbit",
            None,
            "faults[0].rate: '1kbit': must be between 8kbit and 100gbit",
        );
        e("1tbit", None, "must be between 8kbit and 100gbit");
        e(
            "10mbit",
            Some("32kbit"),
            "faults[0].rate_burst: '32kbit' is not a size",
        );
        e(
            "10mbit",
            Some("100b"),
            "'100b': must be between 1500b (one full packet) and 1gb",
        );
        let got = validate(&|n| n.to_string(), None, Some("32kb"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            got,
            "rate_burst: '32kb': the bucket of a rate: give rate too (e.g. rate 10mbit)"
        );
        assert!(looks_like_size("32kb") && !looks_like_size("4"));
    }
}
