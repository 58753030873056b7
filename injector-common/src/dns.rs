//! DNS faults: what the compiler writes and the kernel computes to match a reply's question name
//! against a fault's names without strings in the kernel.
//!
//! A name is hashed in its wire form (RFC 1035 3.1: each label as a length byte and its bytes,
//! without the root's zero), lowercased (names compare without case, RFC 4343; a length byte is
//! at most 63, never an ASCII capital, so lowercasing every byte is safe). The hash is a
//! polynomial `sum(c_i * B^i)` mod 2^64, so the kernel gets the hash of every suffix that starts
//! at a label from one pass over the name: with `G(p) = sum(c_i * B^i, i < p)`, the suffix from
//! `p` hashes to `(G(end) - G(p)) * B^-p` (B is odd, so invertible mod 2^64). The key also
//! carries the suffix's length and whether it is the whole name (exact) or starts at a later
//! label (a suffix pattern such as `.svc.cluster.local`). Not a cryptographic hash: a crafted
//! name could collide with a fault's name and be answered by the fault; the names are the
//! cluster's own.

/// The hash's base: the 64-bit FNV prime (odd).
pub const BASE: u64 = 0x0000_0100_0000_01b3;

/// `BASE`'s inverse mod 2^64 (Newton's iteration: each step doubles the correct low bits; an odd
/// `b` is its own inverse mod 8).
pub const BASE_INV: u64 = {
    let mut x = BASE;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(BASE.wrapping_mul(x)));
        i += 1;
    }
    x
};

const _: () = assert!(BASE.wrapping_mul(BASE_INV) == 1);

/// Most names one DNS fault answers for.
pub const MAX_NAMES_PER_FAULT: usize = 16;
/// Most label starts the kernel keeps of a name (the last ones: suffix patterns are at the end);
/// a longer name is matched by its suffixes of this many labels only, never exactly.
pub const MAX_LABELS: u32 = 16;
/// Bytes of a question name the kernel reads (a wire name is at most 255 bytes).
pub const NAME_BUF: usize = 256;

/// Lowercase of a wire byte.
#[inline(always)]
pub const fn fold_case(b: u8) -> u8 {
    if b >= b'A' && b <= b'Z' { b + 32 } else { b }
}

/// The hash of a wire name (or suffix), as the compiler writes it.
pub fn hash(wire: &[u8]) -> u64 {
    let mut h = 0u64;
    let mut p = 1u64;
    for &b in wire {
        h = h.wrapping_add(u64::from(fold_case(b)).wrapping_mul(p));
        p = p.wrapping_mul(BASE);
    }
    h
}

/// A key of the DNS_NAMES map: `[gen, suffix, len, 0, 0, 0, 0, 0, hash (8 bytes, LE)]`; the
/// value is the set of fault slots (bit per slot) that answer for the name.
pub type Key = [u8; 16];

#[inline(always)]
pub fn key(generation: u8, suffix: bool, len: u8, hash: u64) -> Key {
    let h = hash.to_le_bytes();
    [
        generation,
        suffix as u8,
        len,
        0,
        0,
        0,
        0,
        0,
        h[0],
        h[1],
        h[2],
        h[3],
        h[4],
        h[5],
        h[6],
        h[7],
    ]
}

/// What a DNS fault does to a matching answer, in `FaultCfg::flags` (bits 13-15).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// RCODE 3: the name does not exist.
    NxDomain = 1,
    /// RCODE 2: the server failed.
    ServFail = 2,
    /// RCODE 5: the server refuses.
    Refused = 3,
    /// The answer is dropped: the client times out and retries.
    Drop = 4,
    /// The answer is held `FaultCfg::delay_ns` (+- jitter).
    Delay = 5,
}

pub const FLAG_SHIFT: u32 = 13;
pub const FLAG_MASK: u32 = 0x7 << FLAG_SHIFT;
/// `FaultCfg::flags` bits 16-19: the RCODE an error answer gets (the kernel rewrites without
/// a table).
pub const RCODE_SHIFT: u32 = 16;

impl Answer {
    pub const ALL: [Answer; 5] = [
        Answer::NxDomain,
        Answer::ServFail,
        Answer::Refused,
        Answer::Drop,
        Answer::Delay,
    ];

    #[inline(always)]
    pub const fn from_flags(flags: u32) -> Option<Answer> {
        match (flags & FLAG_MASK) >> FLAG_SHIFT {
            1 => Some(Answer::NxDomain),
            2 => Some(Answer::ServFail),
            3 => Some(Answer::Refused),
            4 => Some(Answer::Drop),
            5 => Some(Answer::Delay),
            _ => None,
        }
    }

    /// The fault's flags: the answer and its RCODE.
    pub const fn flags(self) -> u32 {
        ((self as u32) << FLAG_SHIFT) | ((self.rcode() as u32) << RCODE_SHIFT)
    }

    /// The RCODE the answer is rewritten to; 0 for drop and delay (not rewritten).
    #[inline(always)]
    pub const fn rcode(self) -> u8 {
        match self {
            Answer::NxDomain => 3,
            Answer::ServFail => 2,
            Answer::Refused => 5,
            Answer::Drop | Answer::Delay => 0,
        }
    }

    /// The `dns` word.
    pub const fn name(self) -> &'static str {
        match self {
            Answer::NxDomain => "nxdomain",
            Answer::ServFail => "servfail",
            Answer::Refused => "refused",
            Answer::Drop => "drop",
            Answer::Delay => "delay",
        }
    }
}

/// One pass over a wire name as the kernel makes it: the running sum, the current power of
/// `BASE` and of its inverse. Shared by the program and the tests that check it against
/// [`hash`].
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    pub sum: u64,
    pub pow: u64,
    pub inv: u64,
}

impl Default for Walk {
    fn default() -> Self {
        Walk {
            sum: 0,
            pow: 1,
            inv: 1,
        }
    }
}

impl Walk {
    #[inline(always)]
    pub fn push(&mut self, b: u8) {
        self.sum = self
            .sum
            .wrapping_add(u64::from(fold_case(b)).wrapping_mul(self.pow));
        self.pow = self.pow.wrapping_mul(BASE);
        self.inv = self.inv.wrapping_mul(BASE_INV);
    }

    /// The hash of the suffix that started where the walk stood at `at` (its `sum` and `inv`
    /// then), up to where it stands now.
    #[inline(always)]
    pub fn suffix(&self, at_sum: u64, at_inv: u64) -> u64 {
        self.sum.wrapping_sub(at_sum).wrapping_mul(at_inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(name: &str) -> ([u8; 255], usize, [usize; 8], usize) {
        let mut w = [0u8; 255];
        let mut n = 0;
        let mut starts = [0; 8];
        let mut k = 0;
        for label in name.split('.') {
            starts[k] = n;
            k += 1;
            w[n] = label.len() as u8;
            w[n + 1..n + 1 + label.len()].copy_from_slice(label.as_bytes());
            n += 1 + label.len();
        }
        (w, n, starts, k)
    }

    #[test]
    fn one_pass_gives_every_label_suffix_the_compiler_hashes() {
        let (w, n, starts, k) = wire("Payments.Default.svc.cluster.local");
        let mut walk = Walk::default();
        let mut at = [(0u64, 1u64); 8];
        let mut label = 0;
        for (i, &b) in w[..n].iter().enumerate() {
            if label < k && starts[label] == i {
                at[label] = (walk.sum, walk.inv);
                label += 1;
            }
            walk.push(b);
        }
        for j in 0..k {
            let direct = hash(&w[starts[j]..n]);
            assert_eq!(walk.suffix(at[j].0, at[j].1), direct, "suffix {j}");
        }
        let (lw, ln, _, _) = wire("payments.default.svc.cluster.local");
        assert_eq!(hash(&w[..n]), hash(&lw[..ln]), "case does not matter");
        let (aw, an, _, _) = wire("ab.c");
        let (bw, bn, _, _) = wire("a.bc");
        assert_ne!(
            hash(&aw[..an]),
            hash(&bw[..bn]),
            "labels are part of the name"
        );
    }

    #[test]
    fn answers_round_trip_through_flags() {
        for a in Answer::ALL {
            assert_eq!(Answer::from_flags(a.flags() | 1), Some(a));
        }
        assert_eq!(Answer::from_flags(0), None);
        assert_eq!(key(1, true, 7, 0x0102)[..4], [1, 1, 7, 0]);
    }
}
