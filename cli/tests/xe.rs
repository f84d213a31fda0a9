//! The Xe VF plugin end to end: streamed sections through the broker, the CLI and
//! the clean-room reader.
//!
//! - simulated Xe VFs round-trip through a pipe and through files, with final
//!   lengths above and below the device's MIG_DATA_SIZE estimate, in 4 KiB chunks
//!   whose boundaries cut packet headers;
//! - packet headers cut by an envelope chunk boundary at every offset a valid
//!   stream allows are accepted, and the other offsets at the validator and the
//!   device the broker feeds;
//! - crafted packet streams are refused with their own `vendor.xe.*` code before
//!   the destination is touched, or, after the hold-back, with the destination
//!   reset to its old state;
//! - a device that yields more than the plugin's bound is refused on the source
//!   (`device.state_over_bound`) and left RUNNING;
//! - `plugins`, `describe`, `verify`, `inspect` and `spec/reference/reader.py`
//!   agree on what an Xe stream is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::broker::{restore, save, SaveOptions};
use mdevmig::codec::StreamReader;
use mdevmig::device::SimDevice;
use mdevmig::device::{self, DeviceSpec, MigState, MigrationDevice};
use mdevmig::plugins::Registry;
use mdevmig::Code;
use mdevmig_plugin_api::{
    DeviceInfo, RecordValidator, SectionLayout, SectionSpec, SimOptions, VendorError, VendorPlugin,
    VersionWindow,
};
use mdevmig_xe::format::{encode_descriptor, packet, trailer, Header, PacketType, HEADER_LEN};
use mdevmig_xe::testing::read_stream;
use mdevmig_xe::{estimate_error, Config, XeModel, XePlugin, DEVICE_TYPES, XE_VF_64M};

// ------------------------------------------------------------------ helpers

/// True when python3 with the `cryptography` module can run the clean-room
/// reader; prints a note otherwise.
fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: python3 with the cryptography package is not installed");
    }
    ok
}

/// `spec/reference/reader.py --trust PUB FILE`: its stdout, trimmed, and success.
fn reference_reader(trust: &Path, file: &Path) -> (bool, String) {
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/reference/reader.py");
    let o = Command::new("python3")
        .arg(reader)
        .arg("--trust")
        .arg(trust)
        .arg(file)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mdevmig")
}

/// A temporary directory with a key pair made by `mdevmig keygen` (k.key, k.pub),
/// removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("mdevmig-xe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        let d = Dir(p);
        let out = Command::new(bin())
            .args(["keygen", "--out"])
            .arg(d.0.join("k"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    fn key(&self) -> SigningKeyPair {
        SigningKeyPair::load(&self.path("k.key")).unwrap()
    }

    fn trust(&self) -> TrustStore {
        TrustStore::load(&self.path("k.pub")).unwrap()
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin()).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn digest_line(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("state-digest: "))
        .unwrap_or_else(|| panic!("no state-digest line in {text:?}"))
        .to_string()
}

/// The last line of `text` that is a JSON object.
fn json_of(text: &str) -> serde_json::Value {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {text:?}"));
    serde_json::from_str(line).unwrap()
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A simulated Xe VF as `sim:xe/<ty>,seed=<seed>,<pairs>` opens it, but as a
/// concrete [`SimDevice`] so a test can see its arcs, resets and loaded bytes.
fn sim_xe(ty: &str, seed: u64, pairs: &[(&str, &str)]) -> SimDevice {
    let registry = Registry::builtin();
    let sim = registry.sim("xe").unwrap();
    let (options, config): (BTreeMap<_, _>, BTreeMap<_, _>) = attrs(pairs)
        .into_iter()
        .partition(|(k, _)| sim.sim_options().contains(&k.as_str()));
    let info = registry
        .device_info("xe", ty, &config, Default::default())
        .unwrap();
    let mut attributes = info.attributes.clone();
    attributes.extend(options);
    let model = sim.sim_model(ty, &SimOptions { seed, attributes }).unwrap();
    SimDevice::new(
        info,
        device::FLAG_STOP_COPY | device::FLAG_P2P | device::FLAG_PRE_COPY,
        model,
    )
}

fn open(spec: &str) -> Box<dyn MigrationDevice> {
    device::open(&spec.parse::<DeviceSpec>().unwrap(), &Registry::builtin())
        .unwrap()
        .0
}

/// The raw stream a simulated xe-vf-64m of `seed` and `dirty` pages saves.
fn source_stream(seed: u64, dirty: u64) -> Vec<u8> {
    let mut m = XeModel::new(
        XE_VF_64M,
        &SimOptions {
            seed,
            attributes: attrs(&[("dirty", &dirty.to_string())]),
        },
    )
    .unwrap();
    read_stream(&mut m)
}

/// Every packet of a raw stream: (offset, header).
fn headers(raw: &[u8]) -> Vec<(usize, Header)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let h = Header::decode(raw[at..at + HEADER_LEN].try_into().unwrap());
        out.push((at, h));
        at += HEADER_LEN + usize::try_from(h.size).unwrap();
    }
    assert_eq!(at, raw.len(), "a packet runs past the stream's end");
    out
}

/// The packets of a raw stream, each header and payload.
fn split_packets(raw: &[u8]) -> Vec<Vec<u8>> {
    let hs = headers(raw);
    hs.iter()
        .map(|(at, h)| raw[*at..*at + HEADER_LEN + h.size as usize].to_vec())
        .collect()
}

fn desc() -> Vec<u8> {
    packet(PacketType::DESCRIPTOR, 0, 0, 0, &encode_descriptor(0xe20b, 0))
}

/// A header with `size` as given and `payload` after it (crafted: the two may
/// disagree).
fn raw_packet(ty: u8, tile: u8, gt: u8, offset: u64, size: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Header::new(PacketType(ty), tile, gt, offset, size)
        .encode()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

/// Loads `pieces` into `dev` with one write(2) each, straight through the device
/// layer (no envelope, no broker), and returns the digest after RESUMING -> STOP.
fn load_direct(dev: &mut SimDevice, pieces: &[&[u8]]) -> [u8; 32] {
    dev.set_state(MigState::Resuming).unwrap();
    for p in pieces {
        if !p.is_empty() {
            dev.write_data(p).unwrap();
        }
    }
    dev.set_state(MigState::Stop).unwrap();
    dev.state_digest().unwrap()
}

/// Signs raw state through a `file:` device with the library's save.
fn sign_file(d: &Dir, raw: &[u8], spec_tail: &str, chunk_size: u32, out: &Path) {
    let img = d.path("img.raw");
    std::fs::write(&img, raw).unwrap();
    let mut dev = open(&format!("file:{},{spec_tail}", img.display()));
    let f = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    save(
        &mut *dev,
        &Registry::builtin(),
        &d.key(),
        f,
        &SaveOptions {
            chunk_size,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::remove_file(&img).unwrap();
}

// ------------------------------------------------------- 1. round trips

struct Trip {
    transport: &'static str,
    seed: u64,
    dirty: u64,
    chunk_size: Option<u32>,
    precopy: bool,
}

/// Runs save (CLI) and restore (CLI) for `t`; returns the save's JSON report and
/// the restore's JSON report.
fn cli_trip(d: &Dir, t: &Trip) -> (serde_json::Value, serde_json::Value) {
    let src = format!("sim:xe/xe-vf-64m,seed={},dirty={}", t.seed, t.dirty);
    let dst = format!("sim:xe/xe-vf-64m,seed={}", t.seed + 100);
    let key = d.s("k.key");
    let trust = d.s("k.pub");
    let cs = t.chunk_size.map(|c| c.to_string());
    let mut save_args = vec!["save", "--device", &src, "--key", &key, "--json"];
    if let Some(cs) = &cs {
        save_args.extend(["--chunk-size", cs]);
    }
    if t.precopy {
        save_args.push("--precopy");
    }
    match t.transport {
        "pipe" => {
            save_args.extend(["-o", "-"]);
            let mut s = Command::new(bin())
                .args(&save_args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let r = Command::new(bin())
                .args([
                    "restore", "--device", &dst, "--trust", &trust, "-i", "-", "--json",
                ])
                .stdin(s.stdout.take().unwrap())
                .output()
                .unwrap();
            let s: Output = s.wait_with_output().unwrap();
            let serr = String::from_utf8_lossy(&s.stderr);
            assert_eq!(s.status.code(), Some(0), "save: {serr}");
            assert_eq!(
                r.status.code(),
                Some(0),
                "restore: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            // With -o -, the save's report goes to stderr.
            (json_of(&serr), json_of(&String::from_utf8_lossy(&r.stdout)))
        }
        _ => {
            let file = d.s(&format!("trip-{}.mdm", t.seed));
            save_args.extend(["-o", &file]);
            let (rc, out, err) = run(&save_args);
            assert_eq!(rc, 0, "save: {err}");
            let (rc, rout, err) = run(&[
                "restore", "--device", &dst, "--trust", &trust, "-i", &file, "--json",
            ]);
            assert_eq!(rc, 0, "restore: {err}");
            std::fs::remove_file(&file).unwrap();
            (json_of(&out), json_of(&rout))
        }
    }
}

/// Offsets (in the section) of the packet headers of the stream `sim:xe/xe-vf-64m,
/// seed,dirty` saves that a 4 KiB chunk boundary cuts.
fn cut_headers(seed: u64, dirty: u64) -> Vec<usize> {
    headers(&source_stream(seed, dirty))
        .into_iter()
        .map(|(at, _)| at)
        .filter(|at| at / 4096 != (at + HEADER_LEN - 1) / 4096)
        .collect()
}

#[test]
fn xe_round_trips_through_a_pipe_and_files_match_the_source_digest_above_and_below_the_estimate() {
    let d = Dir::new("trip");
    let bound = Config::new(XE_VF_64M).max_stream_len();
    let trips = [
        // Odd seed: the estimate is too low, the stream ends above it.
        Trip {
            transport: "pipe",
            seed: 3,
            dirty: 1100,
            chunk_size: Some(4096),
            precopy: false,
        },
        // Even seed: the estimate is too high, the stream ends below it.
        Trip {
            transport: "pipe",
            seed: 2,
            dirty: 5,
            chunk_size: None,
            precopy: true,
        },
        Trip {
            transport: "file",
            seed: 4,
            dirty: 600,
            chunk_size: Some(4096),
            precopy: false,
        },
        Trip {
            transport: "file",
            seed: 5,
            dirty: 7,
            chunk_size: None,
            precopy: false,
        },
    ];
    let (mut above, mut below) = (0, 0);
    for t in &trips {
        let name = format!("{} seed={} chunk={:?}", t.transport, t.seed, t.chunk_size);
        if t.chunk_size == Some(4096) {
            // The 4 KiB chunks really cut packet headers: re-sent pages (4120
            // bytes each) move the next header by 24 bytes within a chunk, so
            // every 512 re-sends two of them straddle a chunk boundary.
            let cut = cut_headers(t.seed, t.dirty);
            assert!(cut.len() >= 2, "{name}: only {} headers cut: {cut:?}", cut.len());
        }
        let (s, r) = cli_trip(&d, t);
        let total = s["total_len"].as_u64().unwrap();
        let raw = s["raw_bytes"].as_u64().unwrap();
        let est = s["estimated_bytes"].as_u64().unwrap();
        assert_eq!(raw, total, "{name}: Xe has no framing: {s}");
        // The header declares the bound, the stream carries the final length.
        assert_eq!(s["sections"][0]["streamed"], true, "{name}: {s}");
        assert_eq!(s["sections"][0]["length"].as_u64(), Some(bound), "{name}: {s}");
        assert!(total < bound);
        // MIG_DATA_SIZE misses by exactly the simulated device's documented error.
        let err = estimate_error("xe-vf-64m", t.seed);
        assert_eq!(est as i64 - total as i64, err, "{name}: {s}");
        if t.seed % 2 == 1 {
            assert!(total > est, "{name}: odd seed must end above the estimate: {s}");
            above += 1;
        } else {
            assert!(total < est, "{name}: even seed must end below the estimate: {s}");
            below += 1;
        }
        if t.precopy {
            assert!(s["precopy_bytes"].as_u64().unwrap() > 64 << 20, "{name}: {s}");
        }
        let sd = s["state_digest"].as_str().unwrap();
        assert_eq!(r["state_digest"].as_str(), Some(sd), "{name}: {r}");
        assert_eq!(r["written"].as_u64(), Some(total), "{name}: {r}");
        assert_eq!(r["device_state"], "STOP", "{name}: {r}");
    }
    assert!(above >= 2 && below >= 2);
}

#[test]
fn xe_round_trip_through_the_library_and_a_file_image_reproduces_the_digest() {
    let d = Dir::new("lib");
    let reg = Registry::builtin();
    let mut src = sim_xe("xe-vf-64m", 11, &[("dirty", "9")]);
    let mut stream = Vec::new();
    let rep = save(
        &mut src,
        &reg,
        &d.key(),
        &mut stream,
        &SaveOptions {
            chunk_size: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(src.state().unwrap(), MigState::Stop);
    // The state as of the stop: the simulated guest dirtied 9 pages while the
    // save ran, and the stream re-sends them.
    let digest = rep.state_digest.unwrap();
    assert_eq!(src.state_digest(), Some(digest));
    let mut dst = sim_xe("xe-vf-64m", 12, &[]);
    assert_ne!(dst.state_digest().unwrap(), digest);
    let r = restore(&mut dst, &reg, &d.trust(), &stream[..], &ropts()).unwrap();
    assert_eq!(r.state_digest, Some(digest));
    assert_eq!(r.written, rep.data_bytes);
    assert_eq!(r.final_state, MigState::Stop);
    // A file: destination holds the raw packet stream exactly as the device's
    // data fd carried it ...
    let img = d.path("img.raw");
    let mut fdev = open(&format!("file:{},plugin=xe,type=xe-vf-64m", img.display()));
    let r = restore(&mut *fdev, &reg, &d.trust(), &stream[..], &ropts()).unwrap();
    assert_eq!(r.written, rep.data_bytes);
    let raw = std::fs::read(&img).unwrap();
    assert_eq!(raw.len() as u64, rep.data_bytes);
    let mut twin = XeModel::new(
        XE_VF_64M,
        &SimOptions {
            seed: 11,
            attributes: attrs(&[("dirty", "9")]),
        },
    )
    .unwrap();
    assert!(
        raw == read_stream(&mut twin),
        "the file image is not the device's stream"
    );
    // ... and that image, saved from the file: device, restores the same state.
    let mut fdev = open(&format!("file:{},plugin=xe,type=xe-vf-64m", img.display()));
    let mut again = Vec::new();
    save(&mut *fdev, &reg, &d.key(), &mut again, &SaveOptions::default()).unwrap();
    let mut dst = sim_xe("xe-vf-64m", 13, &[]);
    let r = restore(&mut dst, &reg, &d.trust(), &again[..], &ropts()).unwrap();
    assert_eq!(r.state_digest, Some(digest));
}

// ------------------------------------- 2. headers cut at every chunk offset

/// The envelope's chunk size in these streams.
const CS: usize = 64 << 10;

/// A crafted valid xe-vf-64m stream whose chosen packet headers start `k` bytes
/// before a multiple of [`CS`], so that an envelope chunk boundary falls at
/// `header_start + k`. Filler packets move the next header: re-sends of the
/// first VRAM pages with their own final content (n one-page packets of 4120
/// bytes fix the position modulo 4096, one packet of m pages the rest).
struct Craft {
    out: Vec<u8>,
    targets: Vec<(usize, u8)>,
    /// The first 16 VRAM pages as the first pass sends them.
    pages: Vec<u8>,
}

impl Craft {
    fn push(&mut self, p: &[u8]) {
        self.out.extend_from_slice(p);
    }

    fn filler(&mut self, pages: usize) {
        let p = packet(PacketType::VRAM, 0, 0, 0, &self.pages[..pages * 4096]);
        self.push(&p);
    }

    fn place(&mut self, p: &[u8], k: usize) {
        let want = (CS - k % CS) % CS;
        let d = (want + CS - self.out.len() % CS) % CS;
        assert_eq!(d % 8, 0, "header parity: at {}, k {k}", self.out.len());
        if d != 0 {
            // n one-page fillers and one m-page filler move the stream by
            // 24 (n + 1) + 4096 (n + m). Modulo 4096: 24 (n + 1) = d, that is
            // 3 (n + 1) = d / 8 (mod 512), and 3 * 171 = 1 (mod 512).
            let n = ((d / 8 * 171) % 512 + 511) % 512;
            let rest = (d + 2 * CS - 24 * (n + 1) % CS - 4096 * n % CS) % CS;
            assert_eq!(rest % 4096, 0);
            let m = match (rest / 4096) % 16 {
                0 => 16,
                m => m,
            };
            for _ in 0..n {
                self.filler(1);
            }
            self.filler(m);
        }
        assert_eq!((self.out.len() + k) % CS, 0);
        self.targets.push((self.out.len(), p[1]));
        self.push(p);
    }
}

/// GuC payload `g` with its length brought to `len % 8 == rem` (one dword
/// dropped if needed).
fn guc_len_mod8(mut g: Vec<u8>, rem: usize) -> Vec<u8> {
    if g.len() % 8 != rem {
        g.truncate(g.len() - 4);
    }
    assert_eq!(g.len() % 8, rem);
    g
}

/// The stream for `k`, built from a simulated source's packets.
fn crafted_for(base: &[Vec<u8>], k: usize) -> Craft {
    let of = |ty: PacketType| base.iter().filter(move |p| p[1] == ty.0);
    let vram: Vec<&Vec<u8>> = of(PacketType::VRAM).collect();
    let first = vram[0];
    assert_eq!(first.len(), HEADER_LEN + (64 << 20), "one 64 MiB VRAM packet");
    let resends: Vec<&Vec<u8>> = vram[1..].to_vec();
    // Fillers re-send pages 0..16 with the first pass's content, which is also
    // their final content (none of them is among the dirtied pages).
    for r in &resends {
        assert!(Header::decode(r[..HEADER_LEN].try_into().unwrap()).offset >= 16 * 4096);
    }
    let guc: Vec<&Vec<u8>> = of(PacketType::GUC).collect();
    let mmio: Vec<&Vec<u8>> = of(PacketType::MMIO).collect();
    let ggtt: Vec<&Vec<u8>> = of(PacketType::GGTT).collect();
    assert_eq!((guc.len(), mmio.len(), ggtt.len()), (2, 2, 1));
    let mut c = Craft {
        out: Vec::with_capacity(96 << 20),
        targets: Vec::new(),
        pages: first[HEADER_LEN..HEADER_LEN + 16 * 4096].to_vec(),
    };
    c.push(&desc());
    // GT 0's GuC first: its length sets the stream's residue modulo 8, which
    // the fillers (24 bytes + whole pages) cannot change. After it, the stream is at
    // 40 + 24 + g0; a header k before a boundary needs -k modulo 8.
    let g0 = guc_len_mod8(guc[0][HEADER_LEN..].to_vec(), (8 - k % 8) % 8);
    c.push(&packet(PacketType::GUC, 0, 0, 0, &g0));
    // The first VRAM pass in four 16 MiB packets, each a target.
    let body = &first[HEADER_LEN..];
    for i in 0..4usize {
        let piece = &body[i << 24..(i + 1) << 24];
        c.place(&packet(PacketType::VRAM, 0, 0, (i as u64) << 24, piece), k);
    }
    for r in &resends {
        c.place(r, k);
    }
    c.place(ggtt[0], k);
    c.place(mmio[0], k);
    // GT 1's GuC keeps the residue: a multiple of 8.
    let g1 = guc_len_mod8(guc[1][HEADER_LEN..].to_vec(), 0);
    c.place(&packet(PacketType::GUC, 0, 1, 0, &g1), k);
    c.place(mmio[1], k);
    c.place(&trailer(), k);
    c
}

#[test]
fn xe_headers_cut_by_a_chunk_boundary_at_every_offset_are_accepted_with_equal_digests() {
    let d = Dir::new("cut");
    let reg = Registry::builtin();
    let base = split_packets(&source_stream(21, 3));
    let env = d.path("cut.mdm");
    let mut last = Vec::new();
    // Every packet of a valid Xe stream is a whole number of dwords (24-byte
    // headers; 16-byte descriptor and MMIO; GuC in dwords; GGTT and VRAM in
    // pages), so headers start at multiples of 4 and a chunk boundary (chunk
    // sizes are powers of two from 4 KiB) can only fall at header_start + k for
    // k = 0, 4, ..., 20: each
    // of those goes through the whole envelope path, and so does k = 24 (the
    // boundary right after the header, before the payload; for the trailer,
    // the stream then ends with a full chunk, so the section's end record is
    // not announced by a short chunk).
    for k in (0..=HEADER_LEN).step_by(4) {
        let c = crafted_for(&base, k);
        let types: std::collections::BTreeSet<u8> = c.targets.iter().map(|t| t.1).collect();
        assert_eq!(
            types.len(),
            5,
            "vram, ggtt, mmio, guc, trailer headers all cut: {types:?}"
        );
        // The same bytes loaded in one write, without an envelope: the reference.
        let mut reference = sim_xe("xe-vf-64m", 40, &[]);
        let want = load_direct(&mut reference, &[&c.out]);
        sign_file(&d, &c.out, "plugin=xe,type=xe-vf-64m", CS as u32, &env);
        // The envelope's chunks start at every header_start + k (canonical
        // chunking puts them at multiples of the chunk size; read back for two k).
        if k == 4 || k == HEADER_LEN {
            let mut starts = std::collections::BTreeSet::new();
            let mut r = StreamReader::open(
                std::fs::File::open(&env).unwrap(),
                &d.trust(),
                &Default::default(),
            )
            .unwrap();
            while let Some(ch) = r.next_chunk().unwrap() {
                starts.insert(ch.offset as usize);
            }
            for (at, ty) in &c.targets {
                // (A boundary at the stream's end is the section's end record.)
                assert!(
                    starts.contains(&(at + k)) || at + k == c.out.len(),
                    "k {k}: no chunk starts at {at}+{k} (type {ty})"
                );
            }
        }
        let mut dst = sim_xe("xe-vf-64m", 41, &[]);
        let before = dst.state_digest().unwrap();
        assert_ne!(before, want);
        let rep = restore(
            &mut dst,
            &reg,
            &d.trust(),
            std::fs::File::open(&env).unwrap(),
            &ropts(),
        )
        .unwrap_or_else(|e| panic!("k {k}: {e}"));
        assert_eq!(rep.state_digest, Some(want), "k {k}");
        assert_eq!(rep.written, c.out.len() as u64, "k {k}");
        if k == HEADER_LEN {
            assert_eq!(c.out.len() % CS, 0);
        }
        last = c.out;
    }
    std::fs::remove_file(&env).unwrap();
    // Offsets that are not a multiple of 4 cannot be reached by a chunk boundary
    // of a valid stream; the two parties the broker hands each chunk to still
    // get every one: the plugin's record validator the stream cut at
    // header_start + k of every header, for each k alone, and the device's data
    // fd the stream cut at header_start + k for the three k between two
    // multiples of 4 at once (one load per group, to keep the test quick).
    let plugin = reg.vendor("xe").unwrap();
    let info = sim_xe("xe-vf-64m", 1, &[]).info().clone();
    let spec = plugin.sections(&info, 1).unwrap().remove(0);
    let mut reference = sim_xe("xe-vf-64m", 40, &[]);
    let want = load_direct(&mut reference, &[&last]);
    let hs = headers(&last);
    let cut_at = |ks: &[usize]| -> Vec<&[u8]> {
        let mut cuts: Vec<usize> = hs
            .iter()
            .flat_map(|(at, _)| ks.iter().map(move |k| at + k))
            .filter(|c| *c <= last.len())
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for c in cuts.iter().chain(std::iter::once(&last.len())) {
            pieces.push(&last[prev..*c]);
            prev = *c;
        }
        pieces
    };
    for k in 0..HEADER_LEN {
        let mut v: Box<dyn RecordValidator> = plugin.record_validator(&info, &spec).unwrap();
        for p in cut_at(&[k]) {
            v.feed(p).unwrap_or_else(|e| panic!("k {k}: {e:?}"));
        }
        v.finish().unwrap_or_else(|e| panic!("k {k}: {e:?}"));
    }
    for k0 in (0..HEADER_LEN).step_by(4) {
        let ks = [k0 + 1, k0 + 2, k0 + 3];
        let mut dev = sim_xe("xe-vf-64m", 42, &[]);
        assert_eq!(load_direct(&mut dev, &cut_at(&ks)), want, "k {ks:?}");
    }
}

// ------------------------------------------------ 3. crafted images refused

struct Bad {
    name: &'static str,
    raw: Vec<u8>,
    code: &'static str,
    /// Extra attributes of the source and destination (`gts=1`).
    attrs: &'static [(&'static str, &'static str)],
    /// The bad packet comes after the broker's 8 MiB hold-back.
    touched: bool,
}

fn bad(name: &'static str, code: &'static str, raw: Vec<u8>) -> Bad {
    Bad {
        name,
        raw,
        code,
        attrs: &[],
        touched: false,
    }
}

fn guc(tile: u8, gt: u8) -> Vec<u8> {
    packet(PacketType::GUC, tile, gt, 0, &[0x5a; 256])
}

fn mmio(gt: u8) -> Vec<u8> {
    packet(PacketType::MMIO, 0, gt, 0, &[7; 16])
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn crafted_xe_images_are_refused_each_with_its_own_code_and_the_destination_is_untouched_or_reset() {
    let d = Dir::new("bad");
    let reg = Registry::builtin();
    let vram_hdr =
        |offset: u64, size: u64, payload: usize| raw_packet(6, 0, 0, offset, size, &vec![0u8; payload]);
    // 12 MiB of valid VRAM packets: past the broker's 8 MiB hold-back.
    let mut past_hold_back = vec![desc(), guc(0, 0)];
    for i in 0..12u64 {
        past_hold_back.push(packet(
            PacketType::VRAM,
            0,
            0,
            i << 20,
            &vec![(i as u8) | 1; 1 << 20],
        ));
    }
    let past_hold_back = cat(&past_hold_back);
    let mut complete = source_stream(31, 2);
    let cases = vec![
        bad(
            "size = 2^63",
            "vendor.xe.size_too_large",
            cat(&[desc(), vram_hdr(0, 1 << 63, 4096)]),
        ),
        bad(
            "offset + size overflows",
            "vendor.xe.offset_overflow",
            cat(&[desc(), vram_hdr(u64::MAX - 4095, 8192, 8192)]),
        ),
        bad(
            "VRAM beyond the 64 MiB profile",
            "vendor.xe.out_of_range",
            cat(&[desc(), vram_hdr((64 << 20) - 4096, 8192, 8192)]),
        ),
        bad(
            "unknown packet type 7",
            "vendor.xe.unknown_type",
            cat(&[desc(), raw_packet(7, 0, 0, 0, 16, &[0; 16])]),
        ),
        bad(
            "a 2-tile stream's tile 1 GuC to a 1-tile destination",
            "vendor.xe.unknown_tile",
            cat(&[desc(), guc(0, 0), guc(1, 2)]),
        ),
        Bad {
            attrs: &[("gts", "1")],
            ..bad(
                "a media GT's GuC to a destination without media GTs (gts=1)",
                "vendor.xe.unknown_gt",
                cat(&[desc(), guc(0, 0), guc(0, 1)]),
            )
        },
        bad(
            "missing trailer",
            "vendor.xe.missing_trailer",
            cat(&[desc(), guc(0, 0), mmio(0), guc(0, 1), mmio(1)]),
        ),
        bad(
            "an empty stream (the section is its end record alone)",
            "vendor.xe.missing_trailer",
            Vec::new(),
        ),
        bad(
            "descriptor not first",
            "vendor.xe.descriptor_not_first",
            cat(&[guc(0, 0), desc()]),
        ),
        bad(
            "header version 2",
            "vendor.xe.bad_version",
            cat(&[desc(), {
                let mut g = guc(0, 0);
                g[0] = 2;
                g
            }]),
        ),
        bad(
            "flags set",
            "vendor.xe.bad_flags",
            cat(&[desc(), {
                let mut g = guc(0, 0);
                g[4] = 1;
                g
            }]),
        ),
        bad(
            "descriptor of another device id",
            "vendor.xe.descriptor_mismatch",
            cat(&[
                packet(PacketType::DESCRIPTOR, 0, 0, 0, &encode_descriptor(0xe20c, 0)),
                guc(0, 0),
            ]),
        ),
        bad(
            "second GuC for GT 0",
            "vendor.xe.duplicate",
            cat(&[desc(), guc(0, 0), guc(0, 0)]),
        ),
        bad(
            "VRAM on the media GT",
            "vendor.xe.wrong_gt",
            cat(&[desc(), raw_packet(6, 0, 1, 0, 4096, &[0; 4096])]),
        ),
        bad(
            "VRAM leaving a hole",
            "vendor.xe.vram_gap",
            cat(&[desc(), vram_hdr(8192, 4096, 4096)]),
        ),
        bad(
            "trailer before the rest",
            "vendor.xe.missing_packet",
            cat(&[desc(), guc(0, 0), trailer().to_vec()]),
        ),
        bad(
            "stream ends inside a payload",
            "vendor.xe.truncated",
            cat(&[desc(), raw_packet(5, 0, 0, 0, 256, &[1; 100])]),
        ),
        Bad {
            touched: true,
            ..bad(
                "unknown packet type after 12 MiB of valid VRAM",
                "vendor.xe.unknown_type",
                cat(&[past_hold_back, raw_packet(9, 0, 0, 0, 16, &[0; 16])]),
            )
        },
        Bad {
            touched: true,
            ..bad(
                "a packet after the trailer of a whole 64 MiB stream",
                "vendor.xe.after_trailer",
                {
                    complete.extend_from_slice(&mmio(0));
                    complete
                },
            )
        },
    ];
    let trust = d.s("k.pub");
    let key = d.s("k.key");
    let img = d.s("img.raw");
    let env = d.s("env.mdm");
    for c in cases {
        let name = c.name;
        if !c.touched {
            assert!(c.raw.len() < 8 << 20, "{name}: must fit the hold-back");
        }
        let extra: String = c.attrs.iter().map(|(k, v)| format!(",{k}={v}")).collect();
        std::fs::write(&img, &c.raw).unwrap();
        let _ = std::fs::remove_file(&env);
        // The source does not validate a file: device's bytes: it signs them.
        let src = format!("file:{img},plugin=xe,type=xe-vf-64m{extra}");
        let (rc, out, err) = run(&["save", "--device", &src, "--key", &key, "-o", &env, "--json"]);
        assert_eq!(rc, 0, "{name}: the source refused to sign: {err}");
        assert_eq!(
            json_of(&out)["total_len"].as_u64(),
            Some(c.raw.len() as u64),
            "{name}"
        );
        // The CLI destination: exit 4, the code on stderr and in the JSON.
        let dst = format!("sim:xe/xe-vf-64m,seed=8{extra}");
        let (rc, out, err) = run(&[
            "restore", "--device", &dst, "--trust", &trust, "-i", &env, "--json",
        ]);
        assert_eq!(rc, 4, "{name}: {err}");
        assert!(err.starts_with(&format!("error[{}]", c.code)), "{name}: {err}");
        let v = json_of(&out);
        assert_eq!(v["ok"], false, "{name}: {v}");
        assert_eq!(v["error"]["code"], c.code, "{name}: {v}");
        assert_eq!(v["error"]["exit_status"], 4, "{name}: {v}");
        // The same stream through the library into a device we can look at.
        let mut dev = sim_xe("xe-vf-64m", 8, c.attrs);
        let before = dev.state_digest().unwrap();
        let e = restore(
            &mut dev,
            &reg,
            &d.trust(),
            std::fs::File::open(&env).unwrap(),
            &ropts(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::Vendor(c.code), "{name}: {e}");
        assert_eq!(dev.state().unwrap(), MigState::Running, "{name}: not RUNNING");
        assert_eq!(dev.state_digest().unwrap(), before, "{name}: state changed");
        if c.touched {
            // The hold-back was flushed, but the chunk with the bad packet was
            // refused before it was written.
            assert!(
                dev.bytes_loaded() >= 8 << 20 && dev.bytes_loaded() < c.raw.len() as u64,
                "{name}: {} bytes reached the device",
                dev.bytes_loaded()
            );
            assert!(
                dev.history().contains(&(MigState::Stop, MigState::Resuming)),
                "{name}"
            );
            assert_eq!(dev.resets(), 1, "{name}: the touched destination must be reset");
        } else {
            assert!(
                dev.history().is_empty(),
                "{name}: device touched: {:?}",
                dev.history()
            );
            assert_eq!(dev.bytes_loaded(), 0, "{name}");
            assert_eq!(dev.resets(), 0, "{name}");
        }
    }
}

// --------------------------------------------------- 4. over the bound

/// The xe plugin with its streamed section's bound lowered to `bound`.
struct BoundedXe {
    bound: u64,
}

impl BoundedXe {
    fn lower(&self, mut s: SectionSpec) -> SectionSpec {
        s.max_len = self.bound;
        s
    }
}

impl VendorPlugin for BoundedXe {
    fn vendor(&self) -> &str {
        XePlugin.vendor()
    }
    fn plugin_version(&self) -> &'static str {
        XePlugin.plugin_version()
    }
    fn device_types(&self) -> &'static [&'static str] {
        XePlugin.device_types()
    }
    fn produces(&self, t: &str) -> Option<VersionWindow> {
        XePlugin.produces(t)
    }
    fn loads(&self, t: &str) -> Option<VersionWindow> {
        XePlugin.loads(t)
    }
    fn configure(
        &self,
        t: &str,
        a: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError> {
        XePlugin.configure(t, a)
    }
    fn sections(&self, d: &DeviceInfo, v: u32) -> Result<Vec<SectionSpec>, VendorError> {
        Ok(XePlugin
            .sections(d, v)?
            .into_iter()
            .map(|s| self.lower(s))
            .collect())
    }
    fn layout(&self, d: &DeviceInfo, v: u32, raw_len: u64) -> Result<Vec<SectionLayout>, VendorError> {
        Ok(XePlugin
            .layout(d, v, raw_len)?
            .into_iter()
            .map(|mut l| {
                l.spec = self.lower(l.spec);
                l
            })
            .collect())
    }
    fn validate_section(&self, d: &DeviceInfo, s: &SectionSpec, data: &[u8]) -> Result<(), VendorError> {
        XePlugin.validate_section(d, s, data)
    }
    fn record_validator(
        &self,
        d: &DeviceInfo,
        s: &SectionSpec,
    ) -> Result<Box<dyn RecordValidator>, VendorError> {
        XePlugin.record_validator(d, s)
    }
}

#[test]
fn an_xe_file_device_longer_than_the_bound_is_refused_on_the_source_which_stays_running() {
    let d = Dir::new("bound");
    let reg = Registry::builtin();
    let bound = Config::new(XE_VF_64M).max_stream_len();
    assert!(bound < 256 << 20, "the xe-vf-64m bound is {bound}");
    // Sparse images: `bound` and `bound + 1` bytes of zeros.
    let at = d.path("at-bound.raw");
    let over = d.path("over-bound.raw");
    for (p, len) in [(&at, bound), (&over, bound + 1)] {
        std::fs::File::create(p).unwrap().set_len(len).unwrap();
    }
    // Exactly the bound: signed (the source does not validate), final length = bound.
    let mut dev = open(&format!("file:{},plugin=xe,type=xe-vf-64m", at.display()));
    let rep = save(
        &mut *dev,
        &reg,
        &d.key(),
        std::io::sink(),
        &SaveOptions::default(),
    )
    .unwrap();
    assert_eq!((rep.data_bytes, rep.raw_bytes), (bound, bound));
    // One byte more: device.state_over_bound, and the source is RUNNING again.
    let mut dev = open(&format!("file:{},plugin=xe,type=xe-vf-64m", over.display()));
    let e = save(
        &mut *dev,
        &reg,
        &d.key(),
        std::io::sink(),
        &SaveOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.code, Code::DeviceOverBound, "{e}");
    assert_eq!(dev.state().unwrap(), MigState::Running);
    // The CLI: exit 5 with the code, and no stream left under the output name.
    let src = format!("file:{},plugin=xe,type=xe-vf-64m", over.display());
    let out_path = d.s("over.mdm");
    let (rc, out, err) = run(&[
        "save",
        "--device",
        &src,
        "--key",
        &d.s("k.key"),
        "-o",
        &out_path,
        "--json",
    ]);
    assert_eq!(rc, 5, "{err}");
    assert!(err.starts_with("error[device.state_over_bound]"), "{err}");
    assert_eq!(json_of(&out)["error"]["code"], "device.state_over_bound");
    assert!(!Path::new(&out_path).exists(), "a refused save left {out_path}");
}

#[test]
fn a_simulated_xe_vf_yielding_more_than_a_lowered_bound_is_refused_and_left_running_unchanged() {
    let d = Dir::new("bound-sim");
    let exact = XeModel::new(
        XE_VF_64M,
        &SimOptions {
            seed: 6,
            attributes: attrs(&[("dirty", "0")]),
        },
    )
    .unwrap()
    .exact_len();
    // dirty=0: the simulated guest writes no page while the save runs, so a
    // failed save must leave the source's state digest exactly as it was.
    let dev = |seed| sim_xe("xe-vf-64m", seed, &[("dirty", "0")]);
    for (bound, ok) in [(exact - 1, false), (exact - 4096, false), (exact, true)] {
        let reg = Registry::with(vec![Box::new(BoundedXe { bound })]);
        for precopy in [false, true] {
            let mut src = dev(6);
            let digest = src.state_digest().unwrap();
            let mut out = Vec::new();
            let r = save(
                &mut src,
                &reg,
                &d.key(),
                &mut out,
                &SaveOptions {
                    precopy,
                    ..Default::default()
                },
            );
            let what = format!("bound {bound} (stream {exact}), precopy {precopy}");
            if ok {
                let rep = r.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(rep.data_bytes, exact, "{what}");
                assert_eq!(rep.header.sections[0].length, bound, "{what}");
                // A stream that fills its bound exactly restores.
                let mut dst = dev(7);
                let rr = restore(&mut dst, &Registry::builtin(), &d.trust(), &out[..], &ropts()).unwrap();
                assert_eq!(rr.state_digest, Some(digest), "{what}");
            } else {
                let e = r.unwrap_err();
                assert_eq!(e.code, Code::DeviceOverBound, "{what}: {e}");
                assert_eq!(src.state().unwrap(), MigState::Running, "{what}");
                assert_eq!(
                    src.state_digest().unwrap(),
                    digest,
                    "{what}: source state changed"
                );
                assert!(
                    src.history().contains(&(MigState::Stop, MigState::StopCopy))
                        || src.history().contains(&(MigState::Running, MigState::PreCopy))
                        || src
                            .history()
                            .contains(&(MigState::RunningP2p, MigState::PreCopyP2p)),
                    "{what}: {:?}",
                    src.history()
                );
            }
        }
    }
}

#[test]
fn a_streamed_section_that_fills_its_bound_with_full_chunks_is_signed_and_one_byte_more_is_refused() {
    let d = Dir::new("bound-edge");
    let bound = 16 * 4096u64;
    let reg = Registry::with(vec![Box::new(BoundedXe { bound })]);
    let img = d.path("img.raw");
    let env = d.path("edge.mdm");
    // Exactly the bound, a multiple of the chunk size: the last chunk is full,
    // the section's end is due because it reached its bound.
    let bytes: Vec<u8> = (0..bound).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&img, &bytes).unwrap();
    let spec = format!("file:{},plugin=xe,type=xe-vf-64m", img.display());
    let (mut dev, _) = device::open(&spec.parse::<DeviceSpec>().unwrap(), &reg).unwrap();
    let mut out = Vec::new();
    let opts = SaveOptions {
        chunk_size: 4096,
        ..Default::default()
    };
    let rep = save(&mut *dev, &reg, &d.key(), &mut out, &opts).unwrap();
    assert_eq!((rep.data_bytes, rep.header.sections[0].length), (bound, bound));
    let mut r = StreamReader::open(&out[..], &d.trust(), &Default::default()).unwrap();
    assert_eq!(r.verify_to_end().unwrap(), 16);
    assert_eq!(r.received(), bound);
    std::fs::write(&env, &out).unwrap();
    if python_ready() {
        let (ok, text) = reference_reader(&d.path("k.pub"), &env);
        assert!(ok && text == "ok", "{text}");
    }
    // The destination's own (real) plugin refuses the bytes: they are not Xe
    // packets.
    let mut dst = sim_xe("xe-vf-64m", 3, &[]);
    let e = restore(&mut dst, &Registry::builtin(), &d.trust(), &out[..], &ropts()).unwrap_err();
    assert_eq!(e.code, Code::Vendor("vendor.xe.bad_version"), "{e}");
    assert!(dst.history().is_empty());
    // One byte more.
    std::fs::write(&img, [&bytes[..], &[0u8][..]].concat()).unwrap();
    let (mut dev, _) = device::open(&spec.parse::<DeviceSpec>().unwrap(), &reg).unwrap();
    let e = save(&mut *dev, &reg, &d.key(), std::io::sink(), &opts).unwrap_err();
    assert_eq!(e.code, Code::DeviceOverBound, "{e}");
    assert_eq!(dev.state().unwrap(), MigState::Running);
    // A header that declares a larger bound than the destination's plugin
    // allows is refused before any chunk.
    let real = Config::new(XE_VF_64M).max_stream_len();
    let raised = Registry::with(vec![Box::new(BoundedXe { bound: real + 1 })]);
    let mut src = SimDevice::new(
        sim_xe("xe-vf-64m", 4, &[]).info().clone(),
        device::FLAG_STOP_COPY,
        Box::new(
            XeModel::new(
                XE_VF_64M,
                &SimOptions {
                    seed: 4,
                    attributes: attrs(&[("dirty", "1")]),
                },
            )
            .unwrap(),
        ),
    );
    let mut out = Vec::new();
    save(&mut src, &raised, &d.key(), &mut out, &SaveOptions::default()).unwrap();
    let mut dst = sim_xe("xe-vf-64m", 5, &[]);
    let e = restore(&mut dst, &Registry::builtin(), &d.trust(), &out[..], &ropts()).unwrap_err();
    assert_eq!(e.code, Code::SectionTooLarge, "{e}");
    assert!(dst.history().is_empty());
}

// ------------------------------------------------ 5. plugins and describe

#[test]
fn plugins_lists_xe_as_streamed_and_every_listed_type_works_as_a_sim_device() {
    let (rc, out, err) = run(&["plugins", "--json"]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let xe = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["vendor"] == "xe")
        .unwrap_or_else(|| panic!("no xe plugin in {v}"))
        .clone();
    assert_eq!(xe["stream"], "streamed", "{xe}");
    assert_eq!(xe["simulated"], true, "{xe}");
    let types = xe["device_types"].as_array().unwrap();
    let names: Vec<&str> = types.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, DEVICE_TYPES, "{xe}");
    for t in types {
        let name = t["name"].as_str().unwrap();
        let a = t["attributes"].as_object().unwrap_or_else(|| panic!("{t}"));
        let keys: Vec<&str> = a.keys().map(String::as_str).collect();
        assert_eq!(keys, ["devid", "gts", "revid", "tiles"], "{t}");
        assert_eq!(t["stream"], "streamed", "{t}");
        let sim = t["sim"].as_str().unwrap();
        assert_eq!(sim, format!("sim:xe/{name}"));
        let (rc, out, err) = run(&["describe", "--device", sim, "--json"]);
        assert_eq!(rc, 0, "{sim}: {err}");
        let dsc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(dsc["vendor"], "xe", "{dsc}");
        assert_eq!(dsc["device_type"], name, "{dsc}");
    }
    // One whole round trip of the listed spec of the smallest type.
    let d = Dir::new("plugins");
    let sim = types[0]["sim"].as_str().unwrap();
    assert_eq!(sim, "sim:xe/xe-vf-64m");
    let s = d.s("s.mdm");
    let (rc, out, err) = run(&[
        "save",
        "--device",
        &format!("{sim},dirty=2"),
        "--key",
        &d.s("k.key"),
        "-o",
        &s,
    ]);
    assert_eq!(rc, 0, "{err}");
    let want = digest_line(&out);
    let (rc, out, err) = run(&[
        "restore",
        "--device",
        &format!("{sim},seed=77"),
        "--trust",
        &d.s("k.pub"),
        "-i",
        &s,
    ]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(digest_line(&out), want);
}

// ------------------------------------------------ 6. verify and inspect

#[test]
fn verify_and_inspect_report_the_bytes_an_xe_stream_carried_and_the_reference_reader_accepts_it() {
    let d = Dir::new("verify");
    let s = d.s("s.mdm");
    let (rc, out, err) = run(&[
        "save",
        "--device",
        "sim:xe/xe-vf-64m,seed=9,dirty=3",
        "--key",
        &d.s("k.key"),
        "-o",
        &s,
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    let sv = json_of(&out);
    let total = sv["total_len"].as_u64().unwrap();
    let bound = Config::new(XE_VF_64M).max_stream_len();
    assert!(total > 64 << 20 && total < bound);
    let (rc, out, err) = run(&["verify", &s, "--trust", &d.s("k.pub"), "--json"]);
    assert_eq!(rc, 0, "{err}");
    let v = json_of(&out);
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(
        v["total_len"].as_u64(),
        Some(total),
        "verify must report the carried bytes: {v}"
    );
    assert_eq!(v["sections"][0]["length"].as_u64(), Some(bound), "{v}");
    assert_eq!(v["sections"][0]["streamed"], true, "{v}");
    let (rc, out, err) = run(&["verify", &s, "--trust", &d.s("k.pub")]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains(&format!(" {total} bytes")), "{out}");
    assert!(!out.contains(&bound.to_string()), "{out}");
    // inspect without trust: the end record and the trailer say the same.
    let (rc, out, err) = run(&["inspect", &s, "--json"]);
    assert_eq!(rc, 0, "{err}");
    let i = json_of(&out);
    assert_eq!(i["data_bytes"].as_u64(), Some(total), "{i}");
    assert_eq!(i["section_ends"][0]["length"].as_u64(), Some(total), "{i}");
    assert_eq!(i["trailer"]["total_len"].as_u64(), Some(total), "{i}");
    // The clean-room reader.
    if python_ready() {
        let (ok, text) = reference_reader(&d.path("k.pub"), Path::new(&s));
        assert!(ok, "{text}");
        assert_eq!(text, "ok");
    }
}

/// Restore options that validate in the real sandbox, with this build's `mdevmig`
/// as the child.
fn ropts() -> mdevmig::broker::RestoreOptions {
    mdevmig_testkit::sandboxed_restore(env!("CARGO_BIN_EXE_mdevmig"))
}
