//! The stable error codes of the mtty plugin, as carried in
//! [`mdevmig_plugin_api::VendorError::code`] and listed in the broker's
//! `spec/errors.md`. Codes are never renamed or reused; [`ALL`] is pinned by a test.

/// The state's length is not exactly `24 + 36 * nr_ports` for its (or the
/// destination's) port count, or is shorter than the 24-byte header.
pub const BAD_LENGTH: &str = "vendor.mtty.bad_length";
/// The header's `magic` is not `0x7e9d09898c3e2c4e`.
pub const BAD_MAGIC: &str = "vendor.mtty.bad_magic";
/// The header's `major_ver`/`minor_ver` is not 1/0.
pub const BAD_VERSION: &str = "vendor.mtty.bad_version";
/// The header's `flags` is not 0.
pub const BAD_FLAGS: &str = "vendor.mtty.bad_flags";
/// `nr_ports` is not the destination type's port count (1 for `mtty-1`, 2 for
/// `mtty-2`), or not 1 or 2 at all.
pub const PORT_COUNT: &str = "vendor.mtty.port_count";
/// A padding byte of `struct serial_port` is not zero.
pub const PADDING: &str = "vendor.mtty.padding";
/// A FIFO `head` or `tail` index is 16 or more.
pub const FIFO_INDEX: &str = "vendor.mtty.fifo_index";
/// A FIFO `count` is above 16 or disagrees with `head` and `tail`.
pub const FIFO_COUNT: &str = "vendor.mtty.fifo_count";
/// `max_fifo_size` is not 1 or 16, or disagrees with the FCR value that set it.
pub const FIFO_SIZE: &str = "vendor.mtty.fifo_size";
/// A register or flag holds a value the driver never stores: a C `bool` other than
/// 0/1, a register the driver never writes not zero, `dlab` disagreeing with LCR bit
/// 7, or an interrupt trigger level other than 0/1 (or 0 after an FCR write).
pub const REGISTER: &str = "vendor.mtty.register";
/// The device type is not `mtty-1` or `mtty-2`.
pub const DEVICE_TYPE: &str = "vendor.mtty.device_type";
/// A configuration attribute is unknown or its value does not fit the device type.
pub const ATTRIBUTE: &str = "vendor.mtty.attribute";
/// The requested state version is outside the plugin's window (1..=1).
pub const UNSUPPORTED_VERSION: &str = "vendor.mtty.unsupported_version";
/// A section other than `mtty.state` version 1 was handed to the plugin.
pub const UNKNOWN_SECTION: &str = "vendor.mtty.unknown_section";

/// Every code this plugin returns, in the order of `spec/errors.md`.
pub const ALL: &[&str] = &[
    BAD_LENGTH,
    BAD_MAGIC,
    BAD_VERSION,
    BAD_FLAGS,
    PORT_COUNT,
    PADDING,
    FIFO_INDEX,
    FIFO_COUNT,
    FIFO_SIZE,
    REGISTER,
    DEVICE_TYPE,
    ATTRIBUTE,
    UNSUPPORTED_VERSION,
    UNKNOWN_SECTION,
];

/// Every code with its one-line meaning, as listed in `spec/errors.md`.
pub const TABLE: &[(&str, &str)] = &[
    (
        BAD_LENGTH,
        "the state is not exactly 24 + 36 * nr_ports bytes for the destination type",
    ),
    (BAD_MAGIC, "the mtty_data magic is not 0x7e9d09898c3e2c4e"),
    (BAD_VERSION, "the mtty_data major/minor version is not 1/0"),
    (BAD_FLAGS, "the mtty_data flags field is not 0"),
    (PORT_COUNT, "nr_ports is not the destination type's port count"),
    (PADDING, "a serial_port padding byte is not zero"),
    (
        FIFO_INDEX,
        "a FIFO head or tail index is outside the 16-byte FIFO",
    ),
    (
        FIFO_COUNT,
        "a FIFO count is above 16 or disagrees with head and tail",
    ),
    (FIFO_SIZE, "max_fifo_size is not 1 or 16, or disagrees with FCR"),
    (
        REGISTER,
        "a UART register or flag holds a value the driver never stores",
    ),
    (DEVICE_TYPE, "the device type is not mtty-1 or mtty-2"),
    (
        ATTRIBUTE,
        "an mtty attribute is unknown or does not fit the device type",
    ),
    (
        UNSUPPORTED_VERSION,
        "the state version is outside the mtty plugin's window",
    ),
    (
        UNKNOWN_SECTION,
        "a section other than mtty.state v1 was handed to the mtty plugin",
    ),
];
