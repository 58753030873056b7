//! rtnetlink link events (RTM_NEWLINK / RTM_DELLINK) of the daemon's network namespace, read on a
//! thread and delivered on a channel, so a new pod's veth is attached as soon as it appears.

use std::{io, time::Duration};

use tokio::sync::mpsc::UnboundedSender;

use super::netlink::{self, Socket};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    New { ifindex: u32, name: String },
    Del { ifindex: u32, name: String },
}

const RTMGRP_LINK: u32 = 1;
const IFLA_IFNAME: u16 = 3;
/// `struct ifinfomsg`: family, pad, type, ifindex, flags, change.
const IFINFOMSG_LEN: usize = 16;

/// Parses the link messages of one netlink datagram.
pub fn parse(buf: &[u8]) -> Vec<LinkEvent> {
    netlink::messages(buf)
        .filter(|m| m.ty == libc::RTM_NEWLINK || m.ty == libc::RTM_DELLINK)
        .filter(|m| m.payload.len() >= IFINFOMSG_LEN)
        .filter_map(|m| {
            let ifindex = i32::from_ne_bytes(m.payload[4..8].try_into().ok()?) as u32;
            let name = netlink::string(netlink::attr(m.payload, IFINFOMSG_LEN, IFLA_IFNAME)?);
            Some(if m.ty == libc::RTM_NEWLINK {
                LinkEvent::New { ifindex, name }
            } else {
                LinkEvent::Del { ifindex, name }
            })
        })
        .collect()
}

/// Subscribes to link events in the calling thread's network namespace and forwards them until the
/// receiver is dropped. The socket is opened before this returns, so no event after it is missed.
pub fn spawn(tx: UnboundedSender<LinkEvent>) -> io::Result<()> {
    let s = Socket::open(RTMGRP_LINK)?;
    // A timeout lets the thread notice a closed channel.
    s.set_timeout(Duration::from_millis(500))?;
    std::thread::Builder::new()
        .name("netlink".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !tx.is_closed() {
                // Timeout or ENOBUFS: keep going; a periodic rescan covers lost events.
                let Ok(n) = s.recv(&mut buf) else { continue };
                for ev in parse(&buf[..n]) {
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            }
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
