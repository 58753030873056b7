//! Running the commands the lab is made of (`ip`, `bridge`, `ping`), with errors that carry the
//! command line and its stderr.

use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

/// Runs `prog args...`, failing with the command and its stderr unless it exits 0.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = output(prog, args)?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `prog args...` and returns its output whatever the exit status.
pub fn output(prog: &str, args: &[&str]) -> Result<Output> {
    Command::new(prog).args(args).output().with_context(|| {
        format!("cannot run `{prog}` (is it installed? scripts/bootstrap.sh installs it)")
    })
}

/// `ip -n NS args...` (NS may be empty for the current namespace).
pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut a: Vec<&str> = Vec::with_capacity(args.len() + 2);
    if !ns.is_empty() {
        a.extend(["-n", ns]);
    }
    a.extend_from_slice(args);
    run("ip", &a)
}

/// `ip netns exec NS prog args...`.
pub fn in_ns(ns: &str, prog: &str, args: &[&str]) -> Result<String> {
    let mut a = vec!["netns", "exec", ns, prog];
    a.extend_from_slice(args);
    run("ip", &a)
}
