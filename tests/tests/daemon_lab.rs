//! The node daemon in the lab: new pods are covered without a restart, kill -9 + restart adopts
//! the running faults, bad API requests get 4xx and change nothing, protected targets are refused,
//! the TCP API needs its token, /readyz and XDP-judging follow a failed XDP attach, the
//! metrics pass promtool and are scraped by a real Prometheus, and maps pinned by a version with
//! another layout are refused by name and left alone.

use std::{
    net::SocketAddr,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use injector::client::Endpoint;
use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    require_root, snapshot,
    traffic::{http_get, in_netns},
};

fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.cli_ok(&["status", "-o", "json"], "").unwrap()).unwrap()
}

#[test]
fn a_pod_added_while_the_daemon_runs_is_covered() {
    require_root();
    let mut l = Lab::up(&lab::run_prefix("np"), 2).unwrap();
    let d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    // A fault for a pod that does not exist yet (the next pod gets 10.42.1.4).
    d.apply(r#"[{"name":"newpod","to":["10.42.1.4"],"blackhole":true,"for":"5m"}]"#)
        .unwrap();
    let pod = l.add_pod(1).unwrap();
    assert_eq!(pod.ip.to_string(), "10.42.1.4");
    until("the new veth in status", Duration::from_secs(5), || {
        status(&d)["interfaces"][&pod.host_veth]["hooks"]
            .as_array()
            .is_some_and(|h| h.len() == 2)
    });
    assert_eq!(
        l.ping(l.pod(1, 1), pod.ip.into(), 3).unwrap(),
        0,
        "the new pod is covered"
    );
    assert_eq!(l.ping(l.pod(1, 1), l.pod(1, 2).ip.into(), 3).unwrap(), 3);
    let pins = d.bpffs.join("links");
    let has_pins = |v: &str| {
        std::fs::read_dir(&pins)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(v))
    };
    assert!(has_pins(&pod.host_veth));
    // The pod goes: its veth is forgotten, its pins removed.
    l.remove_pod(1, &pod.name).unwrap();
    until("the veth gone from status", Duration::from_secs(5), || {
        status(&d)["interfaces"].get(&pod.host_veth).is_none()
    });
    assert!(
        !has_pins(&pod.host_veth),
        "pins of a vanished veth are removed"
    );
}

#[test]
fn kill_9_and_restart_adopts_the_running_faults() {
    require_root();
    let l = Lab::up(&lab::run_prefix("rs"), 2).unwrap();
    let node = l.node(1);
    let before = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    let mut d = Daemon::start(&injector_bin(), node).unwrap();
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));
    d.apply(&format!(
        r#"[{{"name":"bh","to":["{}"],"blackhole":true,"for":"5m"}},{{"name":"cross","to":["{}"],"proto":"udp","loss":"50%","for":"10m"}}]"#,
        b.ip, c.ip
    ))
    .unwrap();
    let listed: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["fault", "ls", "-o", "json"], "").unwrap()).unwrap();
    assert_eq!(l.ping(a, b.ip.into(), 3).unwrap(), 0);
    let attached = snapshot::node(&node.netns, &node.bpffs()).unwrap();

    d.signal_and_wait(libc::SIGKILL).unwrap();
    assert_eq!(
        l.ping(a, b.ip.into(), 2).unwrap(),
        0,
        "faults run on while no daemon is there"
    );
    let d = d.restart().unwrap();
    assert!(
        d.log_text()
            .contains("adopted the faults of a previous instance faults=2"),
        "{}",
        d.log_text()
    );
    let relisted: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["fault", "ls", "-o", "json"], "").unwrap()).unwrap();
    for i in 0..2 {
        assert_eq!(relisted[i]["name"], listed[i]["name"]);
        assert_eq!(relisted[i]["slot"], listed[i]["slot"]);
        assert!(
            relisted[i]["remaining_s"].as_f64() < listed[i]["remaining_s"].as_f64(),
            "deadlines kept, not restarted"
        );
    }
    assert_eq!(
        relisted[0]["counters"]["veth_ingress"]["dropped"]["packets"], 5,
        "counters kept"
    );
    assert_eq!(l.ping(a, b.ip.into(), 3).unwrap(), 0, "still enforced");
    // Nothing attached twice: the programs were swapped inside the pinned links.
    assert_eq!(
        snapshot::node(&node.netns, &node.bpffs()).unwrap(),
        attached
    );
    d.stop().unwrap();
    assert_eq!(
        snapshot::node(&node.netns, &node.bpffs()).unwrap(),
        before,
        "a clean stop after adoption"
    );
    assert_eq!(l.ping(a, b.ip.into(), 3).unwrap(), 3);
}

#[test]
fn bad_requests_get_4xx_and_change_nothing() {
    require_root();
    let l = Lab::up(&lab::run_prefix("br"), 1).unwrap();
    let d = Daemon::start_with(
        &injector_bin(),
        l.node(1),
        &["--protect", "10.43.0.10/32=cluster-dns"],
    )
    .unwrap();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the API socket is private");
    d.apply(r#"[{"name":"keep","to":["10.42.1.3"],"loss":"5%","for":"5m"}]"#)
        .unwrap();
    let api = Endpoint::Unix(d.socket.clone());
    // The fault list, remaining time aside.
    let faults = |api: &Endpoint| {
        let mut v: serde_json::Value =
            serde_json::from_str(&api.request("GET", "/v1/faults", None).unwrap().body).unwrap();
        for f in v.as_array_mut().unwrap() {
            f.as_object_mut().unwrap().remove("remaining_s");
        }
        v
    };
    let before = faults(&api);
    let f = |json: &str| format!("[{json}]");
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("POST", "/v1/faults".into(), "{".into(), 400, "not JSON"),
        (
            "POST",
            "/v1/faults".into(),
            "[]".into(),
            400,
            "faults: the request holds no fault",
        ),
        (
            "POST",
            "/v1/faults".into(),
            f(r#"{"name":"x","to":["10.42.1.3"],"blackhole":true,"for":"1m","colour":"red"}"#),
            400,
            "faults[0]: unknown field `colour`",
        ),
        (
            "POST",
            "/v1/faults".into(),
            f(r#"{"name":"x","to":["10.42.1.3"],"loss":"150%","for":"1m"}"#),
            400,
            "faults[0].loss: '150%': must be between 0% and 100%",
        ),
        (
            "POST",
            "/v1/faults".into(),
            f(r#"{"name":"x","to":["10.42.1.3/24"],"loss":"5%","for":"1m"}"#),
            400,
            "did you mean 10.42.1.0/24?",
        ),
        (
            "POST",
            "/v1/faults".into(),
            f(
                r#"{"name":"x","to":["10.42.1.3"],"proto":"tcp","dport":["70000"],"loss":"5%","for":"1m"}"#,
            ),
            400,
            "faults[0].dport: '70000': ports are 0-65535",
        ),
        (
            "POST",
            "/v1/faults".into(),
            f(r#"{"name":"keep","to":["10.42.1.3"],"loss":"5%","for":"1m"}"#),
            409,
            "faults[0].name: a fault named 'keep' exists",
        ),
        (
            "POST",
            "/v1/faults".into(),
            format!(
                "[{0},{0}]",
                r#"{"name":"x","to":["10.42.1.3"],"loss":"5%","for":"1m"}"#
            ),
            400,
            "faults[1].name: 'x' appears twice",
        ),
        (
            "POST",
            "/v1/faults".into(),
            f(r#"{"name":"x","to":["10.42.1.1"],"blackhole":true,"for":"1m"}"#),
            403,
            "faults[0].to: 10.42.1.1/32 lies entirely in protected 10.42.1.1/32 (node address)",
        ),
        (
            "POST",
            "/v1/faults".into(),
            f(r#"{"name":"x","to":["10.43.0.10"],"blackhole":true,"for":"1m"}"#),
            403,
            "lies entirely in protected 10.43.0.10/32 (cluster-dns)",
        ),
        (
            "POST",
            "/v1/faults".into(),
            f(
                r#"{"name":"x","from":["10.42.1.1"],"to":["10.42.1.3"],"both_ways":true,"blackhole":true,"for":"1m"}"#,
            ),
            403,
            "faults[0].from: 10.42.1.1/32 lies entirely in protected 10.42.1.1/32 (node address)",
        ),
        (
            "POST",
            "/v1/faults?force=maybe".into(),
            f(r#"{"name":"x","to":["10.42.1.3"],"loss":"5%","for":"1m"}"#),
            400,
            "force: 'maybe' is not a boolean",
        ),
        (
            "POST",
            "/v1/faults?colour=red".into(),
            f(r#"{"name":"x","to":["10.42.1.3"],"loss":"5%","for":"1m"}"#),
            400,
            "colour: unknown query parameter",
        ),
        (
            "DELETE",
            "/v1/faults/nope".into(),
            String::new(),
            404,
            "name: no fault named 'nope'",
        ),
        (
            "GET",
            "/v1/faults/nope".into(),
            String::new(),
            404,
            "name: no fault named 'nope'",
        ),
        (
            "GET",
            "/v1/nothing".into(),
            String::new(),
            404,
            "no such endpoint",
        ),
    ];
    let mut cases = cases;
    if !injector::kernel::features::fq() {
        cases.push((
            "POST",
            "/v1/faults".into(),
            f(r#"{"name":"x","to":["10.42.1.3"],"delay":"100ms","for":"1m"}"#),
            400,
            "faults[0].delay: the fq qdisc is unavailable on this kernel",
        ));
    }
    for (method, path, body, code, msg) in &cases {
        let r = api
            .request(method, path, (!body.is_empty()).then_some(body.as_str()))
            .unwrap();
        assert_eq!(r.status, *code, "{method} {path} {body}: {}", r.body);
        assert!(
            r.error_message().contains(msg),
            "{method} {path} {body}: {}",
            r.error_message()
        );
    }
    // Large requests (4096 addresses and more) are validated fault by fault on every CPU, and
    // their records stored while the compiler runs: the first fault to fail, in request order, is
    // the error, and a refusal by the compiler leaves no record behind.
    let (_, records) = d.kernel_faults();
    let hosts: Vec<String> = (0..4096)
        .map(|i| format!("\"10.{}.{}.{}\"", 100 + i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let wide = format!(
        r#"{{"name":"wide","to":[{}],"blackhole":true,"for":"1m"}}"#,
        hosts.join(",")
    );
    let dns = |i: usize| {
        format!(
            r#"{{"name":"d{i}","to":["10.42.1.3"],"dns":"nxdomain","dns_name":["n{i}.example"],"for":"1m"}}"#
        )
    };
    let bad = r#"{"name":"b","to":["10.42.1.3"],"loss":"150%","for":"1m"}"#;
    let twice = r#"{"name":"wide","to":["10.42.1.4"],"loss":"5%","for":"1m"}"#;
    let large: Vec<(String, u16, &str)> = vec![
        (
            format!(
                "[{wide},{}]",
                (0..65).map(dns).collect::<Vec<_>>().join(",")
            ),
            400,
            "too many DNS faults: 65",
        ),
        (
            format!("[{wide},{},{bad},{twice}]", dns(0)),
            400,
            "faults[2].loss: '150%'",
        ),
        (
            format!("[{wide},{twice},{bad}]"),
            400,
            "faults[1].name: 'wide' appears twice",
        ),
    ];
    for (body, code, msg) in &large {
        let r = api.request("POST", "/v1/faults", Some(body)).unwrap();
        assert_eq!(r.status, *code, "{msg}: {}", r.body);
        assert!(r.error_message().contains(msg), "{}", r.error_message());
    }
    assert_eq!(d.kernel_faults().1, records, "no record left behind");
    assert_eq!(faults(&api), before, "nothing changed");
    // A fault over a protected target has it carved out, and the reply says so.
    let r = api
        .request(
            "POST",
            "/v1/faults",
            Some(&f(
                r#"{"name":"carve","to":["10.43.0.0/16"],"blackhole":true,"for":"1m"}"#,
            )),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let c: injector::api::Created = serde_json::from_str(&r.body).unwrap();
    assert_eq!(c.created, ["carve"]);
    // Out of the destinations, and of the (any) sources: its replies pass too.
    let dns = |field: &str| injector::api::Carved {
        field: field.into(),
        cidr: "10.43.0.10/32".into(),
        why: "cluster-dns".into(),
    };
    assert_eq!(c.carved["carve"], [dns("to"), dns("from")]);
    assert_eq!(
        api.request("DELETE", "/v1/faults/carve", None)
            .unwrap()
            .status,
        200
    );
    assert_eq!(faults(&api), before);
    // The CLI shows the daemon's message and exits 1; an unreachable daemon is one line and exit 3.
    let out = d
        .cli(
            &["apply", "-f", "-"],
            &f(r#"{"name":"x","to":["10.42.1.3"],"loss":"150%","for":"1m"}"#),
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "injector: faults[0].loss: '150%': must be between 0% and 100%"
    );
    let gone = Command::new(injector_bin())
        .args(["--socket", "/nonexistent.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&gone.stderr).lines().count(), 1);
    // Forced, a protected target is accepted.
    let r = api
        .request(
            "POST",
            "/v1/faults?force=true",
            Some(&f(
                r#"{"name":"x","to":["10.42.1.1"],"blackhole":true,"for":"1m"}"#,
            )),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        api.request("GET", "/v1/faults/x", None).unwrap().status,
        200
    );
}

#[test]
fn the_tcp_api_needs_its_token() {
    require_root();
    let l = Lab::up(&lab::run_prefix("tt"), 1).unwrap();
    let token_file = std::env::temp_dir().join(format!("{}.token", l.prefix));
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    let _cleanup = scopeguard(token_file.clone());
    // A token file that group or others can read is refused at start, naming the fix; nothing
    // is loaded.
    let bpffs = format!("/sys/fs/bpf/{}-tok", l.prefix);
    let out = Command::new(injector_bin())
        .args(["daemon", "--netns", &l.node(1).netns, "--bpffs", &bpffs])
        .args(["--listen", "127.0.0.1:7070", "--api-token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--api-token-file: ") && err.contains("mode 644") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(
        !std::path::Path::new(&bpffs).exists(),
        "nothing was created"
    );
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start_with(
        &injector_bin(),
        l.node(1),
        &[
            "--listen",
            "127.0.0.1:7070",
            "--api-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .unwrap();
    let ask = |token: &str| {
        let ep = Endpoint::Tcp {
            addr: "127.0.0.1:7070".into(),
            token: token.into(),
        };
        in_netns(&l.node(1).netns, move || {
            Ok(ep.request("GET", "/v1/status", None)?.status)
        })
        .unwrap()
    };
    assert_eq!(ask("wrong-token-0123456789"), 401);
    assert_eq!(ask("s3cret-token-0123456789"), 200);
    // The CLI over TCP: --addr and --token-file (run in the node's netns, where the listener is).
    let cli = |token: &std::path::Path| {
        Command::new("ip")
            .args(["netns", "exec", &l.node(1).netns])
            .arg(injector_bin())
            .args(["status", "--addr", "127.0.0.1:7070", "--token-file"])
            .arg(token)
            .args(["-o", "json"])
            .output()
            .unwrap()
    };
    // The Unix socket: a socket, mode 0600, owned by the daemon's user.
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600, "the API socket's mode");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        meta.uid(),
        unsafe { libc::geteuid() },
        "the API socket's owner"
    );
    let out = cli(&token_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["ready"],
        true
    );
    let wrong = std::env::temp_dir().join(format!("{}.wrong", l.prefix));
    std::fs::write(&wrong, "not-the-token-0123456789").unwrap();
    let _cleanup2 = scopeguard(wrong.clone());
    // The client refuses a token file others can read too.
    let out = cli(&wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = cli(&wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("authorization: missing or wrong bearer token")
    );
    drop(d);
    // Refused at start: a TCP API without a token file.
    let out = Command::new(injector_bin())
        .args([
            "daemon",
            "--netns",
            &l.node(1).netns,
            "--bpffs",
            "/sys/fs/bpf/unused-x",
            "--listen",
            "127.0.0.1:7071",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--listen: a TCP API needs --api-token-file")
    );
    assert!(
        !std::path::Path::new("/sys/fs/bpf/unused-x").exists(),
        "nothing was created"
    );
}

#[test]
fn an_xdp_attach_failure_is_not_ready_and_that_pods_drops_are_still_judged() {
    require_root();
    let mut l = Lab::up(&lab::run_prefix("xf"), 2).unwrap();
    let d = Daemon::start_with(&injector_bin(), l.node(1), &["--xdp"]).unwrap();
    let netns = l.node(1).netns.clone();
    let metrics: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    let readyz = || http_get(&netns, metrics, "/readyz", "*/*").unwrap();
    assert_eq!(readyz(), (200, "ready\n".to_string()));
    assert_eq!(status(&d)["interfaces"]["cni0"]["early_judged"], true);

    // A pod whose veth refuses XDP: its peer's MTU is too large for XDP on veth (ERANGE).
    let bad = l.add_pod_with_mtu(1, "9000").unwrap();
    until(
        "the XDP attach failure in status",
        Duration::from_secs(5),
        || status(&d)["interfaces"][&bad.host_veth]["error"].is_string(),
    );
    let st = status(&d);
    assert_eq!(st["ready"], false, "{st}");
    assert!(
        st["not_ready"][0]
            .as_str()
            .is_some_and(|w| w.starts_with(&format!("interface {}: not attached", bad.host_veth))),
        "{st}"
    );
    assert_eq!(
        st["interfaces"]["cni0"]["early_judged"], false,
        "one pod veth without XDP: packets entering through the bridge were not all judged by XDP"
    );
    let (code, body) = readyz();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("not ready\n") && body.contains(&bad.host_veth),
        "{body}"
    );

    // Its packets to another node are judged at flannel.1 egress (the bridge is not XDP-judged).
    d.apply(&format!(
        r#"[{{"name":"bh","from":["{}"],"to":["{}"],"blackhole":true,"for":"5m"}}]"#,
        bad.ip,
        l.pod(2, 1).ip
    ))
    .unwrap();
    assert_eq!(
        l.ping(&bad, l.pod(2, 1).ip.into(), 3).unwrap(),
        0,
        "the pod without XDP has its routed drops judged at egress"
    );
    assert_eq!(l.ping(l.pod(1, 1), l.pod(2, 1).ip.into(), 3).unwrap(), 3);

    // The pod goes: ready again, the bridge XDP-judged again.
    l.remove_pod(1, &bad.name).unwrap();
    until("ready again", Duration::from_secs(5), || readyz().0 == 200);
    assert_eq!(status(&d)["interfaces"]["cni0"]["early_judged"], true);

    // A map pin removed behind the daemon's back: not ready, naming it.
    let pin = d.bpffs.join(injector_common::maps::ALL[0]);
    std::fs::remove_file(&pin).unwrap();
    let (code, body) = readyz();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(&format!("map pin {} is missing", pin.display())),
        "{body}"
    );
}

struct FileGuard(std::path::PathBuf);
impl Drop for FileGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
fn scopeguard(p: std::path::PathBuf) -> FileGuard {
    FileGuard(p)
}

/// A Prometheus server in a lab node's netns; killed and its data removed on drop.
struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    require_root();
    let l = Lab::up(&lab::run_prefix("pm"), 2).unwrap();
    let node = l.node(1);
    let d = Daemon::start(&injector_bin(), node).unwrap();
    d.apply(&format!(
        r#"[{{"name":"bh","to":["{}"],"blackhole":true,"for":"5m"}}]"#,
        l.pod(1, 2).ip
    ))
    .unwrap();
    assert_eq!(l.ping(l.pod(1, 1), l.pod(1, 2).ip.into(), 4).unwrap(), 0);
    let metrics: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    assert_eq!(
        http_get(&node.netns, metrics, "/healthz", "*/*").unwrap().0,
        200
    );
    assert_eq!(
        http_get(&node.netns, metrics, "/readyz", "*/*").unwrap().0,
        200
    );
    let (code, body) = http_get(&node.netns, metrics, "/metrics", "text/plain").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains(
            r#"injector_packets_total{fault="bh",hook="veth_ingress",action="dropped"} 4"#
        ),
        "{body}"
    );
    assert!(!body.contains("10.42."), "no pod IPs in labels");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/bootstrap.sh installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus in the node's netns scrapes the daemon every second.
    let dir = std::env::temp_dir().join(format!("{}-prometheus", l.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: injector\n    static_configs: [{targets: ['127.0.0.1:9464']}]\n").unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &node.netns, "prometheus"])
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .args(["--web.listen-address=127.0.0.1:9090", "--log.level=warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    let _prom = Prometheus { child, dir };
    let q = "/api/v1/query?query=injector_packets_total%7Bfault%3D%22bh%22%2Caction%3D%22dropped%22%2Chook%3D%22veth_ingress%22%7D";
    let api: SocketAddr = "127.0.0.1:9090".parse().unwrap();
    let mut last = String::new();
    until(
        "Prometheus to return the fault's counter",
        Duration::from_secs(60),
        || {
            if let Ok((200, body)) = http_get(&node.netns, api, q, "application/json") {
                last = body;
                let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
                return v["data"]["result"][0]["value"][1].as_str() == Some("4");
            }
            false
        },
    );
    assert!(last.contains(r#""fault":"bh""#), "{last}");
}

/// Pins an array map named `name` (key 4 bytes, `value_size`, `entries`) at `path`, as another
/// version of the daemon would have left it: BPF_MAP_CREATE, then BPF_OBJ_PIN.
fn pin_array(path: &std::path::Path, name: &str, value_size: u32, entries: u32) {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, map_flags,
    // inner_map_fd, numa_node, map_name[16] at 28.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&2u32.to_ne_bytes()); // BPF_MAP_TYPE_ARRAY
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
    attr[8..12].copy_from_slice(&value_size.to_ne_bytes());
    attr[12..16].copy_from_slice(&entries.to_ne_bytes());
    attr[28..28 + name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a valid bpf_attr for BPF_MAP_CREATE (cmd 0).
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // BPF_OBJ_PIN: pathname (u64), bpf_fd (u32).
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    // SAFETY: a valid bpf_attr for BPF_OBJ_PIN (cmd 6) whose path outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_ptr(), attr.len()) };
    assert_eq!(r, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: our fd; the pin holds the map.
    unsafe { libc::close(fd as i32) };
}

#[test]
fn maps_pinned_by_another_version_are_refused_by_name_and_left_alone() {
    require_root();
    let l = Lab::up(&lab::run_prefix("dpv"), 1).unwrap();
    let node = l.node(1);
    let dir = std::path::PathBuf::from(node.bpffs());
    std::fs::create_dir_all(&dir).unwrap();
    struct Pins(std::path::PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _pins = Pins(dir.clone());
    // FAULTS as an earlier layout had it: 112-byte fault configurations.
    let faults = dir.join("FAULTS");
    let max = injector_common::MAX_FAULTS * 2;
    pin_array(&faults, "FAULTS", 112, max);
    let out = Command::new(injector_bin())
        .args(["--socket"])
        .arg(std::env::temp_dir().join(format!("{}.sock", node.netns)))
        .args(["daemon", "--netns", &node.netns, "--bpffs"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused: {err}");
    let size = size_of::<injector_common::FaultCfg>();
    for want in [
        "the maps pinned there were made by another version of injector".to_string(),
        format!(
            "FAULTS (pinned: key 4 B, value 112 B, {max} entries; this build: key 4 B, value \
             {size} B, {max} entries)"
        ),
        format!("`rm -r {}`", dir.display()),
    ] {
        assert!(err.contains(&want), "{want:?} not in: {err}");
    }
    // Nothing changed: the pin is there, alone, as it was.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["FAULTS"], "{left:?}");
}
