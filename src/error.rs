//! Stable error codes.
//!
//! Every rejection mdevmig can produce has a dotted code (`auth.bad_chunk_signature`)
//! that never changes meaning once released. The CLI prints it as
//! `error[<code>]: <message>`, puts it in `--json` output, and derives its exit status
//! from the code's group. `spec/errors.md` lists the same table; a test pins the two
//! together, so adding a code here without documenting it fails the build's tests.
//!
//! Codes from vendor plugins (`vendor.mtty.bad_magic`) are carried as
//! [`Code::Vendor`] with the plugin's own static string; they are listed in
//! `spec/errors.md` too.

use std::fmt;
use std::sync::Arc;

macro_rules! codes {
    ($( $(#[$m:meta])* $variant:ident = $code:literal, $meaning:literal; )*) => {
        /// A stable error code. See `spec/errors.md`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $( $(#[$m])* #[doc = $meaning] $variant, )*
            /// A vendor plugin's own code (always `vendor.<plugin>.<what>`).
            Vendor(&'static str),
        }

        impl Code {
            /// Every broker-defined code with its one-line meaning, in table order.
            pub const TABLE: &'static [(Code, &'static str, &'static str)] = &[
                $( (Code::$variant, $code, $meaning), )*
            ];

            /// The dotted code string.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $( Code::$variant => $code, )*
                    Code::Vendor(s) => s,
                }
            }
        }
    };
}

codes! {
    // format: the bytes are not a well-formed v1 stream.
    BadMagic = "format.bad_magic", "the stream does not start with the mdevmig magic";
    UnsupportedFormat = "format.unsupported_version", "the envelope format version is not one this build reads";
    Truncated = "format.truncated", "the stream ended inside a structure or before its trailer";
    TrailingData = "format.trailing_data", "bytes follow the trailer or a structure that must end its input";
    HeaderLength = "format.header_length", "header_len disagrees with the header's encoded content";
    ReservedNonzero = "format.reserved_nonzero", "a reserved field is not zero";
    UnknownFlags = "format.unknown_flags", "a flags field has a bit this format version does not define";
    BadString = "format.bad_string", "a vendor, type, section or attribute name or value is empty or has a byte outside its alphabet";
    BadVersionWindow = "format.bad_version_window", "state_version or min_version is zero, or min_version exceeds state_version";
    BadChunkSize = "format.bad_chunk_size", "chunk_size is not a power of two within the allowed range";
    NoSections = "format.no_sections", "the section table is empty";
    DuplicateSection = "format.duplicate_section", "two sections in the table have the same name";
    AttributeOrder = "format.attribute_order", "device attributes are not in strictly ascending name order";
    UnboundNonce = "format.unbound_nonce", "the session nonce is not zero although the stream is not session-bound";
    BadRecordKind = "format.bad_record_kind", "a record has a kind byte that is not chunk, trailer or section end";
    BadChunkLength = "format.bad_chunk_length", "a chunk's data length is zero, above chunk_size, or not the canonical length, or a chunk follows a streamed section's short chunk";
    ChunkMismatch = "format.chunk_mismatch", "a chunk's section index or offset is not the one its sequence number implies, or a section end record stands where no streamed section may end";
    ChunkDuplicated = "format.chunk_duplicated", "a chunk arrived again (its sequence number was already seen)";
    ChunkReordered = "format.chunk_reordered", "a chunk arrived before the one that should precede it";
    ChunkDropped = "format.chunk_dropped", "a chunk is missing from the stream";
    TrailerMismatch = "format.trailer_mismatch", "the trailer's chunk count or total length disagrees with the chunks the stream carried";
    SectionLengthMismatch = "format.section_length_mismatch", "a streamed section's end record states another length than the bytes its chunks carried";
    BadKeyFile = "format.bad_key_file", "a key file is not an ed25519 PKCS#8 or SubjectPublicKeyInfo PEM";
    BadDescriptor = "format.bad_descriptor", "a descriptor or policy document is malformed";
    BadSchema = "format.bad_schema", "a plugin schema dump is malformed or has a schema_format this build does not read";

    // limit: a declared size is past a documented cap.
    HeaderTooLarge = "limit.header_too_large", "header_len is above the 8192-byte cap";
    TooManyAttributes = "limit.too_many_attributes", "the header has more than 16 device attributes";
    StringTooLong = "limit.string_too_long", "a vendor, type, section or attribute name or an attribute value is longer than its cap";
    TooManySections = "limit.too_many_sections", "the section table has more than 64 entries";
    ChunkTooLarge = "limit.chunk_too_large", "chunk_size or a chunk's length is above the 16 MiB cap";
    StreamTooLarge = "limit.stream_too_large", "the sections add up to more than the 1 TiB cap";
    SectionTooLarge = "limit.section_too_large", "a section is longer than its plugin allows";
    SkippedTooLarge = "limit.skipped_too_large", "the sections this destination would skip add up to more than the policy's max_skipped_bytes";
    SectionOverBound = "limit.section_over_bound", "a streamed section carries more data than the bound its header entry declares";
    InputTooLarge = "limit.input_too_large", "a key file, descriptor or raw state is larger than its cap";

    // auth: the stream is well-formed but not proven authentic.
    UntrustedKey = "auth.untrusted_key", "the stream is signed by a key that is not in the trust store";
    BadHeaderSignature = "auth.bad_header_signature", "the header signature does not verify";
    BadChunkSignature = "auth.bad_chunk_signature", "a chunk signature does not verify (data or record changed)";
    BadTrailerSignature = "auth.bad_trailer_signature", "the trailer signature does not verify";
    BadEndSignature = "auth.bad_end_signature", "a section end record's signature does not verify";
    SessionMismatch = "auth.session_mismatch", "the stream is bound to another session nonce than the one issued";
    UnboundStream = "auth.unbound_stream", "a session-bound stream was required but this one is not bound";
    EmptyTrustStore = "auth.empty_trust_store", "the trust store holds no keys";
    KeyPermissions = "auth.key_permissions", "a private key file is readable or writable by group or others, or owned by a user other than root or the one running mdevmig";
    TrustStorePermissions = "auth.trust_store_permissions", "a trust store file, directory or .pub file in it is writable by group or others (a root-owned sticky directory excepted) or owned by a user other than root or the one running mdevmig; --insecure-trust-store skips this check";

    // compat: authentic, but this destination cannot or may not restore it.
    NoPlugin = "compat.no_plugin", "no vendor plugin handles the stream's vendor";
    VendorMismatch = "compat.vendor_mismatch", "the stream's vendor is not the destination device's vendor";
    TypeMismatch = "compat.type_mismatch", "the stream's device type is not the destination device's type";
    ConfigMismatch = "compat.config_mismatch", "same type, but a configuration attribute differs";
    VersionTooNew = "compat.version_too_new", "the state version is newer than the destination plugin loads";
    VersionTooOld = "compat.version_too_old", "the state version is older than the destination plugin still loads";
    MinVersionTooNew = "compat.min_version_too_new", "the stream's minimum version is above the newest the destination loads";
    VersionRefused = "compat.version_refused", "operator policy refuses this state version";
    UnknownRequiredSection = "compat.unknown_required_section", "a required section is unknown to the destination";
    MissingCapability = "compat.missing_capability", "a section needs a host capability the destination lacks, and policy does not allow skipping it";
    SectionVersion = "compat.section_version", "a section's version is not the one the destination understands for this state version (newer, or older)";
    CannotConvert = "compat.cannot_convert", "the source cannot produce a state version the destination accepts";
    LiveUnsupported = "compat.live_unsupported", "the migration is possible only offline, not live";
    BreakingChange = "compat.breaking_change", "a plugin schema differs from the previous release's in a way that breaks migrating state between them (schema diff)";

    // vendor: plugin-level problems that are not the plugin's own codes.
    Framing = "vendor.framing", "the raw device stream's section framing is not what the plugin expects";
    MissingSection = "vendor.missing_section", "a section the plugin requires for this state version is not in the stream";
    SectionOrder = "vendor.section_order", "the stream's sections are not in the order the plugin's layout gives";
    SectionLength = "vendor.section_length", "a section's length, or its exact or streamed shape, is not what the plugin's layout fixes for the destination device";

    // device: the device or its driver failed.
    DeviceOpen = "device.open_failed", "the device could not be opened";
    DeviceNoMigration = "device.no_migration", "the device does not support VFIO migration v2 (STOP_COPY)";
    DeviceTransition = "device.bad_transition", "the device refused a migration state transition";
    DeviceData = "device.data_error", "reading or writing the device's migration data failed";
    DeviceOverBound = "device.state_over_bound", "the source device yielded more state than its plugin's bound for a streamed section";
    DeviceReset = "device.reset_failed", "the device could not be reset";
    DeviceLoad = "device.load_rejected", "the device driver refused the state at RESUMING to STOP";


    // io: the transport failed.
    IoRead = "io.read", "reading the input failed";
    IoWrite = "io.write", "writing the output failed";
    IoOpen = "io.open", "a file could not be opened or created";
    Exists = "io.exists", "the file to create exists (or is a symlink, which is never followed) and --force was not given";
    Busy = "io.busy", "another mdevmig process is writing the same destination (its lock is held)";
    NotRegular = "io.not_regular", "a file mdevmig reads or replaces is a symlink, FIFO, device or directory, not a regular file";
    Interrupted = "io.interrupted", "SIGINT, SIGTERM or SIGPIPE stopped a save or restore; the device was put back and partial files removed";
    IdleTimeout = "io.idle_timeout", "the stream stalled: no byte moved for the idle timeout; the device was put back";
    SandboxFailed = "io.sandbox", "the validation child process crashed, timed out or exceeded its limits";

    // usage: the command line is wrong.
    Usage = "usage.bad_arguments", "the command line is not valid";
    DeviceSpec = "usage.bad_device_spec", "a device spec on the command line is malformed";
    BadHandle = "usage.bad_handle", "a C library handle is 0, freed, of the wrong kind, or was never issued";

    // internal: a bug in mdevmig.
    Internal = "internal.error", "an internal invariant failed; please report it";
}

/// The group a code belongs to: the part before the first dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Malformed bytes.
    Format,
    /// A documented cap was exceeded.
    Limit,
    /// Not proven authentic.
    Auth,
    /// Authentic but not restorable here.
    Compat,
    /// The vendor plugin refused the content.
    Vendor,
    /// The device failed.
    Device,
    /// The transport failed.
    Io,
    /// Bad command line.
    Usage,
    /// A bug.
    Internal,
}

impl Code {
    /// The code's group.
    pub fn group(&self) -> Group {
        let s = self.as_str();
        match s.split('.').next().unwrap_or("") {
            "format" => Group::Format,
            "limit" => Group::Limit,
            "auth" => Group::Auth,
            "compat" => Group::Compat,
            "vendor" => Group::Vendor,
            "device" => Group::Device,
            "io" => Group::Io,
            "usage" => Group::Usage,
            _ => Group::Internal,
        }
    }

    /// The CLI exit status for this code: 2 usage, 3 incompatible, 4 stream
    /// rejected, 5 device error, 1 anything else.
    pub fn exit_status(&self) -> u8 {
        match self.group() {
            Group::Usage => 2,
            Group::Compat => 3,
            Group::Format | Group::Limit | Group::Auth | Group::Vendor => 4,
            Group::Device => 5,
            Group::Io | Group::Internal => 1,
        }
    }

    /// Looks a broker-defined code up by its string.
    pub fn from_str_code(s: &str) -> Option<Code> {
        Code::TABLE
            .iter()
            .find(|(_, c, _)| *c == s)
            .map(|(code, _, _)| *code)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An mdevmig error: a stable code, a message for people, and (for failures of
/// the operating system or the VFIO layer) the error underneath, as
/// [`std::error::Error::source`].
///
/// ```
/// use std::error::Error as _;
/// use mdevmig::{Code, Error};
///
/// let os = std::io::Error::from_raw_os_error(nix::libc::ENOENT);
/// let e = Error::io(Code::IoOpen, "opening state.mdm", &os);
/// assert_eq!(e.code.as_str(), "io.open");
/// assert_eq!(e.errno(), Some(nix::libc::ENOENT));
/// assert!(e.source().is_some());
/// ```
#[derive(Debug, Clone)]
pub struct Error {
    /// The stable code.
    pub code: Code,
    /// What went wrong, in words.
    pub message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Two errors are equal when their codes and messages are: the source is the
/// detail underneath, not part of the error's identity.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.message == other.message
    }
}

impl Eq for Error {}

impl Error {
    /// Builds an error.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// The same error with `source` as the failure underneath it.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Builds an io error with context; the io error (with its errno) is kept as
    /// the source.
    pub fn io(code: Code, context: impl fmt::Display, err: &std::io::Error) -> Self {
        let kept = match err.raw_os_error() {
            Some(errno) => std::io::Error::from_raw_os_error(errno),
            None => std::io::Error::new(err.kind(), err.to_string()),
        };
        Self::new(code, format!("{context}: {err}")).with_source(kept)
    }

    /// The operating system's error number, when an io error or an errno from
    /// the kernel lies underneath (walking the whole source chain).
    pub fn errno(&self) -> Option<i32> {
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if let Some(n) = io.raw_os_error() {
                    return Some(n);
                }
            }
            if let Some(n) = e.downcast_ref::<nix::errno::Errno>() {
                return Some(*n as i32);
            }
            next = e.source();
        }
        None
    }
}

impl From<mdevmig_plugin_api::VendorError> for Error {
    fn from(e: mdevmig_plugin_api::VendorError) -> Self {
        Error::new(Code::Vendor(e.code), e.message)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
