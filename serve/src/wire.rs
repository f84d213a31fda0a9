//! Splitting a QMP byte stream into messages, before any JSON parser sees it.
//!
//! QMP (QEMU's `docs/interop/qmp-spec.rst`) is a stream of JSON objects with no
//! length prefix and no required separator: a message ends where its outermost
//! object closes. The [`Framer`] finds those ends by tracking strings, escapes and
//! bracket depth, so it can bound a message's size and nesting while the bytes
//! arrive, and a hostile client cannot make the service buffer or recurse past the
//! limits:
//!
//! ```text
//!   between messages   whitespace is skipped (qemu.qmp sends a lone ' ' with an
//!                      SCM_RIGHTS fd); '{' starts a message; anything else is an
//!                      error, and the rest of that line is dropped
//!   in a message       bytes are kept up to max_len; '{' '[' nest up to max_depth;
//!                      the message ends when the depth returns to 0
//!   over a limit       one error, then the message's bytes are dropped (its
//!                      brackets still counted) until it ends
//! ```
//!
//! Whether the bytes of a complete message are valid JSON is serde_json's job.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

/// What the framer found in the bytes pushed so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The bytes of one complete top-level object.
    Message(Vec<u8>),
    /// Input that can never be a message: a stable code and what was wrong.
    Malformed(&'static str, String),
}

/// Where the framer is between bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Between messages.
    Between,
    /// Dropping a stray line up to its newline.
    StrayLine,
    /// Inside a message.
    Message,
}

/// Finds message boundaries in a QMP byte stream, within limits.
#[derive(Debug)]
pub struct Framer {
    max_len: usize,
    max_depth: u32,
    at: At,
    buf: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The current message broke a limit: its bytes are being dropped.
    dropping: bool,
}

impl Framer {
    /// A framer for messages of at most `max_len` bytes and `max_depth` levels of
    /// nesting (the outermost object is level 1).
    pub fn new(max_len: usize, max_depth: u32) -> Self {
        Framer {
            max_len,
            max_depth,
            at: At::Between,
            buf: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            dropping: false,
        }
    }

    /// True while a message has started but not ended (the slow-client timer runs).
    pub fn in_message(&self) -> bool {
        self.at == At::Message
    }

    /// Feeds bytes; complete messages and errors are appended to `out` in order.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Frame>) {
        for &b in data {
            match self.at {
                At::Between => self.between(b, out),
                At::StrayLine => {
                    if b == b'\n' {
                        self.at = At::Between;
                    }
                }
                At::Message => self.inside(b, out),
            }
        }
    }

    fn between(&mut self, b: u8, out: &mut Vec<Frame>) {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'{' => {
                self.at = At::Message;
                self.buf.clear();
                self.buf.push(b);
                self.depth = 1;
                self.in_string = false;
                self.escaped = false;
                self.dropping = false;
            }
            _ => {
                out.push(Frame::Malformed(
                    "qmp.bad_json",
                    format!("JSON parse error: expected an object, found byte 0x{b:02x}"),
                ));
                self.at = At::StrayLine;
            }
        }
    }

    fn inside(&mut self, b: u8, out: &mut Vec<Frame>) {
        if !self.dropping {
            if self.buf.len() >= self.max_len {
                out.push(Frame::Malformed(
                    "qmp.message_too_large",
                    format!("a message is longer than {} bytes", self.max_len),
                ));
                self.drop_message();
            } else {
                self.buf.push(b);
            }
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                if self.depth > self.max_depth && !self.dropping {
                    out.push(Frame::Malformed(
                        "qmp.too_deep",
                        format!("a message nests deeper than {} levels", self.max_depth),
                    ));
                    self.drop_message();
                }
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    self.at = At::Between;
                    if !self.dropping {
                        out.push(Frame::Message(std::mem::take(&mut self.buf)));
                    }
                    self.dropping = false;
                }
            }
            _ => {}
        }
    }

    fn drop_message(&mut self) {
        self.dropping = true;
        self.buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max_len: usize, depth: u32, pieces: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(max_len, depth);
        let mut out = Vec::new();
        for p in pieces {
            f.push(p, &mut out);
        }
        out
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(s.as_bytes().to_vec())
    }

    #[test]
    fn messages_end_where_the_outer_object_closes_whatever_the_split() {
        let stream = br#" {"execute":"a","arguments":{"s":"}{\"]"}}{"execute":"b"}
{"x":[1,{"y":2}]}"#;
        let want = vec![
            msg(r#"{"execute":"a","arguments":{"s":"}{\"]"}}"#),
            msg(r#"{"execute":"b"}"#),
            msg(r#"{"x":[1,{"y":2}]}"#),
        ];
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(frames(1024, 8, &[a, b]), want, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(1024, 8, &bytes), want);
    }

    #[test]
    fn stray_input_is_one_error_per_line_and_the_next_message_still_parses() {
        let out = frames(1024, 8, &[b"garbage\n]]]\n{\"execute\":\"q\"}"]);
        assert_eq!(out.len(), 3);
        assert!(matches!(out[0], Frame::Malformed("qmp.bad_json", _)));
        assert!(matches!(out[1], Frame::Malformed("qmp.bad_json", _)));
        assert_eq!(out[2], msg(r#"{"execute":"q"}"#));
    }

    #[test]
    fn an_oversized_message_is_refused_once_and_dropped_without_being_kept() {
        let big = format!("{{\"s\":\"{}\"}}{{\"ok\":1}}", "x".repeat(10_000));
        let mut f = Framer::new(100, 8);
        let mut out = Vec::new();
        f.push(big.as_bytes(), &mut out);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], Frame::Malformed("qmp.message_too_large", _)));
        assert_eq!(out[1], msg(r#"{"ok":1}"#));
        assert!(f.buf.capacity() <= 128);
    }

    #[test]
    fn nesting_past_the_limit_is_refused_and_the_stream_recovers() {
        let deep = format!("{}{}", "{\"a\":[".repeat(20), "]}".repeat(20));
        let out = frames(1 << 20, 8, &[deep.as_bytes(), b"{}"]);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], Frame::Malformed("qmp.too_deep", _)));
        assert_eq!(out[1], msg("{}"));
        let ok = format!("{}{}", "[".repeat(7), "]".repeat(7));
        assert_eq!(frames(1024, 8, &[format!("{{\"a\":{ok}}}").as_bytes()]).len(), 1);
    }

    #[test]
    fn a_message_that_never_ends_stays_in_progress() {
        let mut f = Framer::new(64, 8);
        let mut out = Vec::new();
        f.push(b"{\"execute\":", &mut out);
        assert!(out.is_empty());
        assert!(f.in_message());
    }
}

/// The body of the `qmp_framer` fuzz target.
#[doc(hidden)]
pub mod fuzzing {
    use super::{Frame, Framer};

    /// Feeds `data[1..]` whole and again in pieces of `data[0] % 17 + 1` bytes:
    /// both give the same frames; every message starts with `{`, is within the
    /// size limit, and parses (or fails to parse) as JSON without panicking.
    pub fn framer(data: &[u8]) {
        let Some((&split, body)) = data.split_first() else {
            return;
        };
        let (max_len, depth) = (512, 8);
        let mut whole = Vec::new();
        Framer::new(max_len, depth).push(body, &mut whole);
        let mut pieces = Vec::new();
        let mut f = Framer::new(max_len, depth);
        for chunk in body.chunks(usize::from(split % 17).saturating_add(1)) {
            f.push(chunk, &mut pieces);
        }
        assert_eq!(whole, pieces, "framing depends on how the bytes were split");
        for frame in &whole {
            if let Frame::Message(m) = frame {
                assert_eq!(m.first(), Some(&b'{'));
                assert!(m.len() <= max_len);
                let _ = serde_json::from_slice::<serde_json::Value>(m);
            }
        }
    }
}
