//! The judging programs' control flow passes the check older verifiers make before anything else
//! (`check_cfg` in 5.10 and 6.1): a loop may close only through a jump, not through a plain
//! instruction's or a call's fall-through into the loop head. Newer kernels (this host's 6.18)
//! accept both, so without this a layout LLVM happens to pick would fail only in the VM (seen:
//! "back-edge from insn 3600 to 3601" on 5.10 when the judging loop was duplicated). Unprivileged.

use std::collections::{HashMap, HashSet};

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

/// A function's instructions (8-byte words) and which of them carry a relocation (calls into
/// `.text`, resolved when the loader appends the callee to the program).
struct Function {
    insns: Vec<[u8; 8]>,
    relocated: HashSet<usize>,
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
    // SHT_REL sections name the section they apply to in sh_info.
    let info = |i: usize| u32_at(elf, sh(i) + 0x2c);
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
    // Offsets in the section of the instructions a relocation applies to.
    let relocated: HashSet<usize> = (0..shnum)
        .filter(|&i| hdr(i).1 == 9 && info(i) == index)
        .flat_map(|i| {
            let (_, _, off, size, _) = hdr(i);
            (off..off + size).step_by(16).map(|r| u64_at(elf, r))
        })
        .collect();
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
            let relocated = (0..size / 8)
                .filter(|i| relocated.contains(&(value + i * 8)))
                .collect();
            out.insert(cstr(elf, str_off + name), Function { insns, relocated });
        }
    }
    out
}

/// 5.10/6.1's `check_cfg` depth-first walk: Err("back-edge from insn T to W") where a loop closes
/// through an edge that may not close one. `relocated`: the instructions with a relocation.
fn check_cfg(insns: &[[u8; 8]], relocated: &HashSet<usize>) -> Result<(), String> {
    const DISCOVERED: u8 = 1;
    const EXPLORED: u8 = 2;
    let n = insns.len();
    let mut state = vec![0u8; n];
    let mut done = vec![0u8; n]; // edges taken: 1 fall-through, 2 branch
    let mut stack = vec![0usize];
    state[0] = DISCOVERED;
    while let Some(&t) = stack.last() {
        let i = insns[t];
        let (code, src) = (i[0], i[1] >> 4);
        let off = i16::from_le_bytes([i[2], i[3]]) as i64;
        let imm = i32::from_le_bytes([i[4], i[5], i[6], i[7]]) as i64;
        let (class, op) = (code & 7, code & 0xf0);
        // (edge bit, target, may close a loop), in the kernel's order.
        let edges: Vec<(u8, i64, bool)> = if class == 5 || class == 6 {
            match op {
                0x90 => vec![],
                // A BPF-to-BPF call still to be relocated: its callee is in .text, appended to
                // the program at load, and checked on its own; no loop of this function closes
                // through it. Fall through only. (Its imm is the callee's offset in .text less
                // one, not an offset from here: read as one, it can land anywhere.)
                0x80 if src == 1 && relocated.contains(&t) => vec![(1, t as i64 + 1, false)],
                0x80 if src == 1 => vec![(1, t as i64 + 1, false), (2, t as i64 + imm + 1, false)],
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
    // The relocations are read: the entry points call the DNS functions in .text.
    assert!(
        progs.values().any(|f| !f.relocated.is_empty()),
        "no relocated call found"
    );
    for (name, f) in progs.iter().chain(&called) {
        check_cfg(&f.insns, &f.relocated)
            .unwrap_or_else(|e| panic!("{name} ({} insns): {e}", f.insns.len()));
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
        check_cfg(&[ja(1), add, jne(-2), exit], &HashSet::new()),
        Err("back-edge from insn 1 to 2".into())
    );
    // The same loop closed by the conditional jump itself: accepted.
    assert_eq!(check_cfg(&[add, jne(-2), exit], &HashSet::new()), Ok(()));
}
