//! Load benchmark of `mdevmig serve`: many clients asking `check` at once, against
//! the same pre-check done by one `mdevmig check` process per call.
//!
//! ```text
//!   cargo bench -p mdevmig-cli --bench serve_load              64 clients x 1000 checks
//!   cargo bench -p mdevmig-cli --bench serve_load -- --quick   8 clients x 100 checks
//!   SERVE_BENCH_CLIENTS, SERVE_BENCH_CALLS, SERVE_BENCH_BASELINE_CALLS override either
//! ```
//!
//! Each client holds one negotiated connection and runs its checks back to back;
//! the source is the descriptor `describe` gives for a simulated mtty, the
//! destination the spec `sim:mtty/mtty-2`, so every call opens the device and
//! runs the compatibility check, as the CLI does. Printed: calls, wall time,
//! throughput, latency p50/p99/max, and the service's peak RSS (VmHWM); then the
//! same calls from one client alone (latency without queueing); then the
//! baseline (a process per call, sequential and 2 at a time) and the speedup.

#[path = "../tests/support/qmp.rs"]
mod qmp;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const DEVICE: &str = "sim:mtty/mtty-2";

struct Settings {
    clients: usize,
    calls: usize,
    baseline_calls: usize,
}

fn env_usize(name: &str) -> Option<usize> {
    let v = std::env::var(name).ok()?;
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => panic!("{name}={v:?} is not a positive integer"),
    }
}

fn settings() -> Settings {
    // cargo passes --bench (and a filter, if given); --quick is ours.
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let (clients, calls, baseline_calls) = if quick { (8, 100, 20) } else { (64, 1000, 200) };
    Settings {
        clients: env_usize("SERVE_BENCH_CLIENTS").unwrap_or(clients),
        calls: env_usize("SERVE_BENCH_CALLS").unwrap_or(calls),
        baseline_calls: env_usize("SERVE_BENCH_BASELINE_CALLS").unwrap_or(baseline_calls),
    }
}

/// Latency figures in milliseconds: (p50, p99, max).
fn percentiles(lat: &mut [Duration]) -> (f64, f64, f64) {
    assert!(!lat.is_empty());
    lat.sort_unstable();
    let at = |q: usize| lat[(lat.len() * q / 100).min(lat.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(at(50)), ms(at(99)), ms(lat[lat.len() - 1]))
}

/// The service answering checks: (calls, wall time, latencies, peak RSS in KiB).
fn bench_service(
    bin: &str,
    dir: &Path,
    s: &Settings,
) -> (usize, Duration, Vec<Duration>, Option<u64>, Value) {
    let socket = dir.join("s.sock");
    let args: Vec<String> = vec![
        "--state-dir".into(),
        dir.join("state").to_string_lossy().into_owned(),
        "--max-clients".into(),
        (s.clients + 8).to_string(),
    ];
    let mut svc = qmp::Service::start(bin, &socket, &dir.join("serve.log"), &args);
    let source = qmp::Qmp::negotiated(&socket).ok("describe", json!({ "device": DEVICE }));

    let start = Arc::new(Barrier::new(s.clients + 1));
    let threads: Vec<_> = (0..s.clients)
        .map(|_| {
            let (socket, source, start) = (socket.clone(), source.clone(), Arc::clone(&start));
            let calls = s.calls;
            std::thread::spawn(move || {
                let mut q = qmp::Qmp::negotiated(&socket);
                let args = json!({"device": DEVICE, "source": source});
                let mut lat = Vec::with_capacity(calls);
                start.wait();
                for _ in 0..calls {
                    let t = Instant::now();
                    let r = q.execute("check", args.clone());
                    lat.push(t.elapsed());
                    match r {
                        Ok(v) if v["compatible"] == true => {}
                        other => panic!("check failed: {other:?}"),
                    }
                }
                (lat, Instant::now())
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(s.clients * s.calls);
    let mut end = t0;
    for t in threads {
        let (l, e) = t.join().expect("a client thread");
        lat.extend(l);
        end = end.max(e);
    }
    let wall = end - t0;
    let rss = svc.peak_rss_kib();
    svc.signal(nix::sys::signal::Signal::SIGTERM);
    let st = svc.wait(Duration::from_secs(60));
    assert!(st.success(), "the service exited with {st}");
    (lat.len(), wall, lat, rss, source)
}

/// One `mdevmig check` process per call, `parallel` at a time: (wall, latencies).
fn bench_processes(bin: &str, source: &Path, calls: usize, parallel: usize) -> (Duration, Vec<Duration>) {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..parallel)
        .map(|i| {
            let (bin, source) = (bin.to_string(), source.to_path_buf());
            let n = calls / parallel + usize::from(i < calls % parallel);
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let out = Command::new(&bin)
                        .args(["check", "--device", DEVICE, "--json", "--source"])
                        .arg(&source)
                        .stdin(Stdio::null())
                        .stderr(Stdio::null())
                        .output()
                        .expect("spawn mdevmig check");
                    lat.push(t.elapsed());
                    assert!(out.status.success(), "mdevmig check: {}", out.status);
                    let v: Value = serde_json::from_slice(&out.stdout).expect("check --json output");
                    assert_eq!(v["compatible"], true, "{v}");
                }
                lat
            })
        })
        .collect();
    let lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a baseline thread"))
        .collect();
    (t0.elapsed(), lat)
}

fn main() {
    let s = settings();
    let bin = env!("CARGO_BIN_EXE_mdevmig");
    let dir = tempfile::Builder::new()
        .prefix("mdevmig-serve-bench-")
        .tempdir()
        .expect("a temporary directory");
    println!(
        "serve_load: {} clients x {} check calls (destination {DEVICE}); baseline {} calls",
        s.clients, s.calls, s.baseline_calls
    );

    let (n, wall, mut lat, rss, source) = bench_service(bin, dir.path(), &s);
    let rate = n as f64 / wall.as_secs_f64();
    let (p50, p99, max) = percentiles(&mut lat);
    let rss = rss.map_or("unknown".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "serve check: {n} calls in {:.2} s: {rate:.0} calls/s, p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms; service peak RSS {rss}",
        wall.as_secs_f64()
    );

    // Latency without queueing: one client alone, the way a scheduler asks
    // one question at a time.
    let solo = Settings {
        clients: 1,
        calls: s.calls,
        baseline_calls: s.baseline_calls,
    };
    let solo_dir = dir.path().join("solo");
    std::fs::create_dir_all(&solo_dir).expect("a directory");
    let (n1, wall1, mut lat1, _, _) = bench_service(bin, &solo_dir, &solo);
    let (s50, s99, smax) = percentiles(&mut lat1);
    println!(
        "serve check, one client: {n1} calls in {:.2} s: {:.0} calls/s, p50 {s50:.3} ms, p99 {s99:.3} ms, max {smax:.3} ms",
        wall1.as_secs_f64(),
        n1 as f64 / wall1.as_secs_f64()
    );

    let source_file = dir.path().join("source.json");
    std::fs::write(&source_file, source.to_string()).expect("write the descriptor");
    let mut rates = Vec::new();
    for parallel in [1, 2] {
        let (wall, mut lat) = bench_processes(bin, &source_file, s.baseline_calls, parallel);
        let r = lat.len() as f64 / wall.as_secs_f64();
        let (p50, p99, _) = percentiles(&mut lat);
        let how = if parallel == 1 {
            "sequential".to_string()
        } else {
            format!("{parallel} at a time")
        };
        println!(
            "baseline (process per call, {how}): {} calls in {:.2} s: {r:.0} calls/s, p50 {p50:.3} ms, p99 {p99:.3} ms",
            lat.len(),
            wall.as_secs_f64()
        );
        rates.push((how, r));
    }
    for (how, r) in rates {
        println!("speedup vs baseline ({how}): {:.1}x", rate / r);
    }
}
