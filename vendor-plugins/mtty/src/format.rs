//! The byte layout of mtty's migration data, decoded and re-encoded bit-exactly.
//!
//! The kernel's `mtty_save_read()` hands out the first `mtty_data_size()` bytes of
//! its in-memory `struct mtty_data` (`samples/vfio-mdev/mtty.c`): a 24-byte header
//! filled by `mtty_save_device_data()` and, after STOP_COPY, one raw `memcpy` of each
//! port's `struct serial_port` (`mtty_save_state()`). Nothing is serialised field by
//! field, so the stream is the C layout on the host: **host byte order** (little-endian
//! on x86_64 and aarch64, the hosts mdev runs on) with the compiler's padding. This
//! module reads and writes multi-byte fields with `from_ne_bytes`/`to_ne_bytes`, so the
//! broker matches the kernel it runs next to; a state never crosses byte orders
//! (the kernel on the other side would refuse its magic).
//!
//! ```text
//! struct mtty_data                         (24 + 36 * nr_ports bytes)
//! off  size  field
//!   0     8  u64  magic       0x7e9d09898c3e2c4e   (MTTY_MAGIC)
//!   8     4  u32  major_ver   1                     (MTTY_MAJOR_VER)
//!  12     4  u32  minor_ver   0                     (MTTY_MINOR_VER)
//!  16     4  u32  nr_ports    1 (mtty-1) or 2 (mtty-2)
//!  20     4  u32  flags       0 (no flag is defined)
//!  24    36  struct serial_port ports[0]
//!  60    36  struct serial_port ports[1]            (mtty-2 only)
//!
//! struct serial_port                       (36 bytes, 2-byte aligned)
//! off  size  field
//!   0     8  u8   uart_reg[8]          RX/TX IER IIR/FCR LCR MCR LSR MSR SCR
//!   8    16  u8   rxtx.fifo[16]        loop-back FIFO (MAX_FIFO_SIZE)
//!  24     1  u8   rxtx.head            next slot a TX write fills
//!  25     1  u8   rxtx.tail            next slot an RX read takes
//!  26     1  u8   rxtx.count           bytes in the FIFO
//!  27     1  bool dlab                 divisor latch access (LCR bit 7)
//!  28     1  bool overrun
//!  29     1  --   padding (aligns divisor)
//!  30     2  u16  divisor
//!  32     1  u8   fcr                  last FIFO control register write
//!  33     1  u8   max_fifo_size        1 (FIFO off) or 16 (FIFO on)
//!  34     1  u8   intr_trigger_level
//!  35     1  --   padding (struct size rounded to its 2-byte alignment)
//! ```
//!
//! [`MttyState::parse`] accepts exactly this: the header constants, a port count of 1
//! or 2, a length of exactly `24 + 36 * nr_ports` and zero padding. It checks nothing
//! inside the ports beyond the padding; [`MttyState::check`] and
//! [`validate`](crate::validate::validate) do that. Padding must be zero because the
//! driver's ports live in a zeroed allocation and are only ever written field by
//! field, so a real device never reports other padding, and because refusing it is
//! what makes `parse` followed by [`MttyState::to_bytes`] byte-identical for every
//! accepted input.

use mdevmig_plugin_api::{Reader, VendorError};

use crate::codes;

/// `MTTY_MAGIC`: the first eight bytes of every state.
pub const MTTY_MAGIC: u64 = 0x7e9d_0989_8c3e_2c4e;
/// `MTTY_MAJOR_VER`: the only major version the driver loads.
pub const MTTY_MAJOR_VER: u32 = 1;
/// `MTTY_MINOR_VER`: the only minor version the driver loads.
pub const MTTY_MINOR_VER: u32 = 0;
/// `MAX_FIFO_SIZE`: bytes in each port's loop-back FIFO.
pub const MAX_FIFO_SIZE: usize = 16;
/// `offsetof(struct mtty_data, ports)`.
pub const HEADER_LEN: usize = 24;
/// `sizeof(struct serial_port)`.
pub const PORT_LEN: usize = 36;
/// The largest state: an `mtty-2`.
pub const MAX_STATE_LEN: usize = 96;

/// The two device types the driver registers (`mtty_types[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MttyType {
    /// `mtty-1`, "Single port serial".
    Mtty1,
    /// `mtty-2`, "Dual port serial".
    Mtty2,
}

impl MttyType {
    /// Both types.
    pub const ALL: [MttyType; 2] = [MttyType::Mtty1, MttyType::Mtty2];

    /// The type for an mdev type name (`mtty-1`, `mtty-2`).
    pub fn from_device_type(name: &str) -> Option<Self> {
        match name {
            "mtty-1" => Some(Self::Mtty1),
            "mtty-2" => Some(Self::Mtty2),
            _ => None,
        }
    }

    /// The type with `nr_ports` ports.
    pub fn from_nr_ports(nr_ports: u32) -> Option<Self> {
        match nr_ports {
            1 => Some(Self::Mtty1),
            2 => Some(Self::Mtty2),
            _ => None,
        }
    }

    /// The mdev type name.
    pub const fn device_type(self) -> &'static str {
        match self {
            Self::Mtty1 => "mtty-1",
            Self::Mtty2 => "mtty-2",
        }
    }

    /// Ports of this type (`mtty_type.nr_ports`).
    pub const fn nr_ports(self) -> u32 {
        match self {
            Self::Mtty1 => 1,
            Self::Mtty2 => 2,
        }
    }

    /// `mtty_data_size()`: the exact length of this type's state (60 or 96 bytes).
    pub const fn state_len(self) -> usize {
        match self {
            Self::Mtty1 => 60,
            Self::Mtty2 => MAX_STATE_LEN,
        }
    }
}

/// `struct rxtx`: a port's loop-back FIFO. Guest TX writes go in at `head`, guest RX
/// reads come out at `tail`, both wrapping at 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rxtx {
    /// `fifo[MAX_FIFO_SIZE]`, including stale bytes outside the occupied part.
    pub fifo: [u8; MAX_FIFO_SIZE],
    /// `head`: index of the slot the next TX byte fills.
    pub head: u8,
    /// `tail`: index of the slot the next RX read takes.
    pub tail: u8,
    /// `count`: bytes in the FIFO (16 when full, where `head == tail` too).
    pub count: u8,
}

/// `struct serial_port`: one emulated UART, field for field. The two C `bool`s are
/// kept as raw bytes so that a state is represented exactly as it arrived;
/// [`SerialPort::check`] refuses values other than 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialPort {
    /// `uart_reg[8]`, indexed by register offset (see [`crate::uart`]). The driver
    /// stores only IER (1), LCR (3), MCR (4) and SCR (7); the others stay 0.
    pub uart_reg: [u8; 8],
    /// The loop-back FIFO.
    pub rxtx: Rxtx,
    /// `bool dlab`: divisor latch access, mirrors LCR bit 7.
    pub dlab: u8,
    /// `bool overrun`: a TX byte found the FIFO full.
    pub overrun: u8,
    /// `divisor`: the baud-rate divisor latch.
    pub divisor: u16,
    /// `fcr`: the last value the guest wrote to the FIFO control register.
    pub fcr: u8,
    /// `max_fifo_size`: how many bytes the FIFO accepts (16 with the FIFO enabled,
    /// 1 without).
    pub max_fifo_size: u8,
    /// `intr_trigger_level`: 0 until the first FCR write, 1 after it.
    pub intr_trigger_level: u8,
}

impl SerialPort {
    /// A port as `mtty_init_dev()` leaves it: everything zero (the device structure
    /// comes from a zeroing allocation) except `max_fifo_size = MAX_FIFO_SIZE`.
    pub const fn new() -> Self {
        Self {
            uart_reg: [0; 8],
            rxtx: Rxtx {
                fifo: [0; MAX_FIFO_SIZE],
                head: 0,
                tail: 0,
                count: 0,
            },
            dlab: 0,
            overrun: 0,
            divisor: 0,
            fcr: 0,
            max_fifo_size: 16,
            intr_trigger_level: 0,
        }
    }

    /// Reads one `struct serial_port` (exactly [`PORT_LEN`] bytes) from `r`.
    fn decode(r: &mut Reader<'_>, index: usize) -> Result<Self, VendorError> {
        let mut p = r.sub(PORT_LEN, "serial_port").map_err(short)?;
        let uart_reg = *p.take_array::<8>("uart_reg").map_err(short)?;
        let fifo = *p.take_array::<MAX_FIFO_SIZE>("rxtx.fifo").map_err(short)?;
        let head = p.u8("rxtx.head").map_err(short)?;
        let tail = p.u8("rxtx.tail").map_err(short)?;
        let count = p.u8("rxtx.count").map_err(short)?;
        let dlab = p.u8("dlab").map_err(short)?;
        let overrun = p.u8("overrun").map_err(short)?;
        expect_padding(&mut p, index)?;
        let divisor = p.u16_ne("divisor").map_err(short)?;
        let fcr = p.u8("fcr").map_err(short)?;
        let max_fifo_size = p.u8("max_fifo_size").map_err(short)?;
        let intr_trigger_level = p.u8("intr_trigger_level").map_err(short)?;
        expect_padding(&mut p, index)?;
        p.expect_empty("serial_port")
            .map_err(|t| VendorError::new(codes::BAD_LENGTH, format!("mtty state: {t}")))?;
        Ok(Self {
            uart_reg,
            rxtx: Rxtx {
                fifo,
                head,
                tail,
                count,
            },
            dlab,
            overrun,
            divisor,
            fcr,
            max_fifo_size,
            intr_trigger_level,
        })
    }

    /// Appends the port's 36 bytes, padding zeroed.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.uart_reg);
        out.extend_from_slice(&self.rxtx.fifo);
        out.extend_from_slice(&[
            self.rxtx.head,
            self.rxtx.tail,
            self.rxtx.count,
            self.dlab,
            self.overrun,
            0,
        ]);
        out.extend_from_slice(&self.divisor.to_ne_bytes());
        out.extend_from_slice(&[self.fcr, self.max_fifo_size, self.intr_trigger_level, 0]);
    }
}

impl Default for SerialPort {
    /// The freshly created port, [`SerialPort::new`].
    fn default() -> Self {
        Self::new()
    }
}

/// One device's migration state: `struct mtty_data` with its 1 or 2 ports. The header
/// constants are implied (a state that parsed had exactly them); the port count is
/// always that of an mtty type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MttyState {
    /// Invariant: `ports.len()` is 1 or 2.
    ports: Vec<SerialPort>,
}

impl MttyState {
    /// A state of type `ty` with the given ports' content, one per port of the type.
    pub fn from_ports(ty: MttyType, ports: &[SerialPort]) -> Result<Self, VendorError> {
        if Some(ty) != u32::try_from(ports.len()).ok().and_then(MttyType::from_nr_ports) {
            return Err(VendorError::new(
                codes::PORT_COUNT,
                format!(
                    "an {} state has {} port(s), not {}",
                    ty.device_type(),
                    ty.nr_ports(),
                    ports.len()
                ),
            ));
        }
        Ok(Self {
            ports: ports.to_vec(),
        })
    }

    /// The state a freshly created device of `ty` reports (see [`SerialPort::new`]).
    pub fn default_for(ty: MttyType) -> Self {
        Self {
            ports: vec![SerialPort::new(); port_slots(ty)],
        }
    }

    /// The state a freshly created `nr_ports`-port device reports; `nr_ports` must be
    /// 1 or 2.
    pub fn new_default(nr_ports: u32) -> Result<Self, VendorError> {
        type_for_ports(nr_ports).map(Self::default_for)
    }

    /// The device type this state belongs to.
    pub fn mtty_type(&self) -> MttyType {
        match self.ports.len() {
            1 => MttyType::Mtty1,
            _ => MttyType::Mtty2,
        }
    }

    /// The ports, in stream order.
    pub fn ports(&self) -> &[SerialPort] {
        &self.ports
    }

    /// The ports, to change their content (not their number).
    pub fn ports_mut(&mut self) -> &mut [SerialPort] {
        &mut self.ports
    }

    /// Decodes a state of either type. Refuses (with the code in brackets) a stream
    /// shorter than the header or not exactly `24 + 36 * nr_ports` long
    /// [`bad_length`](codes::BAD_LENGTH), a wrong magic
    /// [`bad_magic`](codes::BAD_MAGIC), versions other than 1.0
    /// [`bad_version`](codes::BAD_VERSION), non-zero flags
    /// [`bad_flags`](codes::BAD_FLAGS), a port count other than 1 or 2
    /// [`port_count`](codes::PORT_COUNT) and non-zero padding
    /// [`padding`](codes::PADDING). Port contents are not range-checked here; use
    /// [`crate::validate()`] for a state headed to a device.
    pub fn parse(bytes: &[u8]) -> Result<Self, VendorError> {
        decode(bytes, None)
    }

    /// The exact bytes the kernel reads and writes for this state.
    pub fn to_bytes(&self) -> Vec<u8> {
        let ty = self.mtty_type();
        let mut out = Vec::with_capacity(ty.state_len());
        out.extend_from_slice(&MTTY_MAGIC.to_ne_bytes());
        out.extend_from_slice(&MTTY_MAJOR_VER.to_ne_bytes());
        out.extend_from_slice(&MTTY_MINOR_VER.to_ne_bytes());
        out.extend_from_slice(&ty.nr_ports().to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        for port in &self.ports {
            port.encode_into(&mut out);
        }
        out
    }
}

/// `nr_ports` as a type, or a [`codes::PORT_COUNT`] error.
pub(crate) fn type_for_ports(nr_ports: u32) -> Result<MttyType, VendorError> {
    MttyType::from_nr_ports(nr_ports).ok_or_else(|| {
        VendorError::new(
            codes::PORT_COUNT,
            format!("mtty devices have 1 or 2 ports, not {nr_ports}"),
        )
    })
}

/// Ports of `ty` as a count of slots.
fn port_slots(ty: MttyType) -> usize {
    match ty {
        MttyType::Mtty1 => 1,
        MttyType::Mtty2 => 2,
    }
}

/// Decodes a state; with `expect`, its port count must be that type's.
///
/// Checks run in the order of the header's fields, then the length, so that a state
/// of the other type is reported as a port-count mismatch, and a damaged one by the
/// first field that is wrong.
pub(crate) fn decode(bytes: &[u8], expect: Option<MttyType>) -> Result<MttyState, VendorError> {
    let mut r = Reader::new(bytes);
    let header_short = || {
        VendorError::new(
            codes::BAD_LENGTH,
            format!(
                "mtty state is {} bytes, shorter than its {HEADER_LEN}-byte header",
                bytes.len()
            ),
        )
    };
    let magic = r.u64_ne("magic").map_err(|_| header_short())?;
    let major_ver = r.u32_ne("major_ver").map_err(|_| header_short())?;
    let minor_ver = r.u32_ne("minor_ver").map_err(|_| header_short())?;
    let nr_ports = r.u32_ne("nr_ports").map_err(|_| header_short())?;
    let flags = r.u32_ne("flags").map_err(|_| header_short())?;

    if magic != MTTY_MAGIC {
        return Err(VendorError::new(
            codes::BAD_MAGIC,
            format!("mtty state magic is {magic:#018x}, not {MTTY_MAGIC:#018x}"),
        ));
    }
    if major_ver != MTTY_MAJOR_VER || minor_ver != MTTY_MINOR_VER {
        return Err(VendorError::new(
            codes::BAD_VERSION,
            format!(
                "mtty state version is {major_ver}.{minor_ver}; the driver loads only \
                 {MTTY_MAJOR_VER}.{MTTY_MINOR_VER}"
            ),
        ));
    }
    if flags != 0 {
        return Err(VendorError::new(
            codes::BAD_FLAGS,
            format!("mtty state flags are {flags:#010x}; no flag is defined"),
        ));
    }
    let ty = match expect {
        None => type_for_ports(nr_ports)?,
        Some(ty) if ty.nr_ports() == nr_ports => ty,
        Some(ty) => {
            return Err(VendorError::new(
                codes::PORT_COUNT,
                format!(
                    "state has {nr_ports} port(s) but the destination {} has {}",
                    ty.device_type(),
                    ty.nr_ports()
                ),
            ))
        }
    };
    if bytes.len() != ty.state_len() {
        return Err(VendorError::new(
            codes::BAD_LENGTH,
            format!(
                "an {} state is {} bytes, not {}",
                ty.device_type(),
                ty.state_len(),
                bytes.len()
            ),
        ));
    }

    let mut ports = Vec::with_capacity(port_slots(ty));
    for index in 0..port_slots(ty) {
        ports.push(SerialPort::decode(&mut r, index)?);
    }
    r.expect_empty("mtty_data")
        .map_err(|t| VendorError::new(codes::BAD_LENGTH, format!("mtty state: {t}")))?;
    Ok(MttyState { ports })
}

/// Reads one padding byte, which must be zero.
fn expect_padding(p: &mut Reader<'_>, index: usize) -> Result<(), VendorError> {
    let offset = p.consumed();
    match p.u8("padding").map_err(short)? {
        0 => Ok(()),
        b => Err(VendorError::new(
            codes::PADDING,
            format!("port {index}: padding byte at port offset {offset} is {b:#04x}, not 0"),
        )),
    }
}

/// A port body ended early. Unreachable after the length check, mapped anyway.
fn short(e: mdevmig_plugin_api::Short) -> VendorError {
    VendorError::new(codes::BAD_LENGTH, format!("mtty state: {e}"))
}
