//! Part 8, Kubernetes coverage: on a real API server with a daemon per node, how long from a
//! NetworkFault's creation, and from a new matching pod's podIP appearing, until every node's
//! daemon holds it (its API asked every millisecond, which needs no API server).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use injector_tests::{
    cluster::{ClusterOptions, PodMeta},
    k8s::{Deployed, all_addrs, network_fault},
    lab,
    perf::percentile,
};
use serde_json::{Value, json};

use super::{
    Ctx, faults,
    report::{Row, Section},
};

const RESOURCE: &str = "shop/bench-cover";

/// Until every daemon's parts of [`RESOURCE`] satisfy `ok`; the time it took.
fn until_all(d: &Deployed, ok: impl Fn(&[Value]) -> bool) -> Result<Duration> {
    let t = Instant::now();
    loop {
        let mut all = true;
        for dm in &d.daemons {
            let body = faults::call_ok(&dm.socket, "GET", "/v1/faults", "")?;
            let list: Vec<Value> = serde_json::from_str(&body)?;
            let parts: Vec<Value> = list
                .into_iter()
                .filter(|f| f["resource"] == RESOURCE)
                .collect();
            all &= ok(&parts);
        }
        if all {
            return Ok(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("{RESOURCE}: not on every node within 30 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Percentile `p` of sorted `v`, in ms.
fn ms(v: &[f64], p: f64) -> String {
    format!("{:.0} ms", percentile(v, p))
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let pods = if ctx.quick { 4 } else { 30 };
    let mut d = Deployed::up_with(
        &lab::run_prefix("benchk8s"),
        ClusterOptions::default(),
        &ctx.bin,
    )?;
    let mut created = Vec::new();
    for round in 0..if ctx.quick { 2 } else { 10 } {
        let nf = network_fault(
            "shop",
            "bench-cover",
            json!({"to": {"pods": {"matchLabels": {"bench": "cover"}}},
                   "from": {"pods": {"matchLabels": {"app": "checkout"}}},
                   "blackhole": true, "duration": "10m"}),
        );
        if round > 0 {
            d.delete_network_fault("shop", "bench-cover")?;
            until_all(&d, |p| p.is_empty())?;
        }
        // A first pod, so the fault has a target and is installed as soon as it is seen.
        if round == 0 {
            d.cluster
                .add_pod(2, PodMeta::new("shop", &[("bench", "cover")]))?;
        }
        d.apply(&nf)?;
        created.push(until_all(&d, |p| !p.is_empty())?.as_secs_f64() * 1e3);
    }
    let mut covered = Vec::new();
    for i in 0..pods {
        let pod = d.cluster.add_pod(
            1 + (i % 2) as u8,
            PodMeta::new("shop", &[("bench", "cover")]),
        )?;
        let ip = IpAddr::from(pod.ip);
        // add_pod returns once the status with the podIP is written (as a kubelet's patch).
        covered.push(until_all(&d, |p| all_addrs(p, "to").contains(&ip))?.as_secs_f64() * 1e3);
    }
    covered.sort_by(f64::total_cmp);
    created.sort_by(f64::total_cmp);
    let mut s = Section::new(
        "8. Kubernetes coverage: a NetworkFault or a new pod -> held by every node's daemon",
        "-",
    );
    s.rows.push(Row::new(
        format!("new matching pod: podIP written -> in the fault on both nodes, p50 ({pods} pods)"),
        ms(&covered, 50.0),
        "-",
    ));
    s.rows.push(
        Row::new("new matching pod, p99", ms(&covered, 99.0), "-")
            .goal("<= 1 s", percentile(&covered, 99.0) <= 1000.0),
    );
    s.rows.push(Row::new(
        format!(
            "NetworkFault created -> installed on both nodes, p50 ({} runs)",
            created.len()
        ),
        ms(&created, 50.0),
        "-",
    ));
    s.notes.push(
        "Two daemons (two lab nodes) with the daemon's own RBAC, watching through the node's \
         forwarder to kube-apiserver 1.20 on loopback; each daemon's local API polled every \
         millisecond. The daemon takes an event burst together after 5 ms."
            .into(),
    );
    Ok(s)
}
