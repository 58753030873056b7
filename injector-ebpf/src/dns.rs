//! DNS faults (`Action::Dns`): which DNS faults a packet's question name belongs to, found
//! once per packet before judging, and the rewrite of an answer into an error.
//!
//! The name is read once into a per-CPU buffer, walked once (bounded: at most 256 bytes, each
//! label's start kept), and the hash of the whole name and of every label suffix is looked up in
//! `DNS_NAMES`, which the compiler fills (`injector_common::dns`). Everything the walk keeps
//! (where the next label starts, the label starts) lives in the map, not in registers, so the
//! verifier neither tracks it nor splits its states on it (see `verdict::STASH`): it walks the
//! name loop once per byte.
//!
//! Read before parsing, from its own small parse: a DNS answer as the CNI carries it (Ethernet,
//! IPv4 or IPv6 without extension headers, UDP, not a later fragment). Done there, the verifier
//! walks it once rather than once per path of the main parser. Only while some DNS fault is
//! installed (`ctrl::GEN_DNS`), and the name only for a packet that reads as a standard query's
//! answer to one question.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, TC_ACT_OK},
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use injector_common::{
    MAX_DNS_KEYS,
    dns::{self, MAX_LABELS, NAME_BUF, Walk},
};
use network_types::{eth::EthHdr, ip::Ipv6Hdr, udp::UdpHdr};

use crate::{
    parse::{Bytes as _, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP},
    verdict::set_dns_faults,
};

#[map(name = "DNS_NAMES")]
pub static DNS_NAMES: HashMap<dns::Key, u64> = HashMap::pinned(MAX_DNS_KEYS, BPF_F_NO_PREALLOC);

#[repr(C)]
#[derive(Clone, Copy)]
struct Start {
    /// The walk's sum and inverse power where the label starts.
    sum: u64,
    inv: u64,
    /// The label's offset in the name.
    pos: u64,
}

/// The walk's memory and its result, per CPU.
#[repr(C)]
pub struct Scratch {
    name: [u8; NAME_BUF],
    /// The last `MAX_LABELS` label starts (a ring, by label number).
    starts: [Start; MAX_LABELS as usize],
    labels: u64,
    /// Offset in the name of the next label's length byte.
    next: u64,
    /// Offset in the name of its end (the root's zero); 0 until found.
    end: u64,
    /// Where the answer's UDP header starts.
    udp_off: u64,
    /// The walk's sum at the name's end, the generation, the DNS faults found so far: kept here
    /// across the lookups (see [`classify`]).
    sum: u64,
    generation: u64,
    faults: u64,
    /// A key of `DNS_NAMES` being looked up (a map key may live in map memory; the stack has no
    /// room, see [`classify`]).
    key: [u64; 2],
}

#[map]
static DNS_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// `BPF_F_MARK_MANGLED_0` (a UDP checksum of 0, IPv4's "none", is left as it is; a computed 0
/// is written as 0xffff), with no field size: `to` is a checksum difference.
const CSUM_UDP_DIFF: u64 = 32;

/// Where the UDP header of an IPv4 or IPv6 UDP packet starts (not a later fragment). Reads only
/// the bytes it needs, a few at a time (see [`classify`] on the stack).
#[inline(always)]
fn udp_offset(ctx: &TcContext) -> Option<usize> {
    const L3: usize = EthHdr::LEN;
    match ctx.load::<u16>(12).ok()? {
        ETH_P_IP => {
            let ver_ihl = ctx.load::<u8>(L3).ok()?;
            let frag = u16::from_be(ctx.load::<u16>(L3 + 6).ok()?);
            (ver_ihl >> 4 == 4 && ctx.load::<u8>(L3 + 9).ok()? == IPPROTO_UDP && frag & 0x1fff == 0)
                .then(|| L3 + usize::from(ver_ihl & 0xf) * 4)
        }
        ETH_P_IPV6 => (ctx.load::<u8>(L3).ok()? >> 4 == 6
            && ctx.load::<u8>(L3 + 6).ok()? == IPPROTO_UDP)
            .then_some(L3 + Ipv6Hdr::LEN),
        _ => None,
    }
}

/// Writes `v` into this CPU's scratch (volatile: it stays in the map, out of the verifier's
/// state; see the module's doc).
macro_rules! put {
    ($s:expr, $($field:tt)+) => {
        // SAFETY: this CPU's slot; nothing else runs the programs on this CPU meanwhile.
        |v| unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*$s).$($field)+), v) }
    };
}

/// Reads a field of this CPU's scratch (volatile, as [`put`]).
macro_rules! get {
    ($s:expr, $($field:tt)+) => {
        // SAFETY: as in `put`.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*$s).$($field)+)) }
    };
}

/// Finds the DNS faults of generation `g` whose names the packet's question matches
/// (`Stash::dns_faults`; 0 for a packet that is not a DNS answer), and where its UDP header is,
/// for [`answer_with`].
///
/// A function of its own (a BPF-to-BPF call) with a frame of at most 32 bytes: the judging
/// frame leaves no more of BPF's 512 (6.1 counts each frame at least 32). Hence the small
/// reads, the fields written one by one and the map key built in the scratch.
#[inline(never)]
pub fn classify(ctx: &TcContext, g: u8) {
    set_dns_faults(0);
    let Some(s) = DNS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let Some(udp) = udp_offset(ctx) else {
        return;
    };
    let at = udp + UdpHdr::LEN;
    // The header: QR set (an answer), opcode 0 (a standard query), one question.
    let (Ok(flags), Ok(questions)) = (ctx.load::<u16>(at + 2), ctx.load::<u16>(at + 4)) else {
        return;
    };
    if u16::from_be(flags) & 0xf800 != 0x8000 || u16::from_be(questions) != 1 {
        return;
    }
    // SAFETY: this CPU's slot (see `put`).
    let Some(n) = ctx.read_into(at + 12, unsafe { &mut (*s).name }) else {
        return;
    };
    put!(s, next)(0);
    put!(s, labels)(0);
    // Where the name ends, through the map too: kept in a register, each end offset would make
    // the code after the loop a state of its own (256 walks of the lookups instead of one).
    put!(s, end)(0);
    let mut w = Walk::default();
    for i in 0..NAME_BUF {
        if i >= n {
            return; // the name runs past the packet
        }
        let b = get!(s, name[i]);
        if i as u64 == get!(s, next) {
            if b == 0 {
                put!(s, end)(i as u64);
                break;
            }
            if b > 63 {
                return; // a compression pointer or an extended label: not a question's name
            }
            let k = (get!(s, labels) & u64::from(MAX_LABELS - 1)) as usize;
            put!(s, starts[k].sum)(w.sum);
            put!(s, starts[k].inv)(w.inv);
            put!(s, starts[k].pos)(i as u64);
            put!(s, labels)(get!(s, labels) + 1);
            put!(s, next)(i as u64 + 1 + u64::from(b));
        }
        w.push(b);
    }
    // Across the lookups (helper calls) only `s` and `j` stay in registers; the rest is read
    // from the scratch each time, which keeps the frame small.
    put!(s, udp_off)(udp as u64);
    put!(s, sum)(w.sum);
    put!(s, generation)(u64::from(g));
    put!(s, faults)(0);
    for j in 0..MAX_LABELS as usize {
        if j as u64 >= get!(s, labels) {
            break;
        }
        let pos = get!(s, starts[j].pos);
        let k = dns::key(
            get!(s, generation) as u8,
            pos != 0,
            (get!(s, end) - pos) as u8,
            get!(s, sum)
                .wrapping_sub(get!(s, starts[j].sum))
                .wrapping_mul(get!(s, starts[j].inv)),
        );
        put!(s, key[0])(u64::from_le_bytes([
            k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7],
        ]));
        put!(s, key[1])(u64::from_le_bytes([
            k[8], k[9], k[10], k[11], k[12], k[13], k[14], k[15],
        ]));
        // SAFETY: the key's 16 bytes in the scratch (two u64 in little-endian order are the
        // key's bytes); the value is copied out at once.
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "a copy of the key would go on the stack, which has no room (see above)"
        )]
        if let Some(v) =
            unsafe { DNS_NAMES.get(&*(core::ptr::addr_of!((*s).key) as *const dns::Key)) }
        {
            put!(s, faults)(get!(s, faults) | *v);
        }
    }
    set_dns_faults(get!(s, faults));
}

/// Rewrites the answer into the error of a DNS fault's `flags`: its RCODE (`dns::RCODE_SHIFT`),
/// the answer, authority and additional counts 0 (the records stay behind the question,
/// unread), the UDP checksum updated by the difference. The packet is delivered either way (a
/// rewrite that fails leaves it as it was: fail open). Kept short and without branches on
/// purpose: the verifier walks it once for every way out of the judging loop.
///
/// A function of its own (a BPF-to-BPF call), on purpose: every state the verifier carries out
/// of the judging loop reaches the call with nothing of the caller's still needed after it, so
/// it walks the rewrite once instead of once per state (inlined, it cost 130k instructions on
/// 6.18). Its stack is what the judging frame leaves of BPF's 512 bytes.
#[inline(never)]
pub fn answer_with(ctx: &TcContext, rcode: u32) -> i32 {
    let Some(s) = DNS_SCRATCH.get_ptr(0) else {
        return TC_ACT_OK;
    };
    // SAFETY: this CPU's slot, read only.
    let udp = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*s).udp_off)) } as usize;
    // In place, through direct packet access: no buffer on the stack (see above). The header
    // lies in the linear part of any answer the stack builds; one that does not passes as it is.
    if udp > 128 {
        return TC_ACT_OK;
    }
    let p = ctx.data() + udp + UdpHdr::LEN + 2;
    if p + 10 > ctx.data_end() {
        return TC_ACT_OK;
    }
    let w = p as *mut u16;
    // SAFETY: 10 bytes at `p`, checked in the packet just above; unaligned accesses.
    let d = unsafe {
        let old = core::ptr::read_unaligned(w);
        let new = (u16::from_be(old) & !0xf | (rcode & 0xf) as u16).to_be();
        // RFC 1624: HC' = ~(~HC + ~m + m'): the sum of the old words' complements and the new
        // words is the difference the helper adds. In the words' order in memory, as the
        // kernel sums them (a ones'-complement sum commutes with the byte swap).
        let mut d = u64::from(!old) + u64::from(new);
        for i in 2..5 {
            d += u64::from(!core::ptr::read_unaligned(w.add(i)));
            core::ptr::write_unaligned(w.add(i), 0);
        }
        core::ptr::write_unaligned(w, new);
        d
    };
    let _ = ctx.l4_csum_replace(udp + 6, 0, d, CSUM_UDP_DIFF);
    TC_ACT_OK
}
