#!/usr/bin/env python3
"""Clean-room reader of the mdevmig envelope, wire format version 1.

Written from spec/wire-format.md and spec/errors.md only.

    python3 spec/reference/reader.py --trust KEY.pub|DIR [--session HEX] FILE

Prints `ok` (exit 0) or the error code of the first rule the stream breaks
(exit 1).  Section references (§n) are to wire-format.md.
"""

import argparse
import hashlib
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Refused(Exception):
    def __init__(self, code, detail=""):
        super().__init__(code)
        self.code = code
        self.detail = detail


# ---------------------------------------------------------------- constants

MAGIC = bytes.fromhex("894D4445564D4947")
HEADER_CAP = 8192
HEADER_MIN = 176
MIB16 = 16 * 1024 * 1024
TOTAL_CAP = 1 << 40
MAX_ATTRS = 16
MAX_SECTIONS = 64
NAME_ALPHABET = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._-")
VALUE_ALPHABET = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._:+-")

CTX_HEADER = b"mdevmig/1/header"           # 16 bytes
CTX_CHUNK = b"mdevmig/1/chunk\x00"          # 16 bytes
CTX_END = b"mdevmig/1/end\x00\x00\x00"      # 16 bytes
CTX_TAIL = b"mdevmig/1/tail\x00\x00"        # 16 bytes
assert len(CTX_HEADER) == len(CTX_CHUNK) == len(CTX_END) == len(CTX_TAIL) == 16

FLAG_SESSION_BOUND = 1
SEC_REQUIRED = 1
SEC_STREAMED = 2

KIND_CHUNK, KIND_TRAILER, KIND_END = 1, 2, 3
FRAME = 88


def u16(b, o): return int.from_bytes(b[o:o + 2], "little")
def u32(b, o): return int.from_bytes(b[o:o + 4], "little")
def u64(b, o): return int.from_bytes(b[o:o + 8], "little")


# ------------------------------------------------- strict Ed25519 (§2 Verify)
# cryptography/OpenSSL does the RFC 8032 cofactorless check; the extra checks
# the spec names (non-canonical S, small-order public key) are done here, plus
# small-order R, which ed25519-dalek verify_strict (named by the spec) rejects.

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode_point(enc):
    """Decode a 32-byte Edwards point (extended coords) or return None."""
    y = int.from_bytes(enc, "little") & ((1 << 255) - 1)
    sign = enc[31] >> 7
    y %= _P  # dalek-style decompression: the y coordinate is taken mod p
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if x == 0 and sign:
        return None
    if (x & 1) != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _double(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = (a + b) % _P
    e = (h - (x1 + y1) * (x1 + y1)) % _P
    g = (a - b) % _P
    f = (c + g) % _P
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _is_small_order(enc):
    pt = _decode_point(enc)
    if pt is None:
        return None
    for _ in range(3):
        pt = _double(pt)
    x, y, z, _ = pt
    return x % _P == 0 and (y - z) % _P == 0


def verify_strict(pub_raw, msg, sig):
    if len(sig) != 64 or len(pub_raw) != 32:
        return False
    if int.from_bytes(sig[32:], "little") >= _L:      # non-canonical S
        return False
    small_a = _is_small_order(pub_raw)
    if small_a is None or small_a:                    # invalid or small-order A
        return False
    small_r = _is_small_order(sig[:32])
    if small_r is None or small_r:                    # invalid or small-order R
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pub_raw).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


# ------------------------------------------------------------- trust store

def load_public_key_file(path):
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError:
        raise Refused("io.open", path)
    try:
        key = serialization.load_pem_public_key(pem)
    except Exception:
        raise Refused("format.bad_key_file", path)
    if not isinstance(key, Ed25519PublicKey):
        raise Refused("format.bad_key_file", path)
    return key.public_bytes(serialization.Encoding.Raw,
                            serialization.PublicFormat.Raw)


def load_trust_store(path):
    """§8: one .pub file, or a directory whose *.pub files are loaded."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path)
                       if n.endswith(".pub"))
    else:
        files = [path]
    store = {}
    for p in files:
        raw = load_public_key_file(p)
        store[hashlib.sha256(raw).digest()] = raw
    if not store:
        raise Refused("auth.empty_trust_store")
    return store


# ------------------------------------------------------------------- input

class Input:
    def __init__(self, f):
        self.f = f

    def read(self, n):
        """Read up to n bytes; fewer only at end of input."""
        out = bytearray()
        while len(out) < n:
            b = self.f.read(n - len(out))
            if not b:
                break
            out += b
        return bytes(out)

    def read_exact(self, n, code="format.truncated"):
        b = self.read(n)
        if len(b) != n:
            raise Refused(code)
        return b


# ------------------------------------------------------------------ header

class Section:
    __slots__ = ("name", "version", "flags", "length")

    def __init__(self, name, version, flags, length):
        self.name, self.version, self.flags, self.length = name, version, flags, length

    @property
    def streamed(self):
        return bool(self.flags & SEC_STREAMED)


class Header:
    pass


class Cursor:
    """Reads header content; bytes past header_len - 64 do not exist."""

    def __init__(self, buf, pos, end):
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n):
        if self.pos + n > self.end:
            raise Refused("format.header_length", "content runs past header_len - 64")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b


def read_name(cur, cap, alphabet=NAME_ALPHABET):
    """§2 / §3 step 3: length against its cap, then the bytes (empty included)."""
    n = cur.take(1)[0]
    if n > cap:
        raise Refused("limit.string_too_long")
    b = cur.take(n)
    if n == 0 or any(c not in alphabet for c in b):
        raise Refused("format.bad_string")
    return b


def read_header(inp, trust, session):
    # Step 1: the 16-byte prefix, checked before reading further.
    prefix = inp.read_exact(16)
    if prefix[0:8] != MAGIC:
        raise Refused("format.bad_magic")
    if u16(prefix, 8) != 1:
        raise Refused("format.unsupported_version")
    if u16(prefix, 10) != 0:
        raise Refused("format.reserved_nonzero")
    header_len = u32(prefix, 12)
    if header_len > HEADER_CAP:
        raise Refused("limit.header_too_large")
    if header_len < HEADER_MIN:
        raise Refused("format.header_length")

    # Step 2: the rest of the header.
    buf = prefix + inp.read_exact(header_len - 16)

    # Step 3: decode field by field, in byte order.
    h = Header()
    cur = Cursor(buf, 16, header_len - 64)
    h.flags = u32(cur.take(4), 0)
    if h.flags & ~FLAG_SESSION_BOUND:
        raise Refused("format.unknown_flags")
    h.state_version = u32(cur.take(4), 0)
    if h.state_version < 1:
        raise Refused("format.bad_version_window")
    h.min_version = u32(cur.take(4), 0)
    if not (1 <= h.min_version <= h.state_version):
        raise Refused("format.bad_version_window")
    h.chunk_size = u32(cur.take(4), 0)
    if h.chunk_size > MIB16:
        raise Refused("limit.chunk_too_large")
    cs = h.chunk_size
    if cs < 4096 or (cs & (cs - 1)) != 0:
        raise Refused("format.bad_chunk_size")
    h.key_id = cur.take(32)
    h.session_nonce = cur.take(32)
    if not (h.flags & FLAG_SESSION_BOUND) and h.session_nonce != bytes(32):
        raise Refused("format.unbound_nonce")
    h.stream_id = cur.take(16)
    h.vendor = read_name(cur, 32)
    h.device_type = read_name(cur, 64)

    attr_count = cur.take(1)[0]
    if attr_count > MAX_ATTRS:
        raise Refused("limit.too_many_attributes")
    h.attributes = []
    prev = None
    for _ in range(attr_count):
        name = read_name(cur, 32)
        if prev is not None and not (name > prev):
            raise Refused("format.attribute_order")
        prev = name
        value = read_name(cur, 32, VALUE_ALPHABET)
        h.attributes.append((name, value))

    section_count = u16(cur.take(2), 0)
    if section_count == 0:
        raise Refused("format.no_sections")
    if section_count > MAX_SECTIONS:
        raise Refused("limit.too_many_sections")
    h.sections = []
    seen = set()
    running = 0
    for _ in range(section_count):
        name = read_name(cur, 32)
        if name in seen:
            raise Refused("format.duplicate_section")
        seen.add(name)
        version = u16(cur.take(2), 0)
        flags = u16(cur.take(2), 0)
        if flags & ~(SEC_REQUIRED | SEC_STREAMED):
            raise Refused("format.unknown_flags")
        length = u64(cur.take(8), 0)
        running += length
        if running > TOTAL_CAP:
            raise Refused("limit.stream_too_large")
        h.sections.append(Section(name, version, flags, length))
    if cur.pos != header_len - 64:
        raise Refused("format.header_length", "bytes left before the signature")

    # Step 4: key lookup.
    pub = trust.get(h.key_id)
    if pub is None:
        raise Refused("auth.untrusted_key")
    # Step 5: header signature.
    sig = buf[header_len - 64:header_len]
    if not verify_strict(pub, CTX_HEADER + buf[:header_len - 64], sig):
        raise Refused("auth.bad_header_signature")
    # Step 6: session binding.
    if session is not None:
        if not (h.flags & FLAG_SESSION_BOUND):
            raise Refused("auth.unbound_stream")
        if h.session_nonce != session:
            raise Refused("auth.session_mismatch")

    h.pub = pub
    h.digest = hashlib.sha256(buf[:header_len]).digest()
    return h


# ----------------------------------------------------------------- records

class Record:
    __slots__ = ("kind", "frame", "section_index", "data_len", "seq",
                 "offset", "length", "chunk_count", "total_len", "sig", "data")


def read_record(inp, chunk_size):
    """§5 'Each record' step 1: read and decode, independent of expectation."""
    frame = inp.read_exact(FRAME)
    r = Record()
    r.frame = frame
    r.sig = frame[24:88]
    r.data = b""
    r.kind = frame[0]
    if r.kind == KIND_CHUNK:
        if frame[1] != 0:
            raise Refused("format.reserved_nonzero")
        r.section_index = u16(frame, 2)
        r.data_len = u32(frame, 4)
        r.seq = u64(frame, 8)
        r.offset = u64(frame, 16)
        if r.data_len > MIB16:
            raise Refused("limit.chunk_too_large")
        if r.data_len == 0 or r.data_len > chunk_size:
            raise Refused("format.bad_chunk_length")
        r.data = inp.read_exact(r.data_len)
    elif r.kind == KIND_END:
        r.section_index = u16(frame, 2)
        if frame[1] != 0 or u32(frame, 4) != 0:
            raise Refused("format.reserved_nonzero")
        r.seq = u64(frame, 8)
        r.length = u64(frame, 16)
    elif r.kind == KIND_TRAILER:
        if frame[1:8] != bytes(7):
            raise Refused("format.reserved_nonzero")
        r.chunk_count = u64(frame, 8)
        r.total_len = u64(frame, 16)
    else:
        raise Refused("format.bad_record_kind")
    return r


def chunk_sig_ok(h, r):
    msg = CTX_CHUNK + h.digest + r.frame[:24] + hashlib.sha256(r.data).digest()
    return verify_strict(h.pub, msg, r.sig)


def end_sig_ok(h, r):
    return verify_strict(h.pub, CTX_END + h.digest + r.frame[:24], r.sig)


def trailer_sig_ok(h, r):
    return verify_strict(h.pub, CTX_TAIL + h.digest + r.frame[:24], r.sig)


class Walk:
    """The reader's state of §5."""

    def __init__(self, h):
        self.h = h
        self.secs = h.sections
        self.s = 0
        self.o = 0
        self.seq = 0
        self.total = 0
        self.short = False     # a chunk of the streamed section was short
        self.settle()

    def settle(self):
        # pass over exact-length sections with nothing left
        while (self.s < len(self.secs) and not self.secs[self.s].streamed
               and self.o == self.secs[self.s].length):
            self.next_section()

    def next_section(self):
        self.s += 1
        self.o = 0
        self.short = False

    def expectation(self):
        if self.s >= len(self.secs):
            return "trailer"
        sec = self.secs[self.s]
        if not sec.streamed:
            return "chunk"
        if self.short or self.o == sec.length:
            return "end"
        return "chunk_or_end"


def read_stream(inp, trust, session, consumer=None):
    h = read_header(inp, trust, session)
    w = Walk(h)
    cs = h.chunk_size
    while True:
        r = read_record(inp, cs)                     # step 1
        exp = w.expectation()
        if exp == "trailer":                         # step 2 -> The end
            if r.kind == KIND_CHUNK:
                if not chunk_sig_ok(h, r):
                    raise Refused("auth.bad_chunk_signature")
                if r.seq < w.seq:
                    raise Refused("format.chunk_duplicated")
                raise Refused("format.chunk_mismatch")
            if r.kind == KIND_END:
                if not end_sig_ok(h, r):
                    raise Refused("auth.bad_end_signature")
                raise Refused("format.chunk_mismatch")
            if not trailer_sig_ok(h, r):
                raise Refused("auth.bad_trailer_signature")
            if r.chunk_count != w.seq or r.total_len != w.total:
                raise Refused("format.trailer_mismatch")
            if inp.read(1):
                raise Refused("format.trailing_data")
            return h
        if r.kind == KIND_TRAILER:                   # step 3
            raise Refused("format.chunk_dropped")
        if r.kind == KIND_END:                       # step 4
            if not end_sig_ok(h, r):
                raise Refused("auth.bad_end_signature")
            if exp not in ("chunk_or_end", "end"):
                raise Refused("format.chunk_mismatch")
            if r.seq > w.seq:
                raise Refused("format.chunk_dropped")
            if r.seq < w.seq:
                raise Refused("format.chunk_duplicated")
            if r.section_index != w.s:
                raise Refused("format.chunk_mismatch")
            if r.length != w.o:
                raise Refused("format.section_length_mismatch")
            w.next_section()
            w.settle()
            continue
        # step 5: a chunk
        if not chunk_sig_ok(h, r):
            raise Refused("auth.bad_chunk_signature")
        # step 6
        if r.seq < w.seq:
            raise Refused("format.chunk_duplicated")
        if r.seq > w.seq:
            try:
                nxt = read_record(inp, cs)
            except Refused:
                raise Refused("format.chunk_dropped")
            if nxt.kind == KIND_CHUNK and nxt.seq == w.seq:
                raise Refused("format.chunk_reordered")
            raise Refused("format.chunk_dropped")
        # step 7
        if r.section_index != w.s or r.offset != w.o:
            raise Refused("format.chunk_mismatch")
        # step 8
        sec = w.secs[w.s]
        room = sec.length - w.o
        if exp == "chunk":
            if r.data_len != min(cs, room):
                raise Refused("format.bad_chunk_length")
        elif exp == "end":
            if w.o == sec.length:
                raise Refused("limit.section_over_bound")
            raise Refused("format.bad_chunk_length")
        else:
            if r.data_len > room:
                raise Refused("limit.section_over_bound")
        # step 9
        if consumer is not None:
            consumer(w.s, w.o, r.data)
        w.seq += 1
        w.o += r.data_len
        w.total += r.data_len
        if sec.streamed:
            if r.data_len < cs or r.data_len == room:
                w.short = True   # end due (o == B is also caught by expectation)
        else:
            w.settle()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trust", required=True, help="trust store: a .pub file or directory")
    ap.add_argument("--session", help="issued session nonce, 64 hex digits")
    ap.add_argument("file")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    session = None
    if a.session is not None:
        try:
            session = bytes.fromhex(a.session)
        except ValueError:
            session = None
        if session is None or len(session) != 32:
            print("usage.bad_arguments")
            return 1
    try:
        trust = load_trust_store(a.trust)
        try:
            f = open(a.file, "rb")
        except OSError:
            raise Refused("io.open", a.file)
        with f:
            read_stream(Input(f), trust, session)
    except Refused as e:
        print(e.code)
        if a.verbose and e.detail:
            print(e.detail, file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
