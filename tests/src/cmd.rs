//! Running the commands the lab is made of (`ip`, `bridge`, `ping`), with errors that carry the
//! command line and its stderr.

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

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

/// `ip -n NS -batch -` with `cmds` on its stdin, one command a line: one process for all of them
/// (the lab's pods are made this way, several hundred a minute in the churn). `ip` stops at the
/// first failing line; the error names that line (`Command failed -:N` on its stderr; all of them
/// when ip does not say) and carries the stderr.
pub fn ip_batch(ns: &str, cmds: &[String]) -> Result<()> {
    let mut a: Vec<&str> = Vec::with_capacity(4);
    if !ns.is_empty() {
        a.extend(["-n", ns]);
    }
    a.extend(["-batch", "-"]);
    let line = || format!("`ip {}`", a.join(" "));
    let mut child = Command::new("ip")
        .args(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `ip` (is it installed? scripts/bootstrap.sh installs it)")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A write error (ip gone early) shows as its exit status and stderr below.
    let written = stdin.write_all(cmds.join("\n").as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {}", line()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let failed = err
            .lines()
            .find_map(|l| l.trim().strip_prefix("Command failed -:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .and_then(|n| cmds.get(n.wrapping_sub(1)))
            .map_or_else(
                // An argument ip cannot parse ends it at once, without naming the line.
                || format!(" running `{}`", cmds.join("; ")),
                |c| format!(" at `{c}`"),
            );
        bail!("{}{failed} failed ({}): {}", line(), out.status, err.trim());
    }
    written.with_context(|| format!("writing the commands to {}", line()))
}

/// `ip netns exec NS prog args...`.
pub fn in_ns(ns: &str, prog: &str, args: &[&str]) -> Result<String> {
    let mut a = vec!["netns", "exec", ns, prog];
    a.extend_from_slice(args);
    run("ip", &a)
}
