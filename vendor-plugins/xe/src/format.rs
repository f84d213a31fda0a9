//! The Xe SR-IOV VF migration packet: header, types, size maxima, the descriptor's
//! KLVs, and encoders.
//!
//! Sources (public Linux kernel paths; layouts described here, not copied):
//!
//! - `drivers/gpu/drm/xe/xe_sriov_packet_types.h`: the packed 24-byte header and
//!   the packet type enumeration (0 is skipped on purpose so that zeroed memory is
//!   never a valid type);
//! - `drivers/gpu/drm/xe/xe_sriov_packet.c`: header version 1, the descriptor
//!   (GuC-style KLVs carrying the PCI device and revision id) and the empty trailer;
//! - `drivers/gpu/drm/xe/xe_gt_sriov_pf_migration.c` and `.h`: the GuC state
//!   maximum (8 MiB), the MMIO block (the GT's four `VF_SW_FLAG` scratch
//!   registers), GGTT (one 64-bit PTE per 4 KiB page of the VF's GGTT range) and
//!   VRAM chunks of at most 512 MiB;
//! - `drivers/gpu/drm/xe/abi/guc_klvs_abi.h`: a KLV is one dword with the key in
//!   bits 31..16 and the value length in dwords in bits 15..0, then the value.
//!
//! # Header (24 bytes, packed, little-endian)
//!
//! | offset | size | field     | meaning                                        |
//! |-------:|-----:|-----------|------------------------------------------------|
//! | 0      | 1    | `version` | packet protocol version, 1                     |
//! | 1      | 1    | `type`    | [`PacketType`]                                 |
//! | 2      | 1    | `tile_id` | tile the payload belongs to                    |
//! | 3      | 1    | `gt_id`   | GT the payload belongs to (device-wide number) |
//! | 4      | 4    | `flags`   | no flag is defined; the producer writes 0      |
//! | 8      | 8    | `offset`  | byte offset of the payload in its resource     |
//! | 16     | 8    | `size`    | payload bytes that follow the header           |

use mdevmig_plugin_api::{Reader, Short, VendorError};

use crate::codes;

/// Bytes in a packet header.
pub const HEADER_LEN: usize = 24;
/// [`HEADER_LEN`] as a u64.
pub const HEADER_LEN_U64: u64 = 24;
/// The only header version (`XE_SRIOV_PACKET_SUPPORTED_VERSION`).
pub const VERSION: u8 = 1;
/// Largest VRAM packet the driver produces (`VF_VRAM_STATE_CHUNK_MAX_SIZE`,
/// `SZ_512M`); also the largest payload of any packet, so a `size` above it is
/// refused before anything else looks at it.
pub const VRAM_CHUNK_MAX: u64 = 512 << 20;
/// Largest GuC state (`XE_GT_SRIOV_PF_MIGRATION_GUC_DATA_MAX_SIZE`, `SZ_8M`).
pub const GUC_MAX: u64 = 8 << 20;
/// MMIO payload: four 32-bit scratch registers per GT (`VF_SW_FLAG_COUNT` and
/// `MED_VF_SW_FLAG_COUNT` are both 4).
pub const MMIO_LEN: u64 = 16;
/// Bytes per GGTT PTE in a GGTT payload.
pub const GGTT_PTE_LEN: u64 = 8;
/// Bytes of GGTT address space one PTE maps.
pub const GGTT_PAGE: u64 = 4096;
/// Bytes in a VRAM page: VRAM packets are aligned to it.
pub const PAGE_SIZE: usize = 4096;
/// [`PAGE_SIZE`] as a u64.
pub const PAGE_SIZE_U64: u64 = 4096;
/// The descriptor the driver writes is 16 bytes (two KLVs of one dword each). This
/// plugin buffers the descriptor whole and refuses one above this cap (64 dwords).
pub const DESCRIPTOR_MAX: u64 = 256;
/// The descriptor length the driver produces.
pub const DESCRIPTOR_LEN: u64 = 16;
/// KLV key of the migrated VF's PCI device id (`MIGRATION_KLV_DEVICE_DEVID_KEY`).
pub const KLV_DEVID: u16 = 0xf001;
/// KLV key of the migrated VF's PCI revision id (`MIGRATION_KLV_DEVICE_REVID_KEY`).
pub const KLV_REVID: u16 = 0xf002;

/// A packet type. Unknown values are kept as they are and print as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketType(pub u8);

impl PacketType {
    /// Descriptor with VF device metadata (KLVs); always first, tile 0, GT 0.
    pub const DESCRIPTOR: PacketType = PacketType(1);
    /// End of stream; empty, tile 0, GT 0, offset 0.
    pub const TRAILER: PacketType = PacketType(2);
    /// The VF's GGTT PTEs (primary GT of each tile).
    pub const GGTT: PacketType = PacketType(3);
    /// The GT's VF scratch registers.
    pub const MMIO: PacketType = PacketType(4);
    /// GuC firmware state of the VF on this GT.
    pub const GUC: PacketType = PacketType(5);
    /// A chunk of the tile's VF VRAM (LMEM) at `offset`.
    pub const VRAM: PacketType = PacketType(6);

    /// The name of a known type.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::DESCRIPTOR => "descriptor",
            Self::TRAILER => "trailer",
            Self::GGTT => "ggtt",
            Self::MMIO => "mmio",
            Self::GUC => "guc",
            Self::VRAM => "vram",
            _ => return None,
        })
    }

    /// True for the six types the driver defines.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl std::fmt::Display for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "unknown type {:#04x}", self.0),
        }
    }
}

impl std::fmt::Debug for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A decoded packet header (nothing checked yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u8,
    /// Packet type.
    pub ty: PacketType,
    /// Tile id.
    pub tile_id: u8,
    /// GT id.
    pub gt_id: u8,
    /// Flags.
    pub flags: u32,
    /// Offset of the payload in its resource.
    pub offset: u64,
    /// Payload bytes.
    pub size: u64,
}

impl Header {
    /// A version-1 header without flags.
    pub const fn new(ty: PacketType, tile_id: u8, gt_id: u8, offset: u64, size: u64) -> Self {
        Header {
            version: VERSION,
            ty,
            tile_id,
            gt_id,
            flags: 0,
            offset,
            size,
        }
    }

    /// Reads a header from the front of `r`.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, Short> {
        Ok(Header {
            version: r.u8("packet version")?,
            ty: PacketType(r.u8("packet type")?),
            tile_id: r.u8("packet tile_id")?,
            gt_id: r.u8("packet gt_id")?,
            flags: r.u32_le("packet flags")?,
            offset: r.u64_le("packet offset")?,
            size: r.u64_le("packet size")?,
        })
    }

    /// Decodes exactly [`HEADER_LEN`] bytes.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let mut r = Reader::new(bytes);
        // Cannot fail: the reader holds exactly the 24 bytes the fields take.
        Header::read(&mut r).unwrap_or(Header::new(PacketType(0), 0, 0, 0, 0))
    }

    /// The 24 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let parts: [&[u8]; 7] = [
            &[self.version],
            &[self.ty.0],
            &[self.tile_id],
            &[self.gt_id],
            &self.flags.to_le_bytes(),
            &self.offset.to_le_bytes(),
            &self.size.to_le_bytes(),
        ];
        for (d, s) in out.iter_mut().zip(parts.into_iter().flatten()) {
            *d = *s;
        }
        out
    }
}

/// A whole packet: `header` with its `size` set to the payload's length, then the
/// payload.
pub fn packet(ty: PacketType, tile_id: u8, gt_id: u8, offset: u64, payload: &[u8]) -> Vec<u8> {
    let size = u64::try_from(payload.len()).unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(payload.len().saturating_add(HEADER_LEN));
    out.extend_from_slice(&Header::new(ty, tile_id, gt_id, offset, size).encode());
    out.extend_from_slice(payload);
    out
}

/// One KLV dword header: key in the high half, length in dwords in the low half.
pub fn klv_head(key: u16, len_dwords: u16) -> u32 {
    (u32::from(key) << 16) | u32::from(len_dwords)
}

/// The descriptor payload the driver writes: KLV(devid), KLV(revid), 16 bytes.
pub fn encode_descriptor(devid: u32, revid: u32) -> Vec<u8> {
    [klv_head(KLV_DEVID, 1), devid, klv_head(KLV_REVID, 1), revid]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect()
}

/// The trailer packet (24 bytes).
pub fn trailer() -> [u8; HEADER_LEN] {
    Header::new(PacketType::TRAILER, 0, 0, 0, 0).encode()
}

/// What a descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// PCI device id of the source VF.
    pub devid: u32,
    /// PCI revision id of the source VF.
    pub revid: u32,
}

fn bad_descriptor(message: impl Into<String>) -> VendorError {
    VendorError::new(codes::BAD_DESCRIPTOR, message)
}

/// Parses a descriptor payload: whole dwords of KLVs, each of the two known keys
/// exactly once with a one-dword value, nothing else.
///
/// The kernel (`xe_sriov_packet_process_descriptor`) checks the dword multiple and
/// KLV lengths, and compares the two ids if present; it skips unknown keys and
/// accepts a descriptor that carries neither id. This parser refuses both: a
/// descriptor that does not say which device it came from cannot be checked, and an
/// unknown key is metadata this plugin cannot vouch for.
pub fn parse_descriptor(bytes: &[u8]) -> Result<Descriptor, VendorError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(bad_descriptor(format!(
            "the descriptor is {} bytes, not whole dwords of KLVs",
            bytes.len()
        )));
    }
    let mut r = Reader::new(bytes);
    let (mut devid, mut revid) = (None, None);
    while !r.is_empty() {
        let head = r
            .u32_le("descriptor KLV")
            .map_err(|e| bad_descriptor(e.to_string()))?;
        let key = u16::try_from(head >> 16).unwrap_or(u16::MAX);
        let len = head & 0xffff;
        if len != 1 {
            return Err(bad_descriptor(format!(
                "descriptor KLV {key:#06x} has {len} value dwords, not 1"
            )));
        }
        let value = r
            .u32_le("descriptor KLV value")
            .map_err(|_| bad_descriptor(format!("descriptor KLV {key:#06x} is cut short")))?;
        let slot = match key {
            KLV_DEVID => &mut devid,
            KLV_REVID => &mut revid,
            _ => {
                return Err(bad_descriptor(format!(
                    "descriptor KLV {key:#06x} is not one this plugin knows (device id {KLV_DEVID:#06x}, \
                     revision id {KLV_REVID:#06x})"
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(bad_descriptor(format!("descriptor KLV {key:#06x} appears twice")));
        }
    }
    match (devid, revid) {
        (Some(devid), Some(revid)) => Ok(Descriptor { devid, revid }),
        _ => Err(bad_descriptor(
            "the descriptor lacks the PCI device id or revision id KLV",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_bit_exactly() {
        let h = Header {
            version: 1,
            ty: PacketType::VRAM,
            tile_id: 1,
            gt_id: 2,
            flags: 0x0403_0201,
            offset: 0x1122_3344_5566_7788,
            size: 0x0102_0304_0506_0708,
        };
        let b = h.encode();
        assert_eq!(b[..4], [1, 6, 1, 2]);
        assert_eq!(b[4..8], [1, 2, 3, 4]);
        assert_eq!(b[8..16], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(b[16..24], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(Header::decode(&b), h);
        assert_eq!(format!("{}", PacketType(0x2a)), "unknown type 0x2a");
        assert_eq!(format!("{}", PacketType::GUC), "guc");
    }

    #[test]
    fn descriptor_round_trips_and_refuses_what_the_kernel_skips() {
        let d = encode_descriptor(0xe20b, 3);
        assert_eq!(d.len(), 16);
        assert_eq!(d[..4], 0xf001_0001u32.to_le_bytes());
        assert_eq!(
            parse_descriptor(&d),
            Ok(Descriptor {
                devid: 0xe20b,
                revid: 3
            })
        );
        assert_eq!(parse_descriptor(&[]).unwrap_err().code, codes::BAD_DESCRIPTOR);
        assert_eq!(
            parse_descriptor(&d[..15]).unwrap_err().code,
            codes::BAD_DESCRIPTOR
        );
        let mut twice = d.clone();
        twice.extend_from_slice(&d[..8]);
        assert_eq!(parse_descriptor(&twice).unwrap_err().code, codes::BAD_DESCRIPTOR);
        let mut unknown = d.clone();
        unknown.extend_from_slice(&klv_head(0x1234, 1).to_le_bytes());
        unknown.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse_descriptor(&unknown).unwrap_err().code,
            codes::BAD_DESCRIPTOR
        );
    }
}
