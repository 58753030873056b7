//! Prometheus metrics, read from the kernel's per-CPU counters at scrape time (prometheus-client
//! custom collector), and the /metrics, /healthz, /readyz endpoints. Labels carry fault names and
//! hooks, never pod IPs.

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};
use injector_common::{Hook, JudgeHook, Outcome, ctrl};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::{api::ApiState, core::Shared, health};
use crate::kernel::monotonic_ns;

#[derive(Debug)]
struct KernelCollector(Shared);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, u64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&'static str, String)],
    v: i64,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m.encode_family(&labels.to_vec())?)
}

impl Collector for KernelCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.0.lock();
        let now = monotonic_ns();
        let (mut packets, mut bytes) = (Vec::new(), Vec::new());
        for f in c.faults.iter() {
            for jh in JudgeHook::ALL {
                let Ok(k) = c.maps.fault_counters(f.slot, jh) else {
                    continue;
                };
                for o in Outcome::ALL {
                    let labels = vec![
                        ("fault", f.record.spec.name.clone()),
                        ("hook", jh.name().to_string()),
                        ("action", o.name().to_string()),
                    ];
                    packets.push((labels.clone(), k.get(o).packets));
                    bytes.push((labels, k.get(o).bytes));
                }
            }
        }
        counter(
            &mut e,
            "injector_packets",
            "Packets a fault matched and what it did with them, per hook (matched = the sum of the others).",
            &packets,
        )?;
        counter(
            &mut e,
            "injector_bytes",
            "Bytes a fault matched and what it did with them, per hook.",
            &bytes,
        )?;
        let mut hook_rows = Vec::new();
        for h in Hook::ALL {
            let Ok(s) = c.maps.stats(h) else { continue };
            for (result, v) in [
                ("seen", s.seen_packets),
                ("unparsed", s.unparsed_packets),
                ("lapsed", s.lapsed_packets),
                ("skipped", s.skipped_packets),
                ("expired", s.expired_packets),
            ] {
                hook_rows.push((
                    vec![
                        ("hook", h.name().to_string()),
                        ("result", result.to_string()),
                    ],
                    v,
                ));
            }
        }
        counter(
            &mut e,
            "injector_hook_packets",
            "Packets each program saw: seen, unparsed (passed untouched), lapsed (matched a fault while disarmed or with a stale heartbeat), skipped (judged elsewhere), expired (fault past its deadline).",
            &hook_rows,
        )?;
        let active = c
            .faults
            .iter()
            .filter(|f| now >= f.record.start_ns && now < f.record.deadline_ns)
            .count();
        gauge(
            &mut e,
            "injector_faults_active",
            "Faults installed and within their lifetime.",
            &[],
            active as i64,
        )?;
        let armed = c.maps.ctrl(ctrl::ARMED).unwrap_or(0);
        gauge(
            &mut e,
            "injector_armed",
            "1 when faults are armed, 0 after an abort.",
            &[],
            armed as i64,
        )?;
        let attached = c.ifaces.values().filter(|i| i.error.is_none()).count();
        gauge(
            &mut e,
            "injector_interfaces_attached",
            "Interfaces with every program attached.",
            &[],
            attached as i64,
        )?;
        counter(
            &mut e,
            "injector_attach_errors",
            "Attach attempts that failed.",
            &[(vec![], c.attach_errors)],
        )?;
        gauge(
            &mut e,
            "injector_build_info",
            "Build information.",
            &[("version", env!("CARGO_PKG_VERSION").to_string())],
            1,
        )?;
        Ok(())
    }
}

/// OpenMetrics text (what prometheus-client writes) -> the classic Prometheus text format 0.0.4:
/// a counter's HELP/TYPE name gains its samples' `_total`, and there is no `# EOF`.
pub fn to_classic(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let mut l = line.to_string();
        for kw in ["# HELP ", "# TYPE "] {
            if let Some(rest) = line.strip_prefix(kw) {
                let name = rest.split(' ').next().unwrap_or("");
                if counters.contains(name) {
                    l = format!("{kw}{name}_total{}", &rest[name.len()..]);
                }
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

async fn metrics(
    State(r): State<std::sync::Arc<Registry>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response();
    }
    // Prometheus asks for OpenMetrics; promtool and curl get the classic format.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        (StatusCode::OK, [(header::CONTENT_TYPE, ct)], out).into_response()
    } else {
        let ct = "text/plain; version=0.0.4; charset=utf-8";
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, ct)],
            to_classic(&out),
        )
            .into_response()
    }
}

/// /readyz: 200 when programs are attached, maps pinned and the API serves; else 503 with the
/// reasons, one a line.
async fn readyz(State(s): State<ApiState>) -> (StatusCode, String) {
    let why = health::not_ready(&s.shared.lock(), &s.listeners);
    if why.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        let mut body = String::from("not ready\n");
        for w in why {
            body += &w;
            body.push('\n');
        }
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// /metrics, /healthz (the process answers), /readyz (see [`readyz`]).
pub fn router(s: ApiState) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(KernelCollector(s.shared.clone())));
    Router::new()
        .route(
            "/metrics",
            get(metrics).with_state(std::sync::Arc::new(registry)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz).with_state(s))
}

#[cfg(test)]
mod tests {
    use super::to_classic;

    #[test]
    fn openmetrics_becomes_classic_text() {
        let om = "# HELP injector_packets Packets.\n# TYPE injector_packets counter\ninjector_packets_total{fault=\"a\"} 2\n# HELP injector_armed Armed.\n# TYPE injector_armed gauge\ninjector_armed 1\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP injector_packets_total Packets.\n# TYPE injector_packets_total counter\ninjector_packets_total{fault=\"a\"} 2\n# HELP injector_armed Armed.\n# TYPE injector_armed gauge\ninjector_armed 1\n"
        );
    }
}
