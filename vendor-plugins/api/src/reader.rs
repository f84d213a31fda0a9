//! A panic-free reader over untrusted bytes.
//!
//! This is the one way mdevmig and its vendor plugins read bytes that came from
//! outside: a cursor over a shrinking slice, in the manner of rustls'
//! `msgs::codec::Reader`. Every read either returns the bytes asked for or a
//! [`Short`] error naming what was being read; nothing indexes, nothing panics, no
//! length from the input is ever used to size an allocation here.
//!
//! Typical use: wrap the input, take fixed-size fields with [`Reader::take_array`]
//! or the integer helpers, take length-prefixed bodies with [`Reader::sub`], and
//! finish with [`Reader::expect_empty`] so that trailing bytes are an error.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

/// The input ended before a field could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("input ended while reading {what}")]
pub struct Short {
    /// The structure or field being read when the input ran out.
    pub what: &'static str,
}

/// Bytes were left over after a structure that must consume its whole input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{left} unexpected bytes after {what}")]
pub struct Trailing {
    /// The structure that should have ended the input.
    pub what: &'static str,
    /// How many bytes were left.
    pub left: usize,
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
    consumed: usize,
}

impl<'a> Reader<'a> {
    /// Wraps `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self {
            rest: input,
            consumed: 0,
        }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Bytes read so far (offset of the cursor from the start of the input).
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Short> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(Short { what })?;
        self.rest = tail;
        self.consumed = self.consumed.saturating_add(n);
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<&'a [u8; N], Short> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(Short { what })?;
        self.rest = tail;
        self.consumed = self.consumed.saturating_add(N);
        Ok(head)
    }

    /// Takes `n` bytes and returns a reader over just them (a length-prefixed body).
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, Short> {
        self.take(n, what).map(Reader::new)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.rest;
        self.consumed = self.consumed.saturating_add(rest.len());
        self.rest = &[];
        rest
    }

    /// Fails unless the input has been read to its end.
    pub fn expect_empty(&self, what: &'static str) -> Result<(), Trailing> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Trailing {
                what,
                left: self.rest.len(),
            })
        }
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Short> {
        self.take_array::<1>(what).map(|b| b[0])
    }

    /// Reads a little-endian u16.
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, Short> {
        self.take_array(what).map(|b| u16::from_le_bytes(*b))
    }

    /// Reads a little-endian u32.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, Short> {
        self.take_array(what).map(|b| u32::from_le_bytes(*b))
    }

    /// Reads a little-endian i32.
    pub fn i32_le(&mut self, what: &'static str) -> Result<i32, Short> {
        self.take_array(what).map(|b| i32::from_le_bytes(*b))
    }

    /// Reads a little-endian u64.
    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, Short> {
        self.take_array(what).map(|b| u64::from_le_bytes(*b))
    }

    /// Reads a host-endian u16 (kernel structs copied raw from memory).
    pub fn u16_ne(&mut self, what: &'static str) -> Result<u16, Short> {
        self.take_array(what).map(|b| u16::from_ne_bytes(*b))
    }

    /// Reads a host-endian u32 (kernel structs copied raw from memory).
    pub fn u32_ne(&mut self, what: &'static str) -> Result<u32, Short> {
        self.take_array(what).map(|b| u32::from_ne_bytes(*b))
    }

    /// Reads a host-endian u64 (kernel structs copied raw from memory).
    pub fn u64_ne(&mut self, what: &'static str) -> Result<u64, Short> {
        self.take_array(what).map(|b| u64::from_ne_bytes(*b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_read_past_the_end_fails_and_names_the_field() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16_le("a"), Ok(0x0201));
        assert_eq!(r.u16_le("b"), Err(Short { what: "b" }));
        // A failed read consumes nothing.
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.u8("c"), Ok(3));
        assert!(r.expect_empty("x").is_ok());
    }

    #[test]
    fn huge_lengths_fail_without_allocating() {
        let mut r = Reader::new(&[0; 4]);
        assert!(r.take(usize::MAX, "big").is_err());
        assert!(r.sub(5, "body").is_err());
        assert_eq!(r.consumed(), 0);
    }

    #[test]
    fn trailing_bytes_are_reported() {
        let mut r = Reader::new(&[0; 4]);
        r.take(3, "x").unwrap();
        assert_eq!(
            r.expect_empty("thing"),
            Err(Trailing {
                what: "thing",
                left: 1
            })
        );
    }
}
