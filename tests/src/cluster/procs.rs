//! The processes of a run and its state directory `/tmp/<prefix>-cluster`: each process is
//! `<name>.pid` and `<name>.log` there, where the name is its program, optionally followed by a
//! dot and what it serves: `etcd`, `kube-apiserver`, `socat.host`, `socat.node1`. Each runs in a
//! process group of its own (socat forks a child per connection: killing the group ends those
//! too), killed on [`Proc::kill`], by [`down`] from the pid files, and shown by [`status`].

use std::{
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::lab;

/// Where a run keeps everything: `/tmp/<prefix>-cluster`.
pub fn state_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}-cluster"))
}

/// One spawned server process, the leader of its own process group: killed (with its group) and
/// reaped on [`kill`](Self::kill).
pub(super) struct Proc {
    /// `etcd`, `kube-apiserver`, `socat.node1`: its pid and log files' stem.
    pub(super) name: String,
    pub(super) child: Child,
    pub(super) log: PathBuf,
}

impl Proc {
    /// Starts `bin args...` with its output appended to `dir/<name>.log` (a restarted process
    /// keeps its predecessor's log) and writes `dir/<name>.pid`.
    pub(super) fn spawn(name: &str, bin: &Path, args: &[String], dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C meant for `cargo xtask cluster up` leaves it be,
            // and killing the group ends socat's per-connection children with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Fails with the end of its log if it has exited.
    pub(super) fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!(
                "{} exited ({st}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// SIGKILL to its process group, then reaps it. Its data is thrown away with the run (or
    /// kept on disk, for etcd's), so no graceful stop is needed (SIGTERM takes kube-apiserver 4-5 s).
    pub(super) fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: signalling the process group our child leads (process_group(0) above).
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The names of the pid files in `dir`, in the order [`status`] shows them: etcd, kube-apiserver,
/// then the forwarders.
fn pid_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".pid")
                .map(String::from)
        })
        .collect();
    sort_names(&mut names);
    names
}

fn sort_names(names: &mut [String]) {
    let rank = |n: &str| match n {
        "etcd" => 0,
        "kube-apiserver" => 1,
        "socat.host" => 2,
        _ => 3,
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
}

/// Starts `bin args...` as a process of run `prefix` that outlives this one (`cargo xtask cluster
/// up`'s daemons): `<name>.pid` and `<name>.log` in its state directory, stopped by [`down`]
/// (SIGTERM first: a daemon then removes everything it added) and shown by [`status`]. The name
/// starts with the program's file name (`injector.node1`). Returns the log's path.
pub fn spawn_kept(prefix: &str, name: &str, bin: &Path, args: &[String]) -> Result<PathBuf> {
    let p = Proc::spawn(name, bin, args, &state_dir(prefix))?;
    Ok(p.log)
}

/// The pid in `dir/<name>.pid` if that process is alive and runs the program `name` names (its
/// part before the first dot).
pub fn running_pid(dir: &Path, name: &str) -> Option<i32> {
    let program = name.split('.').next()?;
    let pid: i32 = std::fs::read_to_string(dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|&b| b == 0).next()?;
    String::from_utf8_lossy(argv0)
        .ends_with(program)
        .then_some(pid)
}

/// Stops what `cluster up` left of run `prefix` (the process groups named by its pid files, the
/// directory) and tears its lab down. Idempotent.
pub fn down(prefix: &str) -> Result<()> {
    let dir = state_dir(prefix);
    let targets: Vec<i32> = pid_names(&dir)
        .iter()
        .filter_map(|n| running_pid(&dir, n))
        // SAFETY: getpgid only reads. A group we started is signalled whole (socat's children).
        .map(|pid| {
            if unsafe { libc::getpgid(pid) } == pid {
                -pid
            } else {
                pid
            }
        })
        .collect();
    crate::proc::terminate_pids(&targets);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    lab::down(prefix)
}

/// What of cluster `prefix` runs: its processes (the forwarders with their command lines),
/// kubeconfigs, and the lab's status.
pub fn status(prefix: &str) -> Result<String> {
    let dir = state_dir(prefix);
    let mut s = String::new();
    if !dir.exists() {
        writeln!(s, "cluster {prefix}: down (no {})", dir.display())?;
    } else {
        writeln!(s, "cluster {prefix}: {}", dir.display())?;
        let mut names = pid_names(&dir);
        for must in ["etcd", "kube-apiserver"] {
            if !names.iter().any(|n| n == must) {
                names.push(must.to_string());
            }
        }
        sort_names(&mut names);
        for name in names {
            match running_pid(&dir, &name) {
                Some(pid) if name.starts_with("socat") => {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    writeln!(s, "   {name}: running, pid {pid}: {}", cmd.trim())?
                }
                Some(pid) => writeln!(s, "   {name}: running, pid {pid}")?,
                None => writeln!(
                    s,
                    "   {name}: not running (log: {}/{name}.log)",
                    dir.display()
                )?,
            }
        }
        let mut kcs: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("kubeconfig-"))
            })
            .collect();
        kcs.sort();
        for kc in kcs {
            writeln!(s, "   kubectl --kubeconfig {}", kc.display())?;
        }
    }
    s.push_str(&lab::status(prefix)?);
    Ok(s)
}
