//! Runs a command with io_uring refused, the way a container's seccomp
//! profile refuses it (Docker's default profile answers `io_uring_setup`
//! with `EPERM`; a kernel built without io_uring answers `ENOSYS`).
//!
//! ```sh
//! cargo build --example no_io_uring
//! target/debug/examples/no_io_uring cargo test                 # EPERM
//! target/debug/examples/no_io_uring --errno ENOSYS cargo test  # ENOSYS
//! cargo run --example no_io_uring -- cargo run --release --example tour
//! ```
//!
//! It sets `PR_SET_NO_NEW_PRIVS` (so no privilege is needed), installs a
//! seccomp BPF filter that makes `io_uring_setup`, `io_uring_enter` and
//! `io_uring_register` (425–427 on every architecture) fail with the chosen
//! errno and allows everything else, then execs the command. The filter is
//! inherited by every child, so `cargo test` and the test binaries it starts
//! all run without io_uring: `Backend::Auto` falls back to epoll, an
//! explicit `Backend::IoUring` is an `Unsupported` error, and the test suite
//! reports each io_uring half it cannot run with a `SKIP` line.
//!
//! The filter checks the architecture first (the native one and its 32-bit
//! compat ABI, where 425–427 are io_uring too); a foreign one kills the
//! process, as seccomp filters conventionally do.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// `AUDIT_ARCH_*` of the native ABI and of its 32-bit compat ABI
/// (`<linux/audit.h>`), and the syscall-number bit x32 sets on x86_64.
#[cfg(target_arch = "x86_64")]
const ARCHES: Option<(u32, u32, u32)> = Some((0xC000_003E, 0x4000_0003, 0x4000_0000));
#[cfg(target_arch = "aarch64")]
const ARCHES: Option<(u32, u32, u32)> = Some((0xC000_00B7, 0x4000_0028, 0));
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: Option<(u32, u32, u32)> = None;

/// `io_uring_setup`, `io_uring_enter`, `io_uring_register`: the same numbers
/// on every architecture since Linux 5.1.
const IO_URING_SYSCALLS: [u32; 3] = [425, 426, 427];

/// Offsets in `struct seccomp_data`: `int nr; __u32 arch; …`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// The filter program. Jump offsets count the instructions skipped after
/// the jump itself.
fn program(native: u32, compat: u32, x32_bit: u32, errno: u32) -> Vec<libc::sock_filter> {
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let [setup, enter, register] = IO_URING_SYSCALLS;
    vec![
        /* 0 */ stmt(load, ARCH_OFFSET),
        /* 1 */ jeq(native, 1, 0), // -> 3, else 2
        /* 2 */ jeq(compat, 0, 7), // -> 3, else 10
        /* 3 */ stmt(load, NR_OFFSET),
        /* 4 */ stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, !x32_bit),
        /* 5 */ jeq(setup, 3, 0), // -> 9
        /* 6 */ jeq(enter, 2, 0), // -> 9
        /* 7 */ jeq(register, 1, 0), // -> 9
        /* 8 */ stmt(ret, libc::SECCOMP_RET_ALLOW),
        /* 9 */
        stmt(
            ret,
            libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA),
        ),
        /* 10 */ stmt(ret, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

fn install(errno: i32) -> std::io::Result<()> {
    let Some((native, compat, x32_bit)) = ARCHES else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no_io_uring knows the seccomp arch of x86_64 and aarch64 only",
        ));
    };
    let mut filter = program(native, compat, x32_bit, errno as u32);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl/seccomp calls; `prog` points at `filter`, which
    // outlives both calls (the kernel copies the program).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        );
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOSYS) {
                return Err(e);
            }
            // Kernels before 3.17 have no seccomp(2).
            let mode = libc::SECCOMP_MODE_FILTER as libc::c_ulong;
            if libc::prctl(libc::PR_SET_SECCOMP, mode, &prog as *const _, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Checks the filter works: `io_uring_setup` must now fail with `errno`.
fn check(errno: i32) -> Result<(), String> {
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: io_uring_setup(1, params); it either fails or returns a fd we close.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if r >= 0 {
        // SAFETY: the fd io_uring_setup just returned.
        unsafe { libc::close(r as i32) };
        return Err("io_uring_setup still succeeds".into());
    }
    let got = std::io::Error::last_os_error();
    match got.raw_os_error() {
        Some(e) if e == errno => Ok(()),
        _ => Err(format!(
            "io_uring_setup failed with {got}, not errno {errno}"
        )),
    }
}

fn parse_errno(s: &str) -> Option<i32> {
    match s.to_ascii_uppercase().as_str() {
        "EPERM" => Some(libc::EPERM),
        "ENOSYS" => Some(libc::ENOSYS),
        "EACCES" => Some(libc::EACCES),
        "EINVAL" => Some(libc::EINVAL),
        n => n.parse().ok().filter(|&n| n > 0 && n <= 4095),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: no_io_uring [--errno EPERM|ENOSYS|EACCES|EINVAL|N] [--] COMMAND [ARGS...]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let mut errno = libc::EPERM;
    let mut name = "EPERM".to_string();
    while let Some(a) = args.peek() {
        match a.as_str() {
            "--errno" => {
                args.next();
                let Some(v) = args.next() else { return usage() };
                let Some(e) = parse_errno(&v) else {
                    return usage();
                };
                errno = e;
                name = v;
            }
            "--" => {
                args.next();
                break;
            }
            "-h" | "--help" => return usage(),
            _ => break,
        }
    }
    let Some(cmd) = args.next() else {
        return usage();
    };
    let rest: Vec<String> = args.collect();

    if let Err(e) = install(errno) {
        eprintln!("no_io_uring: cannot install the seccomp filter: {e}");
        return ExitCode::from(125);
    }
    if let Err(e) = check(errno) {
        eprintln!("no_io_uring: the filter does not work: {e}");
        return ExitCode::from(125);
    }
    eprintln!(
        "no_io_uring: io_uring_setup/enter/register fail with {name}; running {cmd} {}",
        rest.join(" ")
    );
    let e = Command::new(&cmd).args(&rest).exec();
    eprintln!("no_io_uring: cannot run {cmd}: {e}");
    ExitCode::from(127)
}
