//! The stable error codes of the simgpu plugin, as carried in
//! [`mdevmig_plugin_api::VendorError::code`] and listed in the broker's
//! `spec/errors.md`. Codes are never renamed or reused; [`TABLE`] is pinned by a test
//! and every code in the source appears in it.

/// A section, record or raw stream is not the exact length the destination type
/// needs (or shorter than its fixed fields).
pub const BAD_LENGTH: &str = "vendor.simgpu.bad_length";
/// A structured section does not start with its 4-byte magic.
pub const BAD_MAGIC: &str = "vendor.simgpu.bad_magic";
/// The device type is not `vgpu-64m`, `vgpu-256m` or `vgpu-1g`.
pub const DEVICE_TYPE: &str = "vendor.simgpu.device_type";
/// A configuration attribute is unknown, has a value outside its set, or names a
/// feature this plugin build does not have.
pub const ATTRIBUTE: &str = "vendor.simgpu.attribute";
/// The state version is outside the versions this plugin build knows.
pub const UNSUPPORTED_VERSION: &str = "vendor.simgpu.unsupported_version";
/// A section (or a required raw-stream record) this plugin does not know for the
/// state version, or a section of another kind than the call expects.
pub const UNKNOWN_SECTION: &str = "vendor.simgpu.unknown_section";
/// A raw-stream record header has a wrong magic, checksum, flags or reserved field.
pub const FRAMING: &str = "vendor.simgpu.framing";
/// Raw-stream records are out of their fixed order or repeated.
pub const RECORD_ORDER: &str = "vendor.simgpu.record_order";
/// A required record (`simgpu.fb`, `simgpu.fb-dirty`, `simgpu.regs`) is missing from
/// a loaded raw stream.
pub const MISSING_SECTION: &str = "vendor.simgpu.missing_section";
/// A loaded raw stream ended inside a record.
pub const TRUNCATED: &str = "vendor.simgpu.truncated";
/// `regs.fb_pages` is not the destination type's framebuffer page count.
pub const FB_SIZE: &str = "vendor.simgpu.fb_size";
/// `regs.heads` is outside 1..=4 or differs from the destination's `heads` attribute.
pub const HEADS: &str = "vendor.simgpu.heads";
/// `regs.ctx_count` is above 64.
pub const CTX_COUNT: &str = "vendor.simgpu.ctx_count";
/// A context-table entry is inconsistent: an active slot that is free, has priority
/// above 3 or an unaligned or zero address, or an inactive slot that is not zero.
pub const CONTEXT: &str = "vendor.simgpu.context";
/// `regs.ring_size` is not a power of two in 256..=65536.
pub const RING_SIZE: &str = "vendor.simgpu.ring_size";
/// `regs.ring_head` or `regs.ring_tail` is not below `ring_size`.
pub const RING_INDEX: &str = "vendor.simgpu.ring_index";
/// A field with a closed set of values (power state, display mode, context state,
/// ctx3/encoder enable flag, codec) holds a value outside it.
pub const ENUM_VALUE: &str = "vendor.simgpu.enum_value";
/// The display mode on every head needs more framebuffer than the type has.
pub const DISPLAY_FIT: &str = "vendor.simgpu.display_fit";
/// `regs.fence_completed` is ahead of `regs.fence_submitted`.
pub const FENCE: &str = "vendor.simgpu.fence";
/// A reserved field, undefined flag bit or unused slot is not zero.
pub const RESERVED: &str = "vendor.simgpu.reserved";
/// A telemetry reading (temperature, power, clock) is outside its physical range.
pub const TELEMETRY_RANGE: &str = "vendor.simgpu.telemetry_range";
/// `ctx3.enabled` disagrees with the destination's `ctx3` attribute.
pub const CTX3_MISMATCH: &str = "vendor.simgpu.ctx3_mismatch";
/// A ctx3 queue is inconsistent: queue count above 8 (or non-zero while disabled),
/// length not a power of two in 16..=1024, head or tail not below the length,
/// priority above 3, or base zero or unaligned.
pub const CTX3_QUEUE: &str = "vendor.simgpu.ctx3_queue";
/// Encoder state was offered for a device configured `encoder=off`.
pub const ENCODER_MISMATCH: &str = "vendor.simgpu.encoder_mismatch";
/// An encoder session field is out of range (size, bitrate, GOP, session id), or an
/// idle encoder has non-zero session fields.
pub const ENCODER_RANGE: &str = "vendor.simgpu.encoder_range";
/// `fb-dirty` count above its capacity, or capacity/page size not the type's.
pub const DIRTY_COUNT: &str = "vendor.simgpu.dirty_count";
/// An `fb-dirty` page index is outside the framebuffer or not strictly increasing.
pub const DIRTY_INDEX: &str = "vendor.simgpu.dirty_index";
/// A bulk chunk lies (partly) outside the framebuffer section.
pub const BULK_RANGE: &str = "vendor.simgpu.bulk_range";
/// A simulated device got load data without a load in progress.
pub const NOT_LOADING: &str = "vendor.simgpu.not_loading";
/// The state cannot be converted between these versions (shared code, the same as
/// the plugin API's default `convert`).
pub const CANNOT_CONVERT: &str = "vendor.cannot_convert";

/// Every code with its one-line meaning, in the order above.
pub const TABLE: &[(&str, &str)] = &[
    (
        BAD_LENGTH,
        "a simgpu section, record or raw stream is not the exact length the destination type needs",
    ),
    (
        BAD_MAGIC,
        "a simgpu structured section does not start with its magic",
    ),
    (
        DEVICE_TYPE,
        "the device type is not vgpu-64m, vgpu-256m or vgpu-1g",
    ),
    (
        ATTRIBUTE,
        "a simgpu attribute is unknown, out of its value set, or a feature this build lacks",
    ),
    (
        UNSUPPORTED_VERSION,
        "the state version is outside the versions the simgpu plugin knows",
    ),
    (
        UNKNOWN_SECTION,
        "a section or required raw record the simgpu plugin does not know for this state version",
    ),
    (
        FRAMING,
        "a simgpu record header has a wrong magic, checksum, flags or reserved field",
    ),
    (
        RECORD_ORDER,
        "simgpu raw-stream records are out of order or repeated",
    ),
    (
        MISSING_SECTION,
        "a required simgpu record (fb, fb-dirty, regs) is missing from the raw stream",
    ),
    (TRUNCATED, "the simgpu raw stream ended inside a record"),
    (
        FB_SIZE,
        "regs.fb_pages is not the destination type's framebuffer page count",
    ),
    (
        HEADS,
        "regs.heads is outside 1..=4 or differs from the destination's heads attribute",
    ),
    (CTX_COUNT, "regs.ctx_count is above 64"),
    (
        CONTEXT,
        "a simgpu context-table entry is inconsistent with ctx_count or out of range",
    ),
    (RING_SIZE, "regs.ring_size is not a power of two in 256..=65536"),
    (RING_INDEX, "regs.ring_head or ring_tail is not below ring_size"),
    (
        ENUM_VALUE,
        "a simgpu enumerated field (power state, display mode, codec, ...) has an undefined value",
    ),
    (
        DISPLAY_FIT,
        "the display mode on every head needs more framebuffer than the type has",
    ),
    (FENCE, "regs.fence_completed is ahead of fence_submitted"),
    (
        RESERVED,
        "a simgpu reserved field, undefined flag bit or unused slot is not zero",
    ),
    (
        TELEMETRY_RANGE,
        "a simgpu telemetry reading is outside its physical range",
    ),
    (
        CTX3_MISMATCH,
        "ctx3.enabled disagrees with the destination's ctx3 attribute",
    ),
    (
        CTX3_QUEUE,
        "a simgpu ctx3 queue has an out-of-range count, length, index, priority or base",
    ),
    (
        ENCODER_MISMATCH,
        "simgpu encoder state was offered for a device configured encoder=off",
    ),
    (
        ENCODER_RANGE,
        "a simgpu encoder session field is out of range, or an idle encoder is not zero",
    ),
    (
        DIRTY_COUNT,
        "simgpu fb-dirty count exceeds its capacity, or capacity/page size is not the type's",
    ),
    (
        DIRTY_INDEX,
        "a simgpu fb-dirty page index is outside the framebuffer or not increasing",
    ),
    (
        BULK_RANGE,
        "a simgpu framebuffer chunk lies outside the framebuffer section",
    ),
    (
        NOT_LOADING,
        "a simulated simgpu device got load data without a load in progress",
    ),
    (
        CANNOT_CONVERT,
        "the plugin cannot convert the state between these versions",
    ),
];
