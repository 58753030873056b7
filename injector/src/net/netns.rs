//! Entering a network namespace by name (`/run/netns/NAME`, as `ip netns` makes them) or path.
//! Only the network namespace changes: bpffs and /sys stay the host's, unlike `ip netns exec`.

use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

use anyhow::{Context as _, Result, bail};

/// Switches the calling thread (call it before any other thread starts) into `netns`.
pub fn enter(netns: &str) -> Result<()> {
    let path = if netns.contains('/') {
        PathBuf::from(netns)
    } else {
        PathBuf::from("/run/netns").join(netns)
    };
    let f = File::open(&path).with_context(|| {
        format!(
            "--netns: cannot open {}; `ip netns list` shows the names",
            path.display()
        )
    })?;
    // SAFETY: setns on a valid fd; affects only this (still single) thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "--netns: setns({}) failed: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
