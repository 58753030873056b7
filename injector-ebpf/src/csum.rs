//! The Internet checksum (RFC 1071) for the replies reject builds: sums of big-endian 16-bit
//! words, carried in 64 bits and folded at the end, and the IPv4/IPv6 pseudo-headers.

/// A ones'-complement sum, not yet folded.
#[derive(Clone, Copy)]
pub struct Sum(pub u64);

impl Sum {
    #[inline(always)]
    pub fn add(self, o: Sum) -> Sum {
        Sum(self.0 + o.0)
    }
}

/// The sum of `v`'s bytes as big-endian 16-bit words (a last odd byte padded with zero).
#[inline(always)]
pub fn of<T>(v: &T) -> Sum {
    // SAFETY: `v` is a plain header or byte array of `size_of::<T>()` initialised bytes (the
    // network-types headers are byte arrays without padding).
    let b = unsafe {
        core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>())
    };
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < b.len() {
        s += u64::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    if i < b.len() {
        s += u64::from(b[i]) << 8;
    }
    Sum(s)
}

/// Folded to 16 bits (not inverted: a checksum field holds `!fold(..)`).
#[inline(always)]
pub fn fold(s: Sum) -> u16 {
    let mut x = (s.0 & 0xffff_ffff) + (s.0 >> 32);
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    x as u16
}

/// The IPv4 pseudo-header of an L4 segment of `len` bytes.
#[inline(always)]
pub fn pseudo4(src: &[u8; 4], dst: &[u8; 4], len: u16, proto: u8) -> Sum {
    of(src)
        .add(of(dst))
        .add(Sum(u64::from(proto)))
        .add(Sum(u64::from(len)))
}

/// The IPv6 pseudo-header (RFC 8200 8.1) of an upper-layer packet of `len` bytes.
#[inline(always)]
pub fn pseudo6(src: &[u8; 16], dst: &[u8; 16], len: u32, next: u8) -> Sum {
    of(src)
        .add(of(dst))
        .add(Sum(u64::from(len >> 16) + u64::from(len & 0xffff)))
        .add(Sum(u64::from(next)))
}
