//! The judging programs' control flow passes the check older verifiers make before anything else
//! (`check_cfg` in 5.10 and 6.1): a loop may close only through a jump, not through a plain
//! instruction's or a call's fall-through into the loop head. Newer kernels (this host's 6.18)
//! accept both, so without this a layout LLVM happens to pick would fail only in the VM (seen:
//! "back-edge from insn 3600 to 3601" on 5.10 when the judging loop was duplicated). Unprivileged.

use std::collections::HashMap;

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize
}
fn u32_at(b: &[u8], o: usize) -> usize {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
}
fn u64_at(b: &[u8], o: usize) -> usize {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize
}
fn cstr(b: &[u8], o: usize) -> String {
    let end = b[o..].iter().position(|&c| c == 0).unwrap();
    String::from_utf8_lossy(&b[o..o + end]).into_owned()
}

/// A function's instructions (8-byte words).
struct Function {
    insns: Vec<[u8; 8]>,
}

/// Function name -> the function, for the functions of section `section`.
fn functions(elf: &[u8], section: &str) -> HashMap<String, Function> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF object");
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(elf, 0x28),
        u16_at(elf, 0x3a),
        u16_at(elf, 0x3c),
        u16_at(elf, 0x3e),
    );
    let sh = |i: usize| shoff + i * shentsize;
    // (name offset, type, file offset, size, link) of each section header.
    let hdr = |i: usize| {
        let h = sh(i);
        (
            u32_at(elf, h),
            u32_at(elf, h + 4),
            u64_at(elf, h + 0x18),
            u64_at(elf, h + 0x20),
            u32_at(elf, h + 0x28),
        )
    };
    let names_at = hdr(shstrndx).2;
    let index = (0..shnum)
        .find(|&i| cstr(elf, names_at + hdr(i).0) == section)
        .unwrap_or_else(|| panic!("no section {section}"));
    let code = hdr(index).2;
    let symtab = (0..shnum)
        .find(|&i| hdr(i).1 == 2)
        .expect("no symbol table");
    let (_, _, sym_off, sym_size, strtab) = hdr(symtab);
    let str_off = hdr(strtab).2;
    let mut out = HashMap::new();
    for s in (sym_off..sym_off + sym_size).step_by(24) {
        let (name, info, shndx) = (u32_at(elf, s), elf[s + 4], u16_at(elf, s + 6));
        let (value, size) = (u64_at(elf, s + 8), u64_at(elf, s + 16));
        if info & 0xf == 2 && shndx == index {
            let start = code + value;
            let insns = elf[start..start + size]
                .chunks_exact(8)
                .map(|c| c.try_into().unwrap())
                .collect();
            out.insert(cstr(elf, str_off + name), Function { insns });
        }
    }
    out
}

/// 5.10/6.1's `check_cfg` depth-first walk: Err("back-edge from insn T to W") where a loop closes
/// through an edge that may not close one.
fn check_cfg(insns: &[[u8; 8]]) -> Result<(), String> {
    const DISCOVERED: u8 = 1;
    const EXPLORED: u8 = 2;
    let n = insns.len();
    let mut state = vec![0u8; n];
    let mut done = vec![0u8; n]; // edges taken: 1 fall-through, 2 branch
    let mut stack = vec![0usize];
    state[0] = DISCOVERED;
    while let Some(&t) = stack.last() {
        let i = insns[t];
        let code = i[0];
        let off = i16::from_le_bytes([i[2], i[3]]) as i64;
        let (class, op) = (code & 7, code & 0xf0);
        // (edge bit, target, may close a loop), in the kernel's order.
        let edges: Vec<(u8, i64, bool)> = if class == 5 || class == 6 {
            match op {
                0x90 => vec![],
                // A call, helper or BPF-to-BPF (src 1). The kernel walks a BPF-to-BPF callee as
                // part of the whole program; here each function of .text is checked on its own
                // (and BPF has no recursion), so no loop of this function closes through a
                // call: fall through only. The imm of a call to .text is not an offset into
                // this function: from an entry point it is still to be relocated (the callee's
                // offset in .text less one), and between two .text functions LLVM resolves it
                // itself to an offset from here into the other function (seen: insn 45 of
                // `record_at_ingress` calling `early::step`).
                0x80 => vec![(1, t as i64 + 1, false)],
                0x00 if class == 5 => vec![(1, t as i64 + off + 1, true)],
                _ => vec![(1, t as i64 + 1, true), (2, t as i64 + off + 1, true)],
            }
        } else {
            vec![(1, t as i64 + if code == 0x18 { 2 } else { 1 }, false)]
        };
        let mut pushed = false;
        for (bit, w, loop_ok) in edges {
            if done[t] & bit != 0 {
                continue;
            }
            done[t] |= bit;
            let w = usize::try_from(w)
                .ok()
                .filter(|&w| w < n)
                .ok_or(format!("jump out of range from insn {t}"))?;
            match state[w] {
                0 => {
                    state[w] = DISCOVERED;
                    stack.push(w);
                    pushed = true;
                    break;
                }
                DISCOVERED if !loop_ok => return Err(format!("back-edge from insn {t} to {w}")),
                _ => {}
            }
        }
        if !pushed {
            state[t] = EXPLORED;
            stack.pop();
        }
    }
    Ok(())
}

#[test]
fn loops_close_only_through_jumps_as_5_10_and_6_1_require() {
    let progs = functions(injector::EBPF_OBJECT, "classifier");
    assert!(progs.len() >= 3, "{:?}", progs.keys());
    // And the functions they call (the DNS name walk, the rewrite), each on its own.
    let called = functions(injector::EBPF_OBJECT, ".text");
    // Calls are read: the entry points call the DNS functions in .text, and .text functions
    // call one another.
    let calls = |f: &Function| f.insns.iter().any(|i| i[0] == 0x85 && i[1] >> 4 == 1);
    assert!(
        progs.values().any(calls),
        "no BPF-to-BPF call in an entry point"
    );
    assert!(
        called.values().any(calls),
        "no BPF-to-BPF call within .text"
    );
    for (name, f) in progs.iter().chain(&called) {
        check_cfg(&f.insns).unwrap_or_else(|e| panic!("{name} ({} insns): {e}", f.insns.len()));
    }
}

#[test]
fn the_check_rejects_a_loop_closed_by_a_fall_through() {
    let ja = |off: i16| {
        let o = off.to_le_bytes();
        [0x05, 0, o[0], o[1], 0, 0, 0, 0]
    };
    let jne = |off: i16| {
        let o = off.to_le_bytes();
        [0x55, 0x01, o[0], o[1], 0, 0, 0, 0] // if r1 != 0 goto
    };
    let add = [0x07, 0x01, 0, 0, 1, 0, 0, 0]; // r1 += 1
    let exit = [0x95, 0, 0, 0, 0, 0, 0, 0];
    // 0: goto 2 (head); 1: r1 += 1 (latch, falls into the head); 2: if r1 != 0 goto 1; 3: exit
    assert_eq!(
        check_cfg(&[ja(1), add, jne(-2), exit]),
        Err("back-edge from insn 1 to 2".into())
    );
    // The same loop closed by the conditional jump itself: accepted.
    assert_eq!(check_cfg(&[add, jne(-2), exit]), Ok(()));
    // A BPF-to-BPF call whose imm points outside this function (into another .text function):
    // its callee is checked on its own, the call only falls through.
    let call = |imm: i32| {
        let m = imm.to_le_bytes();
        [0x85, 0x10, 0, 0, m[0], m[1], m[2], m[3]]
    };
    assert_eq!(check_cfg(&[call(40), exit]), Ok(()));
    assert_eq!(check_cfg(&[call(-3), exit]), Ok(()));
}
