//! qdisc changes through rtnetlink (never by running `tc`): for now, removing the clsact qdisc the
//! daemon added on kernels without TCX.

use std::{ffi::CString, io};

const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const TC_H_CLSACT_HANDLE: u32 = 0xFFFF_0000;
const TCA_KIND: u16 = 1;

#[repr(C)]
struct NlMsgHdr {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
struct TcMsg {
    family: u8,
    _pad1: u8,
    _pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: plain #[repr(C)] integer structs without padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast(), size_of::<T>()) }
}

/// Sends one request and waits for its ack; the kernel's error comes back as an `io::Error`.
fn request(ty: u16, flags: u16, body: &[u8]) -> io::Result<()> {
    // SAFETY: plain socket syscalls on a buffer we own; the fd is closed on every path.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let close = |r| {
            libc::close(fd);
            r
        };
        let hdr = NlMsgHdr {
            len: (size_of::<NlMsgHdr>() + body.len()) as u32,
            ty,
            flags: flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16,
            seq: 1,
            pid: 0,
        };
        let mut msg = as_bytes(&hdr).to_vec();
        msg.extend_from_slice(body);
        if libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) < 0 {
            return close(Err(io::Error::last_os_error()));
        }
        let mut buf = [0u8; 4096];
        let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < (size_of::<NlMsgHdr>() + 4) as isize {
            return close(Err(io::Error::other("short netlink reply")));
        }
        let rty = u16::from_ne_bytes([buf[4], buf[5]]);
        if rty != libc::NLMSG_ERROR as u16 {
            return close(Err(io::Error::other(format!(
                "unexpected netlink reply type {rty}"
            ))));
        }
        let errno = i32::from_ne_bytes(buf[16..20].try_into().expect("4 bytes"));
        close(if errno == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(-errno))
        })
    }
}

fn ifindex(name: &str) -> io::Result<i32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i as i32)
    }
}

/// Deletes the clsact qdisc of `iface` (and with it every tc filter on its hooks).
pub fn delete_clsact(iface: &str) -> io::Result<()> {
    let tcm = TcMsg {
        family: libc::AF_UNSPEC as u8,
        _pad1: 0,
        _pad2: 0,
        ifindex: ifindex(iface)?,
        handle: TC_H_CLSACT_HANDLE,
        parent: TC_H_CLSACT,
        info: 0,
    };
    let mut body = as_bytes(&tcm).to_vec();
    push_attr(&mut body, TCA_KIND, b"clsact\0");
    request(libc::RTM_DELQDISC, 0, &body)
}
