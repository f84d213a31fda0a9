//! The `xe_validator_splits` fuzz target: an Xe VF migration packet stream fed
//! to `mdevmig_xe::StreamValidator` whole and in pieces whose sizes come from the
//! input (1-byte pieces, empty pieces, splits inside the 24-byte packet header,
//! pieces of many KiB). The outcome (acceptance, or the exact error code) must not
//! depend on the split; after a refusal every later `feed` and `finish` repeats the
//! refusal; every code is one of `mdevmig_xe::codes::TABLE`. For an offered device
//! type the plugin's record validator (`XePlugin::record_validator`, what the
//! broker runs) must agree with the validator.
//!
//! Kept in the test kit so that `tests/mutation.rs` can run it to replay regressions and write seeds. Input:
//!
//! ```text
//! select u8   bit 0: mutate (else raw); bit 1: two tiles; bit 2: one GT per
//!             tile (else two); bit 3 (raw only): xe-vf-64m (else xe-vf-tiny)
//! n u8        then n split bytes, cycled (at most 4096 pieces, then the rest
//!             whole): 0xff an empty piece, below 0xc0 1 + b % 32 bytes, else
//!             1 + (b & 0x3f) * 4099
//! rest        raw: the stream itself.
//!             mutate: 6-byte operations on a valid xe-vf-tiny stream for the
//!             configuration (see `mutate`)
//! ```
//!
//! Memory: the validator holds a 24-byte header and at most a 256-byte
//! descriptor whatever the stream says; the fuzzer's `-malloc_limit_mb` catches an
//! allocation sized by a stream field.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};
use mdevmig_xe::{codes, testing, Config, StreamValidator, XePlugin, HEADER_LEN, XE_VF_64M, XE_VF_TINY};

/// Selector bit: mutate a valid stream (else the input is the stream).
pub const MUTATE: u8 = 1;

/// The simulated device's seed for the default configuration's stream (313 KB:
/// 13 packets, two of them re-sent dirty pages).
pub const SIM_SEED: u64 = 10;

/// The destination configuration a selector names.
pub fn config(select: u8) -> Config {
    let ty = if select & MUTATE == 0 && select & 8 != 0 {
        XE_VF_64M
    } else {
        XE_VF_TINY
    };
    let mut c = Config::new(ty);
    c.tiles = 1 + (select >> 1 & 1);
    c.gts = if select & 4 != 0 { 1 } else { 2 };
    c
}

/// A valid xe-vf-tiny stream for `config` (tiles and GTs): the simulated device's
/// save (with VRAM re-sends) for the default configuration, the packet builder's
/// stream for the others. Built once per configuration.
pub fn base(config: &Config) -> &'static [u8] {
    static BASES: OnceLock<Vec<(u8, u8, Vec<u8>)>> = OnceLock::new();
    let all = BASES.get_or_init(|| {
        let mut v = Vec::new();
        for tiles in [1u8, 2] {
            for gts in [1u8, 2] {
                let mut c = Config::new(XE_VF_TINY);
                c.tiles = tiles;
                c.gts = gts;
                let s = if c == Config::new(XE_VF_TINY) {
                    testing::valid_stream(XE_VF_TINY.name(), SIM_SEED)
                } else {
                    testing::stream(&c, 1)
                };
                v.push((tiles, gts, s));
            }
        }
        v
    });
    all.iter()
        .find(|(t, g, _)| *t == config.tiles && *g == config.gts)
        .map_or(&[][..], |(_, _, s)| s.as_slice())
}

/// Packet extents (start, end) of `s`, walking headers while they fit.
pub fn packets(s: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(h) = s.get(pos..pos.saturating_add(HEADER_LEN)) {
        let size = u64::from_le_bytes(h[16..24].try_into().unwrap_or([0; 8]));
        let Some(end) = usize::try_from(size)
            .ok()
            .and_then(|n| n.checked_add(pos + HEADER_LEN))
            .filter(|e| *e <= s.len())
        else {
            break;
        };
        out.push((pos, end));
        pos = end;
    }
    out
}

/// Header fields: (offset in the header, width).
pub const FIELDS: [(usize, usize); 7] = [(0, 1), (1, 1), (2, 1), (3, 1), (4, 4), (8, 8), (16, 8)];

/// The values a header field is set to (`orig` is its value, `size` the packet's).
pub fn field_value(pick: u8, orig: u64, size: u64, extra: u8) -> u64 {
    match pick % 16 {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 7,
        4 => 0xff,
        5 => 1 << 63,
        6 => u64::MAX,
        7 => 512 << 20,
        8 => (512 << 20) + 1,
        9 => orig.wrapping_add(1),
        10 => orig.wrapping_sub(1),
        11 => orig.wrapping_add(4096),
        12 => orig.wrapping_sub(4096),
        13 => u64::MAX - size.saturating_sub(1),
        14 => u64::from(extra),
        _ => orig ^ (1 << (extra % 64)),
    }
}

/// Writes `value` into field `field` (of [`FIELDS`]) of the packet header at `at`.
pub fn put_field(s: &mut [u8], at: usize, field: usize, value: u64) {
    let (off, width) = FIELDS[field % FIELDS.len()];
    let bytes = value.to_le_bytes();
    if let Some(dst) = s.get_mut(at + off..at + off + width) {
        dst.copy_from_slice(&bytes[..width]);
    }
}

fn field_of(s: &[u8], at: usize, field: usize) -> u64 {
    let (off, width) = FIELDS[field % FIELDS.len()];
    let mut v = [0u8; 8];
    if let Some(src) = s.get(at + off..at + off + width) {
        v[..width].copy_from_slice(src);
    }
    u64::from_le_bytes(v)
}

/// Applies 6-byte operations `[op, a, b, c, d, e]` to `s` (op modulo 6): 0 xor
/// the byte at `a | b << 8 | c << 16` with `d`; 1 set field `b` of packet `a`
/// ([`FIELDS`]) to [`field_value`]`(c, .., d)`; 2 cut the stream at
/// `a | b << 8 | c << 16`; 3 remove packet `a`; 4 insert a copy of packet `a`
/// before packet `b`; 5 append a copy of packet `a` (`d` even) or `d % 32` bytes
/// of value `e`. Packets are found again after every operation.
pub fn mutate(s: &mut Vec<u8>, ops: &[u8]) {
    for op in ops.chunks_exact(6).take(64) {
        let [kind, a, b, c, d, e] = [op[0], op[1], op[2], op[3], op[4], op[5]];
        let at = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
        let p = packets(s);
        let nth = |i: u8| p.get(usize::from(i) % p.len().max(1)).copied();
        match kind % 6 {
            0 => {
                let len = s.len();
                if len > 0 {
                    s[at % len] ^= d;
                }
            }
            1 => {
                if let Some((start, end)) = nth(a) {
                    let field = usize::from(b) % FIELDS.len();
                    let orig = field_of(s, start, field);
                    let size = u64::try_from(end - start - HEADER_LEN).unwrap_or(0);
                    put_field(s, start, field, field_value(c, orig, size, d));
                }
            }
            2 => {
                let len = s.len();
                s.truncate(at % (len + 1));
            }
            3 => {
                if let Some((start, end)) = nth(a) {
                    s.drain(start..end);
                }
            }
            4 => {
                if let (Some((start, end)), Some((to, _))) = (nth(a), nth(b)) {
                    let copy = s[start..end].to_vec();
                    s.splice(to..to, copy);
                }
            }
            _ => {
                if d % 2 == 0 {
                    if let Some((start, end)) = nth(a) {
                        let copy = s[start..end].to_vec();
                        s.extend_from_slice(&copy);
                    }
                } else {
                    s.extend(std::iter::repeat_n(e, usize::from(d % 32)));
                }
            }
        }
    }
}

/// Piece sizes from split bytes (see the module docs): 0 for an empty piece.
pub fn piece_size(b: u8) -> usize {
    match b {
        0xff => 0,
        0..=0xbf => 1 + usize::from(b % 32),
        _ => 1 + usize::from(b & 0x3f) * 4099,
    }
}

/// Most pieces a stream is cut into; the rest is fed whole (a split byte above
/// 0xc0 moves the small pieces further into the stream).
pub const MAX_PIECES: usize = 4096;

/// Validates `stream` for `config`, fed in pieces of the sizes `splits` gives
/// (cycled, at most [`MAX_PIECES`] of them; the whole stream in one piece when
/// `splits` is empty). The outcome: acceptance or the first refusal's code.
/// Checks that a refusal is final.
pub fn validate(config: &Config, stream: &[u8], splits: &[u8]) -> Result<(), &'static str> {
    let mut v = StreamValidator::new(config);
    let mut rest = stream;
    let mut i = 0usize;
    loop {
        let n = match splits.get(i % splits.len().max(1)) {
            Some(b) if i < MAX_PIECES => piece_size(*b),
            _ => rest.len(),
        };
        i = i.wrapping_add(1);
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        if let Err(e) = v.feed(piece) {
            assert_eq!(
                v.feed(b"\x01").map_err(|e| e.code),
                Err(e.code),
                "a feed after a refusal did not repeat it"
            );
            assert_eq!(
                v.finish().map_err(|e| e.code),
                Err(e.code),
                "finish after a refusal did not repeat it"
            );
            return Err(e.code);
        }
        if rest.is_empty() {
            break;
        }
    }
    v.finish().map_err(|e| e.code)
}

/// Validates through the plugin's record validator for an offered device type
/// (what the broker runs), whole.
pub fn validate_via_plugin(config: &Config, stream: &[u8]) -> Option<Result<(), &'static str>> {
    if config.ty != XE_VF_64M {
        return None;
    }
    let device = DeviceInfo {
        vendor: "xe".into(),
        device_type: config.ty.name().into(),
        attributes: BTreeMap::from([
            ("tiles".to_owned(), config.tiles.to_string()),
            ("gts".to_owned(), config.gts.to_string()),
        ]),
        ..DeviceInfo::default()
    };
    let plugin = XePlugin::new();
    let spec = XePlugin::section(*config);
    let mut v = plugin.record_validator(&device, &spec).ok()?;
    Some(v.feed(stream).and_then(|()| v.finish()).map_err(|e| e.code))
}

/// True when `code` is one of the Xe plugin's documented codes.
pub fn documented(code: &str) -> bool {
    codes::TABLE.iter().any(|(c, _)| *c == code)
}

/// The fuzz target.
pub fn run(data: &[u8]) {
    let Some((&select, rest)) = data.split_first() else {
        return;
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let (splits, body) = rest.split_at(usize::from(n).min(rest.len()));
    let config = config(select);
    let owned;
    let stream: &[u8] = if select & MUTATE != 0 {
        let mut s = base(&config).to_vec();
        mutate(&mut s, body);
        owned = s;
        &owned
    } else {
        body
    };
    let whole = validate(&config, stream, &[]);
    if let Err(code) = whole {
        assert!(documented(code), "undocumented Xe code {code}");
    }
    let split = validate(&config, stream, splits);
    assert_eq!(
        split, whole,
        "the outcome depends on the split (split bytes {splits:02x?})"
    );
    let bytewise = validate(&config, stream.get(..4096).unwrap_or(stream), &[0]);
    let whole_prefix = validate(&config, stream.get(..4096).unwrap_or(stream), &[]);
    assert_eq!(bytewise, whole_prefix, "1-byte pieces change the outcome");
    if let Some(via) = validate_via_plugin(&config, stream) {
        assert_eq!(
            via, whole,
            "the plugin's record validator and StreamValidator disagree"
        );
    }
}
