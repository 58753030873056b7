//! Kernel features found at run time, without changing anything: TCX, the fq qdisc, BTF.

use aya::util::KernelVersion;

/// TCX links: Linux 6.6 (commit e420bed02507 "bpf: Add fd-based tcx multi-prog infra").
pub fn tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Whether an `fq` qdisc can be created: built in (its ops are in kallsyms) or available as a
/// module (listed in modules.dep; the kernel loads it on demand).
pub fn fq() -> bool {
    let builtin = std::fs::read_to_string("/proc/kallsyms")
        .map(|s| {
            s.lines()
                .any(|l| l.ends_with(" fq_qdisc_ops") || l.contains(" fq_qdisc_ops\t"))
        })
        .unwrap_or(false);
    builtin || module_available("sch_fq")
}

fn module_available(name: &str) -> bool {
    let Ok(rel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    std::fs::read_to_string(format!("/lib/modules/{}/modules.dep", rel.trim()))
        .map(|s| {
            s.lines().any(|l| {
                l.split(':').next().is_some_and(|m| {
                    m.ends_with(&format!("/{name}.ko")) || m.contains(&format!("/{name}.ko."))
                })
            })
        })
        .unwrap_or(false)
}

/// BTF of the running kernel.
pub fn btf() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}
