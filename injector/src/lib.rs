//! injector: eBPF network fault injector for Kubernetes workers. The library behind the
//! `injector` binary: the daemon, the map access, and the parsing of what users type.

pub mod api;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod experiment;
pub mod failpoint;
pub mod fault;
pub mod k8s;
pub mod kernel;
pub mod kube_client;
pub mod kubectl;
pub mod local;
pub mod net;
pub mod par;
pub mod parse;
pub mod secret;

/// The eBPF object built from injector-ebpf by build.rs, embedded at compile time.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/injector-ebpf"));

/// Where a daemon pins its maps unless told otherwise.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/injector";

/// The daemon's API socket unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/injector/injector.sock";
