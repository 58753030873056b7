//! The HTTP probe: N GETs per run (from the probe's netns), each passing on the expected status
//! within the latency limit; and the small blocking HTTP/1.1 GET the Prometheus probe uses too.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{Outcome, num};
use crate::{
    experiment::file::{duration, ferr},
    fault::spec::{FieldError, percent},
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// `http://HOST:PORT/path`.
    pub url: String,
    /// The status a request must get (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// A request slower than this fails (default: no limit but the timeout).
    #[serde(default)]
    pub max_latency: Option<String>,
    /// Each request gives up after this (default 1s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Requests per run (default 1).
    #[serde(default)]
    pub requests: Option<u32>,
    /// Share of a run's requests that must pass (default 100%).
    #[serde(default)]
    pub min_success: Option<String>,
}

/// Where an `http://` URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses `http://HOST[:PORT][/path]` (no TLS: probes are for cluster-internal endpoints).
pub fn url(field: &str, v: &str) -> Result<Url, FieldError> {
    let bad = |why: &str| {
        ferr(
            field,
            format!("'{v}': {why}; write e.g. http://10.42.2.2:8080/"),
        )
    };
    let rest = v
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are probed"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| bad("bad port"))?)
        }
        _ => (hostport, 80),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Url {
        host: host.trim_start_matches('[').trim_end_matches(']').into(),
        port,
        path: path.into(),
    })
}

#[derive(Clone, Debug)]
pub struct Http {
    pub url: Url,
    pub status: u16,
    pub max_latency: Option<Duration>,
    pub timeout: Duration,
    pub requests: u32,
    pub min_success: f64,
}

impl HttpSpec {
    pub fn validate(&self, at: &str) -> Result<Http, FieldError> {
        let d = |f: &str, v: &str| {
            duration(
                &format!("{at}.{f}"),
                v,
                (Duration::from_millis(1), "1ms"),
                (Duration::from_secs(60), "60s"),
            )
        };
        let requests = self.requests.unwrap_or(1);
        if !(1..=1000).contains(&requests) {
            return Err(ferr(format!("{at}.requests"), "must be 1 to 1000"));
        }
        Ok(Http {
            url: url(&format!("{at}.url"), &self.url)?,
            status: self.status.unwrap_or(200),
            max_latency: self
                .max_latency
                .as_deref()
                .map(|v| d("max_latency", v))
                .transpose()?,
            timeout: d("timeout", self.timeout.as_deref().unwrap_or("1s"))?,
            requests,
            min_success: match &self.min_success {
                None => 1.0,
                Some(v) => percent(&format!("{at}.min_success"), v)?,
            },
        })
    }
}

/// A GET's answer: status, body, time to the whole answer.
pub struct Got {
    pub status: u16,
    pub body: String,
    pub took: Duration,
}

/// One `GET path` to `url`, all of it (connect, send, read to close) within `timeout`.
pub fn get(url: &Url, path: &str, timeout: Duration) -> Result<Got, String> {
    let start = Instant::now();
    let addr: SocketAddr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", url.host))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            format!("connect {addr}: timed out after {}", ms(timeout))
        } else {
            format!("connect {addr}: {e}")
        }
    })?;
    let left = |what: &str| {
        timeout
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{what} {addr}: timed out after {}", ms(timeout)))
    };
    s.set_write_timeout(Some(left("send")?)).ok();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: injector-experiment\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.host
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send {addr}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        s.set_read_timeout(Some(left("read")?)).ok();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if raw.len() + n > 8 << 20 => return Err(format!("read {addr}: over 8 MiB")),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("read {addr}: timed out after {}", ms(timeout)));
            }
            Err(e) => return Err(format!("read {addr}: {e}")),
        }
    }
    let took = start.elapsed();
    let r = crate::client::parse_response(&raw).map_err(|e| format!("{addr}: {e}"))?;
    Ok(Got {
        status: r.status,
        body: r.body,
        took,
    })
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Http {
    pub fn threshold(&self) -> String {
        let mut t = format!(">= {}% get {}", num(self.min_success * 100.0), self.status);
        if let Some(m) = self.max_latency {
            t += &format!(" in <= {}", ms(m));
        }
        t
    }

    pub fn run(&self) -> Outcome {
        let allowed_failures =
            self.requests - (self.min_success * f64::from(self.requests)).ceil() as u32;
        let (mut passed, mut failed) = (0u32, 0u32);
        let mut lat = Vec::new();
        let mut why = None;
        for _ in 0..self.requests {
            match get(&self.url, &self.url.path, self.timeout) {
                Ok(g) => {
                    lat.push(g.took.as_secs_f64() * 1e3);
                    if g.status != self.status {
                        why.get_or_insert(format!("status {} (want {})", g.status, self.status));
                        failed += 1;
                    } else if self.max_latency.is_some_and(|m| g.took > m) {
                        why.get_or_insert(format!("took {:.0}ms", g.took.as_secs_f64() * 1e3));
                        failed += 1;
                    } else {
                        passed += 1;
                    }
                }
                Err(e) => {
                    why.get_or_insert(e);
                    failed += 1;
                }
            }
            // Fail fast: the run has failed already, say so now.
            if failed > allowed_failures {
                break;
            }
        }
        lat.sort_by(f64::total_cmp);
        let latency_ms = lat.get(lat.len() / 2).copied();
        let share = f64::from(passed) / f64::from(self.requests);
        let mut detail = format!("{passed}/{} ok", self.requests);
        if let Some(l) = latency_ms {
            detail += &format!(", p50 {l:.1}ms");
        }
        if let Some(w) = why {
            detail += &format!("; {w}");
        }
        Outcome {
            value: Some(share * 100.0),
            ok: failed <= allowed_failures,
            latency_ms,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = url("u", "http://10.42.2.2:8080/health?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.42.2.2", 8080, "/health?x=1")
        );
        let u = url("u", "http://web").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = url("u", "http://[fd00::1]:9090/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 9090));
        let e = url("steady_state[0].http.url", "https://x/").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("steady_state[0].http.url: 'https://x/': only http://"),
            "{e}"
        );
        assert!(url("u", "http://x:99999/").is_err());
    }

    #[test]
    fn a_server_that_answers_passes_and_a_closed_port_fails_fast() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().take(3) {
                let mut s = s.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        let spec = |u: String| HttpSpec {
            url: u,
            status: None,
            max_latency: Some("5s".into()),
            timeout: None,
            requests: Some(3),
            min_success: None,
        };
        let h = spec(format!("http://127.0.0.1:{port}/"))
            .validate("p")
            .unwrap();
        let o = h.run();
        assert!(o.ok, "{o:?}");
        assert_eq!(o.value, Some(100.0));
        assert!(o.detail.starts_with("3/3 ok"), "{}", o.detail);
        // Nothing listens on port 1: refused at once, the run stops at the first failure.
        let o = spec("http://127.0.0.1:1/".into())
            .validate("p")
            .unwrap()
            .run();
        assert!(!o.ok && o.value == Some(0.0), "{o:?}");
        assert!(o.detail.contains("connect 127.0.0.1:1"), "{}", o.detail);
    }
}
