//! Refusing mtty states that break invariants the driver keeps for its own states.
//!
//! # What the kernel checks
//!
//! `mtty_resume_write()` (`samples/vfio-mdev/mtty.c`) copies each write into its
//! `struct mtty_data` at the file position, refusing with `ENOMEM` a write that would
//! end past `mtty_data_size()`. When a write crosses byte 24 it compares the header:
//! `magic`, `flags == 0`, `major_ver`, `minor_ver` and `nr_ports` against the device.
//! A mismatch fails *that write* with `EFAULT`, but the bytes stay and `filled_size`
//! still grows, and `mtty_load_state()` (RESUMING→STOP) only checks `filled_size`
//! ("magic and version already tested by resume write fn") before `memcpy`ing the
//! ports into the live device. Nothing inside a port is ever checked. The port fields
//! are then used as they are by `handle_bar_write()`/`handle_bar_read()`:
//!
//! - a TX write stores `fifo[head]` *before* masking `head` with
//!   `CIRCULAR_BUF_INC_IDX`, whenever `count < max_fifo_size`: a `head` of up to 255
//!   writes a guest-chosen byte up to 239 bytes past the 16-byte FIFO, into the next
//!   port and the rest of `struct mdev_state` (its mutexes, eventfd pointers, ...);
//! - an RX read returns `fifo[tail]` whenever `head != tail`: a large `tail` leaks
//!   kernel memory to the guest;
//! - `count` and `max_fifo_size` decide whether a write is taken; wrong values let the
//!   FIFO take more than 16 bytes (overwriting unread ones), or wrap `count` to 255.
//!
//! # What this module checks
//!
//! [`validate`] decodes with [`MttyState::parse`]'s rules (header constants, exact
//! length, zero padding; see [`crate::format`]) against the *destination* type, then
//! runs [`SerialPort::check`] on each port. The port checks are invariants the driver
//! keeps from `mtty_init_dev()` through every guest register access (they are closed
//! under [`crate::uart`]'s model of those accesses, which a test exercises), so a
//! state the driver produced always passes. They run in this order:
//!
//! | code | refused when | why |
//! | --- | --- | --- |
//! | `fifo_index` | `head >= 16` or `tail >= 16` | the kernel indexes `fifo[16]` with them before masking: out-of-bounds write / read |
//! | `fifo_count` | `count > 16`, or `count != (head - tail) mod 16` except a full FIFO (`count == 16`, `head == tail`) | every write adds one to both `count` and `head`, every read takes one from `count` and adds one to `tail`, an FCR clear zeroes all three |
//! | `fifo_size` | `max_fifo_size` is not 1 or 16 | the FCR write sets 16 with `UART_FCR_ENABLE_FIFO`, else 1; `mtty_init_dev()` sets 16 |
//! | `register` | `dlab` or `overrun` is not 0 or 1 | C `bool`s; any other byte is undefined behaviour in the kernel |
//! | `register` | `uart_reg[0]` (RX/TX), `[2]` (IIR/FCR), `[5]` (LSR) or `[6]` (MSR) is not 0 | the driver stores only IER, LCR, MCR and SCR there (FCR goes to `fcr`; the rest are computed on read) |
//! | `register` | `dlab` differs from LCR bit 7 | an LCR write sets both from the same bit, nothing else changes either |
//! | `register` | `intr_trigger_level` is not 0 or 1, or 0 while `fcr != 0` | it starts 0; every FCR write sets it to 1 (the 1/4/8/14 decode before is overwritten) |
//! | `fifo_size` | `max_fifo_size` disagrees with `fcr`: 16 before any FCR write (level 0), else 16 iff `fcr & UART_FCR_ENABLE_FIFO` | the FCR write sets `fcr`, the level and the size together |
//!
//! Not checked, because every value is reachable: the FIFO bytes (stale ones
//! included), `divisor` (any `u16` through DLL/DLM writes, ORed into a latch an LCR
//! write with DLAB zeroes), IER/LCR/MCR/SCR (stored as the guest wrote them; IER reads
//! back masked to 4 bits but is stored whole), `fcr` after an FCR write, and
//! `overrun` (it survives draining the FIFO). A full FIFO (`count == 16`,
//! `head == tail`) is accepted although the driver then reads it as empty: it is how
//! the driver itself leaves a FIFO after 16 unread TX bytes.
//!
//! The invariants are necessary, not sufficient, for a state to be reachable: joint
//! histories are not reconstructed (for example, after an FCR write that cleared the
//! FIFO, `count` cannot exceed `max_fifo_size`, and `overrun` with a FIFO that was
//! never reconfigured implies a full one). Such states are harmless to the kernel:
//! every index stays inside the FIFO and every count within 16.

use mdevmig_plugin_api::VendorError;

use crate::codes;
use crate::format::{decode, MttyState, MttyType, SerialPort};
use crate::uart::{UART_FCR_ENABLE_FIFO, UART_LCR, UART_LCR_DLAB};

/// Decodes `bytes` as the state of a device of type `ty` and checks every port;
/// returns the state only if it keeps every invariant the driver keeps (see the
/// [module documentation](self)).
pub fn validate(bytes: &[u8], ty: MttyType) -> Result<MttyState, VendorError> {
    let state = decode(bytes, Some(ty))?;
    state.check()?;
    Ok(state)
}

impl MttyState {
    /// Runs [`SerialPort::check`] on every port.
    pub fn check(&self) -> Result<(), VendorError> {
        self.ports()
            .iter()
            .enumerate()
            .try_for_each(|(index, port)| port.check(index))
    }
}

/// `uart_reg` slots the driver never writes, with their names.
const UNWRITTEN_REGS: [(usize, &str); 4] = [(0, "RX/TX"), (2, "IIR/FCR"), (5, "LSR"), (6, "MSR")];

impl SerialPort {
    /// Checks one port (number `index`, for messages) against the invariants the
    /// driver keeps; see the [module documentation](self) for the rules.
    pub fn check(&self, index: usize) -> Result<(), VendorError> {
        let err = |code: &'static str, what: String| {
            Err(VendorError::new(code, format!("mtty port {index}: {what}")))
        };
        let Self {
            uart_reg,
            rxtx,
            dlab,
            overrun,
            divisor: _,
            fcr,
            max_fifo_size,
            intr_trigger_level,
        } = *self;

        if rxtx.head >= 16 || rxtx.tail >= 16 {
            return err(
                codes::FIFO_INDEX,
                format!(
                    "FIFO head {} / tail {} outside the 16-byte FIFO",
                    rxtx.head, rxtx.tail
                ),
            );
        }
        let queued = rxtx.head.wrapping_sub(rxtx.tail) & 15;
        let full = rxtx.count == 16 && rxtx.head == rxtx.tail;
        if rxtx.count > 16 || (rxtx.count != queued && !full) {
            return err(
                codes::FIFO_COUNT,
                format!(
                    "FIFO count {} does not match head {} and tail {} ({queued} or 16 queued)",
                    rxtx.count, rxtx.head, rxtx.tail
                ),
            );
        }
        if max_fifo_size != 1 && max_fifo_size != 16 {
            return err(
                codes::FIFO_SIZE,
                format!("max_fifo_size is {max_fifo_size}; the driver sets only 1 or 16"),
            );
        }
        if dlab > 1 || overrun > 1 {
            return err(
                codes::REGISTER,
                format!("bool dlab {dlab} / overrun {overrun} is not 0 or 1"),
            );
        }
        for (slot, name) in UNWRITTEN_REGS {
            match uart_reg.get(slot) {
                Some(0) | None => {}
                Some(v) => {
                    return err(
                        codes::REGISTER,
                        format!("uart_reg[{slot}] ({name}) is {v:#04x}; the driver never stores it"),
                    )
                }
            }
        }
        let lcr = uart_reg.get(usize::from(UART_LCR)).copied().unwrap_or(0);
        if (lcr & UART_LCR_DLAB != 0) != (dlab != 0) {
            return err(
                codes::REGISTER,
                format!("dlab {dlab} disagrees with LCR {lcr:#04x} (bit 7 is DLAB)"),
            );
        }
        let expected_size = match (intr_trigger_level, fcr) {
            // No FCR write yet: mtty_init_dev()'s values.
            (0, 0) => 16,
            (0, _) => {
                return err(
                    codes::REGISTER,
                    format!("trigger level 0 (no FCR write yet) but fcr is {fcr:#04x}"),
                )
            }
            (1, _) if fcr & UART_FCR_ENABLE_FIFO != 0 => 16,
            (1, _) => 1,
            (level, _) => {
                return err(
                    codes::REGISTER,
                    format!("intr_trigger_level is {level}; the driver sets only 0 or 1"),
                )
            }
        };
        if max_fifo_size != expected_size {
            return err(
                codes::FIFO_SIZE,
                format!(
                    "max_fifo_size {max_fifo_size} disagrees with fcr {fcr:#04x} and trigger \
                     level {intr_trigger_level} (expected {expected_size})"
                ),
            );
        }
        Ok(())
    }
}
