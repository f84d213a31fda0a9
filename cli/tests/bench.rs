//! `mdevmig bench` end to end on a small state: it runs every measurement and
//! reports every figure the performance targets need, and the live part's
//! downtime and envelope figures with their baselines. The figures themselves are the
//! benchmark's business (a test does not time anything); this keeps the
//! benchmark from rotting.

use std::process::Command;

#[test]
fn bench_reports_every_figure_and_target() {
    let out = Command::new(env!("CARGO_BIN_EXE_mdevmig"))
        .args([
            "bench",
            "--device-type",
            "vgpu-64m",
            "--xe-type",
            "xe-vf-64m",
            "--live-type",
            "xe-vf-64m",
            "--dirty-rate",
            "16M",
            "--downtime-bytes",
            "1M",
            "--rounds",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rounds"], 2);
    assert!(v["bytes"].as_u64().unwrap() > 64 << 20);
    for key in ["baseline_sha256_gbs", "baseline_pipe_gbs"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}");
    }
    for key in ["baseline_sha256_runs_gbs", "baseline_pipe_runs_gbs"] {
        assert_eq!(v[key].as_array().unwrap().len(), 2, "{key}");
    }
    let engine = &v["reference_engine"];
    assert!(["sha2", "shani", "avx512"].contains(&engine["name"].as_str().unwrap()));
    assert!([1, 2, 16].contains(&engine["lanes"].as_u64().unwrap()));
    for m in ["save", "verify", "save_pipe_restore"] {
        let r = &v[m];
        assert!(r["gbs"].as_f64().unwrap() > 0.0, "{m}");
        assert!(r["ratio_sha"].as_f64().unwrap() > 0.0, "{m}");
        assert_eq!(r["runs_gbs"].as_array().unwrap().len(), 2, "{m}");
    }
    for rss in [
        &v["save"]["peak_rss_kib"],
        &v["verify"]["peak_rss_kib"],
        &v["save_pipe_restore"]["save_peak_rss_kib"],
        &v["save_pipe_restore"]["restore_peak_rss_kib"],
    ] {
        // Reported by each child itself: nonzero, and far below the 64 MiB bound
        // on a 64 MiB state too (memory does not follow the state's size).
        let kib = rss.as_u64().unwrap();
        assert!(kib > 0 && kib < 64 * 1024, "peak RSS {kib} KiB");
    }
    let reject = &v["reject_bad_header"];
    assert!(reject["small_us"].as_f64().unwrap() > 0.0);
    assert!(reject["big_bytes"].as_u64().unwrap() > reject["small_bytes"].as_u64().unwrap());
    let xe = &v["xe"];
    assert_eq!(xe["device_type"], "xe-vf-64m");
    assert!(xe["bytes"].as_u64().unwrap() > 64 << 20);
    for m in ["save", "verify", "restore"] {
        assert!(xe[m]["gbs"].as_f64().unwrap() > 0.0, "xe {m}");
        let kib = xe[m]["peak_rss_kib"].as_u64().unwrap();
        assert!(kib > 0 && kib < 64 * 1024, "xe {m} peak RSS {kib} KiB");
    }
    assert_eq!(v["targets"].as_array().unwrap().len(), 5);

    // The live part: downtime with PRE_COPY against STOP_COPY only, and the
    // envelope's cost in PRE_COPY rounds against raw. What PRE_COPY converges to
    // depends on the machine's speed, so only what does not is checked.
    let live = &v["live"];
    assert_eq!(live["device_type"], "xe-vf-64m");
    assert_eq!(live["dirty_rate"], 16 << 20);
    assert_eq!(live["downtime_budget"], 1 << 20);
    assert_eq!(live["rounds"], 2);
    let reasons = ["no-precopy", "downtime-budget", "max-rounds", "max-time"];
    for m in ["stop_copy_only", "precopy", "precopy_in_process", "precopy_raw"] {
        let r = &live[m];
        let runs = r["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{m}");
        for run in runs {
            assert!(
                reasons.contains(&run["stop_reason"].as_str().unwrap()),
                "{m}: {run}"
            );
            assert!(run["downtime_bytes"].as_u64().unwrap() > 0, "{m}");
            assert!(run["downtime_seconds"].as_f64().unwrap() > 0.0, "{m}");
            let end = run["source_end_seconds"].as_f64().unwrap();
            assert!(
                end > 0.0 && end <= run["downtime_seconds"].as_f64().unwrap(),
                "{m}"
            );
            assert!(run["gbs"].as_f64().unwrap() > 0.0, "{m}");
            // The whole VRAM moves once at least, before or after the stop.
            assert!(run["device_bytes"].as_u64().unwrap() > 64 << 20, "{m}");
            assert!(
                run["bytes"].as_u64().unwrap() >= run["device_bytes"].as_u64().unwrap(),
                "{m}"
            );
            let rounds = run["rounds"].as_array().unwrap();
            let sum: u64 = rounds.iter().map(|b| b.as_u64().unwrap()).sum();
            assert_eq!(
                sum + run["downtime_bytes"].as_u64().unwrap(),
                run["bytes"].as_u64().unwrap()
            );
        }
        for key in [
            "downtime_bytes",
            "downtime_seconds",
            "bytes",
            "device_bytes",
            "seconds",
            "gbs",
        ] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{m} {key}");
        }
        let rounds = r["rounds"].as_u64().unwrap();
        assert_eq!(r["round_bytes"].as_array().unwrap().len() as u64, rounds, "{m}");
        if m == "stop_copy_only" {
            assert_eq!(rounds, 0);
            assert_eq!(r["stop_reason"], "no-precopy");
            // Everything moves while the device is stopped.
            assert!(r["downtime_bytes"].as_f64().unwrap() > f64::from(64u32 << 20));
        } else {
            assert!(rounds >= 1, "{m}");
            // The first round carries the initial data: the whole VRAM.
            let first = r["round_bytes"][0].as_u64().unwrap();
            assert!(first > 60 << 20, "{m}: first round {first}");
        }
        let overhead = r["overhead_pct"].as_f64().unwrap();
        if m == "precopy_raw" {
            assert_eq!(overhead, 0.0, "{m}");
        } else {
            // Header, chunk frames, section ends and the trailer: some, and little.
            assert!(overhead > 0.0 && overhead < 1.0, "{m}: {overhead}%");
        }
    }
    for key in ["bytes", "seconds"] {
        assert!(live["downtime_ratio"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    for key in [
        "overhead_pct",
        "gbs",
        "raw_gbs",
        "ratio_raw",
        "in_process_gbs",
        "in_process_ratio_raw",
    ] {
        assert!(live["envelope"][key].as_f64().unwrap() > 0.0, "envelope {key}");
    }
}
