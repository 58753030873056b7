//! Fault sets for the benchmarks, and the daemon's HTTP API called directly over its Unix socket
//! (what a controller does; the CLI adds a process start on top).

use std::{
    collections::HashSet,
    io::{Read as _, Write as _},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{Context as _, Result, ensure};
use injector_common::MAX_FAULTS;

/// `method path` with a JSON `body` on the daemon's API socket: (status, body).
pub fn call(socket: &Path, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: injector\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status in the API's answer")?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// As [`call`], failing unless the status is 2xx.
pub fn call_ok(socket: &Path, method: &str, path: &str, body: &str) -> Result<String> {
    let (st, b) = call(socket, method, path, body)?;
    ensure!((200..300).contains(&st), "{method} {path}: {st} {b}");
    Ok(b)
}

/// `total` distinct destination prefixes of length `len` (24 or 32) spread over
/// `min(total, MAX_FAULTS)` blackhole faults, none of them a lab address: random in 10.0.0.0/8
/// outside 10.42.0.0/16 (the lab's pods and nodes), so that a pod's packet is looked up among
/// them and matches nothing.
pub fn non_matching(total: usize, len: u8, tag: &str) -> String {
    let faults = total.clamp(1, MAX_FAULTS as usize);
    let mut seen = HashSet::with_capacity(total);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while seen.len() < total {
        let mask = u32::MAX << (32 - u32::from(len));
        let a = Ipv4Addr::from((0x0a00_0000 | (next() as u32 & 0x00ff_ffff)) & mask);
        if a.octets()[1] != 42 {
            seen.insert(a);
        }
    }
    let mut addrs: Vec<Ipv4Addr> = seen.into_iter().collect();
    addrs.sort();
    let specs: Vec<String> = (0..faults)
        .map(|i| {
            let to: Vec<String> = addrs
                .iter()
                .skip(i)
                .step_by(faults)
                .map(|a| format!("\"{a}/{len}\""))
                .collect();
            format!(
                r#"{{"name":"{tag}-{i}","to":[{}],"blackhole":true,"for":"1h"}}"#,
                to.join(",")
            )
        })
        .collect();
    format!("[{}]", specs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_matching_sets_have_the_asked_size_and_avoid_the_lab() {
        for total in [1, 100, 10_000] {
            let v: serde_json::Value =
                serde_json::from_str(&non_matching(total, 32, "nm")).unwrap();
            let faults = v.as_array().unwrap();
            assert_eq!(faults.len(), total.min(MAX_FAULTS as usize));
            let all: Vec<&str> = faults
                .iter()
                .flat_map(|f| f["to"].as_array().unwrap())
                .map(|c| c.as_str().unwrap())
                .collect();
            assert_eq!(all.len(), total);
            assert_eq!(all.iter().collect::<HashSet<_>>().len(), total);
            assert!(
                all.iter()
                    .all(|c| c.starts_with("10.") && !c.starts_with("10.42."))
            );
        }
    }
}
