//! `pulse: 10s/30s`: a fault that acts in the first 10 s of every 30 s from its start, whatever
//! its action. The kernel decides per packet from the fault's start time (`FaultCfg::pulse_on`),
//! so the pulse needs no timer and goes on with the daemon gone, until the deadline.

use std::time::Duration;

use super::spec::{FieldError, MAX_LIFETIME, duration, err};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pulse {
    /// How long the fault acts, from the start of each period.
    pub on: Duration,
    pub period: Duration,
}

/// Parses `ON/PERIOD` (`10s/30s`, `500ms/2s`): ON at least 1 ms and shorter than PERIOD.
pub fn parse(field: &str, v: &str) -> Result<Pulse, FieldError> {
    let Some((on, period)) = v.split_once('/') else {
        return Err(err(
            field,
            format!("'{v}': write ON/PERIOD, e.g. 10s/30s (acts 10 s of every 30 s)"),
        ));
    };
    let period = duration(
        field,
        period,
        (Duration::from_millis(2), "2ms"),
        (MAX_LIFETIME, "24h"),
    )?;
    let on = duration(
        field,
        on,
        (Duration::from_millis(1), "1ms"),
        (MAX_LIFETIME, "24h"),
    )?;
    if on >= period {
        return Err(err(
            field,
            format!(
                "'{v}': the on-time must be shorter than the period (else the fault is always \
                 on: leave pulse out)"
            ),
        ));
    }
    Ok(Pulse { on, period })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulses_parse_and_refuse_with_the_fix() {
        assert_eq!(
            parse("pulse", "10s/30s"),
            Ok(Pulse {
                on: Duration::from_secs(10),
                period: Duration::from_secs(30)
            })
        );
        assert_eq!(
            parse("pulse", " 500ms / 2s ").unwrap().on,
            Duration::from_millis(500)
        );
        let e = |v: &str, want: &str| {
            let got = parse("faults[0].pulse", v).unwrap_err().to_string();
            assert!(got.contains(want), "want '{want}' in '{got}'");
            assert!(got.starts_with("faults[0].pulse: "), "{got}");
        };
        e("10s", "'10s': write ON/PERIOD, e.g. 10s/30s");
        e(
            "30s/10s",
            "'30s/10s': the on-time must be shorter than the period",
        );
        e("10s/10s", "must be shorter");
        e("0s/10s", "must be between 1ms and 24h");
        e("1s/ever", "'ever' is not a duration");
    }
}
