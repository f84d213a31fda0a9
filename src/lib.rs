//! mdevmig: a broker for live migration of mediated and passthrough device state.
//!
//! Device state leaves the source in an authenticated envelope ([`codec`], [`auth`]);
//! the destination validates the header, signatures, version window and section
//! policy before a vendor plugin parses a byte, and the plugin validates the vendor
//! structure before the kernel sees it.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod broker;
pub mod codec;
pub mod compat;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod plugins;
pub mod sandbox;

pub use error::{Code, Error, Result};
