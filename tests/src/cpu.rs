//! Test runs that read per-CPU program state (a loss chain, the early-judging record) must all
//! run on one CPU: BPF_PROG_TEST_RUN runs the program on the calling thread's CPU.

/// Runs `f` on a thread of its own, bound to CPU 0.
pub fn on_cpu0<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                0
            );
        }
        f()
    })
    .join()
    .expect("test thread panicked")
}
