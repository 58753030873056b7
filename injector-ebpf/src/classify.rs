//! Classification: the rules a packet matches, from four lookups (destination, source, source
//! port, destination port) intersected with the protocol's mask, stopping at the first empty set.
//! An address is looked up among the host addresses (/32, /128: a sorted array searched by
//! halving) first, then, on a miss and only when the generation has any, in an LPM trie of
//! shorter prefixes. Constant cost in the number of faults; logarithmic in the number of
//! prefixes (17 reads for the hosts). The sets are eight words (512 rules: 256 faults, each one
//! rule or two); the candidates are built and popped in map memory (`verdict::JUDGING`), not on
//! the judging frame, which has no room for them.

use aya_ebpf::maps::{LpmTrie, lpm_trie::Key};
use injector_common::{RULE_WORDS, RuleSet, ctrl, hosts, mask};

use crate::{
    early,
    maps::{
        DPORT, DST_HOST_V4, DST_HOST_V6, DST_V4, DST_V6, HOST_SEARCH, HOST_SETS, HostMap,
        HostSearch, MASKS, MISSES, SPORT, SRC_HOST_V4, SRC_HOST_V6, SRC_V4, SRC_V6,
    },
    parse::{Flow, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

/// A search's position, in this CPU's `HOST_SEARCH` (see `hosts::Position`).
struct Slot(*mut u32);

impl hosts::Position for Slot {
    #[inline(always)]
    fn get(&self) -> u32 {
        // SAFETY: this CPU's slot of a per-CPU map, valid for the program's run; volatile so
        // the compiler keeps the value in memory, where the verifier does not track it.
        unsafe { core::ptr::read_volatile(self.0) }
    }
    #[inline(always)]
    fn set(&self, lo: u32) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.0, lo) }
    }
}

/// The index in `HOST_SETS` of host address `key`'s rule set in generation `g` of `host` (a
/// sorted array, see `injector_common::hosts`): `hosts::STEPS` reads. A generation is one map
/// value, so one lookup gives the whole of it and the search's reads are loads at a masked
/// index, not helper calls.
#[inline(always)]
fn host_index<E: hosts::Entry>(host: &HostMap<E>, g: u32, key: E::Key) -> Option<u32> {
    let seg = host.get_ptr(g)?;
    // SAFETY: a map value of SEGMENT entries, alive for the program's run; the index is masked
    // into it (SEGMENT is a power of two), which is also what the verifier checks.
    let at = |i: u32| unsafe { (*seg)[(i & (hosts::SEGMENT - 1)) as usize] };
    let n = at(0).set();
    if n == 0 {
        return None;
    }
    let s = HOST_SEARCH.get_ptr_mut(0)?;
    // SAFETY: a field of this CPU's slot.
    let pos = Slot(unsafe { core::ptr::addr_of_mut!((*s).pos) });
    let e = at(1 + hosts::search(n, key, |i| Some(at(1 + i).key()), &pos)?);
    (e.key() == key).then_some(e.set())
}

/// What [`injector_host`] returns for an address that is not a host of the generation.
const NO_SET: u32 = u32::MAX;
/// [`injector_host`]'s `which`: the destination's host map (else the source's).
const DST: u32 = 1;
/// [`injector_host`]'s `which`: an IPv6 address (else IPv4).
const V6: u32 = 2;

/// The index in `HOST_SETS` of the rule set of the address in this CPU's `HOST_SEARCH` (the
/// caller puts it there) among the hosts of generation `g` of the host map `which` names
/// ([`DST`], [`V6`]); [`NO_SET`] when it is not one of them.
///
/// A global function (exported: BTF linkage global), on purpose. The verifier checks a global
/// function once, on its own, with its arguments unknown scalars, and a call to it is one
/// instruction returning an unknown scalar. A static function (or inlined code) is walked again
/// for every state that reaches it: the judging programs reach classification in hundreds of
/// states, and 6.1's verifier went past a million instructions that way. Its frame is its own
/// too, and the address comes through the map, not as arguments: the judging frame has no room
/// for the search's state or the address's halves (each byte of it counts against 512 with
/// `early::step`'s frame after it). Scalar arguments only, which 5.10 also takes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn injector_host(which: u32, g: u32) -> u32 {
    let Some(s) = HOST_SEARCH.get_ptr(0) else {
        return NO_SET;
    };
    // SAFETY: this CPU's slot, written by the caller just before the call; read in place (a
    // copy would take 16 bytes of this frame).
    let a = unsafe { &(*s).addr };
    let g = g & 1;
    let found = match (which & V6 != 0, which & DST != 0) {
        (false, false) => host_index(&SRC_HOST_V4, g, hosts::v4_key(a)),
        (false, true) => host_index(&DST_HOST_V4, g, hosts::v4_key(a)),
        (true, false) => host_index(&SRC_HOST_V6, g, hosts::v6_key(a)),
        (true, true) => host_index(&DST_HOST_V6, g, hosts::v6_key(a)),
    };
    found.unwrap_or(NO_SET)
}

/// The rule set of address `a` in the active generation: the host arrays first (full-length
/// prefixes), then, only if `gen_word` has the direction's `trie_bit` (the trie holds shorter
/// prefixes), the trie.
#[inline(always)]
fn addr_set(flow: &Flow, dst: bool, gen_word: u64) -> Option<&'static RuleSet> {
    let g = (gen_word & 1) as u32;
    let a = if dst { &flow.dst } else { &flow.src };
    let s = HOST_SEARCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; the search reads it back.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*s).addr), *a) };
    let which = if dst { DST } else { 0 } | if flow.v6 { V6 } else { 0 };
    let i = injector_host(which, g);
    if i != NO_SET {
        return HOST_SETS.get(g * hosts::SETS_PER_GEN + i);
    }
    let trie_bit = match (flow.v6, dst) {
        (false, false) => ctrl::GEN_TRIE_SRC_V4,
        (false, true) => ctrl::GEN_TRIE_DST_V4,
        (true, false) => ctrl::GEN_TRIE_SRC_V6,
        (true, true) => ctrl::GEN_TRIE_DST_V6,
    };
    if gen_word & trie_bit == 0 {
        return None;
    }
    if flow.v6 {
        let trie = if dst { &DST_V6 } else { &SRC_V6 };
        trie.get(trie_key::<17>(g, a))
    } else {
        let trie = if dst { &DST_V4 } else { &SRC_V4 };
        trie.get(trie_key::<5>(g, a))
    }
}

/// A full-length trie key: `[generation, the address's N - 1 bytes]`.
#[inline(always)]
fn trie_key<const N: usize>(g: u32, a: &[u8; 16]) -> Key<[u8; N]> {
    let mut k = [0u8; N];
    k[0] = g as u8;
    k[1..].copy_from_slice(&a[..N - 1]);
    Key::new(8 * N as u32, k)
}

#[inline(always)]
fn port(g: u8, p: u16) -> Key<[u8; 3]> {
    let b = p.to_be_bytes();
    Key::new(24, [g, b[0], b[1]])
}

#[inline(always)]
fn mask_of(g: u8, m: u32) -> Option<&'static RuleSet> {
    MASKS.get(u32::from(g) * mask::PER_GEN + m)
}

/// A packet's candidate rules, in map memory (`verdict::JUDGING`): their words, written one at
/// a time (volatile: the compiler keeps them there, and the verifier does not track them), never
/// copied whole onto the stack, and a summary of the non-empty words
/// (`injector_common::nonempty_bit`), so a rule is popped without reading every word.
pub struct Candidates {
    words: *mut u64,
    summary: *mut u64,
}

impl Candidates {
    /// # Safety
    /// `words` is `RULE_WORDS` words and `summary` one, of this CPU's slot of a per-CPU map,
    /// used by nothing else while the program runs.
    #[inline(always)]
    pub unsafe fn new(words: *mut u64, summary: *mut u64) -> Candidates {
        Candidates { words, summary }
    }

    #[inline(always)]
    fn word(&self, i: usize) -> *mut u64 {
        // SAFETY: word `i` (< RULE_WORDS, masked) of the words `new` was given.
        unsafe { self.words.add(i & (RULE_WORDS - 1)) }
    }

    /// Sets the candidates to `a` and `b`'s intersection; false when it is empty.
    #[inline(always)]
    fn start(&self, a: &RuleSet, b: &RuleSet) -> bool {
        let mut any = 0;
        for i in 0..RULE_WORDS {
            let w = a.0[i] & b.0[i];
            // SAFETY: see `word`.
            unsafe { core::ptr::write_volatile(self.word(i), w) };
            any |= w;
        }
        any != 0
    }

    /// Narrows the candidates to their intersection with `a`, `b` and `c`, and writes the summary;
    /// false when nothing is left.
    #[inline(always)]
    fn finish(&self, a: &RuleSet, b: &RuleSet, c: &RuleSet) -> bool {
        let mut summary = 0;
        for i in 0..RULE_WORDS {
            let p = self.word(i);
            // SAFETY: see `word`. Read back after the write for `nonempty_bit`.
            unsafe {
                let w = core::ptr::read_volatile(p) & a.0[i] & b.0[i] & c.0[i];
                core::ptr::write_volatile(p, w);
                summary |= injector_common::nonempty_bit(w, core::ptr::read_volatile(p), i);
            }
        }
        // SAFETY: the summary `new` was given.
        unsafe { core::ptr::write_volatile(self.summary, summary) };
        summary != 0
    }

    /// Removes and returns the lowest candidate (`injector_common::pop_lowest`).
    #[inline(always)]
    pub fn pop_lowest(&self) -> Option<u32> {
        // SAFETY: see `word` and `finish`.
        unsafe {
            let (r, summary) = injector_common::pop_lowest(
                core::ptr::read_volatile(self.summary),
                |i| core::ptr::read_volatile(self.word(i)),
                |i, v| core::ptr::write_volatile(self.word(i), v),
            )?;
            core::ptr::write_volatile(self.summary, summary);
            Some(r)
        }
    }
}

/// Writes the rules of the active generation (`gen_word`: the GEN control word) that `flow`
/// matches to `out`; false when there are none (`out` is the packet's only after a true return).
/// Two passes over the words: the addresses' sets, then the protocol's mask and the ports'.
#[inline(always)]
pub fn candidates(flow: &Flow, gen_word: u64, out: &Candidates) -> bool {
    let g = (gen_word & 1) as u8;
    // Destination first: faults name their targets, so most packets stop after one lookup.
    let Some(dst) = addr_set(flow, true, gen_word) else {
        return false;
    };
    let Some(src) = addr_set(flow, false, gen_word) else {
        return false;
    };
    if !out.start(dst, src) {
        return false;
    }
    let class = match flow.proto {
        IPPROTO_TCP => mask::TCP,
        IPPROTO_UDP => mask::UDP,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => mask::ICMP,
        _ => mask::OTHER,
    };
    let Some(m) = mask_of(g, class) else {
        return false;
    };
    if !flow.has_ports {
        return mask_of(g, mask::NO_PORTS).is_some_and(|n| out.finish(m, n, n));
    }
    match (
        SPORT.get(port(g, flow.sport)),
        DPORT.get(port(g, flow.dport)),
    ) {
        (Some(s), Some(d)) => out.finish(m, s, d),
        _ => false,
    }
}

/// True when the destination address of the packet's identity (`early::identity`, in map
/// memory) is in no rule of the generation of `gen_word`: no fault can match the packet, whatever
/// its source and ports, and it needs no parsing (at the egress hooks the parser's four header
/// reads are helper calls, ~60 of the ~180 ns that judging such a packet took in a test run
/// here). False when it is, or the packet has no identity: the judge decides.
///
/// Its work is the global [`injector_dst_misses`], a frame of its own beside `early::step`'s
/// (the judging frame and `early::step`'s come to 512 bytes), which calls the global
/// [`injector_host`]: the address goes from map memory to map memory and the trie key is built
/// in map memory, so both frames stay small. The destination only: faults name their targets,
/// so a packet that matches none nearly always misses there.
///
/// A miss is remembered per CPU under the GEN word (`maps::Miss`; the word changes with every
/// change, `ctrl::GEN_SEQ_SHIFT`), and the next packet to that destination is answered from
/// there: one cache line read instead of the search's. In a TCP transfer the search's reads
/// mostly missed the CPU's caches (the data copies in between evict the host arrays): bench part
/// 1 had the sender's ingress hook at 280-407 ns a run there, against 183 ns in part 2's flood
/// to one destination.
#[inline(always)]
pub fn destination_misses(gen_word: u64) -> bool {
    injector_dst_misses(gen_word) != 0
}

/// [`destination_misses`], as a global function: the verifier checks it once, on its own,
/// rather than inside every hook at every call (inlined, with the remembered misses, 6.1
/// walked `tc_veth_egress` in 312k instructions, 142k before them). Scalar argument and
/// result only, which 5.10 also takes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn injector_dst_misses(gen_word: u64) -> u32 {
    u32::from(dst_misses(gen_word))
}

#[inline(always)]
fn dst_misses(gen_word: u64) -> bool {
    let Some((w, v6)) = early::identity() else {
        return false;
    };
    let Some(s) = HOST_SEARCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: words of this CPU's identity (see early::identity) into this CPU's search slot,
    // whose first field `addr` is 16 bytes at the value's (8-byte aligned) start. IPv4: the
    // destination is the first word's second four bytes (its high half); IPv6: words 2 and 3.
    let e = unsafe {
        let word = |i: usize| core::ptr::read_volatile(w.add(i));
        let (a, b) = if v6 {
            (word(2), word(3))
        } else {
            (word(0) >> 32, 0)
        };
        let p = core::ptr::addr_of_mut!((*s).addr) as *mut u64;
        core::ptr::write_volatile(p, a);
        core::ptr::write_volatile(p.add(1), b);
        let e = miss_entry(s, a, b);
        if core::ptr::read_volatile(e) == miss_tag(gen_word, v6)
            && core::ptr::read_volatile(e.add(1)) == a
            && core::ptr::read_volatile(e.add(2)) == b
        {
            return true;
        }
        e
    };
    if !searched_misses(s, v6, gen_word) {
        return false;
    }
    // SAFETY: the entry of this CPU's slot found above; the address read back from the slot
    // (not kept in registers across the search, which would spill them to this small frame).
    unsafe {
        let p = core::ptr::addr_of!((*s).addr) as *const u64;
        core::ptr::write_volatile(e, miss_tag(gen_word, v6));
        core::ptr::write_volatile(e.add(1), core::ptr::read_volatile(p));
        core::ptr::write_volatile(e.add(2), core::ptr::read_volatile(p.add(1)));
    }
    true
}

/// What a remembered miss is tagged with: the GEN word it was found under, inverted for IPv6 (an
/// IPv4 address and an IPv6 one can share the two address words; the tags keep them apart).
#[inline(always)]
fn miss_tag(gen_word: u64, v6: bool) -> u64 {
    if v6 { !gen_word } else { gen_word }
}

/// The entry of `s`'s misses that address `(a, b)` maps to (Fibonacci hashing), as three words.
#[inline(always)]
fn miss_entry(s: *mut HostSearch, a: u64, b: u64) -> *mut u64 {
    let h = (a ^ b.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58;
    let i = h as usize & (MISSES - 1);
    // SAFETY: `i` < MISSES: an entry of the slot's array.
    unsafe { core::ptr::addr_of_mut!((*s).misses[i]) as *mut u64 }
}

/// `destination_misses` without the remembered misses: the host search, then the trie.
#[inline(always)]
fn searched_misses(s: *mut HostSearch, v6: bool, gen_word: u64) -> bool {
    let g = (gen_word & 1) as u32;
    let i = injector_host(DST | if v6 { V6 } else { 0 }, g);
    if i != NO_SET {
        return HOST_SETS
            .get(g * hosts::SETS_PER_GEN + i)
            .is_none_or(|d| d.is_empty());
    }
    let trie_bit = if v6 {
        ctrl::GEN_TRIE_DST_V6
    } else {
        ctrl::GEN_TRIE_DST_V4
    };
    if gen_word & trie_bit == 0 {
        return true;
    }
    // SAFETY: fields of this CPU's slot.
    let (a, k4, k6) = unsafe {
        (
            core::ptr::addr_of!((*s).addr) as *const u8,
            core::ptr::addr_of_mut!((*s).key4),
            core::ptr::addr_of_mut!((*s).key6),
        )
    };
    let d = if v6 {
        trie_get(&DST_V6, k6, g, a)
    } else {
        trie_get(&DST_V4, k4, g, a)
    };
    d.is_none_or(|d| d.is_empty())
}

/// Looks up the full-length key `[generation, the address's N - 1 bytes]` (the address at `a`)
/// in `trie`, the key built at `key`, in map memory.
#[inline(always)]
fn trie_get<const N: usize>(
    trie: &'static LpmTrie<[u8; N], RuleSet>,
    key: *mut Key<[u8; N]>,
    g: u32,
    a: *const u8,
) -> Option<&'static RuleSet> {
    // SAFETY: `key` is a key of this CPU's slot and `a` its 16 address bytes; Key is packed,
    // hence the unaligned and byte-wise writes.
    unsafe {
        core::ptr::write_unaligned(core::ptr::addr_of_mut!((*key).prefix_len), 8 * N as u32);
        let d = core::ptr::addr_of_mut!((*key).data) as *mut u8;
        core::ptr::write_volatile(d, g as u8);
        for i in 0..N - 1 {
            core::ptr::write_volatile(d.add(1 + i), core::ptr::read_volatile(a.add(i)));
        }
        trie.get(&*key)
    }
}
