//! Running `kubectl` (1.32, on the machine image; it warns about the skew to 1.20 and works) as an
//! identity of a run, on the host or inside a lab node's netns.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

/// What a `kubectl` run did.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// It exited 0 (`auth can-i` exits 1 on "no").
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// stdout then stderr, for messages and for errors that may land on either.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `kubectl --kubeconfig KC args...` with `stdin` (if any), inside `netns` through `ip netns
/// exec` unless it is empty; fails only when kubectl cannot run.
pub fn kubectl(kc: &Path, netns: &str, args: &[&str], stdin: Option<&str>) -> Result<Kubectl> {
    let mut cmd = if netns.is_empty() {
        Command::new("kubectl")
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns, "kubectl"]);
        c
    };
    cmd.arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("cannot run kubectl (it is on the machine image: /usr/bin/kubectl)")?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Kubectl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
