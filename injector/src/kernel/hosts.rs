//! The host maps' userspace side: `BPF_F_MMAPABLE` arrays mapped once into the daemon, so a
//! generation of 100k hosts is a `memcpy` and one header write, not 100k kernel inserts (see
//! `injector_common::hosts` for the layout and the search). The programs never read the
//! inactive generation, which is the only one written here; the flip (a map update, a syscall
//! after these stores) makes it live.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use anyhow::{Result, anyhow, ensure};
use aya::maps::{Map, MapData};
use injector_common::hosts::{self, Entry};

/// `BPF_F_MMAPABLE` (include/uapi/linux/bpf.h).
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// An array map mapped read-write into this process, seen as one flat array of `T`.
pub struct Mapped<T> {
    ptr: NonNull<T>,
    entries: u32,
    bytes: usize,
    /// Holds the map's fd for as long as the mapping is used.
    _map: MapData,
}

// SAFETY: the mapping is plain memory shared with the kernel; `&mut self` orders this process's
// writes, and the programs only read what a flip published.
unsafe impl<T: Send> Send for Mapped<T> {}
// SAFETY: as above; `&self` methods only read.
unsafe impl<T: Sync> Sync for Mapped<T> {}

impl<T: aya::Pod> Mapped<T> {
    pub fn new(m: Map, name: &str) -> Result<Self> {
        let Map::Array(data) = m else {
            return Err(anyhow!("map {name} must be an array"));
        };
        let info = data.info()?;
        // A value is one `T` or an array of them (a host map's generation); values lie at
        // 8-byte multiples in the mapping, so T's size must be one for the view to be flat.
        let value = info.value_size() as usize;
        ensure!(
            value.is_multiple_of(size_of::<T>()) && size_of::<T>().is_multiple_of(8),
            "map {name}: value of {value} bytes, not a whole number of {}-byte entries",
            size_of::<T>()
        );
        ensure!(
            info.map_flags() & BPF_F_MMAPABLE != 0,
            "map {name} was not created mappable (BPF_F_MMAPABLE)"
        );
        let entries = info.max_entries() * (value / size_of::<T>()) as u32;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (entries as usize * size_of::<T>()).next_multiple_of(page);
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of the map's value area (offset 0, its whole rounded size, as
        // the kernel's array_map_mmap allows); unmapped in drop, before the fd is closed.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(anyhow!(
                "mapping map {name} ({bytes} bytes): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Mapped {
            ptr: NonNull::new(p.cast()).ok_or_else(|| anyhow!("mmap returned null"))?,
            entries,
            bytes,
            _map: data,
        })
    }

    /// Writes `vals` at entries `at..`.
    pub fn write(&mut self, at: u32, vals: &[T]) {
        assert!(
            at as usize + vals.len() <= self.entries as usize,
            "a write past the map's end"
        );
        // SAFETY: in bounds (asserted); T is plain data of the map's value size.
        unsafe {
            std::ptr::copy_nonoverlapping(
                vals.as_ptr(),
                self.ptr.as_ptr().add(at as usize),
                vals.len(),
            )
        };
    }

    /// Entry `at`.
    pub fn get(&self, at: u32) -> T {
        assert!(at < self.entries, "a read past the map's end");
        // SAFETY: in bounds; volatile, as the kernel shares the memory.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(at as usize)) }
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that size, no longer referenced.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

/// One host map (a direction and family): both generations.
pub struct HostTable<E>(Mapped<E>);

impl<E: Entry + aya::Pod> HostTable<E> {
    pub fn new(m: Map, name: &str) -> Result<Self> {
        let t = HostTable(Mapped::new(m, name)?);
        ensure!(
            t.0.entries == 2 * hosts::SEGMENT,
            "map {name}: {} entries, expected {}",
            t.0.entries,
            2 * hosts::SEGMENT
        );
        Ok(t)
    }

    /// Makes generation `g` hold `entries` (sorted, at most `hosts::MAX_HOSTS`): the entries
    /// first, then the header that counts them.
    pub fn fill(&mut self, g: u8, entries: &[E]) {
        assert!(entries.len() <= hosts::MAX_HOSTS as usize);
        let base = u32::from(g) * hosts::SEGMENT;
        self.0.write(base + 1, entries);
        self.0.write(base, &[E::header(entries.len() as u32)]);
    }

    /// Empties generation `g` (its header says none).
    pub fn clear(&mut self, g: u8) {
        self.fill(g, &[]);
    }

    /// The hosts of generation `g`.
    pub fn len(&self, g: u8) -> u32 {
        self.0.get(u32::from(g) * hosts::SEGMENT).set()
    }
}
