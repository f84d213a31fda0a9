//! Builds mtty states straight from the kernel's C layout (`struct mtty_data`,
//! `struct serial_port` in `samples/vfio-mdev/mtty.c`), with explicit offsets and
//! independently of the crate's encoder, so the tests prove the layout.

#![allow(dead_code)]

pub const MAGIC: u64 = 0x7e9d_0989_8c3e_2c4e;

// struct mtty_data
pub const H_MAGIC: usize = 0;
pub const H_MAJOR: usize = 8;
pub const H_MINOR: usize = 12;
pub const H_NR_PORTS: usize = 16;
pub const H_FLAGS: usize = 20;
pub const PORTS: usize = 24;
pub const PORT_SIZE: usize = 36;

// struct serial_port, relative to the port
pub const P_UART_REG: usize = 0;
pub const P_FIFO: usize = 8;
pub const P_HEAD: usize = 24;
pub const P_TAIL: usize = 25;
pub const P_COUNT: usize = 26;
pub const P_DLAB: usize = 27;
pub const P_OVERRUN: usize = 28;
pub const P_PAD1: usize = 29;
pub const P_DIVISOR: usize = 30;
pub const P_FCR: usize = 32;
pub const P_MAX_FIFO: usize = 33;
pub const P_TRIGGER: usize = 34;
pub const P_PAD2: usize = 35;

/// One port's fields as the kernel holds them.
#[derive(Clone, Copy)]
pub struct Port {
    pub uart_reg: [u8; 8],
    pub fifo: [u8; 16],
    pub head: u8,
    pub tail: u8,
    pub count: u8,
    pub dlab: u8,
    pub overrun: u8,
    pub divisor: u16,
    pub fcr: u8,
    pub max_fifo_size: u8,
    pub intr_trigger_level: u8,
}

impl Port {
    /// mtty_init_dev(): zeroed, max_fifo_size = 16.
    pub fn fresh() -> Self {
        Port {
            uart_reg: [0; 8],
            fifo: [0; 16],
            head: 0,
            tail: 0,
            count: 0,
            dlab: 0,
            overrun: 0,
            divisor: 0,
            fcr: 0,
            max_fifo_size: 16,
            intr_trigger_level: 0,
        }
    }

    /// After FCR = 0xc7 and some traffic: 5 bytes queued, wrapped.
    pub fn busy() -> Self {
        let mut p = Port::fresh();
        p.uart_reg = [0, 0x05, 0, 0x03, 0x0b, 0, 0, 0x5a];
        p.fifo = *b"0123456789abcdef";
        p.head = 2;
        p.tail = 13;
        p.count = 5;
        p.divisor = 0x0001;
        p.fcr = 0xc7;
        p.max_fifo_size = 16;
        p.intr_trigger_level = 1;
        p
    }
}

/// Offset of port `i` in the state.
pub fn port_at(i: usize) -> usize {
    PORTS + PORT_SIZE * i
}

/// A state with header field nr_ports = `nr_ports` and the given ports.
pub fn image(nr_ports: u32, ports: &[Port]) -> Vec<u8> {
    let mut b = vec![0u8; PORTS + PORT_SIZE * ports.len()];
    b[H_MAGIC..H_MAGIC + 8].copy_from_slice(&MAGIC.to_ne_bytes());
    b[H_MAJOR..H_MAJOR + 4].copy_from_slice(&1u32.to_ne_bytes());
    b[H_MINOR..H_MINOR + 4].copy_from_slice(&0u32.to_ne_bytes());
    b[H_NR_PORTS..H_NR_PORTS + 4].copy_from_slice(&nr_ports.to_ne_bytes());
    b[H_FLAGS..H_FLAGS + 4].copy_from_slice(&0u32.to_ne_bytes());
    for (i, p) in ports.iter().enumerate() {
        let o = port_at(i);
        b[o + P_UART_REG..o + P_UART_REG + 8].copy_from_slice(&p.uart_reg);
        b[o + P_FIFO..o + P_FIFO + 16].copy_from_slice(&p.fifo);
        b[o + P_HEAD] = p.head;
        b[o + P_TAIL] = p.tail;
        b[o + P_COUNT] = p.count;
        b[o + P_DLAB] = p.dlab;
        b[o + P_OVERRUN] = p.overrun;
        b[o + P_PAD1] = 0;
        b[o + P_DIVISOR..o + P_DIVISOR + 2].copy_from_slice(&p.divisor.to_ne_bytes());
        b[o + P_FCR] = p.fcr;
        b[o + P_MAX_FIFO] = p.max_fifo_size;
        b[o + P_TRIGGER] = p.intr_trigger_level;
        b[o + P_PAD2] = 0;
    }
    b
}

/// A valid one-port state.
pub fn one(p: Port) -> Vec<u8> {
    image(1, &[p])
}

/// A valid two-port state.
pub fn two(p0: Port, p1: Port) -> Vec<u8> {
    image(2, &[p0, p1])
}

pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// A small deterministic PRNG (xorshift64*), so the tests need no extra crates.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}
