//! The `fio` example: short runs on each backend (a small file it creates
//! and fills), the shape of its output, and its errors for bad arguments.
//! This checks the tool, not the speed.
mod common;

use std::collections::HashMap;
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
        (&[f, "--direct"], "--direct"),
        (&[f, "--fixed"], "--fixed"),
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
