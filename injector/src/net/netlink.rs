//! rtnetlink on the wire, in one place: the socket (requests, acks, dumps, multicast groups), and
//! the one walker over messages and their attributes that `qdisc` and `netwatch` both use.
//!
//! Why not `netlink-packet-route` (+ `netlink-sys`): as of 0.34 it has no `fq` qdisc options
//! (TCA_FQ_*; only fq_codel and ingress), so the fq request would be built by hand anyway, and
//! all we read is a link's name and a qdisc's kind: a walker of a few dozen lines covers it.

use std::io;

/// `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// The flag of a nested attribute (`NLA_F_NESTED`).
pub const NLA_F_NESTED: u16 = 1 << 15;

/// One netlink message: its type and its payload (after the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub ty: u16,
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// The errno of an `NLMSG_ERROR` message (0: an ack).
    pub fn errno(&self) -> Option<i32> {
        if self.ty != libc::NLMSG_ERROR as u16 {
            return None;
        }
        Some(-i32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
}

/// The messages of one datagram; a truncated one ends the walk.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off + NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(hdr[0..4].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(hdr[4..6].try_into().ok()?);
        let payload = buf.get(off + NLMSG_HDRLEN..off.checked_add(len)?)?;
        if len < NLMSG_HDRLEN {
            return None;
        }
        off += len.next_multiple_of(4);
        Some(Message { ty, payload })
    })
}

/// The attributes (type without the nested/byte-order flags, value) after a fixed header of
/// `skip` bytes (`ifinfomsg`: 16, `tcmsg`: 20); a truncated one ends the walk.
pub fn attrs(payload: &[u8], skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = skip;
    std::iter::from_fn(move || {
        let hdr = payload.get(off..off + 4)?;
        let len = usize::from(u16::from_ne_bytes(hdr[0..2].try_into().ok()?));
        let ty = u16::from_ne_bytes(hdr[2..4].try_into().ok()?) & 0x3FFF;
        if len < 4 {
            return None;
        }
        let v = payload.get(off + 4..off + len)?;
        off += len.next_multiple_of(4);
        Some((ty, v))
    })
}

/// The value of attribute `ty`.
pub fn attr(payload: &[u8], skip: usize, ty: u16) -> Option<&[u8]> {
    attrs(payload, skip).find(|(t, _)| *t == ty).map(|(_, v)| v)
}

/// A NUL-terminated string attribute.
pub fn string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// Appends an attribute, padded to 4 bytes.
pub fn push_attr(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// A `NETLINK_ROUTE` socket; closed on drop.
pub struct Socket(i32);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.0) };
    }
}

impl Socket {
    /// Opens a socket; `groups` (e.g. `RTMGRP_LINK`) subscribes it to those multicast events.
    pub fn open(groups: u32) -> io::Result<Socket> {
        // SAFETY: plain socket syscalls; the fd is owned by the returned Socket.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let s = Socket(fd);
            if groups != 0 {
                let mut sa: libc::sockaddr_nl = std::mem::zeroed();
                sa.nl_family = libc::AF_NETLINK as u16;
                sa.nl_groups = groups;
                let len = size_of::<libc::sockaddr_nl>() as u32;
                if libc::bind(fd, (&sa as *const libc::sockaddr_nl).cast(), len) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(s)
        }
    }

    /// Makes [`recv`](Self::recv) give up after `t` (so a reader thread can notice it should end).
    pub fn set_timeout(&self, t: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: a timeval we own, its size given.
        let r = unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sends one request message of type `ty` (NLM_F_REQUEST is added) with `body`.
    pub fn send(&self, ty: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
        msg.extend_from_slice(body);
        // SAFETY: sending our buffer.
        if unsafe { libc::send(self.0, msg.as_ptr().cast(), msg.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram into `buf`; its length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Sends a request with NLM_F_ACK and waits for the ack; the kernel's error as an `io::Error`.
    pub fn request(ty: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        let s = Socket::open(0)?;
        s.send(ty, flags | libc::NLM_F_ACK as u16, body)?;
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf)?;
        let m = messages(&buf[..n])
            .next()
            .ok_or_else(|| io::Error::other("short netlink reply"))?;
        match m.errno() {
            Some(0) => Ok(()),
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Err(io::Error::other(format!(
                "unexpected netlink reply type {}",
                m.ty
            ))),
        }
    }

    /// Sends a dump request and calls `each` with every message until NLMSG_DONE.
    pub fn dump(ty: u16, body: &[u8], mut each: impl FnMut(Message<'_>)) -> io::Result<()> {
        let s = Socket::open(0)?;
        s.send(ty, libc::NLM_F_DUMP as u16, body)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = s.recv(&mut buf)?;
            for m in messages(&buf[..n]) {
                if m.ty == libc::NLMSG_DONE as u16 {
                    return Ok(());
                }
                if let Some(e) = m.errno() {
                    return Err(io::Error::from_raw_os_error(e));
                }
                each(m);
            }
            if n == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    #[test]
    fn messages_and_attributes_are_walked_and_cut_ones_end_the_walk() {
        let mut p = vec![0u8; 4]; // a 4-byte fixed header
        push_attr(&mut p, 3, b"veth0\0");
        push_attr(&mut p, 7 | NLA_F_NESTED, &[1, 2, 3, 4]);
        let mut buf = message(16, &p);
        buf.extend(message(17, &[]));
        let ms: Vec<Message> = messages(&buf).collect();
        assert_eq!(ms.len(), 2);
        assert_eq!((ms[0].ty, ms[1].ty), (16, 17));
        let a: Vec<(u16, &[u8])> = attrs(ms[0].payload, 4).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(string(a[0].1), "veth0");
        assert_eq!(a[1], (7, &[1u8, 2, 3, 4][..]), "flags masked off the type");
        assert_eq!(attr(ms[0].payload, 4, 3).map(string), Some("veth0".into()));
        assert_eq!(messages(&buf[..20]).count(), 0, "a cut message is not read");
        assert_eq!(
            attrs(&ms[0].payload[..10], 4).count(),
            0,
            "a cut attribute is not read"
        );
    }

    #[test]
    fn an_error_message_carries_the_errno() {
        let m = message(libc::NLMSG_ERROR as u16, &(-libc::EEXIST).to_ne_bytes());
        assert_eq!(messages(&m).next().unwrap().errno(), Some(libc::EEXIST));
    }
}
