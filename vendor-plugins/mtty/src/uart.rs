//! What a guest's accesses to a port's 8-byte I/O BAR do to its [`SerialPort`], as in
//! `handle_bar_write()` and `handle_bar_read()` of `samples/vfio-mdev/mtty.c`.
//!
//! Simulated devices and tests use this to build port states the real driver can
//! reach (every state reached from [`SerialPort::new`] passes
//! [`SerialPort::check`]). Interrupts are not modelled; they change
//! no migrated field.
//!
//! Two places differ from the kernel on purpose, and only on states `check` refuses:
//! where the kernel would index the FIFO with an out-of-range `head` or `tail`, the
//! model skips the access; C `bool`s other than 0 count as true. Where the kernel
//! returns an uninitialised byte (an RX read of an empty FIFO), the model returns 0.

use mdevmig_plugin_api::VendorError;

use crate::format::{type_for_ports, MttyState, MttyType, SerialPort, MAX_FIFO_SIZE};

/// `UART_RX` / `UART_TX` (with DLAB: `UART_DLL`).
pub const UART_RX: u8 = 0;
/// `UART_TX`.
pub const UART_TX: u8 = 0;
/// `UART_IER` (with DLAB: `UART_DLM`).
pub const UART_IER: u8 = 1;
/// `UART_IIR` (read).
pub const UART_IIR: u8 = 2;
/// `UART_FCR` (write).
pub const UART_FCR: u8 = 2;
/// `UART_LCR`.
pub const UART_LCR: u8 = 3;
/// `UART_MCR`.
pub const UART_MCR: u8 = 4;
/// `UART_LSR`.
pub const UART_LSR: u8 = 5;
/// `UART_MSR`.
pub const UART_MSR: u8 = 6;
/// `UART_SCR`.
pub const UART_SCR: u8 = 7;

/// `UART_LCR_DLAB`.
pub const UART_LCR_DLAB: u8 = 0x80;
/// `UART_FCR_ENABLE_FIFO`.
pub const UART_FCR_ENABLE_FIFO: u8 = 0x01;
/// `UART_FCR_CLEAR_RCVR`.
pub const UART_FCR_CLEAR_RCVR: u8 = 0x02;
/// `UART_FCR_CLEAR_XMIT`.
pub const UART_FCR_CLEAR_XMIT: u8 = 0x04;

const UART_IER_RDI: u8 = 0x01;
const UART_IER_THRI: u8 = 0x02;
const UART_IER_RLSI: u8 = 0x04;
const UART_IER_MSI: u8 = 0x08;
const UART_IIR_NO_INT: u8 = 0x01;
const UART_IIR_THRI: u8 = 0x02;
const UART_IIR_RDI: u8 = 0x04;
const UART_IIR_RLSI: u8 = 0x06;
const UART_IIR_MSI: u8 = 0x00;
const UART_MCR_DTR: u8 = 0x01;
const UART_MCR_RTS: u8 = 0x02;
const UART_MCR_AFE: u8 = 0x20;
const UART_LSR_DR: u8 = 0x01;
const UART_LSR_OE: u8 = 0x02;
const UART_LSR_THRE: u8 = 0x20;
const UART_LSR_TEMT: u8 = 0x40;
const UART_MSR_DCTS: u8 = 0x01;
const UART_MSR_DDSR: u8 = 0x02;
const UART_MSR_CTS: u8 = 0x10;
const UART_MSR_DSR: u8 = 0x20;
const UART_MSR_DCD: u8 = 0x80;

/// `MAX_FIFO_SIZE` as the driver's `u8` fields hold it.
const FIFO_SIZE_U8: u8 = 16;
/// `CIRCULAR_BUF_INC_IDX` mask.
const FIFO_MASK: u8 = 15;
const _: () = assert!(FIFO_SIZE_U8 == FIFO_MASK + 1 && MAX_FIFO_SIZE == 16);

impl MttyState {
    /// A state with traffic in it, as a guest leaves a device of type `ty` after
    /// programming each port (115200 baud on port 0, 9600 on port 1, 8N1, FIFO on,
    /// receive and line-status interrupts on, DTR/RTS/OUT2, a scratch value) and
    /// sending bytes through the loop-back FIFO that it has partly read back. Port 1's
    /// FIFO has wrapped (`head < tail`). Built with [`SerialPort::guest_write`], so the
    /// real driver reaches exactly this state after the same accesses.
    pub fn busy_for(ty: MttyType) -> Self {
        let mut state = Self::default_for(ty);
        for (index, port) in state.ports_mut().iter_mut().enumerate() {
            let (divisor_lo, scratch, sent, read): (u8, u8, &[u8], usize) = if index == 0 {
                (1, 0x5a, b"mdevmig\n", 3)
            } else {
                (12, 0xa5, b"port 1 says hi, twice", 10)
            };
            port.guest_write(UART_LCR, UART_LCR_DLAB | 0x03);
            port.guest_write(UART_TX, divisor_lo);
            port.guest_write(UART_IER, 0);
            port.guest_write(UART_LCR, 0x03);
            // FIFO on, both FIFOs cleared, trigger bits for 14 (which the driver ignores).
            port.guest_write(
                UART_FCR,
                0xc0 | UART_FCR_CLEAR_XMIT | UART_FCR_CLEAR_RCVR | UART_FCR_ENABLE_FIFO,
            );
            port.guest_write(UART_IER, UART_IER_RDI | UART_IER_RLSI);
            port.guest_write(UART_MCR, 0x08 | UART_MCR_RTS | UART_MCR_DTR);
            port.guest_write(UART_SCR, scratch);
            let (first, second) = sent.split_at(sent.len().min(12));
            for &b in first {
                port.guest_write(UART_TX, b);
            }
            for _ in 0..read {
                port.guest_read(UART_RX);
            }
            for &b in second {
                port.guest_write(UART_TX, b);
            }
        }
        state
    }

    /// [`MttyState::busy_for`] the type with `nr_ports` ports (1 or 2).
    pub fn new_busy(nr_ports: u32) -> Result<Self, VendorError> {
        type_for_ports(nr_ports).map(Self::busy_for)
    }
}

impl SerialPort {
    /// A one-byte guest write at `offset` of the port's BAR (`handle_bar_write`).
    /// Offsets past 7 are ignored, as in the driver.
    pub fn guest_write(&mut self, offset: u8, data: u8) {
        match offset {
            UART_TX => {
                if self.dlab != 0 {
                    // DLL: ORed in; LCR with DLAB cleared the latch first.
                    self.divisor |= u16::from(data);
                    return;
                }
                if self.rxtx.count < self.max_fifo_size {
                    if let Some(slot) = self.rxtx.fifo.get_mut(usize::from(self.rxtx.head)) {
                        *slot = data;
                    }
                    self.rxtx.count = self.rxtx.count.wrapping_add(1);
                    self.rxtx.head = self.rxtx.head.wrapping_add(1) & FIFO_MASK;
                    self.overrun = 0;
                } else {
                    self.overrun = 1;
                }
            }
            UART_IER => {
                if self.dlab != 0 {
                    // DLM.
                    self.divisor |= u16::from_le_bytes([0, data]);
                } else {
                    self.set_reg(UART_IER, data);
                }
            }
            UART_FCR => {
                self.fcr = data;
                if data & (UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT) != 0 {
                    self.rxtx.count = 0;
                    self.rxtx.head = 0;
                    self.rxtx.tail = 0;
                }
                // The driver decodes the trigger bits into 1/4/8/14 and then
                // unconditionally overwrites the result with 1.
                self.intr_trigger_level = 1;
                self.max_fifo_size = if data & UART_FCR_ENABLE_FIFO != 0 {
                    FIFO_SIZE_U8
                } else {
                    1
                };
            }
            UART_LCR => {
                if data & UART_LCR_DLAB != 0 {
                    self.dlab = 1;
                    self.divisor = 0;
                } else {
                    self.dlab = 0;
                }
                self.set_reg(UART_LCR, data);
            }
            UART_MCR | UART_SCR => self.set_reg(offset, data),
            // LSR, MSR and anything past the 8 registers: ignored.
            _ => {}
        }
    }

    /// A one-byte guest read at `offset` of the port's BAR (`handle_bar_read`).
    /// Offsets past 7 read 0.
    pub fn guest_read(&mut self, offset: u8) -> u8 {
        let [dll, dlm] = self.divisor.to_le_bytes();
        let empty = self.rxtx.head == self.rxtx.tail;
        match offset {
            UART_RX => {
                if self.dlab != 0 {
                    return dll;
                }
                if empty {
                    return 0;
                }
                let byte = self
                    .rxtx
                    .fifo
                    .get(usize::from(self.rxtx.tail))
                    .copied()
                    .unwrap_or(0);
                self.rxtx.count = self.rxtx.count.wrapping_sub(1);
                self.rxtx.tail = self.rxtx.tail.wrapping_add(1) & FIFO_MASK;
                byte
            }
            UART_IER => {
                if self.dlab != 0 {
                    dlm
                } else {
                    self.reg(UART_IER) & 0x0f
                }
            }
            UART_IIR => {
                let ier = self.reg(UART_IER);
                let mut iir = 0;
                if ier & UART_IER_RLSI != 0 && self.overrun != 0 {
                    iir |= UART_IIR_RLSI;
                }
                if ier & UART_IER_RDI != 0 && self.rxtx.count >= self.intr_trigger_level {
                    iir |= UART_IIR_RDI;
                }
                if ier & UART_IER_THRI != 0 && empty {
                    iir |= UART_IIR_THRI;
                }
                if ier & UART_IER_MSI != 0 && self.reg(UART_MCR) & (UART_MCR_RTS | UART_MCR_DTR) != 0 {
                    iir |= UART_IIR_MSI;
                }
                if iir == 0 {
                    iir = UART_IIR_NO_INT;
                }
                iir | 0xc0
            }
            UART_LCR | UART_MCR | UART_SCR => self.reg(offset),
            UART_LSR => {
                let mut lsr = 0;
                if !empty {
                    lsr |= UART_LSR_DR;
                }
                if self.overrun != 0 {
                    lsr |= UART_LSR_OE;
                }
                if empty {
                    lsr |= UART_LSR_TEMT | UART_LSR_THRE;
                }
                lsr
            }
            UART_MSR => {
                let mut msr = UART_MSR_DSR | UART_MSR_DDSR | UART_MSR_DCD;
                if self.reg(UART_MCR) & UART_MCR_AFE == 0 || self.rxtx.count < self.max_fifo_size {
                    msr |= UART_MSR_CTS | UART_MSR_DCTS;
                }
                msr
            }
            _ => 0,
        }
    }

    /// `uart_reg[offset]`, 0 past the array.
    fn reg(&self, offset: u8) -> u8 {
        self.uart_reg.get(usize::from(offset)).copied().unwrap_or(0)
    }

    fn set_reg(&mut self, offset: u8, data: u8) {
        if let Some(r) = self.uart_reg.get_mut(usize::from(offset)) {
            *r = data;
        }
    }
}
