//! `mdevmig bench`: throughput and memory of save, verify and save-pipe-restore on a
//! simulated vGPU, against the baselines that bound them, all measured in one run.
//!
//! * Baseline 1: single-thread SHA-256 (the `sha2` crate) of the same bytes. Every
//!   byte must be hashed once on each side, so this is the limit authenticated data
//!   moves at on one core.
//! * Baseline 2: a plain copy of the same bytes through a pipe, the transport with no
//!   authentication at all (what QEMU does).
//!
//! save, verify and the two halves of save-pipe-restore run as child processes of
//! this binary, so each one's peak RSS (VmHWM, which each child reports at exit
//! when `MDEVMIG_REPORT_RSS` is set) is its own.
//!
//! The live-migration part ([`super::bench_live`]) prints PRE_COPY's downtime
//! beside STOP_COPY only's, and the envelope's cost in PRE_COPY rounds beside
//! the same loop carrying raw bytes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::bench_live::LiveBench;
use super::output::Out;
use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::codec::{ReadOptions, StreamReader};
use mdevmig::device::{self, DataRead, DeviceSpec, MigState};
use mdevmig::plugins::Registry;
use mdevmig::{Code, Error, Result};

/// Environment variable naming the directory for the bench's stream files
/// (default: the system's temporary directory).
pub const BENCH_DIR_ENV: &str = "MDEVMIG_BENCH_DIR";

/// Environment variable that makes the CLI print its peak RSS at exit.
pub const REPORT_RSS_ENV: &str = "MDEVMIG_REPORT_RSS";

/// Prints `peak-rss-kib: N` on stderr (called at exit when the env var is set).
pub fn report_rss() {
    if std::env::var_os(REPORT_RSS_ENV).is_none() {
        return;
    }
    if let Some(kib) = peak_rss_kib() {
        super::output::say_err(&format!("peak-rss-kib: {kib}\n"));
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct Run {
    secs: f64,
    rss_kib: u64,
}

fn child_rss(stderr: &[u8]) -> u64 {
    String::from_utf8_lossy(stderr)
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io(Code::IoOpen, "current executable", &e))
}

fn run_child(args: &[&str]) -> Result<Run> {
    let t = Instant::now();
    let out = Command::new(exe()?)
        .args(args)
        .env(REPORT_RSS_ENV, "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io(Code::IoOpen, "spawning a child", &e))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(Error::new(
            Code::Internal,
            format!(
                "bench child {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    Ok(Run {
        secs,
        rss_kib: child_rss(&out.stderr),
    })
}

/// Streams the simulated device's raw state through `f` in 1 MiB pieces.
fn raw_state(spec: &str, mut f: impl FnMut(&[u8])) -> Result<u64> {
    let registry = Registry::builtin();
    let (mut dev, _) = device::open(&spec.parse::<DeviceSpec>()?, &registry)?;
    dev.set_state(MigState::StopCopy)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    while let DataRead::Data(n) = dev.read_data(&mut buf)? {
        f(&buf[..n]);
        total += n as u64;
    }
    Ok(total)
}

fn sha_baseline(spec: &str) -> Result<(u64, f64)> {
    let mut h = Sha256::new();
    let mut hashing = Duration::ZERO;
    let total = raw_state(spec, |b| {
        let t = Instant::now();
        h.update(b);
        hashing += t.elapsed();
    })?;
    std::hint::black_box(h.finalize());
    Ok((total, hashing.as_secs_f64()))
}

/// For reference: one core hashing as each of the pool's workers does, as
/// many chunks at once as this CPU's engine takes ([`mdevmig_sha2x`]:
/// sixteen in AVX-512 lanes, or a SHA-NI pair). Not a baseline the ratios use.
fn engine_reference(spec: &str) -> Result<(u64, f64)> {
    let engine = mdevmig_sha2x::engine();
    let lanes = engine.lanes();
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut out = vec![[0u8; 32]; lanes];
    let mut hashing = Duration::ZERO;
    let mut hash = |held: &mut Vec<Vec<u8>>| {
        let msgs: Vec<&[u8]> = held.iter().map(Vec::as_slice).collect();
        let t = Instant::now();
        engine.digest_into(&msgs, out.get_mut(..msgs.len()).unwrap_or(&mut []));
        std::hint::black_box(&out);
        hashing += t.elapsed();
        held.clear();
    };
    let total = raw_state(spec, |b| {
        held.push(b.to_vec());
        if held.len() == lanes {
            hash(&mut held);
        }
    })?;
    if !held.is_empty() {
        hash(&mut held);
    }
    Ok((total, hashing.as_secs_f64()))
}

fn pipe_baseline(spec: &str) -> Result<(u64, f64)> {
    let (mut r, mut w) = std::io::pipe().map_err(|e| Error::io(Code::IoOpen, "pipe", &e))?;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        n
    });
    // Only the time spent writing into the pipe counts (it includes waiting for
    // the reader); generating the bytes does not.
    let mut writing = Duration::ZERO;
    let total = raw_state(spec, |b| {
        let t = Instant::now();
        let _ = w.write_all(b);
        writing += t.elapsed();
    })?;
    drop(w);
    let got = reader
        .join()
        .map_err(|_| Error::new(Code::Internal, "pipe reader"))?;
    if got != total {
        return Err(Error::new(Code::Internal, "pipe baseline lost bytes"));
    }
    Ok((total, writing.as_secs_f64()))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn reject_once(path: &Path, trust: &TrustStore) -> Result<f64> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    let t = Instant::now();
    let r = StreamReader::open(std::io::BufReader::new(f), trust, &ReadOptions::default());
    let secs = t.elapsed().as_secs_f64();
    if r.is_ok() {
        return Err(Error::new(Code::Internal, "a bad header was accepted"));
    }
    Ok(secs)
}

/// Median time to reject each stream's header. The two streams alternate, so
/// frequency changes and noise from the rest of the machine fall on both alike.
fn reject_times(big: &Path, small: &Path, trust: &TrustStore) -> Result<(f64, f64)> {
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for _ in 0..501 {
        b.push(reject_once(big, trust)?);
        s.push(reject_once(small, trust)?);
    }
    Ok((median(b), median(s)))
}

fn flip_header_byte(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    // A stream_id byte: the header still parses, so both streams are refused by
    // the same work (decoding and one signature check), whatever their size.
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 100)
        .map_err(|e| Error::io(Code::IoRead, path.display(), &e))?;
    b[0] ^= 0x01;
    f.write_all_at(&b, 100)
        .map_err(|e| Error::io(Code::IoWrite, path.display(), &e))
}

/// One save piped into one restore, as two child processes; returns the wall
/// time from starting both to both exiting, and each one's peak RSS.
fn save_pipe_restore(src: &str, dst: &str, kp: &str, pp: &str) -> Result<(f64, u64, u64)> {
    let t = Instant::now();
    let mut saver = Command::new(exe()?)
        .args(["save", "--device", src, "--key", kp, "-o", "-"])
        .env(REPORT_RSS_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(Code::IoOpen, "spawning save", &e))?;
    let pipe_out = saver
        .stdout
        .take()
        .ok_or_else(|| Error::new(Code::Internal, "no save stdout"))?;
    let restorer = Command::new(exe()?)
        .args(["restore", "--device", dst, "--trust", pp, "-i", "-"])
        .env(REPORT_RSS_ENV, "1")
        .stdin(pipe_out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(Code::IoOpen, "spawning restore", &e))?;
    let r_out = restorer
        .wait_with_output()
        .map_err(|e| Error::io(Code::IoRead, "restore", &e))?;
    let s_out = saver
        .wait_with_output()
        .map_err(|e| Error::io(Code::IoRead, "save", &e))?;
    let secs = t.elapsed().as_secs_f64();
    if !r_out.status.success() || !s_out.status.success() {
        return Err(Error::new(
            Code::Internal,
            format!(
                "save|restore failed: {}{}",
                String::from_utf8_lossy(&s_out.stderr),
                String::from_utf8_lossy(&r_out.stderr)
            ),
        ));
    }
    Ok((secs, child_rss(&s_out.stderr), child_rss(&r_out.stderr)))
}

/// Seconds of every round of one measurement.
#[derive(Default)]
struct Runs(Vec<f64>);

impl Runs {
    fn median(&self) -> f64 {
        median(self.0.clone())
    }

    /// Throughputs (GB/s) of every round, fastest first.
    fn gbs(&self, bytes: u64) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().map(|s| bytes as f64 / s / 1e9).collect();
        v.sort_by(|a, b| b.total_cmp(a));
        v
    }

    /// The rounds' throughputs as printed, fastest first.
    fn listed(&self, bytes: u64) -> String {
        let v: Vec<String> = self.gbs(bytes).iter().map(|v| format!("{v:.2}")).collect();
        v.join(" ")
    }
}

/// The variable-length Xe VF stream, saved, verified and restored once each
/// through a file: its size is known only at the device's end of data, so this
/// shows memory does not follow it either.
struct XeRun {
    bytes: u64,
    save: Run,
    verify: Run,
    restore: Run,
}

fn xe_run(xe_type: &str, dir: &Path, kp: &str, pp: &str) -> Result<XeRun> {
    let stream = dir.join("xe.mdm").to_string_lossy().into_owned();
    let src = format!("sim:xe/{xe_type},seed=31");
    let dst = format!("sim:xe/{xe_type},seed=32");
    let save = run_child(&["save", "--device", &src, "--key", kp, "-o", &stream])?;
    let bytes = std::fs::metadata(&stream).map(|m| m.len()).unwrap_or(0);
    let verify = run_child(&["verify", &stream, "--trust", pp])?;
    let restore = run_child(&["restore", "--device", &dst, "--trust", pp, "-i", &stream])?;
    std::fs::remove_file(&stream).map_err(|e| Error::io(Code::IoWrite, &stream, &e))?;
    Ok(XeRun {
        bytes,
        save,
        verify,
        restore,
    })
}

/// Runs the benchmark: `rounds` rounds of every measurement, interleaved (a
/// round measures each once), reporting each one's median; then one save,
/// verify and restore of an `xe_type` Xe VF; then `rounds` rounds of the live
/// part ([`super::bench_live`]).
pub fn run(device_type: &str, xe_type: &str, live: &LiveBench<'_>, rounds: usize, out: Out) -> Result<()> {
    let rounds = rounds.max(1);
    let base = std::env::var_os(BENCH_DIR_ENV).map_or_else(std::env::temp_dir, PathBuf::from);
    // A new private directory (mode 0700, a name nobody could have planted).
    let dir = tempfile::Builder::new()
        .prefix("mdevmig-bench-")
        .tempdir_in(&base)
        .map_err(|e| Error::io(Code::IoOpen, base.display(), &e))?;
    let tmp = dir.path();
    let key = SigningKeyPair::generate();
    let (kp, pp) = key.write_files(&tmp.join("bench"))?;
    let (kp, pp) = (
        kp.to_string_lossy().into_owned(),
        pp.to_string_lossy().into_owned(),
    );
    let src = format!("sim:simgpu/{device_type},seed=11");
    let dst = format!("sim:simgpu/{device_type},seed=12");
    let stream = tmp.join("state.mdm").to_string_lossy().into_owned();
    let p = |s: &str| super::output::say_err(&format!("bench: {s}\n"));

    let (mut sha_runs, mut ref_runs, mut pipe_runs) = (Runs::default(), Runs::default(), Runs::default());
    let (mut save_runs, mut verify_runs, mut spr_runs) = (Runs::default(), Runs::default(), Runs::default());
    let (mut save_rss, mut verify_rss, mut spr_save_rss, mut spr_restore_rss) = (0u64, 0u64, 0u64, 0u64);
    let mut bytes = 0u64;
    let trust = TrustStore::load(Path::new(&pp))?;
    let small = tmp.join("small.mdm");
    {
        let registry = Registry::builtin();
        let (mut dev, _) = device::open(&"sim:mtty/mtty-2".parse::<DeviceSpec>()?, &registry)?;
        let f = std::fs::File::create(&small).map_err(|e| Error::io(Code::IoOpen, small.display(), &e))?;
        mdevmig::broker::save(&mut *dev, &registry, &key, f, &Default::default())?;
    }
    flip_header_byte(&small)?;
    let small_len = std::fs::metadata(&small).map(|m| m.len()).unwrap_or(0);
    let (mut big_len, mut reject_big, mut reject_small) = (0u64, 0f64, 0f64);
    for round in 1..=rounds {
        p(&format!(
            "round {round}/{rounds}: baseline: single-thread SHA-256 of the raw state"
        ));
        let (b, secs) = sha_baseline(&src)?;
        bytes = b;
        sha_runs.0.push(secs);
        p(&format!(
            "round {round}/{rounds}: reference: the hashing engine on one core"
        ));
        ref_runs.0.push(engine_reference(&src)?.1);
        p(&format!(
            "round {round}/{rounds}: baseline: plain copy through a pipe"
        ));
        pipe_runs.0.push(pipe_baseline(&src)?.1);
        p(&format!("round {round}/{rounds}: save"));
        let save = run_child(&["save", "--device", &src, "--key", &kp, "-o", &stream])?;
        save_runs.0.push(save.secs);
        save_rss = save_rss.max(save.rss_kib);
        p(&format!("round {round}/{rounds}: verify"));
        let verify = run_child(&["verify", &stream, "--trust", &pp])?;
        verify_runs.0.push(verify.secs);
        verify_rss = verify_rss.max(verify.rss_kib);
        if round == 1 {
            p("rejecting a bad header: 1 GiB-class stream and a small stream");
            flip_header_byte(Path::new(&stream))?;
            big_len = std::fs::metadata(&stream).map(|m| m.len()).unwrap_or(0);
            (reject_big, reject_small) = reject_times(Path::new(&stream), &small, &trust)?;
        }
        // Gone before the next measurement: a 1 GB file of dirty page cache
        // slowed save | restore and made it vary by a third between rounds
        // (deleting it discards the pages; nothing is written back).
        std::fs::remove_file(&stream).map_err(|e| Error::io(Code::IoWrite, &stream, &e))?;
        p(&format!("round {round}/{rounds}: save | restore"));
        let (secs, s_rss, r_rss) = save_pipe_restore(&src, &dst, &kp, &pp)?;
        spr_runs.0.push(secs);
        spr_save_rss = spr_save_rss.max(s_rss);
        spr_restore_rss = spr_restore_rss.max(r_rss);
    }
    p(&format!("Xe VF {xe_type}: save, verify, restore through a file"));
    let xe = xe_run(xe_type, tmp, &kp, &pp)?;
    let live = super::bench_live::run(live, rounds, p)?;
    let (sha_secs, ref_secs, pipe_secs) = (sha_runs.median(), ref_runs.median(), pipe_runs.median());
    let (save_secs, verify_secs, spr_secs) = (save_runs.median(), verify_runs.median(), spr_runs.median());

    let gbs = |secs: f64| bytes as f64 / secs / 1e9;
    let sha = gbs(sha_secs);
    let rows = [
        ("save", gbs(save_secs), save_rss, &save_runs),
        ("verify", gbs(verify_secs), verify_rss, &verify_runs),
        (
            "save-pipe-restore",
            gbs(spr_secs),
            spr_save_rss.max(spr_restore_rss),
            &spr_runs,
        ),
    ];
    let engine = mdevmig_sha2x::engine();
    let mut t = format!(
        "mdevmig bench: simgpu {device_type}, {} bytes of state ({:.2} GiB), {} cores, \
         median of {rounds} rounds\n\n",
        bytes,
        bytes as f64 / (1u64 << 30) as f64,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    t.push_str(&format!(
        "baseline  single-thread SHA-256 (sha2)   {sha:>6.2} GB/s\n"
    ));
    t.push_str(&format!(
        "baseline  plain copy through a pipe     {:>6.2} GB/s\n",
        gbs(pipe_secs)
    ));
    t.push_str(&format!(
        "reference one core, {:>2} chunks at once  {:>6.2} GB/s  ({} engine; what each hashing worker does)\n\n",
        engine.lanes(),
        gbs(ref_secs),
        engine.name()
    ));
    t.push_str("                       throughput  vs SHA-256  vs pipe   peak RSS   rounds (GB/s)\n");
    for (name, g, rss, runs) in rows {
        t.push_str(&format!(
            "{name:<22} {g:>6.2} GB/s   {:>6.2}x   {:>6.2}x   {:>5.1} MiB   {}\n",
            g / sha,
            g / gbs(pipe_secs),
            rss as f64 / 1024.0,
            runs.listed(bytes)
        ));
    }
    t.push_str(&format!(
        "  (baseline rounds: SHA-256 {} GB/s; pipe {} GB/s)\n",
        sha_runs.listed(bytes),
        pipe_runs.listed(bytes)
    ));
    t.push_str(&format!(
        "  (save-pipe-restore peak RSS: save {:.1} MiB, restore {:.1} MiB)\n\n",
        spr_save_rss as f64 / 1024.0,
        spr_restore_rss as f64 / 1024.0
    ));
    let xe_gbs = |r: &Run| xe.bytes as f64 / r.secs / 1e9;
    t.push_str(&format!(
        "Xe VF {xe_type}: a {}-byte stream ({:.2} GiB) whose length the device knew only at its end\n",
        xe.bytes,
        xe.bytes as f64 / (1u64 << 30) as f64
    ));
    for (name, r) in [
        ("save", &xe.save),
        ("verify", &xe.verify),
        ("restore", &xe.restore),
    ] {
        t.push_str(&format!(
            "  {name:<20} {:>6.2} GB/s   {:>6.2}x SHA-256   {:>5.1} MiB peak RSS\n",
            xe_gbs(r),
            xe_gbs(r) / sha,
            r.rss_kib as f64 / 1024.0
        ));
    }
    t.push('\n');
    t.push_str(&live.text);
    t.push('\n');
    t.push_str(&format!(
        "reject a bad header: {small_len}-byte stream {:.1} us, {big_len}-byte stream {:.1} us, ratio {:.2}\n",
        reject_small * 1e6,
        reject_big * 1e6,
        reject_big / reject_small
    ));
    let targets = [
        (
            "verify >= 1.6x single-thread SHA-256",
            gbs(verify_secs) / sha >= 1.6,
        ),
        (
            "save-pipe-restore >= 0.8x single-thread SHA-256",
            gbs(spr_secs) / sha >= 0.8,
        ),
        (
            "peak RSS of save, verify, restore <= 64 MiB",
            rows.iter().all(|r| r.2 <= 64 * 1024),
        ),
        (
            "bad-header rejection, big vs small <= 1.2x",
            reject_big / reject_small <= 1.2,
        ),
        (
            "peak RSS of the Xe VF's save, verify, restore <= 64 MiB",
            [&xe.save, &xe.verify, &xe.restore]
                .iter()
                .all(|r| r.rss_kib <= 64 * 1024),
        ),
    ];
    t.push('\n');
    for (name, ok) in targets {
        t.push_str(&format!("{} {name}\n", if ok { "PASS" } else { "MISS" }));
    }
    out.ok(
        &t,
        json!({
            "device_type": device_type, "bytes": bytes,
            "baseline_sha256_gbs": sha, "baseline_pipe_gbs": gbs(pipe_secs),
            "rounds": rounds,
            "baseline_sha256_runs_gbs": sha_runs.gbs(bytes), "baseline_pipe_runs_gbs": pipe_runs.gbs(bytes),
            "reference_engine": {"name": engine.name(), "lanes": engine.lanes(), "gbs": gbs(ref_secs)},
            "save": {"gbs": gbs(save_secs), "ratio_sha": gbs(save_secs) / sha, "peak_rss_kib": save_rss, "runs_gbs": save_runs.gbs(bytes)},
            "verify": {"gbs": gbs(verify_secs), "ratio_sha": gbs(verify_secs) / sha, "peak_rss_kib": verify_rss, "runs_gbs": verify_runs.gbs(bytes)},
            "save_pipe_restore": {"gbs": gbs(spr_secs), "ratio_sha": gbs(spr_secs) / sha,
                "save_peak_rss_kib": spr_save_rss, "restore_peak_rss_kib": spr_restore_rss, "runs_gbs": spr_runs.gbs(bytes)},
            "xe": {"device_type": xe_type, "bytes": xe.bytes,
                "save": {"gbs": xe_gbs(&xe.save), "peak_rss_kib": xe.save.rss_kib},
                "verify": {"gbs": xe_gbs(&xe.verify), "peak_rss_kib": xe.verify.rss_kib},
                "restore": {"gbs": xe_gbs(&xe.restore), "peak_rss_kib": xe.restore.rss_kib}},
            "live": live.json,
            "reject_bad_header": {"small_bytes": small_len, "small_us": reject_small * 1e6, "big_bytes": big_len, "big_us": reject_big * 1e6, "ratio": reject_big / reject_small},
            "targets": targets.iter().map(|(n, ok)| json!({"target": n, "met": ok})).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}
