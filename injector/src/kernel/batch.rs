//! Batch writes to hash maps: `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (Linux 5.6,
//! "bpf: Add batch ops to all htab bpf map"), one syscall for many entries instead of one each.
//! Ours because aya 0.14 has no batch operations (its `sys` layer is private); the attribute is
//! the `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
//!
//! Used for the DNS names (`maps::DNS_NAMES`) and the daemon's records (`specs`). The host
//! addresses, which it served before, are sorted arrays written through a mapping now (`hosts`):
//! batched, 100k hash inserts still took ~80 ms of kernel work (~0.8-1 us per
//! `BPF_F_NO_PREALLOC` element, split over up to 4 threads).
//!
//! Where a batch fails (a kernel without the commands, a map type without them, an entry the
//! kernel refuses) the rest is written entry by entry, through the caller's `each`.
//!
//! A large batch is split into contiguous ranges written at once by up to 4 threads: the work
//! per element is CPU-bound and the buckets have their own locks. Measured on 6.18 (a C loop of
//! batch calls into one 256k-entry `NO_PREALLOC` hash, 100k 5-byte keys, the second core idle):
//! 72-83 ms to insert and 72-79 ms to delete on one thread, 40-49 ms and 41-50 ms on two.

use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries per syscall: bounded so a batch's arrays stay small and one call stays short.
const CHUNK: usize = 16 * 1024;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn call(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr.batch` of the size given; the pointers in it point
    // at `count` keys (and values) of the map's sizes, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs `cmd` over `keys` (and `values`, for an update) in chunks, on one thread.
fn batch_serial<K, V>(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: Option<&[V]>,
) -> Result<(), usize> {
    let mut done = 0;
    while done < keys.len() {
        let n = (keys.len() - done).min(CHUNK);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values.map_or(0, |v| v[done..].as_ptr() as u64),
            count: n as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        if call(cmd, &mut attr).is_err() {
            return Err(done);
        }
        done += n;
    }
    Ok(())
}

/// Threads for a batch of `n` entries: the kernel's work per element is the cost (a hash
/// insert, its allocation, the user copies), so large batches are split over up to
/// [`MAX_THREADS`] CPUs writing the same map (its buckets have their own locks).
fn threads(n: usize) -> usize {
    // Asked only when a split is possible: `available_parallelism` reads the cgroup's CPU quota
    // (~20 syscalls, three times per one-fault change before this: an eighth of its work).
    if n < 2 * PER_THREAD {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    (n / PER_THREAD).clamp(1, cpus.min(MAX_THREADS))
}

/// At most this many threads for one batch.
const MAX_THREADS: usize = 4;
/// Entries per thread at least (below it a thread costs more than it saves).
const PER_THREAD: usize = 8 * 1024;

/// Runs `cmd` over `keys` (and `values`, for an update), split into contiguous ranges run at
/// once on [`threads`] threads. `Err(n)`: the first `n` entries are done, the rest may not be
/// (no batch command here, or an entry failed; entries past `n` may be done too): the caller
/// goes on entry by entry from there, which either works or fails with the entry's own error.
/// Both commands may be repeated on the same entries without harm.
fn batch<K: Sync, V: Sync>(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: Option<&[V]>,
) -> Result<(), usize> {
    let t = threads(keys.len());
    if t == 1 {
        return batch_serial(cmd, fd, keys, values);
    }
    let per = keys.len().div_ceil(t);
    let results: Vec<Result<(), usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..t)
            .map(|i| {
                let lo = (i * per).min(keys.len());
                let hi = ((i + 1) * per).min(keys.len());
                let (k, v) = (&keys[lo..hi], values.map(|v| &v[lo..hi]));
                s.spawn(move || batch_serial(cmd, fd, k, v).map_err(|d| lo + d))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(0)))
            .collect()
    });
    // The ranges before the first that stopped are done.
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// Writes `keys[i] -> values[i]` into hash map `fd` (whose key and value sizes are those of `K`
/// and `V`): in batches, then through `each` (one entry's write) from where a batch stopped.
pub fn update<K: aya::Pod + Sync, V: aya::Pod + Sync>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    mut each: impl FnMut(&K, &V) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let from = batch(BPF_MAP_UPDATE_BATCH, fd, keys, Some(values))
        .err()
        .unwrap_or(keys.len());
    for (k, v) in keys[from..].iter().zip(&values[from..]) {
        each(k, v)?;
    }
    Ok(())
}

/// Deletes `keys` from hash map `fd`: in batches (a missing key stops one with ENOENT), then
/// through `each` (one entry's removal, absent skipped) from where a batch stopped.
pub fn delete<K: aya::Pod + Sync>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    mut each: impl FnMut(&K) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let from = batch::<K, u8>(BPF_MAP_DELETE_BATCH, fd, keys, None)
        .err()
        .unwrap_or(keys.len());
    keys[from..].iter().try_for_each(&mut each)
}
