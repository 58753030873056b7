//! Which interfaces the daemon attaches to: name patterns (`veth*`, `cni0`, `flannel.1`) matched
//! against the interfaces of the daemon's network namespace.

use std::ffi::CStr;

/// Patterns used when none are configured: the pod-facing devices of a flannel node.
pub const DEFAULT_PATTERNS: [&str; 3] = ["cni0", "veth*", "flannel.1"];

/// Shell-style match supporting `*` (any run) and `?` (one character).
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Whether `name` matches any of `patterns`.
pub fn selected(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

/// The interfaces of the current network namespace, as (ifindex, name).
pub fn list() -> std::io::Result<Vec<(u32, String)>> {
    // SAFETY: if_nameindex returns a list terminated by a zero entry, freed below.
    unsafe {
        let head = libc::if_nameindex();
        if head.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut p = head;
        while (*p).if_index != 0 {
            let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(head);
        Ok(out)
    }
}

/// The IP addresses of the current network namespace's interfaces (not link-local IPv6).
pub fn addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list we walk and free; sockaddrs are read per their family.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(std::net::IpAddr::V4(
                            u32::from_be(sin.sin_addr.s_addr).into(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                            out.push(ip.into());
                        }
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_a_shell() {
        assert!(matches("veth*", "veth1a2b3c4d"));
        assert!(matches("veth*", "veth"));
        assert!(!matches("veth*", "eth0"));
        assert!(matches("cni0", "cni0"));
        assert!(!matches("cni0", "cni01"));
        assert!(matches("flannel.?", "flannel.1"));
        assert!(matches("*", "lo"));
        assert!(matches("v*h*d", "veth1d"));
        assert!(!matches("v*h*d", "veth1e"));
    }

    #[test]
    fn defaults_select_pod_devices_only() {
        let p: Vec<String> = DEFAULT_PATTERNS.iter().map(|s| s.to_string()).collect();
        for n in ["cni0", "veth0a1b2c3d", "flannel.1"] {
            assert!(selected(&p, n), "{n}");
        }
        for n in ["lo", "eth0", "flannel.2", "docker0"] {
            assert!(!selected(&p, n), "{n}");
        }
    }

    #[test]
    fn addresses_include_loopback() {
        assert!(addresses().contains(&std::net::Ipv4Addr::LOCALHOST.into()));
    }

    #[test]
    fn list_sees_loopback() {
        let l = list().unwrap();
        assert!(l.iter().any(|(_, n)| n == "lo"), "{l:?}");
    }
}
