//! The `fio` example: short runs on each backend (a small file it creates
//! and fills), the shape of its output, and its errors for bad arguments.
//! `--direct`, `--fixed` and `--eager` too (O_DIRECT halves skip with a
//! visible line where no temp dir takes O_DIRECT). This checks the tool,
//! not the speed.
mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use common::TempDir;
use uringio::Backend;

fn backend_arg(b: Backend) -> &'static str {
    match b {
        Backend::IoUring => "io_uring",
        _ => "epoll",
    }
}

/// Runs fio with `args`; returns its `key=value` fields (settings and
/// result lines together).
fn run_fio(args: &[&str]) -> HashMap<String, String> {
    let out = Command::new(common::example("fio"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fio {args:?} failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("fio: "), "{stdout}");
    assert!(lines[1].starts_with("result: "), "{stdout}");
    let mut m = HashMap::new();
    for tok in lines.iter().flat_map(|l| l.split_whitespace()) {
        if let Some((k, v)) = tok.split_once('=') {
            m.insert(k.to_string(), v.to_string());
        }
    }
    m
}

fn num(m: &HashMap<String, String>, k: &str) -> f64 {
    m.get(k)
        .unwrap_or_else(|| panic!("no {k} in {m:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{k} is not a number in {m:?}"))
}

#[test]
fn randread_and_randwrite_on_both_backends() {
    let dir = TempDir::new("fio-example");
    let file = dir.path("data.bin");
    let f = file.to_str().unwrap();
    for b in common::backends() {
        let be = backend_arg(b);
        let m = run_fio(&[
            f,
            "--rw",
            "randread",
            "--bs",
            "4k",
            "--qd",
            "8",
            "--secs",
            "1",
            "--size",
            "8m",
            "--backend",
            be,
        ]);
        assert_eq!(m["backend"], be);
        assert_eq!(m["rw"], "randread");
        assert_eq!(m["bs"], "4096");
        assert_eq!(m["qd"], "8");
        assert_eq!(m["size"], (8u64 << 20).to_string());
        let registered = if b == Backend::IoUring { "yes" } else { "no" };
        assert_eq!(m["registered"], registered, "{m:?}");
        let ops = num(&m, "ops");
        assert!(ops > 0.0);
        assert!(num(&m, "iops") > 0.0);
        let mbps = num(&m, "mbps");
        let secs = num(&m, "secs");
        assert!((1.0..10.0).contains(&secs), "{m:?}");
        // MB/s is ops * 4096 / secs (rounding aside).
        let want = ops * 4096.0 / secs / 1e6;
        assert!((mbps - want).abs() <= want * 0.01 + 0.1, "{m:?}");
        assert!(num(&m, "cpu_ns_per_op") > 0.0);
        let (p50, p99) = (num(&m, "lat_p50_us"), num(&m, "lat_p99_us"));
        assert!(p50 > 0.0 && p99 >= p50, "{m:?}");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 8 << 20);

        // Writes with an fsync every 16, sequential and unregistered.
        let m = run_fio(&[
            f,
            "--rw",
            "write",
            "--bs",
            "8k",
            "--qd",
            "4",
            "--secs",
            "0.5",
            "--size",
            "8m",
            "--fsync",
            "16",
            "--backend",
            be,
            "--no-register",
        ]);
        assert_eq!(m["registered"], "no");
        let ops = num(&m, "ops");
        let fsyncs = num(&m, "fsyncs");
        assert!(ops > 0.0);
        assert_eq!(fsyncs, (ops / 16.0).floor(), "{m:?}");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = TempDir::new("fio-example-bad");
    let file = dir.path("never.bin");
    let f = file.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--rw", "randread"], "FILE is missing"),
        (&[f, "--rw", "sideways"], "--rw"),
        (&[f, "--bs", "4x"], "--bs"),
        (&[f, "--bs", "0"], "--bs"),
        (&[f, "--qd", "0"], "--qd"),
        (&[f, "--qd"], "--qd needs a value"),
        (&[f, "--secs", "-1"], "--secs"),
        (&[f, "--size", "1k", "--bs", "4k"], "--size"),
        (&[f, "--backend", "kqueue"], "--backend"),
        (&[f, "--fsync", "4"], "--fsync needs"),
        (&[f, "--frobnicate"], "unknown option"),
        (&[f, "--cpu", "100000"], "--cpu"),
        (&[f, "--direct", "--bs"], "--bs needs a value"),
    ];
    for (args, want) in cases {
        let out = Command::new(common::example("fio"))
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("fio: error:") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Nothing was created by the refused runs.
    assert!(!file.exists());
}

/// A temp dir whose filesystem takes `O_DIRECT` (tmpfs refuses it before
/// 6.6): the system temp dir, else cargo's target tmp dir. `None`, with a
/// visible SKIP line, if neither does.
fn direct_dir(tag: &str) -> Option<TempDir> {
    let candidates = [
        TempDir::new(tag),
        TempDir(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("uringio-{tag}-{}", std::process::id())),
        ),
    ];
    for d in candidates {
        let _ = std::fs::create_dir_all(&d.0);
        use std::os::unix::fs::OpenOptionsExt;
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(d.path("probe"))
            .is_ok();
        if ok {
            return Some(d);
        }
    }
    eprintln!("SKIP fio_example ({tag}): no temp dir here takes O_DIRECT");
    None
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[test]
fn fixed_buffers_and_eager_on_both_backends() {
    // Buffered, with registered buffers: a pool of --qd buffers,
    // READ_FIXED/WRITE_FIXED on io_uring, plain pread/pwrite on epoll.
    let dir = TempDir::new("fio-example-fixed");
    let file = dir.path("data.bin");
    let f = file.to_str().unwrap();
    for b in common::backends() {
        let be = backend_arg(b);
        for eager in [false, true] {
            let mut args = vec![
                f,
                "--rw",
                "randread",
                "--qd",
                "4",
                "--secs",
                "0.3",
                "--size",
                "4m",
                "--fixed",
                "--backend",
                be,
            ];
            if eager {
                args.push("--eager");
            }
            let m = run_fio(&args);
            assert_eq!(m["fixed"], "yes", "{m:?}");
            assert_eq!(m["direct"], "no", "{m:?}");
            assert_eq!(m["eager"], yes_no(eager), "{m:?}");
            if b == Backend::Epoll {
                assert_eq!(m["fixed_registered"], "no", "{m:?}");
            }
            assert!(num(&m, "ops") > 0.0, "{m:?}");
        }
        let m = run_fio(&[
            f,
            "--rw",
            "write",
            "--bs",
            "8k",
            "--qd",
            "4",
            "--secs",
            "0.3",
            "--size",
            "4m",
            "--fixed",
            "--fsync",
            "8",
            "--backend",
            be,
        ]);
        let ops = num(&m, "ops");
        assert!(ops > 0.0);
        assert_eq!(num(&m, "fsyncs"), (ops / 8.0).floor(), "{m:?}");
    }
}

#[test]
fn direct_runs_on_both_backends() {
    let Some(dir) = direct_dir("fio-example-direct") else {
        return;
    };
    let file = dir.path("data.bin");
    let f = file.to_str().unwrap();
    for b in common::backends() {
        let be = backend_arg(b);
        let cases: &[&[&str]] = &[
            &["--rw", "randread"],
            &["--rw", "randread", "--fixed"],
            &["--rw", "randread", "--fixed", "--eager"],
            &["--rw", "randwrite", "--eager", "--fsync", "8"],
            &["--rw", "randwrite", "--fixed", "--fsync", "8"],
        ];
        for extra in cases {
            let mut args = vec![
                f,
                "--qd",
                "4",
                "--secs",
                "0.3",
                "--size",
                "4m",
                "--direct",
                "--backend",
                be,
            ];
            args.extend_from_slice(extra);
            let m = run_fio(&args);
            assert_eq!(m["direct"], "yes", "{args:?}: {m:?}");
            assert_eq!(m["fixed"], yes_no(extra.contains(&"--fixed")), "{m:?}");
            assert_eq!(m["eager"], yes_no(extra.contains(&"--eager")), "{m:?}");
            let ops = num(&m, "ops");
            assert!(ops > 0.0, "{args:?}: {m:?}");
            if extra.contains(&"--fsync") {
                assert_eq!(num(&m, "fsyncs"), (ops / 8.0).floor(), "{m:?}");
            }
        }
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 4 << 20);
        // A block size the file's O_DIRECT alignment does not divide.
        let out = Command::new(common::example("fio"))
            .args([
                f,
                "--size",
                "4m",
                "--direct",
                "--bs",
                "1000",
                "--backend",
                be,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("fio: error: --bs: 1000 is not a multiple of")
                && stderr.contains("O_DIRECT"),
            "{stderr}"
        );
    }
}
