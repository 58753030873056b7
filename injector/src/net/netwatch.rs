//! rtnetlink link events (RTM_NEWLINK / RTM_DELLINK) of the daemon's network namespace, read on a
//! thread and delivered on a channel, so a new pod's veth is attached as soon as it appears.

use std::io;

use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    New { ifindex: u32, name: String },
    Del { ifindex: u32, name: String },
}

const RTMGRP_LINK: u32 = 1;
const IFLA_IFNAME: u16 = 3;

/// Parses the link messages of one netlink datagram.
pub fn parse(buf: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
        let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2"));
        if len < 16 || off + len > buf.len() {
            break;
        }
        let msg = &buf[off + 16..off + len];
        if (ty == libc::RTM_NEWLINK || ty == libc::RTM_DELLINK) && msg.len() >= 16 {
            let ifindex = i32::from_ne_bytes(msg[4..8].try_into().expect("4")) as u32;
            let mut a = 16;
            let mut name = None;
            while a + 4 <= msg.len() {
                let alen = usize::from(u16::from_ne_bytes(msg[a..a + 2].try_into().expect("2")));
                let aty = u16::from_ne_bytes(msg[a + 2..a + 4].try_into().expect("2"));
                if alen < 4 || a + alen > msg.len() {
                    break;
                }
                if aty == IFLA_IFNAME {
                    let v = &msg[a + 4..a + alen];
                    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                    name = Some(String::from_utf8_lossy(&v[..end]).into_owned());
                }
                a += alen.next_multiple_of(4);
            }
            if let Some(name) = name {
                out.push(if ty == libc::RTM_NEWLINK {
                    LinkEvent::New { ifindex, name }
                } else {
                    LinkEvent::Del { ifindex, name }
                });
            }
        }
        off += len.next_multiple_of(4);
    }
    out
}

/// Subscribes to link events in the calling thread's network namespace and forwards them until the
/// receiver is dropped. The socket is opened before this returns, so no event after it is missed.
pub fn spawn(tx: UnboundedSender<LinkEvent>) -> io::Result<()> {
    // SAFETY: socket syscalls on a buffer we own; the fd is closed when the thread ends.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed sockaddr_nl with the family and groups set; a 500 ms receive timeout lets the
    // thread notice a closed channel.
    unsafe {
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = RTMGRP_LINK;
        if libc::bind(
            fd,
            (&sa as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        ) != 0
        {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 500_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
    }
    std::thread::Builder::new()
        .name("netlink".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !tx.is_closed() {
                // SAFETY: receiving into our buffer.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue; // timeout or ENOBUFS: keep going; a periodic rescan covers lost events
                }
                for ev in parse(&buf[..n as usize]) {
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            }
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, ifindex: i32, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let n = name.as_bytes();
        attr.extend_from_slice(&((4 + n.len() + 1) as u16).to_ne_bytes());
        attr.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attr.extend_from_slice(n);
        attr.push(0);
        attr.resize(attr.len().next_multiple_of(4), 0);
        let mut ifi = vec![0u8; 16];
        ifi[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        let len = 16 + ifi.len() + attr.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(ifi);
        m.extend(attr);
        m
    }

    #[test]
    fn link_messages_are_read() {
        let mut buf = msg(libc::RTM_NEWLINK, 7, "veth1234abcd");
        buf.extend(msg(libc::RTM_DELLINK, 5, "flannel.1"));
        buf.extend(msg(libc::RTM_NEWADDR, 5, "x"));
        assert_eq!(
            parse(&buf),
            vec![
                LinkEvent::New {
                    ifindex: 7,
                    name: "veth1234abcd".into()
                },
                LinkEvent::Del {
                    ifindex: 5,
                    name: "flannel.1".into()
                }
            ]
        );
        assert!(parse(&buf[..20]).is_empty(), "a cut message is ignored");
    }
}
