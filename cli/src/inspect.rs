//! `mdevmig inspect`: decode an envelope the way QEMU's analyze-migration.py decodes
//! QEMU's stream, without trusting it.
//!
//! Without `--trust` nothing is verified and the output says so on its first line.
//! With `--trust` every signature is checked too, and the stream is reported as
//! verified only if the whole of it passes.

use std::io::Read;
use std::path::Path;

use serde_json::json;

use super::{open_input, output::Out};
use mdevmig::codec::header::Header;
use mdevmig::codec::record::{decode_frame, Frame, FRAME_LEN};
use mdevmig::codec::{read_header_unverified, ReadOptions, StreamReader};
use mdevmig::{Code, Error, Result};

struct Walk {
    chunks: u64,
    data_bytes: u64,
    /// Streamed sections' end records: section index and final length.
    ends: Vec<(u16, u64)>,
    trailer: Option<(u64, u64)>,
    problem: Option<Error>,
}

fn walk(src: &mut dyn Read, h: &Header) -> Walk {
    let mut w = Walk {
        chunks: 0,
        data_bytes: 0,
        ends: Vec::new(),
        trailer: None,
        problem: None,
    };
    let mut frame = [0u8; FRAME_LEN];
    loop {
        match read_full(src, &mut frame) {
            Ok(0) => {
                w.problem = Some(Error::new(Code::Truncated, "stream ends without a trailer"));
                return w;
            }
            Ok(n) if n < FRAME_LEN => {
                w.problem = Some(Error::new(Code::Truncated, "stream ends inside a record frame"));
                return w;
            }
            Ok(_) => {}
            Err(e) => {
                w.problem = Some(e);
                return w;
            }
        }
        match decode_frame(&frame) {
            Ok(Frame::Chunk(rec, _)) => {
                if rec.data_len == 0 || rec.data_len > h.chunk_size {
                    w.problem = Some(Error::new(
                        Code::BadChunkLength,
                        format!("chunk {} claims {} bytes", rec.seq, rec.data_len),
                    ));
                    return w;
                }
                let want = u64::from(rec.data_len);
                match std::io::copy(&mut src.take(want), &mut std::io::sink()) {
                    Ok(n) if n == want => {}
                    Ok(_) => {
                        w.problem = Some(Error::new(Code::Truncated, "stream ends inside chunk data"));
                        return w;
                    }
                    Err(e) => {
                        w.problem = Some(Error::io(Code::IoRead, "reading chunk data", &e));
                        return w;
                    }
                }
                w.chunks = w.chunks.saturating_add(1);
                w.data_bytes = w.data_bytes.saturating_add(want);
            }
            Ok(Frame::End(e, _)) => {
                // One per streamed section at most in a valid stream; a hostile
                // one may repeat them, so the list is capped.
                if w.ends.len() < usize::from(mdevmig::codec::limits::MAX_SECTIONS) {
                    w.ends.push((e.section_index, e.length));
                }
            }
            Ok(Frame::Trailer(t, _)) => {
                w.trailer = Some((t.chunk_count, t.total_len));
                let mut probe = [0u8; 1];
                if matches!(src.read(&mut probe), Ok(n) if n > 0) {
                    w.problem = Some(Error::new(Code::TrailingData, "bytes follow the trailer"));
                }
                return w;
            }
            Err(e) => {
                w.problem = Some(e);
                return w;
            }
        }
    }
}

fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(buf.get_mut(n..).unwrap_or(&mut [])) {
            Ok(0) => break,
            Ok(k) => n = n.saturating_add(k),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(Code::IoRead, "reading record", &e)),
        }
    }
    Ok(n)
}

pub(super) fn run(
    file: &str,
    trust: Option<&Path>,
    insecure_trust_store: bool,
    out: Out,
) -> std::result::Result<(), super::Fail> {
    if let Some(trust) = trust {
        let store = super::load_trust(trust, insecure_trust_store)?;
        let mut r = StreamReader::open(open_input(file, None)?, &store, &ReadOptions::default())?;
        let chunks = r.verify_to_end()?;
        let h = r.header().header.clone();
        let text = format!("VERIFIED against {}: every signature, the sequence and the trailer check out.\n{}  chunks: {chunks}\n", trust.display(), describe(&h));
        let mut v = header_json(&h);
        v["verified"] = json!(true);
        v["chunks"] = json!(chunks);
        out.ok(&text, v);
        return Ok(());
    }
    let mut src = open_input(file, None)?;
    let (h, _) = read_header_unverified(&mut src)?;
    let w = walk(&mut src, &h);
    let mut text =
        String::from("UNVERIFIED: decoded without checking any signature; pass --trust to verify.\n");
    text.push_str(&describe(&h));
    text.push_str(&format!("  chunks: {} ({} data bytes)\n", w.chunks, w.data_bytes));
    for (i, len) in &w.ends {
        text.push_str(&format!("  section {i} ends at {len} bytes (unverified)\n"));
    }
    match w.trailer {
        Some((c, t)) => text.push_str(&format!("  trailer: {c} chunks, {t} bytes\n")),
        None => text.push_str("  trailer: missing\n"),
    }
    let mut v = header_json(&h);
    v["verified"] = json!(false);
    v["warning"] = json!("unverified: no signature was checked");
    v["chunks"] = json!(w.chunks);
    v["data_bytes"] = json!(w.data_bytes);
    v["section_ends"] = json!(w
        .ends
        .iter()
        .map(|(i, l)| json!({"section_index": i, "length": l}))
        .collect::<Vec<_>>());
    v["trailer"] = match w.trailer {
        Some((c, t)) => json!({"chunk_count": c, "total_len": t}),
        None => json!(null),
    };
    if let Some(p) = &w.problem {
        text.push_str(&format!("  problem: [{}] {}\n", p.code, p.message));
        v["problem"] = json!({"code": p.code.as_str(), "message": p.message});
    }
    if out.json {
        v["ok"] = json!(w.problem.is_none());
        if let Some(p) = &w.problem {
            v["error"] =
                json!({"code": p.code.as_str(), "message": p.message, "exit_status": p.code.exit_status()});
        }
        super::output::say(&format!("{v}\n"));
    } else {
        super::output::say(&super::output::printable(&text));
    }
    match w.problem {
        Some(p) => Err(super::Fail {
            err: p,
            json_done: out.json,
        }),
        None => Ok(()),
    }
}

fn describe(h: &Header) -> String {
    let mut s = format!(
        "  vendor: {}\n  device type: {}\n  state version: {} (min {})\n  chunk size: {}\n  key id: {}\n  session: {}\n  stream id: {}\n  sections:\n",
        h.vendor,
        h.device_type,
        h.state_version,
        h.min_version,
        h.chunk_size,
        h.key_id,
        if h.session_bound() { mdevmig::auth::hex(&h.session_nonce) } else { "unbound".into() },
        mdevmig::auth::hex(&h.stream_id),
    );
    for sec in &h.sections {
        s.push_str(&format!(
            "    {:<24} v{:<3} {:<8} {}{} bytes\n",
            sec.name,
            sec.version,
            if sec.required() { "required" } else { "optional" },
            if sec.streamed() { "streamed, at most " } else { "" },
            sec.length
        ));
    }
    s
}

fn header_json(h: &Header) -> serde_json::Value {
    json!({
        "vendor": h.vendor, "device_type": h.device_type,
        "state_version": h.state_version, "min_version": h.min_version,
        "chunk_size": h.chunk_size, "key_id": h.key_id.to_string(),
        "session_bound": h.session_bound(),
        "session_nonce": if h.session_bound() { json!(mdevmig::auth::hex(&h.session_nonce)) } else { json!(null) },
        "stream_id": mdevmig::auth::hex(&h.stream_id),
        "sections": sections_json(h),
        "total_len": h.total_len().ok(),
    })
}

/// A header's section table as JSON, the same in every report that shows one
/// (`inspect`, `save`): `[{name, version, required, streamed, length}]`.
pub(super) fn sections_json(h: &Header) -> serde_json::Value {
    h.sections
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "version": s.version, "required": s.required(),
                "streamed": s.streamed(), "length": s.length,
            })
        })
        .collect()
}
