//! Abuse of the daemon's API, on its Unix socket: 10k malformed requests (random JSON, faults with
//! one field broken, deep nesting, huge bodies, bytes that are not UTF-8 or not HTTP), slow
//! clients holding connections open, hundreds of connections at once, and 64 concurrent writers
//! for a minute. The daemon must not crash, a bad request must change nothing, memory must stay
//! bounded, the API must keep answering, and at the end the kernel maps, the records and the API
//! must agree on exactly the faults that were there before.
//!
//! `INJECTOR_ABUSE_WRITER_SECS` shortens or lengthens the writers' minute.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    proc, require_root,
    rng::Rng,
};

/// The faults present throughout; every abuse must leave exactly these.
const BASELINE: &str = r#"[
 {"name":"base-loss","to":["10.42.1.3"],"proto":"udp","dport":["53"],"loss":"10%","for":"1h"},
 {"name":"base-hole","from":["10.42.1.2"],"to":["10.99.0.0/16"],"blackhole":true,"for":"2h"}
]"#;

/// A random JSON value of bounded depth (never a valid fault list: it has no fault's fields).
fn random_json(r: &mut Rng, depth: u32) -> String {
    match if depth == 0 { r.below(4) } else { r.below(6) } {
        0 => "null".into(),
        1 => ["true", "false"][r.below(2)].into(),
        2 => format!("{}", r.u64() as i64 as f64 / 7.0),
        3 => format!("\"{}\"", "x\u{e9}\\u0000\\\"".repeat(r.below(4))),
        4 => {
            let items: Vec<String> = (0..r.below(4)).map(|_| random_json(r, depth - 1)).collect();
            // An array of non-objects, or of objects without a fault's fields.
            format!("[{}]", items.join(","))
        }
        _ => {
            let items: Vec<String> = (0..r.below(4))
                .map(|i| format!("\"k{i}\":{}", random_json(r, depth - 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// A valid fault with one field broken: a wrong type, an impossible value or an unknown field.
fn broken_fault(r: &mut Rng) -> String {
    let broken: &[(&str, &str)] = &[
        ("name", "{}"),
        ("name", "\"\""),
        ("name", "\"has spaces and / slashes\""),
        ("to", "\"10.42.1.3\""),
        ("to", "[\"10.42.1.300\"]"),
        ("to", "[\"10.42.1.0/33\"]"),
        ("to", "[]"),
        ("loss", "\"150%\""),
        ("loss", "\"-1%\""),
        ("loss", "7"),
        ("delay", "\"-5ms\""),
        ("delay", "\"10 parsecs\""),
        ("for", "\"0s\""),
        ("for", "\"forever\""),
        ("for", "\"100000d\""),
        ("dport", "[\"70000\"]"),
        ("dport", "[\"9-1\"]"),
        ("proto", "\"sctp-ish\""),
        ("flows", "\"0%\""),
        ("reject_with", "\"icmp-please\""),
        ("lossx", "\"1%\""),
    ];
    let (field, value) = r.pick(broken);
    let mut fields = vec![
        ("name".to_string(), format!("\"abuse-{}\"", r.below(1000))),
        ("to".to_string(), "[\"10.42.1.4\"]".to_string()),
        ("loss".to_string(), "\"5%\"".to_string()),
        ("for".to_string(), "\"5m\"".to_string()),
    ];
    match fields.iter_mut().find(|(k, _)| k == field) {
        Some(kv) => kv.1 = value.to_string(),
        None => fields.push((field.to_string(), value.to_string())),
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    if r.below(2) == 0 {
        format!("{{{}}}", body.join(","))
    } else {
        format!("[{{{}}}]", body.join(","))
    }
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: injector\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn raw(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: injector\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Request `i` of the malformed corpus, and what it is (for messages).
fn malformed(r: &mut Rng, i: u32) -> (Vec<u8>, &'static str) {
    match i % 12 {
        0 | 1 => (
            post("/v1/faults", random_json(r, 4).as_bytes()),
            "random JSON",
        ),
        2..=4 => (
            post("/v1/faults", broken_fault(r).as_bytes()),
            "a broken fault",
        ),
        5 => {
            let depth = 1 << (4 + r.below(14));
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            (post("/v1/faults", body.as_bytes()), "deep nesting")
        }
        6 => {
            // Huge: over the body limit (413) every 50th time, else a large body of junk.
            let len = if i % 600 == 6 { 6 << 20 } else { 64 << 10 };
            (post("/v1/faults", &vec![b'['; len]), "a huge body")
        }
        7 => {
            let body: Vec<u8> = (0..r.below(200) + 1)
                .map(|_| r.u64() as u8 | 0x80)
                .collect();
            (post("/v1/faults", &body), "bytes that are not UTF-8")
        }
        8 => {
            let bad = [
                "PATCH /v1/faults",
                "PUT /v1/status",
                "GET /v1/../../etc/passwd",
                "GET /v2/faults",
                "DELETE /v1/faults/no-such-fault-anywhere",
                "POST /v1/faults?force=maybe",
                "POST /v1/faults?drop_tables=1",
                "GET /v1/faults/%ff%fe",
            ];
            let (m, p) = r.pick(&bad).split_once(' ').unwrap();
            if m == "POST" {
                (post(p, b"[]"), "a bad method, path or query")
            } else {
                (raw(m, p), "a bad method, path or query")
            }
        }
        9 => {
            let bad: &[&[u8]] = &[
                b"POST /v1/faults HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"POST /v1/faults HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                b"POST /v1/faults HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n[]\r\n0\r\n\r\n",
                b"GET / HTTP/9.9\r\n\r\n",
                b"\r\n\r\n\r\n",
                b"GET\r\n\r\n",
            ];
            (r.pick(bad).to_vec(), "broken HTTP")
        }
        10 => {
            let mut req = b"GET /v1/status HTTP/1.1\r\nX-Junk: ".to_vec();
            req.extend(std::iter::repeat_n(b'a', 1 << 20));
            req.extend_from_slice(b"\r\n\r\n");
            (req, "a 1 MB header")
        }
        _ => {
            let len = r.below(512) + 1;
            ((0..len).map(|_| r.u64() as u8).collect(), "random bytes")
        }
    }
}

/// Sends `req` on a fresh connection; the status code of the answer, or None when the daemon
/// closed the connection without one (what it may do with bytes that are not HTTP).
fn send(socket: &Path, req: &[u8]) -> Option<u16> {
    let mut s = UnixStream::connect(socket).expect("the API socket accepts");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The daemon may answer (413, 431, 400) and close before the whole request is written.
    let _ = s.write_all(req);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let line = String::from_utf8_lossy(&answer);
    let code = line.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    Some(code.parse().expect("a numeric status"))
}

fn status_ok(socket: &Path) -> bool {
    send(socket, &raw("GET", "/v1/status")) == Some(200)
}

/// Kernel, records and API hold exactly the baseline.
fn assert_baseline(d: &Daemon, when: &str) {
    let (kernel, records) = d.kernel_faults();
    let api = d.api_faults();
    let names = |v: &[(String, f64)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&api), ["base-hole", "base-loss"], "{when}: the API");
    assert_eq!(names(&kernel), names(&api), "{when}: kernel == API");
    assert_eq!(records, 2, "{when}: records");
}

#[test]
fn abuse_changes_nothing_and_the_api_keeps_answering() {
    require_root();
    let l = Lab::up(&lab::run_prefix("ab"), 2).unwrap();
    let d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    d.apply(BASELINE).unwrap();
    let socket = d.socket.clone();
    assert!(status_ok(&socket));
    let rss_before = proc::rss_kib(d.pid().unwrap());

    // 1. 10k malformed requests over 8 connections at a time: every answer a 4xx (never a 2xx:
    //    nothing was valid; never a 5xx), or the connection closed for what is not HTTP.
    let n = 10_000u32;
    let answered = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let (socket, answered) = (&socket, &answered);
            s.spawn(move || {
                let mut r = Rng::new(0x1a2b_3c4d ^ u64::from(t));
                for i in (t..n).step_by(8) {
                    let (req, what) = malformed(&mut r, i);
                    match send(socket, &req) {
                        Some(code) => {
                            assert!(
                                (400..500).contains(&code),
                                "request {i} ({what}) was answered {code}: {}",
                                String::from_utf8_lossy(&req[..req.len().min(300)])
                            );
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        None => assert!(
                            matches!(what, "broken HTTP" | "random bytes" | "a 1 MB header"),
                            "request {i} ({what}) got no answer"
                        ),
                    }
                }
            });
        }
    });
    eprintln!(
        "malformed: {n} sent, {} answered 4xx, the rest closed",
        answered.load(Ordering::Relaxed)
    );
    assert!(
        status_ok(&socket),
        "the API answers after the malformed requests"
    );
    assert_baseline(&d, "after the malformed requests");

    // 2. Slow clients: 200 connections that never finish their headers and 40 that never finish
    //    their body. While they hang, the API answers others; the daemon closes them all (headers
    //    within 5 s, bodies within 10 s with a 4xx; 30 s allowed here).
    let mut slow = Vec::new();
    for i in 0..240 {
        let mut s = UnixStream::connect(&socket).unwrap();
        let part: &[u8] = if i < 200 {
            b"POST /v1/faults HTTP/1.1\r\nHost: inj"
        } else {
            b"POST /v1/faults HTTP/1.1\r\nHost: injector\r\nContent-Length: 1000\r\n\r\n[{\"name\""
        };
        s.write_all(part).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        slow.push(s);
    }
    assert!(status_ok(&socket), "the API answers while 240 clients hang");
    let start = Instant::now();
    for (i, mut s) in slow.into_iter().enumerate() {
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest);
        assert!(
            r.is_ok() && start.elapsed() < Duration::from_secs(30),
            "slow client {i} was not closed: {r:?} after {:?}",
            start.elapsed()
        );
        if i >= 200 {
            let text = String::from_utf8_lossy(&rest);
            // Answered (axum: 400, "Failed to buffer the request body"), then closed.
            assert!(text.starts_with("HTTP/1.1 4"), "a slow body: {text}");
            if i == 200 {
                eprintln!(
                    "a slow body is answered: {}",
                    text.lines().last().unwrap_or("")
                );
            }
        }
    }
    eprintln!(
        "slow clients: 240 closed by the daemon within {:?}",
        start.elapsed()
    );
    assert_baseline(&d, "after the slow clients");

    // 3. 400 connections at once, each asking for the status: all answered (those over the
    //    daemon's 256 wait in the accept backlog).
    let conns: Vec<UnixStream> = (0..400)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    std::thread::scope(|s| {
        for mut c in conns {
            s.spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                c.write_all(&raw("GET", "/v1/status")).unwrap();
                let mut a = Vec::new();
                c.read_to_end(&mut a).unwrap();
                assert!(
                    a.starts_with(b"HTTP/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&a)
                );
            });
        }
    });
    assert_baseline(&d, "after 400 connections at once");

    // 4. 64 concurrent writers for a minute: each creates its own fault, reads it, deletes it,
    //    again and again; a refusal (no free slot) must be a clean 4xx.
    let secs = std::env::var("INJECTOR_ABUSE_WRITER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    let (created, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let until = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for w in 0..64u32 {
            let (socket, created, refused) = (&socket, &created, &refused);
            s.spawn(move || {
                let name = format!("writer-{w}");
                let body = format!(
                    r#"{{"name":"{name}","to":["10.77.{}.{}"],"loss":"1%","for":"5m"}}"#,
                    w / 200,
                    w % 200 + 1
                );
                while Instant::now() < until {
                    match send(socket, &post("/v1/faults", body.as_bytes())) {
                        Some(201) => {
                            created.fetch_add(1, Ordering::Relaxed);
                            let got = send(socket, &raw("GET", &format!("/v1/faults/{name}")));
                            assert_eq!(got, Some(200), "{name} reads back");
                            let gone = send(socket, &raw("DELETE", &format!("/v1/faults/{name}")));
                            assert_eq!(gone, Some(200), "{name} is deleted");
                        }
                        Some(code) if (400..500).contains(&code) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("{name}: create answered {other:?}"),
                    }
                }
            });
        }
    });
    let (created, refused) = (
        created.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    eprintln!("writers: 64 for {secs} s: {created} faults created and deleted, {refused} refused");
    assert!(created > 64, "the writers got through: {created}");

    // The end: the same daemon, answering, holding exactly the baseline, memory bounded.
    assert!(status_ok(&socket));
    assert_baseline(&d, "at the end");
    let rss_after = proc::rss_kib(d.pid().unwrap());
    eprintln!("daemon RSS: {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory bounded: {rss_before} KiB before, {rss_after} KiB after"
    );
    assert!(
        d.log_text().lines().all(|l| !l.contains("panicked")),
        "the daemon never panicked"
    );
    let _: PathBuf = socket;
}
