//! Least privilege: once started, the daemon keeps CAP_NET_ADMIN (netlink to nftables and
//! NFQUEUE) and nothing else, and so does everything it runs (the include loader, the
//! actions): the bounding set is cut too.
// capget/capset/prctl have no safe wrapper in std or libc: unsafe for those calls only.
#![allow(unsafe_code)]

const CAP_NET_ADMIN: u32 = 12;
const CAP_SETPCAP: u32 = 8;
/// _LINUX_CAPABILITY_VERSION_3
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability but CAP_NET_ADMIN from the bounding, permitted, effective and
/// inheritable sets. Without CAP_SETPCAP (already reduced, e.g. by systemd) the bounding
/// set is left as it is.
pub fn keep_only_net_admin() -> std::io::Result<()> {
    let keep = 1u32 << CAP_NET_ADMIN;
    // Already reduced (the unit's CapabilityBoundingSet and AmbientCapabilities): nothing to
    // do, and the unit's system call filter would refuse capset anyway.
    let now = current()?;
    let held = |d: &CapData| d.effective | d.permitted | d.inheritable;
    if held(&now[0]) & !keep == 0 && held(&now[1]) == 0 {
        return Ok(());
    }
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    if now[0].effective & (1 << CAP_SETPCAP) != 0 {
        for cap in (0..=last).filter(|c| *c != CAP_NET_ADMIN) {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: a capability this kernel does not know.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep,
            permitted: keep,
            inheritable: 0,
        },
        CapData::default(),
    ];
    // SAFETY: capset with a v3 header and two data words, as the kernel expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The process's capability sets (two 32-bit words each).
fn current() -> std::io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two data words for a v3 header.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(data)
}
