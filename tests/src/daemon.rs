//! An `injector daemon` running inside a lab node's netns, with its own bpffs directory and log.
//! Dropping it stops it (SIGTERM, then SIGKILL) and removes any pins it left.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, lab::Node};

pub struct Daemon {
    child: Option<Child>,
    pub bin: PathBuf,
    pub bpffs: PathBuf,
    pub log: PathBuf,
    pub node: String,
}

impl Daemon {
    /// Starts `bin daemon` in `node`'s netns and waits until it logs "daemon ready".
    pub fn start(bin: &Path, node: &Node) -> Result<Daemon> {
        Self::start_with(bin, node, &[])
    }

    /// As [`start`](Self::start), with more daemon arguments (`--xdp`, `--grace 2s`, ...).
    pub fn start_with(bin: &Path, node: &Node, extra: &[&str]) -> Result<Daemon> {
        let bpffs = PathBuf::from(node.bpffs());
        let log = std::env::temp_dir().join(format!("{}-daemon.log", node.netns));
        let f = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(["daemon", "--netns", &node.netns, "--bpffs"])
            .arg(&bpffs)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut d = Daemon {
            child: Some(child),
            bin: bin.to_path_buf(),
            bpffs,
            log,
            node: node.name.clone(),
        };
        d.wait_for_log("daemon ready", Duration::from_secs(30))?;
        Ok(d)
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; fails early if the daemon exits.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!(
                    "daemon on {} exited ({st}) before '{needle}':\n{}",
                    self.node,
                    self.log_text()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "daemon on {} did not log '{needle}' in {timeout:?}:\n{}",
                    self.node,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Applies `faults` (a JSON list) with `bin local apply -f -`, replacing the node's fault set.
    pub fn apply(&self, faults: &str) -> Result<String> {
        use std::io::Write as _;
        let mut c = Command::new(&self.bin)
            .args(["local", "--bpffs"])
            .arg(&self.bpffs)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        c.stdin
            .take()
            .context("stdin")?
            .write_all(faults.as_bytes())?;
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "apply failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `bin local --bpffs <ours> args...` and returns its stdout.
    pub fn local(&self, args: &[&str]) -> Result<String> {
        let bpffs = self.bpffs.to_string_lossy();
        let mut a = vec!["local", "--bpffs", &bpffs];
        a.extend_from_slice(args);
        cmd::run(&self.bin.to_string_lossy(), &a)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` and waits up to 10 s for the exit.
    pub fn signal_and_wait(&mut self, sig: i32) -> Result<ExitStatus> {
        let mut c = self.child.take().context("daemon already stopped")?;
        // SAFETY: sending a signal to our child.
        unsafe { libc::kill(c.id() as i32, sig) };
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "daemon on {} ignored signal {sig} for 10 s:\n{}",
                    self.node,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Clean stop: SIGTERM, and the daemon must exit 0.
    pub fn stop(mut self) -> Result<()> {
        let st = self.signal_and_wait(libc::SIGTERM)?;
        if !st.success() {
            bail!(
                "daemon on {} exited {st} on SIGTERM:\n{}",
                self.node,
                self.log_text()
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_and_wait(libc::SIGTERM);
        }
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_file(&self.log);
    }
}
