//! Crash points for the crash tests: `hit("add:flipped")` kills the process with SIGKILL when the
//! file named by `INJECTOR_FAILPOINT_FILE` holds that name. Compiled in only with the cargo
//! feature `failpoints` (the tests' build); otherwise `hit` is empty and the names are never read.

#[cfg(feature = "failpoints")]
pub fn hit(op: &str, step: &str) {
    let Ok(path) = std::env::var("INJECTOR_FAILPOINT_FILE") else {
        return;
    };
    if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == format!("{op}:{step}")) {
        tracing::warn!(op, step, "failpoint: SIGKILL");
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_op: &str, _step: &str) {}
