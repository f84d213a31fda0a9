//! mdevmig: a broker for live migration of mediated and passthrough device state.
//!
//! Device state leaves the source in an authenticated envelope ([`codec`], [`auth`]);
//! the destination validates the header, signatures, version window and section
//! policy before a vendor plugin parses a byte, and the plugin validates the vendor
//! structure before the kernel sees it. The bytes are specified in the project's
//! `spec/wire-format.md`, every refusal's code in `spec/errors.md`.
//!
//! # The API an embedder uses
//!
//! | step | call |
//! | --- | --- |
//! | open a device | [`device::open`] with a [`device::DeviceSpec`] (`vfio:<uuid>`, or `sim:` for the simulated default), or your own [`device::MigrationDevice`] |
//! | keys | [`SigningKeyPair`] (source), [`TrustStore`] (destination), [`auth::new_session_nonce`] |
//! | pre-check | [`compat::describe`] on the source, [`compat::check`] with [`Registry::load_window`] on the destination; [`compat::evaluate`] is the decision both share with [`restore`] |
//! | save | [`save`], or [`broker::region::MigrationRegion`] for a VMM's v2 loop |
//! | verify without a device | [`broker::verify`] |
//! | restore | [`restore`], or the region in RESUMING |
//! | errors | [`Error`]: a stable [`Code`], a message, and the OS or VFIO error as its source |
//!
//! # A migration, source to destination
//!
//! ```
//! use mdevmig::device::{self, DeviceSpec, MigState};
//! use mdevmig::sandbox::Validation;
//! use mdevmig::{Registry, RestoreOptions, SaveOptions, SigningKeyPair, TrustStore};
//!
//! # fn main() -> mdevmig::Result<()> {
//! let registry = Registry::builtin();
//! let key = SigningKeyPair::generate();
//! let mut trust = TrustStore::new();
//! trust.add(key.verifying_key(), "source host");
//!
//! // Source: save a simulated 64 MiB vGPU into a signed envelope.
//! let spec: DeviceSpec = "sim:simgpu/vgpu-64m,seed=1".parse()?;
//! let (mut source, _) = device::open(&spec, &registry)?;
//! let mut stream = Vec::new();
//! let saved = mdevmig::save(&mut *source, &registry, &key, &mut stream, &SaveOptions::default())?;
//! assert_eq!(source.state()?, MigState::Stop);
//!
//! // Anywhere: verify the stream without a device.
//! let verified = mdevmig::broker::verify(&stream[..], &trust, None)?;
//! assert_eq!(verified.header.vendor, "simgpu");
//!
//! // Destination: restore. Validation runs in a sandboxed child that is the
//! // current program started again (call `mdevmig::sandbox::child_entry` first
//! // thing in `main`), or `Validation::sandbox("/path/to/mdevmig-validator")`;
//! // this example validates in process.
//! let spec: DeviceSpec = "sim:simgpu/vgpu-64m,seed=2".parse()?;
//! let (mut destination, _) = device::open(&spec, &registry)?;
//! let opts = RestoreOptions { validation: Validation::InProcess, ..Default::default() };
//! let restored = mdevmig::restore(&mut *destination, &registry, &trust, &stream[..], &opts)?;
//! assert_eq!(restored.state_digest, saved.state_digest);
//!
//! // A stream changed in transit never reaches the device.
//! let mut tampered = stream.clone();
//! let last = tampered.len() - 100;
//! tampered[last] ^= 1;
//! let (mut other, _) = device::open(&spec, &registry)?;
//! let refused = mdevmig::restore(&mut *other, &registry, &trust, &tampered[..], &opts).unwrap_err();
//! assert_eq!(refused.code.group(), mdevmig::Group::Auth);
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod broker;
pub mod codec;
pub mod compat;
pub mod device;
mod error;
pub mod fsutil;
pub mod plugins;
pub mod sandbox;
pub mod schema;

pub use error::{Code, Error, Group, Result};

pub use auth::{SigningKeyPair, TrustStore};
pub use broker::{restore, save, RestoreOptions, RestoreReport, SaveOptions, SaveReport};
pub use plugins::Registry;
