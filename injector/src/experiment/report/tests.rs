//! Unit tests of the report: the HTML of a rejected run, the JSON read back, rates.

use std::time::{Duration, Instant};

use super::*;
use crate::experiment::{file::load, probe::Outcome};

/// A report as a rejected run leaves it: samples before and during two steps, an abort.
pub(crate) fn rejected() -> Report {
    let exp = load(
        "t.yaml",
        "hypothesis: web answers\nsteady_state:\n  - {name: web, http: {url: 'http://10.42.2.2:8080/'}}\n  - {name: q, prometheus: {url: 'http://127.0.0.1:9090', query: up, min: 1}}\nramp: {duration: 5s, fault: {name: w, to: [10.42.2.2]}, loss: [1%, blackhole]}\n",
    )
    .unwrap();
    let mut r = Report::new(&exp, vec!["/run/a.sock".into()], 0, false);
    let t0 = Instant::now();
    for i in 0..16 {
        let ok = i < 13;
        let s = Sample {
            probe: i % 2,
            start: t0 + Duration::from_millis(500 * i as u64),
            end: t0 + Duration::from_millis(500 * i as u64 + 3),
            out: Outcome {
                value: if ok { Some(100.0) } else { None },
                ok,
                latency_ms: ok.then_some(2.0),
                detail: "x".into(),
            },
        };
        r.sample(&s, 0.5 * i as f64, "step", Some(1 + usize::from(i >= 10)));
    }
    for i in 0..8u64 {
        let c = [("w".to_string(), [100 * i, 10 * i, 0])].into();
        r.counters(i as f64, &c);
    }
    r.steps[0].start_s = Some(0.0);
    r.steps[0].end_s = Some(5.0);
    r.steps[1].start_s = Some(5.0);
    r.steps[1].end_s = Some(7.5);
    r.abort = Some(Abort {
        rule: "probe \"web\" failed 1 time in a row (abort_when[0]): x".into(),
        probe: "web".into(),
        step: 2,
        first_failure_s: 6.5,
        breach_s: 7.5,
        removed_s: 7.504,
        removal_ms: 4.0,
        restored_s: Some(7.6),
        restore_ms: Some(100.0),
        errors: vec![],
        nodes: vec![],
    });
    r.ended_s = 9.0;
    r.verdict = Verdict {
        result: Conclusion::Rejected,
        step: Some(2),
        reason: "probe \"web\" failed".into(),
    };
    r
}

#[test]
fn the_html_shows_the_verdict_steps_probes_abort_and_rates() {
    let r = rejected();
    let h = html::render(&r);
    assert!(h.starts_with("<!doctype html>"));
    assert!(h.contains("Hypothesis rejected at step 2"), "verdict");
    assert!(!h.contains("<script"), "no script");
    assert!(!h.contains("src=\"http"), "nothing loaded from elsewhere");
    for id in ["probe-web", "latency-web", "probe-q", "faults"] {
        assert!(h.contains(&format!("<svg id=\"{id}\"")), "{id}");
    }
    assert_eq!(
        h.matches("class=\"step\"").count(),
        4 * 2,
        "2 steps shaded in 4 charts"
    );
    assert!(
        h.contains(">breach<") && h.contains(">restored<"),
        "abort marked"
    );
    assert!(h.contains("class=\"series\""), "lines drawn");
    assert!(
        h.contains("class=\"missing\""),
        "failed runs without a value marked"
    );
    assert!(h.contains("w dropped/s"), "rates from the counters");
    assert_eq!(rates(&r.faults[0].samples, |c| c.dropped)[0], (1.0, 10.0));
}

#[test]
fn the_json_reads_back_and_other_schemas_are_refused() {
    let r = rejected();
    let dir = std::env::temp_dir().join(format!("exp-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("r.json");
    json::write(&p, &r).unwrap();
    let back = json::read(&p).unwrap();
    assert_eq!(html::render(&back), html::render(&r));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["verdict"]["result"], "rejected");
    assert_eq!(v["abort"]["removal_ms"], 4.0);
    std::fs::write(&p, r#"{"schema":"other/v9"}"#).unwrap();
    assert!(
        json::read(&p)
            .unwrap_err()
            .contains("this injector reads \"injector.experiment/v1\"")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rate_survives_a_counter_reset() {
    let c = |t_s: f64, dropped: u64| CounterRecord {
        t_s,
        matched: 0,
        dropped,
        delayed: 0,
    };
    assert_eq!(
        rates(&[c(0.0, 50), c(1.0, 70), c(2.0, 5)], |c| c.dropped),
        [(1.0, 20.0), (2.0, 5.0)]
    );
}
