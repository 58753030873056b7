//! The container image (deploy/Containerfile, built by scripts/build-image.sh from the release
//! binary) runs the node daemon in a lab node under podman, with what the DaemonSet in deploy/
//! gives it: the capabilities BPF, NET_ADMIN and PERFMON only (each one needed: without BPF the
//! programs do not load, without NET_ADMIN a map is refused, without PERFMON the verifier
//! refuses a program), a read-only root, no privilege escalation, no seccomp filter (a pod
//! without a seccompProfile gets none; podman's default profile allows bpf(2) only with
//! CAP_SYS_ADMIN), the host's bpffs and a directory for the API socket. The host's CLI blackholes
//! a pod pair through that socket and ping shows it; `podman stop` (SIGTERM) removes every pin.
//!
//! podman here: crun refuses this machine's hybrid cgroup layout ("cgroups in hybrid mode not
//! supported"), so the runtime is runc (`--runtime runc`); and the bounding set lacks
//! CAP_SYS_RESOURCE, so podman's rootful default limits (nofile 1048576) cannot be set: the
//! limits are passed, below the current hard ones (`--ulimit`). Flags only: no file under /etc
//! is changed.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use injector_tests::{
    injector_bin,
    lab::{self, Lab},
    require_root,
    traffic::http_get,
};

/// The image the script builds (deploy/kustomization.yaml maps `injector` to it).
const IMAGE: &str = "localhost/injector:0.1.0";

fn podman(args: &[&str]) -> (bool, String) {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman (scripts/bootstrap.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A container of this run: stopped and removed when dropped, whatever happened.
struct Container {
    name: String,
    dir: PathBuf,
}

impl Container {
    fn logs(&self) -> String {
        podman(&["logs", &self.name]).1
    }

    fn state(&self) -> String {
        podman(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &self.name,
        ])
        .1
        .trim()
        .to_string()
    }

    /// Waits until the container's log contains `needle`; fails early if it exits.
    fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return;
            }
            let state = self.state();
            assert!(
                !state.starts_with("exited"),
                "the container exited ({state}) before '{needle}':\n{logs}"
            );
            assert!(
                start.elapsed() < timeout,
                "no '{needle}' in {timeout:?} ({state}):\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "5", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `--ulimit` values within this process's hard limits (podman's rootful defaults exceed them
/// where CAP_SYS_RESOURCE is missing from the bounding set).
fn ulimits() -> [String; 4] {
    let hard = |res| {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(res, &mut r) }, 0);
        r.rlim_max
    };
    let nofile = hard(libc::RLIMIT_NOFILE).min(65536);
    let nproc = hard(libc::RLIMIT_NPROC).min(4096);
    [
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        format!("nproc={nproc}:{nproc}"),
    ]
}

/// The release binary, which the image should hold: `$INJECTOR_RELEASE_BIN`, or
/// `target/release/injector` beside this test's `target/debug/deps/`. Built beforehand, like the
/// debug one the other tests run (`cargo xtask test` builds both): a `cargo build` from inside a
/// test would see cargo's per-test environment (CARGO_PKG_NAME=injector-tests, ...), which ring's
/// build script tracks, and rebuild ring, rustls, kube and injector (~3 min) here and again at
/// the next build from anywhere else.
fn release_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("INJECTOR_RELEASE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").exists())
        .expect("the target directory");
    let bin = target.join("release/injector");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --release -p injector` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// scripts/build-image.sh --bin <release binary>; returns the reference it printed last.
fn build_image() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-image.sh");
    let start = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg("--bin")
        .arg(release_bin())
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build-image.sh failed:\n{err}");
    eprintln!(
        "build-image.sh: {:.1} s\n{err}",
        start.elapsed().as_secs_f64()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap_or_default().trim().to_string()
}

#[test]
fn the_image_runs_the_daemon_with_the_daemonsets_capabilities() {
    require_root();
    assert_eq!(build_image(), IMAGE);

    let prefix = lab::run_prefix("im");
    let l = Lab::up(&prefix, 1).expect("lab up");
    let node = l.node(1);
    let (a, b) = (l.pod(1, 1), l.pod(2, 1));
    let bpffs = node.bpffs();
    let dir = std::env::temp_dir().join(format!("{prefix}-run"));
    std::fs::create_dir_all(&dir).unwrap();
    // Declared after the lab, so dropped (stopped, removed) before the lab goes.
    let c = Container {
        name: format!("{prefix}-injector"),
        dir: dir.clone(),
    };
    let netns = format!("ns:/run/netns/{}", node.netns);
    let socket_dir = format!("{}:/run/injector", dir.display());
    let mut args: Vec<String> = [
        "--runtime",
        "runc",
        "run",
        "--detach",
        "--name",
        &c.name,
        "--network",
        &netns,
        // What deploy/daemonset.yaml's securityContext asks for.
        "--cap-drop",
        "ALL",
        "--cap-add",
        "BPF,NET_ADMIN,PERFMON",
        "--security-opt",
        "no-new-privileges",
        // podman's default seccomp profile (containers-common 0.50) allows bpf(2) only with
        // CAP_SYS_ADMIN; a pod without a seccompProfile runs unconfined (the kubelet's default).
        "--security-opt",
        "seccomp=unconfined",
        "--read-only",
        "--volume",
        "/sys/fs/bpf:/sys/fs/bpf",
        "--volume",
        &socket_dir,
        "--env",
        "RUST_LOG=info",
    ]
    .map(String::from)
    .into();
    args.extend(ulimits());
    args.extend(
        [
            IMAGE,
            "daemon",
            "--bpffs",
            &bpffs,
            "--socket",
            "/run/injector/injector.sock",
            "--metrics-addr",
            "127.0.0.1:9464",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = podman(&args);
    assert!(ok, "podman {}: {out}", args.join(" "));
    c.wait_for_log("daemon ready", Duration::from_secs(30));
    // The kubelet's readiness probe, from inside the node's netns.
    let metrics: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    assert_eq!(
        http_get(&node.netns, metrics, "/readyz", "*/*").unwrap(),
        (200, "ready\n".to_string())
    );
    assert!(
        Path::new(&bpffs).is_dir(),
        "{bpffs}: the pins are in the host's bpffs"
    );

    // The host's CLI, through the socket the container made in the shared directory.
    let socket = dir.join("injector.sock");
    let cli = |args: &[&str]| {
        let out = Command::new(injector_bin())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "injector {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            c.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(l.ping(a, b.ip.into(), 5).unwrap(), 5, "before the fault");
    let (from, to) = (a.ip.to_string(), b.ip.to_string());
    cli(&[
        "fault",
        "add",
        "bh",
        "--from",
        &from,
        "--to",
        &to,
        "--blackhole",
        "--for",
        "2m",
    ]);
    assert_eq!(
        l.ping(a, b.ip.into(), 5).unwrap(),
        0,
        "blackholed {from} -> {to}"
    );
    let ls = cli(&["fault", "ls"]);
    assert!(ls.contains("bh") && ls.contains("blackhole"), "{ls}");
    cli(&["fault", "rm", "bh"]);
    assert_eq!(l.ping(a, b.ip.into(), 5).unwrap(), 5, "after fault rm");

    // podman stop: SIGTERM to the daemon (PID 1 in the container), which removes its pins,
    // links, programs and socket, and exits 0.
    let (ok, out) = podman(&["stop", "--time", "20", &c.name]);
    assert!(ok, "podman stop: {out}");
    assert_eq!(c.state(), "exited 0", "{}", c.logs());
    assert!(
        !Path::new(&bpffs).exists(),
        "{bpffs} is left after the stop:\n{}",
        c.logs()
    );
    assert!(!socket.exists(), "the socket is left after the stop");
    let (ok, out) = podman(&["rm", &c.name]);
    assert!(ok, "podman rm: {out}");
}
