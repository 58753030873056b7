//! An `injector daemon` running inside a lab node's netns, with its own bpffs directory, API socket
//! and log, driven through the real CLI. Dropping it stops it (SIGTERM, then SIGKILL) and removes
//! whatever it left.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::lab::Node;

pub struct Daemon {
    child: Option<Child>,
    pub bin: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub node: String,
    netns: String,
    extra: Vec<String>,
    /// More environment for the daemon process (e.g. `INJECTOR_FAILPOINT_FILE`).
    env: Vec<(String, String)>,
    /// Remove the pins on drop (false once a successor daemon took them over).
    owns_pins: bool,
}

impl Daemon {
    /// Starts `bin daemon` in `node`'s netns and waits until it logs "daemon ready".
    pub fn start(bin: &Path, node: &Node) -> Result<Daemon> {
        Self::start_with(bin, node, &[])
    }

    /// As [`start`](Self::start), with more daemon arguments (`--xdp`, `--grace 2s`, ...).
    pub fn start_with(bin: &Path, node: &Node, extra: &[&str]) -> Result<Daemon> {
        Self::start_env(bin, node, extra, &[])
    }

    /// As [`start_with`](Self::start_with), with more environment for the daemon.
    pub fn start_env(
        bin: &Path,
        node: &Node,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let mut d = Daemon {
            child: None,
            bin: bin.to_path_buf(),
            bpffs: PathBuf::from(node.bpffs()),
            socket: std::env::temp_dir().join(format!("{}.sock", node.netns)),
            log: std::env::temp_dir().join(format!("{}-daemon.log", node.netns)),
            node: node.name.clone(),
            netns: node.netns.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            owns_pins: true,
        };
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let f =
            File::create(&self.log).with_context(|| format!("creating {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(["daemon", "--netns", &self.netns, "--bpffs"])
            .arg(&self.bpffs)
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        // Under the VM's emulation (TCG, two daemons at once, the host busy) the verifier alone
        // took 10 s for one daemon on 5.10 (an idle guest).
        let ready = if std::env::var_os("INJECTOR_VM").is_some() {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(30)
        };
        self.wait_for_log("daemon ready", ready)
    }

    /// A new daemon on the same node, pins and socket, after this one was stopped or killed.
    pub fn restart(mut self) -> Result<Daemon> {
        if self.child.is_some() {
            bail!("restart: the daemon on {} is still running", self.node);
        }
        self.owns_pins = false;
        let mut next = self.clone_config();
        next.owns_pins = true;
        next.spawn()?;
        Ok(next)
    }

    fn clone_config(&self) -> Daemon {
        Daemon {
            child: None,
            bin: self.bin.clone(),
            bpffs: self.bpffs.clone(),
            socket: self.socket.clone(),
            log: self.log.clone(),
            node: self.node.clone(),
            netns: self.netns.clone(),
            extra: self.extra.clone(),
            env: self.env.clone(),
            owns_pins: false,
        }
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

    /// Runs `bin --socket <ours> args...` with `stdin`, whatever its exit status.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Result<Output> {
        let mut c = Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        c.stdin
            .take()
            .context("stdin")?
            .write_all(stdin.as_bytes())?;
        Ok(c.wait_with_output()?)
    }

    /// As [`cli`](Self::cli), failing with stderr unless it exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str], stdin: &str) -> Result<String> {
        let out = self.cli(args, stdin)?;
        if !out.status.success() {
            bail!(
                "`injector {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds `faults` (JSON) through the API: `injector apply -f -`.
    pub fn apply(&self, faults: &str) -> Result<String> {
        self.cli_ok(&["apply", "-f", "-"], faults)
    }

    /// Deletes every fault through the API.
    pub fn clear(&self) -> Result<String> {
        self.cli_ok(&["fault", "rm", "--all"], "")
    }

    /// Runs `bin local --bpffs <ours> args...` (the pinned maps, directly) and returns stdout.
    pub fn local(&self, args: &[&str]) -> Result<String> {
        let bpffs = self.bpffs.to_string_lossy();
        let mut a = vec!["local", "--bpffs", &bpffs];
        a.extend_from_slice(args);
        crate::cmd::run(&self.bin.to_string_lossy(), &a)
    }

    /// `key` (`matched`, `dropped`, ...) of fault `name` as the pinned maps count it, summed over
    /// the node's judging hooks (veth egress, overlay egress, the sender's veth ingress).
    pub fn counted(&self, name: &str, key: &str) -> u64 {
        let s = self.local(&["stats"]).unwrap();
        ["veth_egress", "overlay_egress", "veth_ingress"]
            .iter()
            .map(|h| crate::stats::fault(&s, name, h, key))
            .sum()
    }

    /// What the pinned maps say, read without the daemon (`injector local stats`): the faults of
    /// the live generation by the names their records give (a kernel slot without a record shows
    /// as `slotN`), each one's remaining seconds, sorted by name, and how many fault records are
    /// stored.
    pub fn kernel_faults(&self) -> (Vec<(String, f64)>, u64) {
        let out = self.local(&["stats"]).unwrap();
        let records = crate::stats::value(out.lines().next().unwrap(), "records");
        let mut faults: Vec<(String, f64)> = out
            .lines()
            .filter(|l| l.starts_with("fault ") && l.contains(" hook=veth_egress "))
            .map(|l| {
                let name = l.split_whitespace().nth(1).unwrap().to_string();
                let left = l
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("remaining_s="))
                    .unwrap()
                    .parse()
                    .unwrap();
                (name, left)
            })
            .collect();
        faults.sort_by(|a, b| a.0.cmp(&b.0));
        (faults, records)
    }

    /// The API's faults (`fault ls`): names and remaining seconds, sorted by name.
    pub fn api_faults(&self) -> Vec<(String, f64)> {
        let v: serde_json::Value =
            serde_json::from_str(&self.cli_ok(&["fault", "ls", "-o", "json"], "").unwrap())
                .unwrap();
        let mut out: Vec<(String, f64)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_string(),
                    f["remaining_s"].as_f64().unwrap(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
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

    /// Waits up to `timeout` for the daemon to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        let c = self.child.as_mut().context("daemon already stopped")?;
        loop {
            if let Some(st) = c.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if start.elapsed() > timeout {
                bail!(
                    "daemon on {} still runs after {timeout:?}:\n{}",
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
        if self.owns_pins {
            let _ = std::fs::remove_dir_all(&self.bpffs);
            let _ = std::fs::remove_file(&self.socket);
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
