//! Where every field of a valid mdevmig stream lies, for structure-aware mutation.
//!
//! [`layout`] walks a stream this crate wrote (trusted: it indexes freely and
//! panics on anything else) and lists each field of the header, the records and
//! the trailer with its offset, width, kind and documented maximum.
//! [`values`] gives the values a field is set to: for lengths and counts 0, 1,
//! max-1, max, max+1 (max = the documented limit, where one exists), the
//! original ±1, 2^32-1 and 2^64-1 (where they fit), and the width's extremes; for
//! flags every undefined bit and all ones; for enums and reserved bytes values
//! outside their set.

/// What a field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A length, count, index, sequence number or offset: fixed by the rest of
    /// the stream, so any other value must be refused.
    Length,
    /// A bit set: `defined` bits may be set, others must be refused.
    Flags { defined: u64 },
    /// An enumerated value: only `valid` values exist.
    Enum { valid: &'static [u64] },
    /// Reserved: must be zero.
    Reserved,
    /// A free value (versions): other values may be valid when signed.
    Value,
}

/// One field.
#[derive(Debug, Clone)]
pub struct Field {
    /// `header.chunk_size`, `chunk[2].data_len`, ...
    pub name: String,
    /// Offset in the stream.
    pub at: usize,
    /// Bytes (1, 2, 4 or 8), little-endian.
    pub width: usize,
    /// What it is.
    pub kind: Kind,
    /// The documented limit, where one exists.
    pub max: Option<u64>,
    /// Its value in the stream.
    pub orig: u64,
}

/// The stream's structure.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Header bytes.
    pub header_len: usize,
    /// (start, end) of each chunk record, frame and data.
    pub chunks: Vec<(usize, usize)>,
    /// Start of the trailer.
    pub trailer: usize,
    /// Every field.
    pub fields: Vec<Field>,
    /// Every field and record boundary, sorted, with 0 and the stream's length.
    pub boundaries: Vec<usize>,
    /// The header's chunk size.
    pub chunk_size: u64,
}

fn le(b: &[u8], at: usize, width: usize) -> u64 {
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(&b[at..at + width]);
    u64::from_le_bytes(v)
}

/// Writes `value` (truncated to `width` bytes) at `at`.
pub fn put(b: &mut [u8], at: usize, width: usize, value: u64) {
    b[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
}

struct Walk<'a> {
    b: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
    bounds: Vec<usize>,
}

impl Walk<'_> {
    fn field(&mut self, name: impl Into<String>, width: usize, kind: Kind, max: Option<u64>) -> u64 {
        let orig = le(self.b, self.pos, width);
        self.fields.push(Field {
            name: name.into(),
            at: self.pos,
            width,
            kind,
            max,
            orig,
        });
        self.bounds.push(self.pos);
        self.pos += width;
        self.bounds.push(self.pos);
        orig
    }

    fn skip(&mut self, n: usize) {
        self.pos += n;
        self.bounds.push(self.pos);
    }
}

/// The layout of a valid stream.
pub fn layout(b: &[u8]) -> Layout {
    let mut w = Walk {
        b,
        pos: 0,
        fields: Vec::new(),
        bounds: vec![0],
    };
    w.skip(8); // magic
    w.field("header.format_version", 2, Kind::Enum { valid: &[1] }, None);
    w.field("header.reserved", 2, Kind::Reserved, None);
    let header_len = w.field("header.header_len", 4, Kind::Length, Some(8192)) as usize;
    w.field("header.flags", 4, Kind::Flags { defined: 1 }, None);
    w.field("header.state_version", 4, Kind::Value, None);
    w.field("header.min_version", 4, Kind::Value, None);
    let chunk_size = w.field("header.chunk_size", 4, Kind::Length, Some(16 << 20));
    w.skip(32); // key_id
    w.skip(32); // session_nonce
    w.skip(16); // stream_id
    let vendor_len = w.field("header.vendor_len", 1, Kind::Length, Some(32));
    w.skip(vendor_len as usize);
    let type_len = w.field("header.type_len", 1, Kind::Length, Some(64));
    w.skip(type_len as usize);
    let attrs = w.field("header.attr_count", 1, Kind::Length, Some(16));
    for i in 0..attrs {
        let n = w.field(format!("header.attr[{i}].name_len"), 1, Kind::Length, Some(32));
        w.skip(n as usize);
        let n = w.field(format!("header.attr[{i}].value_len"), 1, Kind::Length, Some(32));
        w.skip(n as usize);
    }
    let sections = w.field("header.section_count", 2, Kind::Length, Some(64));
    let mut lengths = Vec::new();
    for i in 0..sections {
        let n = w.field(format!("section[{i}].name_len"), 1, Kind::Length, Some(32));
        w.skip(n as usize);
        w.field(format!("section[{i}].version"), 2, Kind::Value, None);
        w.field(format!("section[{i}].flags"), 2, Kind::Flags { defined: 1 }, None);
        lengths.push(w.field(format!("section[{i}].length"), 8, Kind::Length, Some(1 << 40)));
    }
    assert_eq!(w.pos + 64, header_len, "layout walked the header wrongly");
    w.skip(64); // signature
    let mut chunks = Vec::new();
    let mut seq = 0u64;
    while b[w.pos] == 1 {
        let start = w.pos;
        let c = format!("chunk[{seq}]");
        w.field(format!("{c}.kind"), 1, Kind::Enum { valid: &[1] }, None);
        w.field(format!("{c}.reserved"), 1, Kind::Reserved, None);
        w.field(format!("{c}.section_index"), 2, Kind::Length, Some(sections));
        let len = w.field(format!("{c}.data_len"), 4, Kind::Length, Some(chunk_size));
        w.field(format!("{c}.seq"), 8, Kind::Length, None);
        let offset = w.field(format!("{c}.offset"), 8, Kind::Length, None);
        let _ = offset;
        w.skip(64);
        w.skip(len as usize);
        chunks.push((start, w.pos));
        seq += 1;
    }
    let trailer = w.pos;
    w.field("trailer.kind", 1, Kind::Enum { valid: &[2] }, None);
    for i in 0..7 {
        w.field(format!("trailer.reserved[{i}]"), 1, Kind::Reserved, None);
    }
    w.field("trailer.chunk_count", 8, Kind::Length, None);
    w.field("trailer.total_len", 8, Kind::Length, Some(1 << 40));
    w.skip(64);
    assert_eq!(w.pos, b.len(), "layout walked the records wrongly");
    let _ = lengths;
    w.bounds.sort_unstable();
    w.bounds.dedup();
    Layout {
        header_len,
        chunks,
        trailer,
        fields: w.fields,
        boundaries: w.bounds,
        chunk_size,
    }
}

/// The values `f` is set to (never its original value).
pub fn values(f: &Field) -> Vec<u64> {
    let top = if f.width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * f.width)) - 1
    };
    let mut v: Vec<u64> = match f.kind {
        Kind::Length | Kind::Value => {
            let mut v = vec![
                0,
                1,
                f.orig.wrapping_sub(1),
                f.orig.wrapping_add(1),
                u32::MAX as u64,
                u64::MAX,
                top,
                top - 1,
                1 << (8 * f.width - 1),
            ];
            if let Some(m) = f.max {
                v.extend([m.saturating_sub(1), m, m.saturating_add(1)]);
            }
            v
        }
        Kind::Flags { defined } => (0..8 * f.width)
            .map(|bit| 1u64 << bit)
            .filter(|b| b & defined == 0)
            .flat_map(|b| [b, b | f.orig])
            .chain([top])
            .collect(),
        Kind::Enum { valid } => [0u64, 1, 2, 3, 4, 0x7f, 0x80, top]
            .into_iter()
            .filter(|x| !valid.contains(x))
            .collect(),
        Kind::Reserved => vec![1, 0x80, top],
    };
    v.retain(|x| *x <= top && *x != f.orig);
    v.sort_unstable();
    v.dedup();
    v
}

/// True when `f` set to `value` must be refused even by a reader that trusts
/// whoever re-signed it: lengths and counts are fixed by the rest of the stream,
/// undefined flag bits, unknown kinds and non-zero reserved bytes are refused.
/// Versions are free values, `SESSION_BOUND` is a defined flag, and a legal
/// chunk size may leave the chunking unchanged.
pub fn must_refuse_signed(f: &Field, value: u64) -> bool {
    if f.name == "header.chunk_size" {
        // Another legal chunk size re-chunks the data: refused unless every
        // section still fits the same chunks (then it is a valid stream).
        return !(value.is_power_of_two() && (4096..=16 << 20).contains(&value));
    }
    match f.kind {
        Kind::Length | Kind::Enum { .. } | Kind::Reserved => true,
        Kind::Flags { defined } => value & !defined != 0,
        Kind::Value => false,
    }
}
