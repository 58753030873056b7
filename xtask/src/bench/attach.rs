//! Part 3b, new pod coverage on a node: a pod's veth created -> the daemon's programs on it (its
//! link event, then two TCX attaches), one pod at a time on an otherwise quiet node. The same
//! under churn (20 pods/s scheduled on both lab nodes) is in docs/reliability.md.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use injector_tests::{
    cmd::ip,
    daemon::Daemon,
    lab::{Lab, Pod, delete_pod},
    perf::percentile,
    snapshot,
};

use super::{
    Ctx,
    report::{Row, Section},
};

/// Pod numbers for the measured pods, far above the lab's own.
const FIRST_SLOT: u8 = 200;

pub fn run(ctx: &Ctx, l: &Lab) -> Result<Section> {
    let _d = Daemon::start(&ctx.bin, l.node(1))?;
    let node = &l.node(1).netns;
    let count: u8 = if ctx.quick { 5 } else { 50 };
    let mut ms = Vec::new();
    for i in 0..count {
        let pod = Pod::at(&l.prefix, 1, FIRST_SLOT + i);
        ip("", &["netns", "add", &pod.netns])?;
        // From just before the `ip` that makes the veth (its process start included: an upper
        // bound), as a CNI plugin makes it, then puts it on the bridge.
        let created = Instant::now();
        ip(
            node,
            &[
                "link",
                "add",
                &pod.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pod.netns,
            ],
        )?;
        ip(
            node,
            &["link", "set", &pod.host_veth, "master", "cni0", "up"],
        )?;
        let attached = loop {
            if snapshot::tcx_programs(node, &pod.host_veth)?.len() >= 2 {
                break created.elapsed();
            }
            if created.elapsed() > Duration::from_secs(10) {
                delete_pod(&pod)?;
                bail!("{}: not attached within 10 s", pod.host_veth);
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        ms.push(attached.as_secs_f64() * 1e3);
        delete_pod(&pod)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    ms.sort_by(f64::total_cmp);
    let mut s = Section::new(
        "3b. New pod coverage: a pod's veth created -> the daemon's programs on it",
        "-",
    );
    let f = |p: f64| format!("{:.1} ms", percentile(&ms, p));
    s.rows.push(Row::new(
        format!("p50 ({count} pods, one at a time)"),
        f(50.0),
        "-",
    ));
    s.rows
        .push(Row::new("p99", f(99.0), "-").goal("<= 100 ms", percentile(&ms, 99.0) <= 100.0));
    s.rows.push(Row::new("max", f(100.0), "-"));
    s.notes.push(
        "Measured from just before the `ip link add` that makes the pod's veth (the process \
         start included: an upper bound) until both programs are on its TCX hooks (polled every \
         0.5 ms): the link event, the daemon's match by name and two attaches. Under churn on both \
         lab nodes at once (one kernel, RTNL shared by every attach and `ip` command): \
         docs/reliability.md."
            .into(),
    );
    Ok(s)
}
