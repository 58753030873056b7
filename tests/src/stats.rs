//! Reading `injector local stats` output in tests and the demo.

/// `key` of the `fault NAME ... hook=HOOK` line, e.g. `dropped`.
pub fn fault(stats: &str, name: &str, hook: &str, key: &str) -> u64 {
    let line = stats
        .lines()
        .find(|l| l.starts_with(&format!("fault {name} ")) && l.contains(&format!(" hook={hook} ")))
        .unwrap_or_else(|| panic!("no line for fault {name} hook {hook} in:\n{stats}"));
    value(line, key)
}

/// `key` of the `hook HOOK ...` line, e.g. `skipped`.
pub fn hook(stats: &str, hook: &str, key: &str) -> u64 {
    let line = stats
        .lines()
        .find(|l| l.starts_with(&format!("hook {hook} ")))
        .unwrap_or_else(|| panic!("no line for hook {hook} in:\n{stats}"));
    value(line, key)
}

/// `key=N` of one line.
pub fn value(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in: {line}"))
        .parse()
        .expect("a number")
}

/// Asserts that `k` successes of `n` trials lie within the 99.9% two-sided bound (+-3.29 sd,
/// normal approximation) of Binomial(n, p); `what` names the measurement in the failure.
pub fn assert_binomial(k: u64, n: u64, p: f64, what: &str) {
    let mean = (n as f64 * p).round() as u64;
    let bound = (3.29 * (n as f64 * p * (1.0 - p)).sqrt()).ceil() as u64;
    assert!(
        k.abs_diff(mean) <= bound,
        "{what}: {k} of {n}, want {mean} +- {bound} (p = {p})"
    );
}
