//! `mdevmig save --precopy` converging like a VMM, and `mdevmig live` driving two
//! migration regions as QEMU does, end to end through the binary.

#[path = "support/cli.rs"]
mod cli;

use cli::{dir, keys, run};
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn nums(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn save_precopy_converges_within_its_downtime_budget() {
    let d = dir("live-converge");
    let (key, _) = keys(&d);
    let out = d.0.join("s.mdm");
    let (code, stdout, stderr) = run(&[
        "save",
        "--device",
        "sim:xe/xe-vf-64m,seed=3,dirty-rate=32M",
        "--key",
        &key,
        "-o",
        out.to_str().unwrap(),
        "--precopy",
        "--downtime-bytes",
        "2M",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["converged"], true, "{v}");
    assert_eq!(v["stop_reason"], "downtime-budget");
    assert_eq!(v["downtime_budget"], 2 << 20);
    let rounds = nums(&v["rounds"]);
    assert!(!rounds.is_empty() && rounds[0] > 64 << 20, "{v}");
    let downtime = v["downtime_bytes"].as_u64().unwrap();
    assert!(downtime <= 2 << 20, "{v}");
    assert!(v["downtime_seconds"].as_f64().unwrap() >= 0.0);
    let file_len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(rounds.iter().sum::<u64>() + downtime, file_len);
}

#[test]
fn save_precopy_that_cannot_converge_stops_at_its_limit_and_says_so() {
    let d = dir("live-no-converge");
    let (key, _) = keys(&d);
    let out = d.0.join("s.mdm");
    let (code, stdout, stderr) = run(&[
        "save",
        "--device",
        "sim:xe/xe-vf-64m,seed=4,dirty-rate=64M",
        "--key",
        &key,
        "-o",
        out.to_str().unwrap(),
        "--precopy",
        "--downtime-bytes",
        "1024",
        "--max-rounds",
        "3",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("did not converge"), "{stdout}");
    let (code, stdout, _) = run(&[
        "save",
        "--device",
        "sim:xe/xe-vf-64m,seed=4,dirty-rate=64M",
        "--key",
        &key,
        "-o",
        out.to_str().unwrap(),
        "--force",
        "--precopy",
        "--downtime-bytes",
        "1024",
        "--max-rounds",
        "3",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v = json(&stdout);
    assert_eq!(v["converged"], false, "{v}");
    assert!(nums(&v["rounds"]).len() <= 3);
    assert_eq!(v["stop_reason"], "max-rounds", "{v}");
    assert_eq!(nums(&v["rounds"]).len(), 3, "{v}");
}

#[test]
fn convergence_flags_need_precopy_and_valid_values() {
    let d = dir("live-flags");
    let (key, _) = keys(&d);
    let out = d.0.join("s.mdm");
    let base = [
        "save",
        "--device",
        "sim:mtty/mtty-2",
        "--key",
        key.as_str(),
        "-o",
        out.to_str().unwrap(),
    ];
    for extra in [
        &["--precopy", "--downtime-bytes", "12Q"][..],
        &["--precopy", "--max-rounds", "0"][..],
        &["--precopy", "--max-precopy-seconds", "-1"][..],
        &["--precopy", "--max-precopy-seconds", "nan"][..],
        &["--downtime-bytes", "1M"][..],
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
    }
}

#[test]
fn live_migrates_through_two_regions_and_the_digests_match() {
    let (code, stdout, stderr) = run(&[
        "live",
        "--from",
        "sim:xe/xe-vf-64m,seed=5,dirty-rate=16M",
        "--to",
        "sim:xe/xe-vf-64m,seed=6",
        "--downtime-bytes",
        "2M",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["match"], true, "{v}");
    assert_eq!(v["aborted"], false);
    let arcs: Vec<&str> = v["source_arcs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        arcs,
        [
            "RUNNING->PRE_COPY",
            "PRE_COPY->PRE_COPY_P2P",
            "PRE_COPY_P2P->STOP_COPY",
            "STOP_COPY->STOP"
        ]
    );
    assert_eq!(v["precopy_info"][0]["initial_bytes"], 0);
    if v["converged"] == true {
        assert!(v["downtime_bytes"].as_u64().unwrap() <= 2 << 20, "{v}");
    }
}

#[test]
fn live_abandoned_after_a_round_leaves_both_devices_as_they_were() {
    for round in ["1", "2"] {
        let (code, stdout, stderr) = run(&[
            "live",
            "--from",
            "sim:simgpu/vgpu-64m,seed=7",
            "--to",
            "sim:simgpu/vgpu-64m,seed=8",
            "--downtime-bytes",
            "1",
            "--abort-after-round",
            round,
            "--json",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let v = json(&stdout);
        assert_eq!(v["aborted"], true);
        assert_eq!(v["source_state"], "RUNNING");
        assert_eq!(v["destination_state"], "RUNNING");
        assert_eq!(v["source_digest_before"], v["source_digest_after"], "{v}");
        assert_eq!(
            v["destination_digest_before"], v["destination_digest_after"],
            "{v}"
        );
        assert_eq!(v["destination_refused"], "format.truncated");
    }
}

#[test]
fn live_on_a_device_without_precopy_goes_straight_to_stop_copy() {
    let (code, stdout, stderr) = run(&[
        "live",
        "--from",
        "sim:mtty/mtty-2,seed=1,flags=1",
        "--to",
        "sim:mtty/mtty-2,seed=2,flags=1",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["stop_reason"], "no-precopy");
    assert_eq!(nums(&v["rounds"]).len(), 0);
    assert_eq!(v["match"], true);
}
