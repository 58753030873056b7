//! A real resolver and real clients for DNS faults: dnsmasq (Debian's) answering in a pod's
//! network namespace, `dig` and glibc's `getent hosts` asking from others.

use std::{
    net::IpAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{cmd, lab::Pod};

/// dnsmasq in `pod`'s namespace, answering every name under `prod.svc.cluster.local`,
/// `payments.svc.cluster.local` and `slow.example` (IPv4 and IPv6), nothing forwarded. Killed on
/// drop.
pub struct Resolver {
    child: Child,
}

impl Resolver {
    pub fn start(pod: &Pod) -> Resolver {
        let listen = format!("--listen-address={},{}", pod.ip, pod.ip6);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod.netns,
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &listen,
                "--port=53",
                "--user=root",
                "--pid-file=",
                "--log-facility=-",
                "--address=/prod.svc.cluster.local/10.42.9.9",
                "--address=/payments.svc.cluster.local/10.42.9.10",
                "--address=/payments.svc.cluster.local/fd00:42:9::10",
                "--address=/slow.example/10.42.9.11",
                "--address=/slow.example/fd00:42:9::11",
                "--address=/prod.svc.cluster.local/fd00:42:9::9",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (scripts/bootstrap.sh installs dnsmasq-base)");
        Resolver { child }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/etc/netns/<ns>/resolv.conf` naming the resolver: `ip netns exec` mounts it over
/// `/etc/resolv.conf`, so glibc in that namespace asks it. Removed on drop.
pub struct ResolvConf {
    dir: String,
}

impl ResolvConf {
    pub fn write(netns: &str, server: IpAddr) -> ResolvConf {
        let dir = format!("/etc/netns/{netns}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            format!("{dir}/resolv.conf"),
            format!("nameserver {server}\noptions timeout:1 attempts:1\n"),
        )
        .unwrap();
        ResolvConf { dir }
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `dig` heard: the status word (NOERROR, NXDOMAIN, SERVFAIL, ...) or `timeout`.
pub fn dig(from: &Pod, server: IpAddr, name: &str) -> String {
    dig_timed(from, server, name).0
}

/// As [`dig`], with the time the command took (a little more than the question's round trip:
/// the process start).
pub fn dig_timed(from: &Pod, server: IpAddr, name: &str) -> (String, Duration) {
    let qtype = if server.is_ipv4() { "A" } else { "AAAA" };
    let at = format!("@{server}");
    let t = Instant::now();
    let out = cmd::output(
        "ip",
        &[
            "netns",
            "exec",
            &from.netns,
            "dig",
            "+tries=1",
            "+time=2",
            &at,
            name,
            qtype,
        ],
    )
    .expect("dig (scripts/bootstrap.sh installs bind9-dnsutils)");
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(i) = text.find("status: ") {
        let status = text[i + 8..].split(',').next().unwrap_or_default();
        return (status.to_string(), took);
    }
    assert!(
        text.contains("timed out"),
        "dig @{server} {name}: neither a status nor a timeout:\n{text}"
    );
    ("timeout".into(), took)
}

/// `getent hosts name` in `from`'s namespace: glibc's answer (exit 0) or not found (2).
pub fn getent(from: &Pod, name: &str) -> i32 {
    cmd::output(
        "ip",
        &["netns", "exec", &from.netns, "getent", "hosts", name],
    )
    .unwrap()
    .status
    .code()
    .unwrap_or(-1)
}

/// dig's status of an answer.
pub const ANSWERED: &str = "NOERROR";

/// Waits (up to 10 s) until the resolver at `server` answers `from`.
pub fn wait_answering(from: &Pod, server: IpAddr) {
    let t = Instant::now();
    while dig(from, server, "web.prod.svc.cluster.local") != ANSWERED {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "dnsmasq does not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
