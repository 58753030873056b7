//! Kernel features found at run time, without changing anything: TCX, the fq qdisc, BTF, and
//! whether a TC program may stamp EDT delivery times (probed by loading one, then closed).

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

/// The running kernel's release (`uname -r`), for messages.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// BTF of the running kernel.
pub fn btf() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// `bpf_skb_set_tstamp` and the `__sk_buff.tstamp_type` field, which the delay path needs: Linux
/// 5.18 (Martin KaFai Lau's "bpf: Add __sk_buff->delivery_time_type and
/// bpf_skb_set_delivery_time()", renamed tstamp_type / bpf_skb_set_tstamp before that release;
/// absent on Debian 11's 5.10). Probed, not read off the version (distributions backport): the
/// verifier is asked to load a 8-instruction TC program that reads the field and calls the
/// helper, as our judging programs do; the program is closed at once, nothing is attached.
pub fn edt_stamp() -> bool {
    const OFF_TSTAMP_TYPE: i16 = 180; // offsetof(struct __sk_buff, tstamp_type), u8
    const BPF_FUNC_SKB_SET_TSTAMP: i32 = 192;
    let insns: [u64; 8] = [
        insn(0xbf, 6, 1, 0, 0),                       // r6 = r1 (ctx)
        insn(0x71, 2, 6, OFF_TSTAMP_TYPE, 0),         // r2 = *(u8 *)(r6 + tstamp_type)
        insn(0xbf, 1, 6, 0, 0),                       // r1 = r6
        insn(0xb7, 2, 0, 0, 1),                       // r2 = 1 (a delivery time)
        insn(0xb7, 3, 0, 0, 1),                       // r3 = BPF_SKB_TSTAMP_DELIVERY_MONO
        insn(0x85, 0, 0, 0, BPF_FUNC_SKB_SET_TSTAMP), // call bpf_skb_set_tstamp
        insn(0xb7, 0, 0, 0, 0),                       // r0 = TC_ACT_OK
        insn(0x95, 0, 0, 0, 0),                       // exit
    ];
    prog_loads(3 /* BPF_PROG_TYPE_SCHED_CLS */, &insns)
}

/// One eBPF instruction: opcode, dst and src registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let b = [
        code,
        (src << 4) | (dst & 0x0f),
        off.to_le_bytes()[0],
        off.to_le_bytes()[1],
        imm.to_le_bytes()[0],
        imm.to_le_bytes()[1],
        imm.to_le_bytes()[2],
        imm.to_le_bytes()[3],
    ];
    u64::from_le_bytes(b)
}

/// Whether the verifier accepts `insns` as a program of `prog_type` (BPF_PROG_LOAD, then close).
fn prog_loads(prog_type: u32, insns: &[u64]) -> bool {
    const BPF_PROG_LOAD: libc::c_long = 5;
    let license = c"GPL";
    // union bpf_attr, the BPF_PROG_LOAD part: prog_type, insn_cnt, insns, license; the rest 0.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: a valid bpf_attr for BPF_PROG_LOAD whose pointers outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: the fd was just returned to us.
    unsafe { libc::close(fd as i32) };
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r2 = *(u8 *)(r6 + 180): code 0x71, regs 0x62, off 180 (LE), imm 0.
        assert_eq!(
            super::insn(0x71, 2, 6, 180, 0).to_le_bytes(),
            [0x71, 0x62, 180, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            super::insn(0x85, 0, 0, 0, 192).to_le_bytes(),
            [0x85, 0, 0, 0, 192, 0, 0, 0]
        );
    }
}
