//! The flow hash: which connections a fault with a flow percentage hits. The same code runs in the
//! kernel and in userspace, so tests and tools can predict it. Both directions of a connection hash
//! the same (the endpoints are put in a canonical order), and the seed makes runs repeatable.

/// One endpoint: address (IPv4 in the first 4 bytes, rest zero) and port (0 when none).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: [u8; 16],
    pub port: u16,
}

#[inline(always)]
fn mix(mut h: u64, v: u64) -> u64 {
    // splitmix64-style mixing of each word into the state.
    h ^= v;
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h
}

#[inline(always)]
fn words(a: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// Symmetric, seeded hash of (endpoint, endpoint, protocol), reduced to parts per million.
#[inline(always)]
pub fn ppm(a: &Endpoint, b: &Endpoint, proto: u8, seed: u32) -> u32 {
    ppm_of((&a.addr, a.port), (&b.addr, b.port), proto, seed)
}

/// [`ppm`] of endpoints given as (address, port), so the programs hash a packet's fields where
/// they are, without copying them into endpoints on their stack (which has no room for them).
#[inline(always)]
pub fn ppm_of(a: (&[u8; 16], u16), b: (&[u8; 16], u16), proto: u8, seed: u32) -> u32 {
    ppm_canonical(&canonical(a, b, proto), seed)
}

/// A connection's endpoints in their canonical order, as the hash takes them: the lower
/// endpoint's address words, the higher's, then both ports and the protocol in one word. The
/// part of [`ppm_of`] that does not depend on the seed: the kernel orders a packet's endpoints
/// once, not once per fault.
#[inline(always)]
pub fn canonical(a: (&[u8; 16], u16), b: (&[u8; 16], u16), proto: u8) -> [u64; 5] {
    let (a0, a1) = words(a.0);
    let (b0, b1) = words(b.0);
    let ((l0, l1, lport), (h0, h1, hport)) = if (a0, a1, a.1) < (b0, b1, b.1) {
        ((a0, a1, a.1), (b0, b1, b.1))
    } else {
        ((b0, b1, b.1), (a0, a1, a.1))
    };
    [
        l0,
        l1,
        h0,
        h1,
        (u64::from(lport) << 32) | (u64::from(hport) << 16) | u64::from(proto),
    ]
}

/// [`ppm_of`] of endpoints in [`canonical`] order.
#[inline(always)]
pub fn ppm_canonical(c: &[u64; 5], seed: u32) -> u32 {
    let mut h = mix(0x5851_F42D_4C95_7F2D ^ u64::from(seed), c[0]);
    h = mix(h, c[1]);
    h = mix(h, c[2]);
    h = mix(h, c[3]);
    h = mix(h, c[4]);
    h ^= h >> 32;
    (((h & 0xFFFF_FFFF) * 1_000_000) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8, port: u16) -> Endpoint {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 42, 1, last]);
        Endpoint { addr, port }
    }

    #[test]
    fn both_directions_hash_the_same() {
        for i in 0..200u16 {
            let (a, b) = (ep(2, 30000 + i), ep(3, 5432));
            assert_eq!(ppm(&a, &b, 6, 7), ppm(&b, &a, 6, 7));
        }
    }

    #[test]
    fn seed_changes_the_choice_and_spread_is_uniform() {
        let n = 20_000u32;
        let mut hit30 = 0;
        let mut differ = 0;
        for i in 0..n {
            let (a, b) = (
                ep(2, (i % 60000) as u16 + 1024),
                ep((i / 60000) as u8 + 3, 80),
            );
            let p = ppm(&a, &b, 17, 1);
            assert!(p < 1_000_000);
            hit30 += u32::from(p < 300_000);
            differ += u32::from((p < 300_000) != (ppm(&a, &b, 17, 2) < 300_000));
        }
        // 30% of 20k flows: mean 6000, sd ~65; 5 sd either way.
        assert!((5675..=6325).contains(&hit30), "{hit30}");
        // Another seed picks another set: P(differ) = 2 * 0.3 * 0.7 = 0.42.
        assert!((7800..=9000).contains(&differ), "{differ}");
    }
}
