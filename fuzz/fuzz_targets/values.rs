//! The value parsers, each line of the input to each: CIDRs, ports and ranges, durations,
//! percentages, rates and buckets, pulses, loss models, DNS names and answers. Errors are fine;
//! a panic is a bug.
#![no_main]

use std::time::Duration;

use injector::{
    fault::spec::{FaultSpec, percent, port_range},
    parse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for v in text.lines() {
        let _ = parse::cidr("to", v);
        let _ = port_range("dport", v);
        let _ = percent("loss", v);
        let _ = parse::duration(
            "for",
            v,
            (Duration::ZERO, "0s"),
            (Duration::from_secs(86_400), "24h"),
        );
        // The fields whose parsers are private, through a fault that gives them.
        for edit in [
            |s: &mut FaultSpec, v: &str| s.rate = Some(v.into()),
            |s: &mut FaultSpec, v: &str| {
                s.rate = Some("10mbit".into());
                s.rate_burst = Some(v.into());
            },
            |s: &mut FaultSpec, v: &str| s.pulse = Some(v.into()),
            |s: &mut FaultSpec, v: &str| s.loss_model = Some(v.into()),
            |s: &mut FaultSpec, v: &str| {
                s.loss = Some("5%".into());
                s.burst = Some(v.into());
            },
            |s: &mut FaultSpec, v: &str| s.delay = Some(v.into()),
            |s: &mut FaultSpec, v: &str| s.flows = Some(v.into()),
            |s: &mut FaultSpec, v: &str| {
                s.dns = Some("nxdomain".into());
                s.dns_name = vec![v.into()];
            },
            |s: &mut FaultSpec, v: &str| {
                s.dns = Some(v.into());
                s.dns_name = vec!["db.local".into()];
            },
        ] {
            let mut s = FaultSpec {
                name: "f".into(),
                lifetime: "1m".into(),
                ..FaultSpec::default()
            };
            edit(&mut s, v);
            if s.action_kind().is_none() {
                s.blackhole = true;
            }
            let _ = s.validate("faults[0].");
        }
    }
});
