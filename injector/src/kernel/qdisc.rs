//! qdisc changes through rtnetlink (never by running `tc`): the root qdisc of a device (read),
//! an `fq` sized for delay faults (install), the default restored (delete root), and the clsact
//! the daemon adds on kernels without TCX (delete).

use std::{ffi::CString, io, time::Duration};

use crate::net::netlink::{self, NLA_F_NESTED, Socket, push_attr};

const TC_H_ROOT: u32 = 0xFFFF_FFFF;
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const TC_H_CLSACT_HANDLE: u32 = 0xFFFF_0000;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
// include/uapi/linux/pkt_sched.h, enum TCA_FQ_*.
const TCA_FQ_PLIMIT: u16 = 1;
const TCA_FQ_FLOW_PLIMIT: u16 = 2;
const TCA_FQ_TIMER_SLACK: u16 = 13;
const TCA_FQ_HORIZON: u16 = 14;
const TCA_FQ_HORIZON_DROP: u16 = 15;
/// `struct tcmsg`: family, 3 pad bytes, ifindex, handle, parent, info.
const TCMSG_LEN: usize = 20;

fn tcmsg(ifindex: i32, handle: u32, parent: u32) -> Vec<u8> {
    let mut m = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    m.extend_from_slice(&ifindex.to_ne_bytes());
    m.extend_from_slice(&handle.to_ne_bytes());
    m.extend_from_slice(&parent.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m
}

pub fn ifindex(name: &str) -> io::Result<i32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i as i32)
    }
}

/// The kind of `iface`'s root qdisc (`noqueue`, `fq`, `htb`, ...).
pub fn root_kind(iface: &str) -> io::Result<String> {
    let idx = ifindex(iface)?;
    let mut kind = None;
    Socket::dump(libc::RTM_GETQDISC, &tcmsg(0, 0, 0), |m| {
        if let Some((i, parent, k)) = parse_qdisc(m.payload)
            && i == idx
            && parent == TC_H_ROOT
        {
            kind = Some(k);
        }
    })?;
    // A device with no root entry in the dump uses its default: noqueue for veth and vxlan.
    Ok(kind.unwrap_or_else(|| "noqueue".into()))
}

/// (ifindex, parent, kind) of an RTM_NEWQDISC message body.
fn parse_qdisc(msg: &[u8]) -> Option<(i32, u32, String)> {
    if msg.len() < TCMSG_LEN {
        return None;
    }
    let ifindex = i32::from_ne_bytes(msg[4..8].try_into().ok()?);
    let parent = u32::from_ne_bytes(msg[12..16].try_into().ok()?);
    let kind = netlink::attr(msg, TCMSG_LEN, TCA_KIND)?;
    Some((ifindex, parent, netlink::string(kind)))
}

/// fq settings for delay faults: every delayed packet waits in fq, so the queue must hold
/// rate x delay packets, one flow may be all of them, and the horizon must not drop them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FqParams {
    pub limit: u32,
    pub flow_limit: u32,
    pub horizon_us: u32,
    pub timer_slack_ns: u32,
}

/// Sizes fq for `max_pps` packets/s held for up to `max_delay`.
pub fn fq_params(max_pps: u32, max_delay: Duration) -> FqParams {
    let held = (f64::from(max_pps) * max_delay.as_secs_f64() * 1.5).ceil() as u64;
    let limit = held.clamp(10_000, 1_000_000) as u32;
    // Beyond the horizon fq would drop (or cap, as set below): keep it well past the longest delay.
    let horizon = max_delay.saturating_mul(2).max(Duration::from_secs(10));
    FqParams {
        limit,
        flow_limit: limit,
        horizon_us: horizon.as_micros().min(u128::from(u32::MAX)) as u32,
        timer_slack_ns: 0,
    }
}

fn fq_body(idx: i32, p: FqParams) -> Vec<u8> {
    let mut body = tcmsg(idx, 0, TC_H_ROOT);
    push_attr(&mut body, TCA_KIND, b"fq\0");
    let mut opts = Vec::new();
    push_attr(&mut opts, TCA_FQ_PLIMIT, &p.limit.to_ne_bytes());
    push_attr(&mut opts, TCA_FQ_FLOW_PLIMIT, &p.flow_limit.to_ne_bytes());
    push_attr(&mut opts, TCA_FQ_HORIZON, &p.horizon_us.to_ne_bytes());
    // 0: cap a packet beyond the horizon to the horizon instead of dropping it.
    push_attr(&mut opts, TCA_FQ_HORIZON_DROP, &[0u8]);
    push_attr(
        &mut opts,
        TCA_FQ_TIMER_SLACK,
        &p.timer_slack_ns.to_ne_bytes(),
    );
    push_attr(&mut body, TCA_OPTIONS | NLA_F_NESTED, &opts);
    body
}

/// Makes `fq` the root qdisc of `iface` (replacing the default `noqueue`).
pub fn install_fq(iface: &str, p: FqParams) -> io::Result<()> {
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    Socket::request(libc::RTM_NEWQDISC, flags, &fq_body(ifindex(iface)?, p))
}

/// Deletes the root qdisc of `iface`: the device goes back to its default.
pub fn delete_root(iface: &str) -> io::Result<()> {
    Socket::request(libc::RTM_DELQDISC, 0, &tcmsg(ifindex(iface)?, 0, TC_H_ROOT))
}

/// Deletes the clsact qdisc of `iface` (and with it every tc filter on its hooks).
pub fn delete_clsact(iface: &str) -> io::Result<()> {
    let mut body = tcmsg(ifindex(iface)?, TC_H_CLSACT_HANDLE, TC_H_CLSACT);
    push_attr(&mut body, TCA_KIND, b"clsact\0");
    Socket::request(libc::RTM_DELQDISC, 0, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fq_is_sized_for_rate_times_delay() {
        let p = fq_params(100_000, Duration::from_millis(100));
        assert_eq!(p.limit, 15_000);
        assert_eq!(p.flow_limit, p.limit, "one flow may hold the whole queue");
        assert_eq!(p.horizon_us, 10_000_000);
        assert_eq!(
            fq_params(1000, Duration::from_millis(1)).limit,
            10_000,
            "never below fq's default"
        );
        assert_eq!(
            fq_params(1_000_000, Duration::from_secs(8)).horizon_us,
            16_000_000
        );
    }

    #[test]
    fn the_fq_request_carries_kind_and_nested_options() {
        let b = fq_body(
            7,
            FqParams {
                limit: 100,
                flow_limit: 50,
                horizon_us: 10,
                timer_slack_ns: 0,
            },
        );
        assert_eq!(i32::from_ne_bytes(b[4..8].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(b[12..16].try_into().unwrap()), TC_H_ROOT);
        let (ifindex, parent, kind) = parse_qdisc(&b).unwrap();
        assert_eq!((ifindex, parent, kind.as_str()), (7, TC_H_ROOT, "fq"));
        // After TCA_KIND ("fq\0" padded to 8 bytes): the nested options, 5 attributes.
        let opts = &b[TCMSG_LEN + 8..];
        assert_eq!(
            u16::from_ne_bytes(opts[2..4].try_into().unwrap()),
            TCA_OPTIONS | NLA_F_NESTED
        );
        assert_eq!(
            usize::from(u16::from_ne_bytes(opts[0..2].try_into().unwrap())),
            4 + 4 * 8 + 8
        );
        assert_eq!(
            u16::from_ne_bytes(opts[6..8].try_into().unwrap()),
            TCA_FQ_PLIMIT
        );
        assert_eq!(u32::from_ne_bytes(opts[8..12].try_into().unwrap()), 100);
    }

    #[test]
    fn root_qdisc_of_loopback_is_read() {
        // Loopback in a fresh netns or on a host: noqueue unless someone configured it.
        assert!(!root_kind("lo").unwrap().is_empty());
    }
}
