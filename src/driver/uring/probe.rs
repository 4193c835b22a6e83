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

/// Required opcodes: without them `Auto` uses epoll.
const REQUIRED: &[(u8, &str)] = &[
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Readv::CODE, "READV"),
    (opcode::Writev::CODE, "WRITEV"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::Send::CODE, "SEND"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::RecvMsg::CODE, "RECVMSG"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::OpenAt::CODE, "OPENAT"),
    (opcode::Statx::CODE, "STATX"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::Fallocate::CODE, "FALLOCATE"),
    (opcode::Close::CODE, "CLOSE"),
    (opcode::Shutdown::CODE, "SHUTDOWN"),
    (opcode::RenameAt::CODE, "RENAMEAT"),
    (opcode::UnlinkAt::CODE, "UNLINKAT"),
    (opcode::MkDirAt::CODE, "MKDIRAT"),
];

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
        libc::ENOMEM if kernel_old_memlock => SetupError::Refused(format!(
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
        if let Some(s) = simulate {
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
        for (code, name) in REQUIRED {
            if !probe.is_supported(*code) {
                return Err(SetupError::Refused(format!(
                    "opcode IORING_OP_{name} missing per IORING_REGISTER_PROBE"
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
        let five_nineteen = probe.is_supported(opcode::Socket::CODE);
        let six_zero = probe.is_supported(opcode::SendZc::CODE);
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
            recv_multishot: six_zero,
            buf_ring: five_nineteen,
            send_zc: six_zero,
            msg_ring: probe.is_supported(opcode::MsgRingData::CODE),
            waitid: probe.is_supported(opcode::WaitId::CODE),
            ftruncate: probe.is_supported(opcode::Ftruncate::CODE),
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
            },
            features,
        ))
    }
}
