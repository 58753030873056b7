//! Waiting for asynchronous effects with a deadline, never for a fixed time.

use std::time::{Duration, Instant};

/// How long the Kubernetes tests give an effect that should take about a second (a watch event,
/// a transaction on every node, a status write).
pub const SETTLE: Duration = Duration::from_secs(20);

/// Calls `check` every 100 ms until it returns `Ok`, and returns that value; panics after
/// `limit` with `what` and the last `Err`, which should say what was seen instead.
pub fn until<T>(what: &str, limit: Duration, check: impl FnMut() -> anyhow::Result<T>) -> T {
    until_with(what, limit, check, String::new)
}

/// As [`until`], adding `context()` (e.g. the end of the daemons' logs) to the panic message.
pub fn until_with<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> anyhow::Result<T>,
    context: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > limit => {
                panic!(
                    "timed out after {limit:?} waiting for {what}; last seen: {e:#}\n{}",
                    context()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
