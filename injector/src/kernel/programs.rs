//! Which build of the kernel programs this kernel gets (with or without the EDT stamp, chosen by
//! the probe in `features`), the loader that sets it, and the `--clone-mark` bit's validation.
//!
//! One object, one set of programs: the variant is the `.rodata` global `EDT_STAMP` in
//! injector-ebpf/src/main.rs, set before loading, so the verifier of a kernel without
//! `bpf_skb_set_tstamp` (5.10) never sees the stamping code, while every program name, pin and
//! attach path stays the same.

use std::path::Path;

use aya::EbpfLoader;

/// The global in the eBPF object that selects the variant (1: EDT stamp, 0: drops only).
pub const EDT_STAMP: &str = "EDT_STAMP";

/// The default `--clone-mark`: bit 13. A delayed packet's clone carries it only between
/// `bpf_clone_redirect` and our own egress program, but hooks ahead of ours on that device see
/// it, so it must mean nothing to them. Taken by default elsewhere: kube-proxy 0x4000 (masquerade)
/// and 0x8000 (drop); Calico its whole mark mask 0xffff0000; kube-router (k3s network policy)
/// 0x10000 and 0x20000; Cilium 0x0f00 (magic) and the identity in 0xffff0000 and 0x00ff, with
/// 0xf000 left to Kubernetes' marks; Istio 0x40-0x220 and 0x539; flannel sets none. Bit 13 lies
/// in none of these (the old 0x10000000 was in Calico's range).
pub const DEFAULT_CLONE_MARK: u32 = 0x2000;

/// A loader for the object, its maps pinned under `bpffs`, with the EDT stamp or without.
pub fn loader(bpffs: &Path, edt_stamp: bool) -> EbpfLoader<'_> {
    let mut l = EbpfLoader::new();
    l.default_map_pin_directory(bpffs);
    l.override_global(EDT_STAMP, if edt_stamp { &1u8 } else { &0u8 }, true);
    l
}

/// `--clone-mark`: one bit, in hex (`0x2000`) or decimal, or 0 for no mark at all.
pub fn parse_clone_mark(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => t.parse(),
    }
    .map_err(|_| format!("'{s}': not a 32-bit number; give one bit, e.g. 0x2000"))?;
    if v.count_ones() > 1 {
        return Err(format!(
            "'{s}': {} bits set; give a single bit, e.g. {DEFAULT_CLONE_MARK:#x}, or 0 for no mark",
            v.count_ones()
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_mark_is_one_bit_or_none() {
        assert_eq!(parse_clone_mark("0x2000"), Ok(0x2000));
        assert_eq!(parse_clone_mark("8192"), Ok(0x2000));
        assert_eq!(parse_clone_mark("0"), Ok(0));
        let e = parse_clone_mark("0x3000").unwrap_err();
        assert!(e.contains("2 bits set") && e.contains("0x2000"), "{e}");
        assert!(parse_clone_mark("0x1_0000_0000").is_err());
        assert!(parse_clone_mark("mark").unwrap_err().contains("'mark'"));
    }

    #[test]
    fn the_default_is_one_bit_outside_the_ranges_others_use() {
        assert_eq!(DEFAULT_CLONE_MARK.count_ones(), 1);
        for taken in [0x4000, 0x8000, 0xffff_0000, 0x0f00, 0x00ff, 0x07ff] {
            assert_eq!(DEFAULT_CLONE_MARK & taken, 0, "{taken:#x}");
        }
    }
}
