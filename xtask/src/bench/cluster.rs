//! Part 9, cluster apply and abort: on a real API server with a daemon per node, from a
//! NetworkFault's creation to the first affected packet on **every** node, and from the
//! cluster-wide abort (`kubectl injector abort`) to traffic restored on every node; against the
//! same change made as Chaos Mesh makes it: one controller process runs, per target pod,
//! `ip netns exec <pod> ipset ...`/`iptables ...` (as its chaos-daemon does in the pod's netns),
//! and the reverse to recover.
//!
//! Traffic: per node a source pod (`bench=source`) probes a target pod (`bench=target`) on the
//! same node, so each node's own daemon (or the rules in its pod) judges that node's probes. The
//! probed targets are the last each way configures, so "every node" means every target pod.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, ensure};
use injector_tests::{
    cluster::{ClusterOptions, PodMeta},
    cmd,
    k8s::{Deployed, network_fault},
    lab::{self, Pod},
    perf::{ProbeStream, Probes, median, percentile},
};
use serde_json::json;

use super::{
    Ctx, Event,
    report::{Row, Section},
    timed,
};

const PORT: u16 = 9030;
/// One probe every GAP, on the two paths in turn: each node's path every 2 × GAP.
const GAP: Duration = Duration::from_micros(250);
/// How long a fault is left in effect, and traffic left restored, in each round.
const HOLD: Duration = Duration::from_millis(400);
const NS: &str = "shop";
const NAME: &str = "bench-cut";

#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// A NetworkFault whose selectors the daemons watch already (they keep a watch for
    /// `selection::LINGER` after its last fault): a ramp's next step, an experiment run again.
    Warm,
    /// A NetworkFault with selectors no daemon watches yet: each daemon lists and watches them
    /// first.
    Cold,
    ChaosMesh,
}

/// Chaos Mesh's partition in each target pod's netns (the sources' addresses in an ipset, a
/// chain dropping from them, jumped to from INPUT): 5 processes a pod.
fn chaos_apply(targets: &[Pod], sources: &[Ipv4Addr]) -> Result<()> {
    for t in targets {
        let ns = t.netns.as_str();
        cmd::in_ns(ns, "ipset", &["create", "bench-cut", "hash:net"])?;
        let set: Vec<String> = sources.iter().map(|s| format!("{s}/32")).collect();
        // One `ipset add` per source (here one a node: two).
        for s in &set {
            cmd::in_ns(ns, "ipset", &["add", "bench-cut", s])?;
        }
        cmd::in_ns(ns, "iptables", &["-N", "BENCH-CUT"])?;
        cmd::in_ns(ns, "iptables", &["-A", "INPUT", "-j", "BENCH-CUT"])?;
        cmd::in_ns(
            ns,
            "iptables",
            &[
                "-A",
                "BENCH-CUT",
                "-m",
                "set",
                "--match-set",
                "bench-cut",
                "src",
                "-j",
                "DROP",
            ],
        )?;
    }
    Ok(())
}

/// Chaos Mesh's recover: 4 processes a pod.
fn chaos_recover(targets: &[Pod]) -> Result<()> {
    for t in targets {
        let ns = t.netns.as_str();
        cmd::in_ns(ns, "iptables", &["-D", "INPUT", "-j", "BENCH-CUT"])?;
        cmd::in_ns(ns, "iptables", &["-F", "BENCH-CUT"])?;
        cmd::in_ns(ns, "iptables", &["-X", "BENCH-CUT"])?;
        cmd::in_ns(ns, "ipset", &["destroy", "bench-cut"])?;
    }
    Ok(())
}

/// Sleeps until 200 ms past the next whole second: an abort ends the NetworkFaults created at
/// or before its time (whole seconds), so the next round's fault is created after it.
fn past_next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    std::thread::sleep(Duration::from_secs(1) - into + Duration::from_millis(200));
}

/// Polls until every daemon holds `want` parts of NetworkFault NAME.
fn until_held(d: &Deployed, want: bool) -> Result<()> {
    let resource = format!("{NS}/{NAME}");
    for _ in 0..3000 {
        let mut all = true;
        for dm in &d.daemons {
            let body = super::faults::call_ok(&dm.socket, "GET", "/v1/faults", "")?;
            let list: Vec<serde_json::Value> = serde_json::from_str(&body)?;
            all &= list.iter().any(|f| f["resource"] == resource.as_str()) == want;
        }
        if all {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(anyhow!(
        "{resource}: held = {want} not reached on every node"
    ))
}

/// The NetworkFault: `bench=source` to `bench=target`; with a `to` selector written anew for
/// `fresh` (the same pods, a label selector no daemon watches yet).
fn fault(fresh: Option<usize>) -> serde_json::Value {
    let to = match fresh {
        None => json!({"matchLabels": {"bench": "target"}}),
        Some(n) => json!({"matchExpressions": [
            {"key": "bench", "operator": "In", "values": ["target", format!("unused-{n}")]}]}),
    };
    network_fault(
        NS,
        NAME,
        json!({"from": {"pods": {"matchLabels": {"bench": "source"}}},
               "to": {"pods": to},
               "blackhole": true, "duration": "10m"}),
    )
}

/// Deletes the (aborted) NetworkFault and waits until no daemon holds it, and until the
/// abort's second is over.
fn clear(d: &Deployed) -> Result<()> {
    d.delete_network_fault(NS, NAME)?;
    until_held(d, false)?;
    past_next_second();
    Ok(())
}

fn one(
    d: &Deployed,
    targets: &[Pod],
    sources: &[Ipv4Addr],
    way: Way,
    round: usize,
) -> Result<Event<Way>> {
    let apply = match way {
        Way::Warm => timed(|| d.apply(&fault(None)))?,
        Way::Cold => timed(|| d.apply(&fault(Some(round))))?,
        Way::ChaosMesh => timed(|| chaos_apply(targets, sources))?,
    };
    std::thread::sleep(HOLD);
    let abort = match way {
        Way::Warm | Way::Cold => timed(|| d.abort("bench"))?,
        Way::ChaosMesh => timed(|| chaos_recover(targets))?,
    };
    std::thread::sleep(HOLD);
    if way != Way::ChaosMesh {
        // The aborted NetworkFault stays (phase Aborted) until deleted; the next round creates
        // a fresh one after the abort's second.
        clear(d)?;
    }
    Ok(Event { way, apply, abort })
}

/// (apply: call start to the first dropped probe on every path, abort: call start to traffic
/// back on every path, apply call's duration, abort call's duration), in ms.
fn analyse(paths: &[Probes], e: &Event<Way>) -> Result<(f64, f64, f64, f64)> {
    let mut lost_all = 0u64;
    let mut back_all = 0u64;
    for (i, p) in paths.iter().enumerate() {
        let lost = p
            .first_after(e.apply.0, false)
            .with_context(|| format!("path {i}: no probe lost after the apply"))?;
        ensure!(lost < e.abort.0, "path {i}: no probe lost before the abort");
        // In full effect from then on until the abort (5 ms for probes already on the way).
        let (n, got) = p.arrived_between(lost + 5_000_000, e.abort.0);
        ensure!(
            n > 50 && got == 0,
            "path {i}: {got} of {n} probes passed the fault in effect"
        );
        let back = p
            .first_after(e.abort.0, true)
            .with_context(|| format!("path {i}: traffic never came back after the abort"))?;
        let (n, got) = p.arrived_between(back + 5_000_000, e.abort.1 + HOLD.as_nanos() as u64 / 2);
        ensure!(
            got * 100 >= n * 99,
            "path {i}: after the abort only {got} of {n} probes arrived"
        );
        lost_all = lost_all.max(lost);
        back_all = back_all.max(back);
    }
    let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
    Ok((
        ms(lost_all, e.apply.0),
        ms(back_all, e.abort.0),
        ms(e.apply.1, e.apply.0),
        ms(e.abort.1, e.abort.0),
    ))
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let per_node = if ctx.quick { 2 } else { 4 };
    let rounds = if ctx.quick { 2 } else { 8 };
    let mut d = Deployed::up_with(
        &lab::run_prefix("benchcl"),
        ClusterOptions::default(),
        &ctx.bin,
    )?;
    let mut sources = Vec::new();
    let mut targets = Vec::new();
    for n in 1..=2u8 {
        sources.push(
            d.cluster
                .add_pod(n, PodMeta::new(NS, &[("bench", "source")]))?,
        );
    }
    for i in 0..per_node * 2 {
        let n = 1 + (i % 2) as u8;
        targets.push(
            d.cluster
                .add_pod(n, PodMeta::new(NS, &[("bench", "target")]))?,
        );
    }
    // The probed targets (one a node) are the last ones each way configures.
    let probed: Vec<Pod> = targets[targets.len() - 2..].to_vec();
    let paths: Vec<(&str, &str, SocketAddr)> = sources
        .iter()
        .zip(&probed)
        .map(|(s, t)| {
            (
                s.netns.as_str(),
                t.netns.as_str(),
                SocketAddr::new(t.ip.into(), PORT),
            )
        })
        .collect();
    for (s, t) in sources.iter().zip(&probed) {
        ensure!(s.node == t.node, "a probe path must stay on one node");
    }
    let source_ips: Vec<Ipv4Addr> = sources.iter().map(|p| p.ip).collect();
    // The warm way's selectors watched once, as by an earlier fault on the same pods.
    d.apply(&fault(None))?;
    until_held(&d, true)?;
    clear(&d)?;
    let stream = ProbeStream::start_paths(&paths, GAP)?;
    std::thread::sleep(Duration::from_millis(100));
    let ways = [Way::Warm, Way::Cold, Way::ChaosMesh];
    let mut events = Vec::new();
    let result = (|| -> Result<()> {
        for round in 0..rounds {
            for k in 0..ways.len() {
                let w = ways[(k + round) % ways.len()];
                events.push(one(&d, &targets, &source_ips, w, round)?);
            }
        }
        Ok(())
    })();
    let probes = stream.finish_paths()?;
    result?;
    let mut per: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); ways.len()];
    for e in &events {
        let i = ways.iter().position(|w| *w == e.way).expect("way");
        per[i].push(analyse(&probes, e)?);
    }
    let col = |i: usize, f: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = per[i].iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let show = |v: &[f64], call: &[f64]| {
        format!(
            "{:.1} ms (p99 {:.1} ms; the call returns after {:.1} ms)",
            median(v),
            percentile(v, 99.0),
            median(call)
        )
    };
    let mut sec = Section::new(
        "9. Cluster apply and abort: every node",
        "Chaos Mesh partition (per target pod ipset/iptables, one controller)",
    );
    let alt = col(2, |x| x.0);
    for (i, what) in [
        (0, "selectors already watched"),
        (1, "new selectors: listed and watched first"),
    ] {
        let ours = col(i, |x| x.0);
        let r = median(&alt) / median(&ours);
        sec.rows.push(
            Row::new(
                format!(
                    "apply, {what}: NetworkFault created -> first dropped packet on every node ({} target pods)",
                    targets.len()
                ),
                show(&ours, &col(i, |x| x.2)),
                show(&alt, &col(2, |x| x.2)),
            )
            .ratio(r)
            .goal(">= 10x", r >= 10.0),
        );
    }
    let mut ours: Vec<f64> = per[0].iter().chain(&per[1]).map(|x| x.1).collect();
    ours.sort_by(f64::total_cmp);
    let mut call: Vec<f64> = per[0].iter().chain(&per[1]).map(|x| x.3).collect();
    call.sort_by(f64::total_cmp);
    let alt = col(2, |x| x.1);
    let r = median(&alt) / median(&ours);
    sec.rows.push(
        Row::new(
            "abort: `kubectl injector abort` -> traffic back on every node",
            show(&ours, &call),
            show(&alt, &col(2, |x| x.3)),
        )
        .ratio(r)
        .goal(">= 10x", r >= 10.0),
    );
    let p99 = percentile(&ours, 99.0);
    sec.rows.push(
        Row::new("abort p99 (every node)", format!("{p99:.1} ms"), "").goal("< 1 s", p99 < 1000.0),
    );
    sec.notes.push(format!(
        "Two lab nodes as a cluster (kube-apiserver 1.20 on loopback, a daemon per node with its \
         own RBAC watching through the node's forwarder). A source pod per node probes a target \
         pod on the same node, one UDP probe every {:?} per path; {} target pods in all ({} a \
         node). Per way the median and p99 of {rounds} rounds, ways interleaved. A daemon keeps a \
         watch for 10 minutes after the last fault that needed it: \"already watched\" is the \
         next fault on the same pods (a ramp's next step, an experiment run again); \"new \
         selectors\" writes the `to` selector anew each round (the same pods), so each daemon \
         lists and watches it before installing. Apply = from the start of the create call (server-side apply, as kubectl or a controller makes it) \
         to the send time of the first dropped probe on the later of the two nodes; each fault \
         is checked to drop every probe until the abort. Abort = from the start of `kubectl \
         injector abort` (a process: it writes InjectorControl/cluster) to the first probe \
         through on the later node. Chaos Mesh: one process runs, per target pod, ipset create, \
         one ipset add per source, iptables -N/-A/-A in the pod's netns through `ip netns exec` \
         (recover: -D/-F/-X, ipset destroy), the probed pods last; its chaos-daemon's gRPC hop \
         and the controller's reconcile are not counted, so the alternative is flattered.",
        GAP * 2,
        targets.len(),
        per_node,
    ));
    Ok(sec)
}
