//! Setting a ring up: the flags tried and dropped, the refusals that send
//! `Backend::Auto` to epoll (and their reasons), the opcode probe, and the
//! features inferred from it. See uring-sys-notes/probe.md.

use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, Probe, opcode};
use slab::Slab;

use super::Uring;
use crate::driver::{DriverConfig, Features};

/// Why io_uring could not be set up.
pub(crate) enum SetupError {
    /// A set-up refusal: `Auto` falls back to epoll, with this reason.
    Refused(String),
    /// A resource error: surfaces to the user.
    Io(io::Error),
}

/// One io_uring opcode the crate may build: its code, its kernel name
/// (after `IORING_OP_`), and the `io_uring::opcode` type that builds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opcode {
    pub(crate) code: u8,
    pub(crate) name: &'static str,
    /// Read by the test that keeps the lists and the SQEs in step.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) builder: &'static str,
}

const fn op(code: u8, name: &'static str, builder: &'static str) -> Opcode {
    Opcode {
        code,
        name,
        builder,
    }
}

/// Exactly the opcodes the ops build unconditionally (`opcode::X::new` in
/// src/driver/op/ and the ring's own wake-up read and cancel in
/// src/driver/uring/mod.rs): without one of them `Auto` uses epoll. A unit
/// test below reads those sources and fails if this list and the SQEs
/// drift apart. See uring-sys-notes/probe.md.
pub(crate) const REQUIRED: &[Opcode] = &[
    op(opcode::Read::CODE, "READ", "Read"),
    op(opcode::Write::CODE, "WRITE", "Write"),
    op(opcode::Readv::CODE, "READV", "Readv"),
    op(opcode::Writev::CODE, "WRITEV", "Writev"),
    op(opcode::Accept::CODE, "ACCEPT", "Accept"),
    op(opcode::Connect::CODE, "CONNECT", "Connect"),
    op(opcode::Send::CODE, "SEND", "Send"),
    op(opcode::Recv::CODE, "RECV", "Recv"),
    op(opcode::SendMsg::CODE, "SENDMSG", "SendMsg"),
    op(opcode::RecvMsg::CODE, "RECVMSG", "RecvMsg"),
    op(opcode::PollAdd::CODE, "POLL_ADD", "PollAdd"),
    op(opcode::AsyncCancel::CODE, "ASYNC_CANCEL", "AsyncCancel"),
    op(opcode::OpenAt::CODE, "OPENAT", "OpenAt"),
    op(opcode::OpenAt2::CODE, "OPENAT2", "OpenAt2"),
    op(opcode::Statx::CODE, "STATX", "Statx"),
    op(opcode::Fsync::CODE, "FSYNC", "Fsync"),
    op(opcode::Fallocate::CODE, "FALLOCATE", "Fallocate"),
    op(opcode::Close::CODE, "CLOSE", "Close"),
    op(opcode::RenameAt::CODE, "RENAMEAT", "RenameAt"),
    op(opcode::UnlinkAt::CODE, "UNLINKAT", "UnlinkAt"),
    op(opcode::MkDirAt::CODE, "MKDIRAT", "MkDirAt"),
];

/// Opcodes used only where the probe finds them (features, see
/// `Features`), or probed only to infer a feature: never a reason to fall
/// back.
pub(crate) const OPTIONAL: &[Opcode] = &[
    // Multishot accept rides on ACCEPT; inferred from SOCKET (5.19).
    op(opcode::Accept::CODE, "ACCEPT", "AcceptMulti"),
    op(opcode::Socket::CODE, "SOCKET", "Socket"),
    op(opcode::SendZc::CODE, "SEND_ZC", "SendZc"),
    op(opcode::Splice::CODE, "SPLICE", "Splice"),
    op(opcode::MsgRingData::CODE, "MSG_RING", "MsgRingData"),
    op(opcode::WaitId::CODE, "WAITID", "WaitId"),
    op(opcode::Ftruncate::CODE, "FTRUNCATE", "Ftruncate"),
    // Built only for buffers in a sparse registered-buffer table (5.19),
    // which implies them (5.1); see uring-sys-notes/registered-buffers.md.
    op(opcode::ReadFixed::CODE, "READ_FIXED", "ReadFixed"),
    op(opcode::WriteFixed::CODE, "WRITE_FIXED", "WriteFixed"),
    // Multishot receive rides on RECV (6.0, with SEND_ZC); see
    // uring-sys-notes/multishot-recv.md.
    op(opcode::Recv::CODE, "RECV", "RecvMulti"),
];

/// Whether the kernel takes a provided-buffer ring
/// (`IORING_REGISTER_PBUF_RING`, 5.19): registers a one-entry ring under
/// group 0 and unregisters it. See uring-sys-notes/provided-buffer-rings.md.
fn probe_buf_ring(ring: &IoUring) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let Ok(layout) = std::alloc::Layout::from_size_align(page, page) else {
        return false;
    };
    // SAFETY: the layout has a non-zero size.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    if mem.is_null() {
        return false;
    }
    // SAFETY: `mem` is a zeroed, page-aligned page (one io_uring_buf with
    // tail 0: an empty ring), alive until after the unregister below (or
    // leaked if that fails).
    let ok = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(mem as u64, 1, 0, 0)
            .is_ok()
    };
    if ok && ring.submitter().unregister_buf_ring(0).is_err() {
        // Still registered: the kernel may keep reading it. Leak the page.
        return true;
    }
    // SAFETY: allocated above with `layout`; the kernel no longer has it.
    unsafe { std::alloc::dealloc(mem, layout) };
    ok
}

/// The opcode a `missing-opcode:IORING_OP_X` simulation names, upper-case
/// and without the `IORING_OP_` prefix.
fn simulated_missing(simulate: Option<&str>) -> Option<String> {
    let s = simulate?.trim();
    let (head, name) = s.split_once(':')?;
    if !head.trim().eq_ignore_ascii_case("missing-opcode") {
        return None;
    }
    let name = name.trim().to_ascii_uppercase();
    Some(name.strip_prefix("IORING_OP_").unwrap_or(&name).to_string())
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        libc::EMFILE => "EMFILE",
        libc::EACCES => "EACCES",
        _ => "error",
    }
}

fn sysctl_disabled() -> Option<String> {
    let v = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?;
    let v = v.trim();
    if v == "0" {
        None
    } else {
        Some(format!("kernel.io_uring_disabled={v}"))
    }
}

fn memlock_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .ok()
        .map(|(soft, _)| soft)
}

/// The soft RLIMIT_MEMLOCK is not unlimited.
fn memlock_finite() -> bool {
    memlock_limit().is_some_and(|l| l != libc::RLIM_INFINITY)
}

fn classify(e: io::Error, kernel_old_memlock: bool) -> SetupError {
    let code = e.raw_os_error().unwrap_or(0);
    match code {
        libc::EPERM | libc::EACCES => match sysctl_disabled() {
            Some(s) => SetupError::Refused(s),
            None => SetupError::Refused(format!("io_uring_setup: {} (seccomp?)", errno_name(code))),
        },
        libc::ENOSYS => {
            SetupError::Refused("io_uring_setup: ENOSYS (kernel without io_uring)".to_string())
        }
        libc::EINVAL => SetupError::Refused("io_uring_setup: EINVAL".to_string()),
        // Before 5.12 ring memory was always charged to RLIMIT_MEMLOCK; on
        // current kernels it is again whenever the process lacks
        // CAP_IPC_LOCK (seen on 6.18), so a finite limit explains ENOMEM.
        libc::ENOMEM if kernel_old_memlock || memlock_finite() => SetupError::Refused(format!(
            "RLIMIT_MEMLOCK ({} bytes) too small for the ring",
            memlock_limit().unwrap_or(0)
        )),
        _ => SetupError::Io(e),
    }
}

fn simulated(s: &str) -> SetupError {
    match s.to_ascii_uppercase().as_str() {
        "EPERM" => SetupError::Refused("io_uring_setup: EPERM (seccomp?) [simulated]".into()),
        "ENOSYS" => SetupError::Refused(
            "io_uring_setup: ENOSYS (kernel without io_uring) [simulated]".into(),
        ),
        "EINVAL" => SetupError::Refused("io_uring_setup: EINVAL [simulated]".into()),
        "DISABLED" => SetupError::Refused("kernel.io_uring_disabled=2 [simulated]".into()),
        "MEMLOCK" => {
            SetupError::Refused("RLIMIT_MEMLOCK too small for the ring [simulated]".into())
        }
        "ENOMEM" => SetupError::Io(io::Error::from_raw_os_error(libc::ENOMEM)),
        other => SetupError::Refused(format!("io_uring_setup: {other} [simulated]")),
    }
}

/// How many registered-file slots to ask for: up to 4096, and no more than
/// the soft RLIMIT_NOFILE.
fn fixed_table_size() -> u32 {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    soft.min(4096) as u32
}

/// Kernels before 5.12 charge ring memory to RLIMIT_MEMLOCK.
fn kernel_before_5_12() -> bool {
    let rel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor) < (5, 12)
}

impl Uring {
    pub(crate) fn new(
        cfg: &DriverConfig,
        wake_fd: RawFd,
        simulate: Option<&str>,
    ) -> Result<(Uring, Features), SetupError> {
        // "missing-opcode:IORING_OP_X" sets the ring up for real and then
        // treats X as absent from the probe; other values fail set-up.
        let missing = simulated_missing(simulate);
        if let (Some(s), None) = (simulate, &missing) {
            return Err(simulated(s));
        }
        let entries = cfg.entries.clamp(8, 32768).next_power_of_two();
        // Newest first: the first flag dropped when the kernel says EINVAL.
        let mut flags: Vec<&'static str> = if cfg.sqpoll.is_some() {
            vec!["SQPOLL"]
        } else {
            vec!["DEFER_TASKRUN", "SINGLE_ISSUER", "COOP_TASKRUN"]
        };
        let mut dropped = Vec::new();
        let ring = loop {
            let mut b = IoUring::builder();
            b.setup_cqsize(entries * 4);
            b.setup_clamp();
            for f in &flags {
                match *f {
                    "DEFER_TASKRUN" => {
                        b.setup_defer_taskrun();
                    }
                    "SINGLE_ISSUER" => {
                        b.setup_single_issuer();
                    }
                    "COOP_TASKRUN" => {
                        b.setup_coop_taskrun();
                        b.setup_taskrun_flag();
                    }
                    "SQPOLL" => {
                        let idle = cfg.sqpoll.unwrap_or_default().as_millis().max(1) as u32;
                        b.setup_sqpoll(idle);
                    }
                    _ => {}
                }
            }
            match b.build(entries) {
                Ok(r) => break r,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !flags.is_empty() => {
                    let f = flags.remove(0);
                    log::debug!("uringio: kernel refused IORING_SETUP_{f}; retrying without");
                    dropped.push(f);
                }
                Err(e) => return Err(classify(e, kernel_before_5_12())),
            }
        };
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            return Err(SetupError::Refused(
                "no IORING_FEAT_EXT_ARG (kernel < 5.11)".into(),
            ));
        }
        let mut probe = Probe::new();
        if let Err(e) = ring.submitter().register_probe(&mut probe) {
            return Err(SetupError::Refused(format!(
                "IORING_REGISTER_PROBE failed: {e}"
            )));
        }
        let has =
            |code: u8, name: &str| probe.is_supported(code) && missing.as_deref() != Some(name);
        for o in REQUIRED {
            if !has(o.code, o.name) {
                let how = if probe.is_supported(o.code) {
                    " [simulated]"
                } else {
                    " per IORING_REGISTER_PROBE"
                };
                return Err(SetupError::Refused(format!(
                    "opcode IORING_OP_{} missing{how}",
                    o.name
                )));
            }
        }
        // A sparse registered-file table (5.19) for busy sockets. Its size
        // is bounded by RLIMIT_NOFILE (the kernel refuses more with EMFILE).
        let files = fixed_table_size();
        let files = if files > 0 && ring.submitter().register_files_sparse(files).is_ok() {
            files
        } else {
            0
        };
        let mut setup_flags = flags.clone();
        if setup_flags.contains(&"COOP_TASKRUN") {
            setup_flags.push("TASKRUN_FLAG");
        }
        // Opcodes that arrived with the features we cannot probe directly:
        // IORING_OP_SOCKET with multishot accept and buffer rings (5.19),
        // IORING_OP_SEND_ZC with multishot receive (6.0).
        let optional = |name: &str| {
            OPTIONAL
                .iter()
                .any(|o| o.name == name && has(o.code, o.name))
        };
        let five_nineteen = optional("SOCKET");
        let six_zero = optional("SEND_ZC");
        // Buffer rings are probed for real (register a tiny one); multishot
        // receive, a flag rather than an opcode, arrived with SEND_ZC (6.0)
        // and needs a ring. A kernel that still refuses it (EINVAL on the
        // first CQE) gets one-shot receives from the ring instead (see
        // op/recv.rs). Both can be forced off (emulated rings).
        let buf_ring = !cfg.buf_ring_emulate && probe_buf_ring(&ring);
        let recv_multishot = buf_ring && six_zero;
        let features = Features {
            io_uring: true,
            kernel: String::new(),
            setup_flags,
            dropped_flags: dropped,
            sq_entries: params.sq_entries(),
            cq_entries: params.cq_entries(),
            nodrop: params.is_feature_nodrop(),
            ext_arg: true,
            multishot_accept: five_nineteen,
            recv_multishot,
            buf_ring,
            send_zc: six_zero,
            splice: optional("SPLICE"),
            msg_ring: optional("MSG_RING"),
            waitid: optional("WAITID"),
            ftruncate: optional("FTRUNCATE"),
            fixed_files: files,
        };
        Ok((
            Uring {
                ring,
                slots: Slab::with_capacity(256),
                wake_fd,
                wake_buf: Box::new([0; 8]),
                wake_armed: false,
                sqpoll: cfg.sqpoll.is_some(),
                closing: false,
                garbage: Vec::new(),
                pending: Vec::new(),
                pending_idx: Vec::new(),
                files: super::FixedFiles::new(files),
                cancelling: 0,
                woken: Vec::new(),
                free_bgids: Vec::new(),
                next_bgid: 0,
                msg_inflight: Slab::new(),
            },
            features,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sources that build SQEs.
    const SOURCES: &[(&str, &str)] = &[
        ("op/fixed.rs", include_str!("../op/fixed.rs")),
        ("op/fs.rs", include_str!("../op/fs.rs")),
        ("op/mod.rs", include_str!("../op/mod.rs")),
        ("op/net.rs", include_str!("../op/net.rs")),
        ("op/process.rs", include_str!("../op/process.rs")),
        ("op/recv.rs", include_str!("../op/recv.rs")),
        ("op/rw.rs", include_str!("../op/rw.rs")),
        ("op/signal.rs", include_str!("../op/signal.rs")),
        ("op/sock.rs", include_str!("../op/sock.rs")),
        ("op/splice.rs", include_str!("../op/splice.rs")),
        ("op/unix.rs", include_str!("../op/unix.rs")),
        ("uring/mod.rs", include_str!("mod.rs")),
    ];

    /// Every `opcode::X::new` in the sources, with the file it is in.
    fn built() -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        for (file, src) in SOURCES {
            for (i, _) in src.match_indices("opcode::") {
                let rest = &src[i + "opcode::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if rest[name.len()..].starts_with("::new") {
                    out.push((name, *file));
                }
            }
        }
        out
    }

    #[test]
    fn required_opcodes_are_exactly_the_ones_built() {
        let built = built();
        assert!(
            built.len() >= REQUIRED.len(),
            "found too few SQEs: {built:?}"
        );
        // Each SQE built is required or a probed feature...
        for (name, file) in &built {
            assert!(
                REQUIRED.iter().chain(OPTIONAL).any(|o| o.builder == name),
                "{file} builds opcode::{name}: add it to REQUIRED or OPTIONAL in probe.rs"
            );
        }
        // ...and each required opcode is built somewhere.
        for o in REQUIRED {
            assert!(
                built.iter().any(|(n, _)| n == o.builder),
                "IORING_OP_{} is required but no op builds opcode::{}",
                o.name,
                o.builder
            );
        }
    }

    #[test]
    fn shutdown_is_not_required() {
        assert!(REQUIRED.iter().all(|o| o.name != "SHUTDOWN"));
        assert!(REQUIRED.iter().all(|o| o.code != opcode::Shutdown::CODE));
    }

    #[test]
    fn simulated_missing_opcode_parses() {
        assert_eq!(
            simulated_missing(Some("missing-opcode:IORING_OP_RECV")).as_deref(),
            Some("RECV")
        );
        assert_eq!(
            simulated_missing(Some("Missing-Opcode: recv")).as_deref(),
            Some("RECV")
        );
        assert_eq!(simulated_missing(Some("EPERM")), None);
        assert_eq!(simulated_missing(None), None);
    }
}
