//! `mdevmig bench` end to end on a small state: it runs every measurement and
//! reports every figure the performance targets need. The figures themselves are the
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
}
