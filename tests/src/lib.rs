//! Test support shared by the privileged tests, the benchmarks and the demo: the two-node flannel
//! lab in network namespaces, daemons running in its nodes, a real API server with the lab
//! registered in it (`cluster`), and the injector deployed there (`k8s`).

pub mod cluster;
pub mod cmd;
pub mod cpu;
pub mod daemon;
pub mod dns;
pub mod k8s;
pub mod lab;
pub mod node;
pub mod perf;
pub mod poll;
pub mod proc;
pub mod prometheus;
pub mod rng;
pub mod snapshot;
pub mod stats;
pub mod traffic;
pub mod web;

use std::path::PathBuf;

/// The built `injector` binary: `$INJECTOR_BIN`, or `target/<profile>/injector` next to the
/// running test executable (`target/<profile>/deps/...`). `cargo xtask test` builds it first.
pub fn injector_bin() -> PathBuf {
    built_bin("injector", "INJECTOR_BIN")
}

/// The built kubectl plugin `kubectl-injector`: `$KUBECTL_INJECTOR_BIN`, or next to
/// [`injector_bin`] (`cargo build --workspace` builds both).
pub fn kubectl_injector_bin() -> PathBuf {
    built_bin("kubectl-injector", "KUBECTL_INJECTOR_BIN")
}

fn built_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p injector` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Panics unless running as root: the lab needs CAP_NET_ADMIN and CAP_BPF.
pub fn require_root() {
    // SAFETY: no arguments.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "privileged test: run as root (cargo xtask test)"
    );
}
