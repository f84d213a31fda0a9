//! The streaming validator: valid streams in every split, and one crafted stream
//! per refusal, each refused with its own code.

use mdevmig_xe::format::{encode_descriptor, packet, trailer, Header, PacketType, HEADER_LEN};
use mdevmig_xe::testing::packets;
use mdevmig_xe::{codes, Config, StreamValidator, XE_VF_TINY};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn tiny() -> Config {
    Config::new(XE_VF_TINY)
}

fn two_tiles() -> Config {
    Config {
        tiles: 2,
        ..Config::new(XE_VF_TINY)
    }
}

/// Feeds `pieces` then finishes; the first error.
fn run(config: &Config, pieces: &[&[u8]]) -> Result<(), &'static str> {
    let mut v = StreamValidator::new(config);
    for p in pieces {
        v.feed(p).map_err(|e| e.code)?;
    }
    v.finish().map_err(|e| e.code)
}

fn whole(config: &Config, stream: &[u8]) -> Result<(), &'static str> {
    run(config, &[stream])
}

/// Packet `i`'s header, changed by `f`.
fn edit(mut pkts: Vec<Vec<u8>>, i: usize, f: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut h = Header::decode(pkts[i][..HEADER_LEN].try_into().unwrap());
    f(&mut h);
    pkts[i][..HEADER_LEN].copy_from_slice(&h.encode());
    pkts.concat()
}

fn index_of(pkts: &[Vec<u8>], ty: PacketType) -> usize {
    pkts.iter().position(|p| p[1] == ty.0).unwrap()
}

#[test]
fn valid_streams_are_accepted() {
    for config in [tiny(), two_tiles(), Config { gts: 1, ..tiny() }] {
        let s = packets(&config, 5).concat();
        assert_eq!(whole(&config, &s), Ok(()), "{config:?}");
    }
}

/// Offsets of every header in `pkts` joined.
fn header_offsets(pkts: &[Vec<u8>]) -> Vec<usize> {
    let mut at = 0;
    pkts.iter()
        .map(|p| {
            let o = at;
            at += p.len();
            o
        })
        .collect()
}

#[test]
fn any_split_gives_the_same_result() {
    let config = two_tiles();
    let pkts = packets(&config, 9);
    let s = pkts.concat();
    // Two pieces, cut at every byte around every header.
    for h in header_offsets(&pkts) {
        for cut in h.saturating_sub(2)..=(h + HEADER_LEN + 2).min(s.len()) {
            assert_eq!(run(&config, &[&s[..cut], &s[cut..]]), Ok(()), "cut at {cut}");
        }
    }
    // Random splits, including empty pieces.
    let mut rng = Rng(0x1234_5678);
    for _ in 0..200 {
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < s.len() {
            let cap = if rng.next().is_multiple_of(4) { 30 } else { 40_000 };
            let n = rng.below(cap);
            let end = (at + n).min(s.len());
            pieces.push(&s[at..end]);
            at = end;
        }
        assert_eq!(run(&config, &pieces), Ok(()));
    }
    // Byte by byte.
    let bytes: Vec<&[u8]> = s.chunks(1).collect();
    assert_eq!(run(&config, &bytes), Ok(()));
}

#[test]
fn a_bad_stream_is_refused_the_same_whatever_the_split() {
    let config = tiny();
    let pkts = packets(&config, 2);
    let bad = edit(pkts.clone(), 2, |h| h.gt_id = 7);
    let want = whole(&config, &bad);
    assert_eq!(want, Err(codes::UNKNOWN_GT));
    for h in header_offsets(&pkts) {
        for cut in h.saturating_sub(1)..=(h + HEADER_LEN + 1).min(bad.len()) {
            assert_eq!(run(&config, &[&bad[..cut], &bad[cut..]]), want, "cut at {cut}");
        }
    }
    // After a refusal every call repeats it.
    let mut v = StreamValidator::new(&config);
    assert_eq!(v.feed(&bad).unwrap_err().code, codes::UNKNOWN_GT);
    assert_eq!(v.feed(&[]).unwrap_err().code, codes::UNKNOWN_GT);
    assert_eq!(v.finish().unwrap_err().code, codes::UNKNOWN_GT);
}

#[test]
fn crafted_headers_are_refused_each_with_its_own_code() {
    let config = two_tiles();
    let pkts = packets(&config, 1);
    let vram = index_of(&pkts, PacketType::VRAM);
    let guc = index_of(&pkts, PacketType::GUC);
    let mmio = index_of(&pkts, PacketType::MMIO);
    let ggtt = index_of(&pkts, PacketType::GGTT);
    let per_tile = config.vram_per_tile();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "version 2",
            edit(pkts.clone(), vram, |h| h.version = 2),
            codes::BAD_VERSION,
        ),
        (
            "type 0",
            edit(pkts.clone(), vram, |h| h.ty = PacketType(0)),
            codes::UNKNOWN_TYPE,
        ),
        (
            "type 7",
            edit(pkts.clone(), guc, |h| h.ty = PacketType(7)),
            codes::UNKNOWN_TYPE,
        ),
        (
            "flags",
            edit(pkts.clone(), mmio, |h| h.flags = 1),
            codes::BAD_FLAGS,
        ),
        (
            "size 2^63",
            edit(pkts.clone(), vram, |h| h.size = 1 << 63),
            codes::SIZE_TOO_LARGE,
        ),
        (
            "size 2^64-1",
            edit(pkts.clone(), guc, |h| h.size = u64::MAX),
            codes::SIZE_TOO_LARGE,
        ),
        (
            "offset + size overflows",
            edit(pkts.clone(), vram, |h| h.offset = u64::MAX - 4095),
            codes::OFFSET_OVERFLOW,
        ),
        (
            "VRAM beyond the tile's VRAM",
            edit(pkts.clone(), vram, |h| h.offset = per_tile),
            codes::OUT_OF_RANGE,
        ),
        (
            "GuC beyond 8 MiB",
            edit(pkts.clone(), guc, |h| h.size = (8 << 20) + 4),
            codes::OUT_OF_RANGE,
        ),
        (
            "GGTT beyond the table",
            edit(pkts.clone(), ggtt, |h| h.size += 8),
            codes::OUT_OF_RANGE,
        ),
        (
            "tile 2",
            edit(pkts.clone(), vram, |h| h.tile_id = 2),
            codes::UNKNOWN_TILE,
        ),
        (
            "GT 4",
            edit(pkts.clone(), guc, |h| h.gt_id = 4),
            codes::UNKNOWN_GT,
        ),
        (
            "GT of another tile",
            edit(pkts.clone(), guc, |h| h.gt_id = 2),
            codes::GT_NOT_ON_TILE,
        ),
        (
            "VRAM on the media GT",
            edit(pkts.clone(), vram, |h| h.gt_id = 1),
            codes::WRONG_GT,
        ),
        (
            "descriptor on GT 1",
            edit(pkts.clone(), 0, |h| h.gt_id = 1),
            codes::BAD_IDS,
        ),
        (
            "GuC at offset 4",
            edit(pkts.clone(), guc, |h| h.offset = 4),
            codes::BAD_OFFSET,
        ),
        (
            "MMIO of 12 bytes",
            edit(pkts.clone(), mmio, |h| h.size = 12),
            codes::BAD_SIZE,
        ),
        (
            "GGTT short",
            edit(pkts.clone(), ggtt, |h| h.size -= 8),
            codes::BAD_SIZE,
        ),
        (
            "GuC not dwords",
            edit(pkts.clone(), guc, |h| h.size = 6),
            codes::BAD_SIZE,
        ),
        (
            "VRAM unaligned",
            edit(pkts.clone(), vram, |h| h.offset = 512),
            codes::UNALIGNED,
        ),
        (
            "VRAM hole",
            edit(pkts.clone(), vram, |h| h.offset = 8192),
            codes::VRAM_GAP,
        ),
        (
            "descriptor not first",
            [pkts[1..].concat()].concat(),
            codes::DESCRIPTOR_NOT_FIRST,
        ),
        (
            "wrong device id",
            [
                packet(PacketType::DESCRIPTOR, 0, 0, 0, &encode_descriptor(0xe20c, 0)),
                pkts[1..].concat(),
            ]
            .concat(),
            codes::DESCRIPTOR_MISMATCH,
        ),
        (
            "wrong revision",
            [
                packet(PacketType::DESCRIPTOR, 0, 0, 0, &encode_descriptor(0xe20b, 1)),
                pkts[1..].concat(),
            ]
            .concat(),
            codes::DESCRIPTOR_MISMATCH,
        ),
        (
            "empty descriptor",
            [packet(PacketType::DESCRIPTOR, 0, 0, 0, &[]), pkts[1..].concat()].concat(),
            codes::BAD_DESCRIPTOR,
        ),
        (
            "descriptor above its cap",
            [
                packet(PacketType::DESCRIPTOR, 0, 0, 0, &[0; 260]),
                pkts[1..].concat(),
            ]
            .concat(),
            codes::OUT_OF_RANGE,
        ),
    ];
    for (what, stream, code) in cases {
        assert_eq!(whole(&config, &stream), Err(code), "{what}");
    }
}

#[test]
fn order_duplicates_and_the_trailer() {
    let config = tiny();
    let pkts = packets(&config, 3);
    let n = pkts.len();
    let body = pkts[..n - 1].concat();
    let guc = index_of(&pkts, PacketType::GUC);
    let vram = index_of(&pkts, PacketType::VRAM);
    // Missing trailer, truncated inside a header and inside a payload.
    assert_eq!(whole(&config, &body), Err(codes::MISSING_TRAILER));
    assert_eq!(whole(&config, &[]), Err(codes::MISSING_TRAILER));
    assert_eq!(whole(&config, &body[..body.len() - 1]), Err(codes::TRUNCATED));
    let s = pkts.concat();
    assert_eq!(whole(&config, &s[..s.len() - 5]), Err(codes::TRUNCATED));
    // Anything after the trailer: a whole packet, one byte, an empty packet.
    let after = [s.clone(), pkts[guc].clone()].concat();
    assert_eq!(whole(&config, &after), Err(codes::AFTER_TRAILER));
    assert_eq!(
        whole(&config, &[s.clone(), vec![0]].concat()),
        Err(codes::AFTER_TRAILER)
    );
    assert_eq!(run(&config, &[&s, &[1]]), Err(codes::AFTER_TRAILER));
    assert_eq!(
        whole(&config, &[s.clone(), trailer().to_vec()].concat()),
        Err(codes::AFTER_TRAILER)
    );
    // Duplicates where the driver sends each resource once.
    let mut dup = pkts.clone();
    dup.insert(guc + 1, pkts[guc].clone());
    assert_eq!(whole(&config, &dup.concat()), Err(codes::DUPLICATE));
    let mut dup = pkts.clone();
    dup.insert(1, pkts[0].clone());
    assert_eq!(whole(&config, &dup.concat()), Err(codes::DUPLICATE));
    // A VRAM re-send is not a duplicate.
    let mut resend = pkts.clone();
    resend.insert(n - 1, pkts[vram].clone());
    resend.insert(n - 1, packet(PacketType::VRAM, 0, 0, 4096, &[7; 4096]));
    assert_eq!(whole(&config, &resend.concat()), Ok(()));
    // The trailer before everything was sent.
    let mut early = pkts.clone();
    early.remove(guc);
    assert_eq!(whole(&config, &early.concat()), Err(codes::MISSING_PACKET));
    let mut short_vram = pkts.clone();
    short_vram.remove(n - 2);
    assert_eq!(whole(&config, &short_vram.concat()), Err(codes::MISSING_PACKET));
    // The trailer with a payload or an offset.
    let t = n - 1;
    assert_eq!(
        whole(&config, &edit(pkts.clone(), t, |h| h.offset = 1)),
        Err(codes::BAD_OFFSET)
    );
    assert_eq!(
        whole(&config, &edit(pkts.clone(), t, |h| h.tile_id = 1)),
        Err(codes::BAD_IDS)
    );
    let mut with_body = pkts.clone();
    with_body[t] = packet(PacketType::TRAILER, 0, 0, 0, &[0; 4]);
    assert_eq!(whole(&config, &with_body.concat()), Err(codes::BAD_SIZE));
}

#[test]
fn re_sends_are_bounded() {
    let config = tiny();
    let pkts = packets(&config, 3);
    let n = pkts.len();
    let mut many = pkts[..n - 1].to_vec();
    let page = packet(PacketType::VRAM, 0, 0, 0, &[1; 4096]);
    // The bound: every resource at its maximum plus twice the VRAM in re-sends.
    let room = config.max_stream_len() - pkts.concat().len() as u64;
    assert!(room > config.resend_allowance());
    for _ in 0..room / (4096 + 24) + 2 {
        many.push(page.clone());
    }
    many.push(pkts[n - 1].clone());
    assert_eq!(whole(&config, &many.concat()), Err(codes::TOO_LONG));
}

#[test]
fn memory_stays_bounded_for_huge_sizes() {
    // A header claiming a 512 MiB VRAM chunk followed by little data: nothing is
    // allocated from the size; the stream is just truncated.
    let config = Config::new(mdevmig_xe::XE_VF_1G);
    let mut s = packet(PacketType::DESCRIPTOR, 0, 0, 0, &encode_descriptor(0xe20b, 0));
    s.extend_from_slice(&Header::new(PacketType::VRAM, 0, 0, 0, 512 << 20).encode());
    s.extend_from_slice(&[0; 100]);
    assert_eq!(whole(&config, &s), Err(codes::TRUNCATED));
}
