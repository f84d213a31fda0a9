//! The stable error codes of the Xe plugin, as carried in
//! [`mdevmig_plugin_api::VendorError::code`]. Codes are never renamed or reused;
//! [`TABLE`] lists every code the crate can return, in the order below, and a test
//! checks that every `vendor.xe.*` string in the source appears in it.

/// A packet header's `version` is not 1 (`XE_SRIOV_PACKET_SUPPORTED_VERSION`).
pub const BAD_VERSION: &str = "vendor.xe.bad_version";
/// A packet type outside 1..=6. Xe packets have no optional flag, so under the
/// plugin API's rule for unknown records every unknown type is refused.
pub const UNKNOWN_TYPE: &str = "vendor.xe.unknown_type";
/// A packet header's `flags` is not 0 (the driver defines no flag).
pub const BAD_FLAGS: &str = "vendor.xe.bad_flags";
/// A packet's `size` is above the largest payload any packet may carry (one VRAM
/// chunk, 512 MiB); checked before anything is sized or added from it.
pub const SIZE_TOO_LARGE: &str = "vendor.xe.size_too_large";
/// `offset + size` overflows 64 bits.
pub const OFFSET_OVERFLOW: &str = "vendor.xe.offset_overflow";
/// `offset + size` lies outside the addressed resource (the tile's VRAM, the GGTT
/// table, the GuC state maximum, the MMIO block, the descriptor cap).
pub const OUT_OF_RANGE: &str = "vendor.xe.out_of_range";
/// A packet names a tile the destination does not have.
pub const UNKNOWN_TILE: &str = "vendor.xe.unknown_tile";
/// A packet names a GT the destination does not have.
pub const UNKNOWN_GT: &str = "vendor.xe.unknown_gt";
/// A packet's GT does not belong to the tile it names.
pub const GT_NOT_ON_TILE: &str = "vendor.xe.gt_not_on_tile";
/// A GGTT or VRAM packet addresses a media GT (only a tile's primary GT has them).
pub const WRONG_GT: &str = "vendor.xe.wrong_gt";
/// A descriptor or trailer names a tile or GT other than 0.
pub const BAD_IDS: &str = "vendor.xe.bad_ids";
/// A packet's `offset` is not 0 where the resource is sent whole (descriptor,
/// trailer, GGTT, MMIO, GuC).
pub const BAD_OFFSET: &str = "vendor.xe.bad_offset";
/// A packet's `size` is wrong for its resource: an empty payload, a trailer with a
/// payload, GGTT not the whole table, MMIO not 16 bytes, GuC or descriptor not
/// whole dwords.
pub const BAD_SIZE: &str = "vendor.xe.bad_size";
/// A VRAM packet's offset or size is not a multiple of 4 KiB.
pub const UNALIGNED: &str = "vendor.xe.unaligned";
/// A second descriptor, or a second GuC, GGTT or MMIO packet for the same GT.
pub const DUPLICATE: &str = "vendor.xe.duplicate";
/// A VRAM packet starts beyond the VRAM sent so far, leaving a hole.
pub const VRAM_GAP: &str = "vendor.xe.vram_gap";
/// The first packet is not the descriptor.
pub const DESCRIPTOR_NOT_FIRST: &str = "vendor.xe.descriptor_not_first";
/// The descriptor's KLVs are malformed, repeated, unknown, or lack the device or
/// revision id.
pub const BAD_DESCRIPTOR: &str = "vendor.xe.bad_descriptor";
/// The descriptor's PCI device id or revision id differs from the destination's.
pub const DESCRIPTOR_MISMATCH: &str = "vendor.xe.descriptor_mismatch";
/// Bytes follow the trailer.
pub const AFTER_TRAILER: &str = "vendor.xe.after_trailer";
/// The trailer came before every GT's GuC and MMIO, every tile's GGTT and all of
/// every tile's VRAM were sent.
pub const MISSING_PACKET: &str = "vendor.xe.missing_packet";
/// The stream ended between packets without a trailer.
pub const MISSING_TRAILER: &str = "vendor.xe.missing_trailer";
/// The stream ended inside a packet header or payload.
pub const TRUNCATED: &str = "vendor.xe.truncated";
/// The stream is longer than the bound the device type allows (VRAM re-sends
/// beyond the documented allowance).
pub const TOO_LONG: &str = "vendor.xe.too_long";
/// The device type is not one of the Xe VF profiles.
pub const DEVICE_TYPE: &str = "vendor.xe.device_type";
/// A configuration attribute (or sim option) is unknown or has a value outside its
/// set.
pub const ATTRIBUTE: &str = "vendor.xe.attribute";
/// The state version is not 1.
pub const UNSUPPORTED_VERSION: &str = "vendor.xe.unsupported_version";
/// A section other than `xe.packets` (version 1, record kind).
pub const UNKNOWN_SECTION: &str = "vendor.xe.unknown_section";
/// `validate_section` was called on the record-structured section, which is only
/// validated as it streams.
pub const RECORD_STRUCTURED: &str = "vendor.xe.record_structured";
/// A simulated Xe VF got load data without a load in progress, or a load after a
/// refusal.
pub const NOT_LOADING: &str = "vendor.xe.not_loading";
/// The state cannot be converted between versions (shared code, the plugin API's
/// default `convert`).
pub const CANNOT_CONVERT: &str = "vendor.cannot_convert";

/// Every code with its one-line meaning, in the order above.
pub const TABLE: &[(&str, &str)] = &[
    (BAD_VERSION, "an Xe packet header's version is not 1"),
    (
        UNKNOWN_TYPE,
        "an Xe packet type outside 1..=6 (Xe has no optional flag, so every unknown type is refused)",
    ),
    (BAD_FLAGS, "an Xe packet header's flags field is not 0"),
    (
        SIZE_TOO_LARGE,
        "an Xe packet size above the 512 MiB VRAM chunk maximum, refused before use",
    ),
    (OFFSET_OVERFLOW, "an Xe packet's offset + size overflows 64 bits"),
    (
        OUT_OF_RANGE,
        "an Xe packet's offset + size lies outside its resource (VRAM, GGTT, GuC max, MMIO)",
    ),
    (UNKNOWN_TILE, "an Xe packet names a tile the destination lacks"),
    (UNKNOWN_GT, "an Xe packet names a GT the destination lacks"),
    (GT_NOT_ON_TILE, "an Xe packet's GT is not on the tile it names"),
    (WRONG_GT, "an Xe GGTT or VRAM packet addresses a media GT"),
    (
        BAD_IDS,
        "an Xe descriptor or trailer names a tile or GT other than 0",
    ),
    (
        BAD_OFFSET,
        "an Xe packet for a resource sent whole (descriptor, trailer, GGTT, MMIO, GuC) has a non-zero offset",
    ),
    (
        BAD_SIZE,
        "an Xe packet size is wrong for its resource (empty, GGTT not whole, MMIO not 16, not dwords)",
    ),
    (
        UNALIGNED,
        "an Xe VRAM packet's offset or size is not 4 KiB aligned",
    ),
    (
        DUPLICATE,
        "a second Xe descriptor, or a second GuC/GGTT/MMIO packet for one GT",
    ),
    (
        VRAM_GAP,
        "an Xe VRAM packet leaves a hole after the VRAM sent so far",
    ),
    (DESCRIPTOR_NOT_FIRST, "the first Xe packet is not the descriptor"),
    (
        BAD_DESCRIPTOR,
        "the Xe descriptor's KLVs are malformed, repeated, unknown or incomplete",
    ),
    (
        DESCRIPTOR_MISMATCH,
        "the Xe descriptor's PCI device or revision id differs from the destination's",
    ),
    (AFTER_TRAILER, "bytes follow the Xe trailer"),
    (
        MISSING_PACKET,
        "the Xe trailer came before every GuC, MMIO, GGTT packet and all VRAM were sent",
    ),
    (MISSING_TRAILER, "the Xe packet stream ended without a trailer"),
    (TRUNCATED, "the Xe packet stream ended inside a header or payload"),
    (
        TOO_LONG,
        "the Xe packet stream is longer than the device type's bound",
    ),
    (DEVICE_TYPE, "the device type is not an Xe VF profile"),
    (
        ATTRIBUTE,
        "an Xe attribute or sim option is unknown or out of its value set",
    ),
    (UNSUPPORTED_VERSION, "the state version is not 1"),
    (UNKNOWN_SECTION, "a section other than xe.packets version 1"),
    (
        RECORD_STRUCTURED,
        "xe.packets is record-structured and validated only as it streams",
    ),
    (
        NOT_LOADING,
        "a simulated Xe VF got load data without a load in progress",
    ),
    (
        CANNOT_CONVERT,
        "the plugin cannot convert the state between these versions",
    ),
];
