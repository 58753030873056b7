//! Processes of a lab: stopping them politely, then firmly.

use std::time::{Duration, Instant};

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// SIGTERM to each pid, up to 5 s for them to exit, then SIGKILL to what is left.
pub fn terminate_pids(pids: &[i32]) {
    for &p in pids {
        // SAFETY: sending a signal.
        unsafe { libc::kill(p, libc::SIGTERM) };
    }
    let start = Instant::now();
    while pids.iter().any(|&p| alive(p)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids.iter().filter(|&&p| alive(p)) {
        // SAFETY: sending a signal.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}
