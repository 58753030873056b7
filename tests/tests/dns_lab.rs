//! DNS faults with a real resolver and real clients on the two-node lab: dnsmasq (Debian's)
//! answers in a pod's network namespace; `dig` and glibc's `getent hosts` ask from a pod on the
//! same node and from one on the other node. Under the faults, the names they cover get
//! NXDOMAIN or SERVFAIL (exact names and suffixes) or no answer at all (a timeout); every other
//! name is answered as before; removing the faults restores every answer. IPv4, and IPv6 on the
//! same node (the lab models no IPv6 overlay).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use injector_tests::{
    daemon::Daemon,
    dns::{ANSWERED, ResolvConf, Resolver, dig, getent, wait_answering},
    injector_bin,
    lab::{self, Lab},
    require_root, stats,
};

#[test]
fn dns_faults_answer_their_names_with_errors_or_silence_and_nothing_else() {
    require_root();
    let l = Lab::up(&lab::run_prefix("dns"), 2).unwrap();
    let server = l.pod(1, 2);
    let near = l.pod(1, 1);
    let far = l.pod(2, 1);
    let _r = Resolver::start(server);
    let (s4, s6) = (IpAddr::from(server.ip), IpAddr::from(server.ip6));
    wait_answering(near, s4);
    wait_answering(near, s6);
    wait_answering(far, s4);
    let _conf = ResolvConf::write(&near.netns, s4);
    assert_eq!(getent(near, "db.prod.svc.cluster.local"), 0, "before");
    let clients = format!(r#"["{}","{}","{}"]"#, near.ip, near.ip6, far.ip);
    let faults = format!(
        r#"[{{"name":"nx","from":["{s4}","{s6}"],"to":{clients},"dns":"nxdomain","dns_name":["db.prod.svc.cluster.local"],"for":"5m"}},
            {{"name":"sf","to":{clients},"dns":"servfail","dns_name":[".payments.svc.cluster.local"],"for":"5m"}},
            {{"name":"gone","to":{clients},"dns":"drop","dns_name":["slow.example"],"for":"5m"}}]"#
    );
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    d1.apply(&faults).unwrap();
    d2.apply(&faults).unwrap();
    for (from, server) in [(near, s4), (near, s6), (far, s4)] {
        let at = format!("{} -> {server}", from.name);
        for (name, want) in [
            ("db.prod.svc.cluster.local", "NXDOMAIN"),
            ("DB.Prod.svc.cluster.local", "NXDOMAIN"),
            ("web.prod.svc.cluster.local", ANSWERED),
            ("api.payments.svc.cluster.local", "SERVFAIL"),
            ("a.b.payments.svc.cluster.local", "SERVFAIL"),
            ("payments.svc.cluster.local", ANSWERED),
            ("slow.example", "timeout"),
            ("fast.slow.example", ANSWERED),
        ] {
            assert_eq!(dig(from, server, name), want, "{at}: {name}");
        }
    }
    // glibc: not found at once for the rewritten name, the others resolve.
    let t = Instant::now();
    assert_eq!(
        getent(near, "db.prod.svc.cluster.local"),
        2,
        "getent: not found"
    );
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "NXDOMAIN is an answer, not a timeout: {:?}",
        t.elapsed()
    );
    assert_eq!(
        getent(near, "web.prod.svc.cluster.local"),
        0,
        "getent: other names"
    );
    // Counted on the node that judged each answer: the resolver's node (node 1) for both
    // clients (the far one's answers leave through flannel.1 there).
    let s = d1.local(&["stats"]).unwrap();
    // Four digs on the node and glibc's questions (one or two: A, and AAAA first on some
    // versions); two from the far pod; one dig each that timed out.
    let nx = stats::fault(&s, "nx", "veth_egress", "rejected");
    assert!((5..=6).contains(&nx), "nx at the pods' veths: {nx}\n{s}");
    assert_eq!(
        stats::fault(&s, "nx", "overlay_egress", "rejected"),
        2,
        "{s}"
    );
    assert_eq!(stats::fault(&s, "gone", "veth_egress", "dropped"), 2, "{s}");
    assert_eq!(
        stats::fault(&s, "gone", "overlay_egress", "dropped"),
        1,
        "{s}"
    );
    let o = d2.local(&["stats"]).unwrap();
    assert_eq!(stats::fault(&o, "nx", "veth_egress", "matched"), 0, "{o}");
    d1.clear().unwrap();
    d2.clear().unwrap();
    for name in [
        "db.prod.svc.cluster.local",
        "api.payments.svc.cluster.local",
        "slow.example",
    ] {
        assert_eq!(dig(near, s4, name), ANSWERED, "after removal: {name}");
        assert_eq!(dig(far, s4, name), ANSWERED, "after removal, far: {name}");
    }
}
