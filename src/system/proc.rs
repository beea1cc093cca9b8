//! Kernel counters read from /proc, and what the process asks of the kernel for itself.

/// (waiting, queue_dropped, user_dropped) summed over queues `first`.. (`n` of them)
/// from /proc/net/netfilter/nfnetlink_queue.
pub fn queue_counters(first: u16, n: u16) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
    (0..n)
        .filter_map(|i| parse_queue_counters(&text, first.checked_add(i)?))
        .reduce(|a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

pub fn parse_queue_counters(text: &str, queue: u16) -> Option<(u64, u64, u64)> {
    text.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (f.len() >= 7 && f[0] == u64::from(queue)).then(|| (f[2], f[5], f[6]))
    })
}

/// Puts the calling thread behind the others (nice 10; the thread only, as Linux keeps a
/// nice value per thread): for background work such as streaming a million blocks to
/// `portsentry list`, which would otherwise take a CPU from the block writer on a small
/// host. Best effort: if the kernel says no, the thread runs as before.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)] // gettid and setpriority: no safe wrapper in std
    // SAFETY: both take and return plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Hands heap memory freed since the last call back to the kernel: glibc keeps it in
/// its arenas otherwise, so a flood's transient memory (a million-block restore, save or
/// list, events in flight) would stay resident after the flood.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)] // glibc's malloc_trim: no safe wrapper
    // SAFETY: malloc_trim takes a plain size and only touches the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// The calling thread's nice value, from /proc (field 19 of its stat line).
    fn nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_lowered_thread_runs_at_nice_10_and_the_others_do_not() {
        let before = nice();
        let lowered = std::thread::spawn(|| {
            super::lower_this_thread();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, 10.max(before));
        assert_eq!(nice(), before);
    }

    #[test]
    fn queue_counters_parse() {
        let text = "    0  12345     3 2   256     7     9       42  1\n    1  0 0 2 256 0 0 0 1\n";
        assert_eq!(super::parse_queue_counters(text, 0), Some((3, 7, 9)));
        assert_eq!(super::parse_queue_counters(text, 5), None);
    }
}
