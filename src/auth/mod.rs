//! Authentication: ed25519 keys, key ids, key files and the trust store.
//!
//! * A **signing key** is an ed25519 private key stored as PKCS#8 PEM
//!   (`-----BEGIN PRIVATE KEY-----`), the format of `openssl genpkey -algorithm
//!   ed25519`. Files are written with mode 0600.
//! * A **public key** is stored as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC
//!   KEY-----`), the format of `openssl pkey -pubout`.
//! * The **key id** is SHA-256 of the 32-byte raw ed25519 public key; the envelope
//!   header carries it so a destination picks the right key without trying all.
//! * A **trust store** is one `.pub` file or a directory of them (other files in the
//!   directory are ignored, so a `.key` beside its `.pub` is harmless).
//!
//! Key files are created and read as on a shared host where other users can write
//! nearby directories (`files.rs` has the rules): `keygen` never follows or
//! overwrites an existing name (`io.exists`) unless told to, and then replaces it
//! rather than writing through it; a private key readable by group or others, or
//! owned by another user, is refused (`auth.key_permissions`); a trust store that
//! someone other than its owner can write is refused
//! (`auth.trust_store_permissions`) unless the operator says
//! `--insecure-trust-store`; only regular files are read (`io.not_regular`: a FIFO
//! named `x.pub` cannot hang a restore), each at most [`MAX_KEY_FILE`] bytes.
//!
//! Signatures are checked with `verify_strict`, which refuses non-canonical
//! signatures and small-order public keys, so one message has one valid signature
//! per key (the envelope's canonical-encoding rule depends on it).

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Code, Error, Result};

mod files;

/// Length of an ed25519 signature on the wire.
pub const SIGNATURE_LEN: usize = 64;

/// Largest key file read (a PEM ed25519 key is about 120 bytes; the cap keeps a
/// mistaken path to a huge file from being read whole).
pub const MAX_KEY_FILE: u64 = 16 * 1024;

/// Largest number of keys loaded from one trust-store directory.
pub const MAX_TRUSTED_KEYS: usize = 1024;

/// SHA-256 of a raw ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        KeyId(Sha256::digest(key.as_bytes()).into())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A fresh destination session nonce from the operating system's random source:
/// the destination hands it to the source, whose stream must then be bound to it
/// (`spec/wire-format.md`, session binding).
pub fn new_session_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut n);
    n
}

/// Parses a session nonce written as 64 hex digits (either case; nothing else,
/// not even a sign or spaces): `usage` otherwise.
pub fn parse_nonce(s: &str) -> crate::Result<[u8; 32]> {
    let bad = || {
        crate::Error::new(
            crate::Code::Usage,
            format!("session nonce must be 64 hex digits, got {s:?}"),
        )
    };
    // from_str_radix takes a leading '+': only hex digits are a nonce.
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut n = [0u8; 32];
    for (i, b) in n.iter_mut().enumerate() {
        let hex = s
            .get(i.saturating_mul(2)..i.saturating_mul(2).saturating_add(2))
            .ok_or_else(bad)?;
        *b = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
    }
    Ok(n)
}

/// A private key that signs envelopes.
#[derive(Clone)]
pub struct SigningKeyPair {
    key: SigningKey,
    id: KeyId,
}

impl SigningKeyPair {
    /// Generates a fresh key from the OS random source.
    pub fn generate() -> Self {
        Self::from_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// A key from a 32-byte seed (test vectors use fixed seeds).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_key(SigningKey::from_bytes(seed))
    }

    fn from_key(key: SigningKey) -> Self {
        let id = KeyId::of(&key.verifying_key());
        Self { key, id }
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        SigningKey::from_pkcs8_pem(pem).map(Self::from_key).map_err(|e| {
            Error::new(
                Code::BadKeyFile,
                format!("not an ed25519 PKCS#8 private key: {e}"),
            )
        })
    }

    /// Reads a PKCS#8 PEM private key file: a regular file (not followed if a
    /// symlink, `io.not_regular`), owned by root or the user running mdevmig and
    /// neither readable nor writable by group or others (`auth.key_permissions`),
    /// at most [`MAX_KEY_FILE`] bytes (`limit.input_too_large`).
    pub fn load(path: &Path) -> Result<Self> {
        let (f, meta) = files::open_regular(path)?;
        files::check_private_key(&meta, path)?;
        Self::from_pem(&files::read_capped(f, &meta, path)?)
            .map_err(|e| Error::new(e.code, format!("{}: {}", path.display(), e.message)))
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// PKCS#8 PEM of the private key: the v1 form (RFC 8410 `PrivateKeyInfo`
    /// without the optional public key), which is what `openssl genpkey` writes
    /// and what every OpenSSL 3 release reads.
    pub fn private_pem(&self) -> Result<String> {
        let v1 = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        v1.to_pkcs8_pem(Default::default())
            .map(|z| z.to_string())
            .map_err(|e| Error::new(Code::Internal, format!("encoding private key: {e}")))
    }

    /// SubjectPublicKeyInfo PEM of the public key.
    pub fn public_pem(&self) -> Result<String> {
        public_pem(&self.verifying_key())
    }

    /// Writes `PREFIX.key` (mode 0600) and `PREFIX.pub` (mode 0644), refusing
    /// (`io.exists`) if either name exists, a symlink included.
    pub fn write_files(&self, prefix: &Path) -> Result<(PathBuf, PathBuf)> {
        self.write_files_with(prefix, false)
    }

    /// [`Self::write_files`]; with `replace` (`keygen --force`) existing files or
    /// symlinks are replaced (renamed over, never written through). Both files are
    /// complete and fsynced before either takes its name; without `replace`
    /// neither is left behind if the other cannot be created.
    pub fn write_files_with(&self, prefix: &Path, replace: bool) -> Result<(PathBuf, PathBuf)> {
        let key_path = files::with_suffix(prefix, ".key");
        let pub_path = files::with_suffix(prefix, ".pub");
        let private = self.private_pem()?;
        let public = self.public_pem()?;
        files::create_all(
            &[
                (key_path.as_path(), 0o600, private.as_bytes()),
                (pub_path.as_path(), 0o644, public.as_bytes()),
            ],
            replace,
        )?;
        Ok((key_path, pub_path))
    }
}

/// SubjectPublicKeyInfo PEM of `key`.
pub fn public_pem(key: &VerifyingKey) -> Result<String> {
    key.to_public_key_pem(Default::default())
        .map_err(|e| Error::new(Code::Internal, format!("encoding public key: {e}")))
}

/// Parses a SubjectPublicKeyInfo PEM public key.
pub fn parse_public_pem(pem: &str) -> Result<VerifyingKey> {
    VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| Error::new(Code::BadKeyFile, format!("not an ed25519 public key: {e}")))
}

/// How a trust store is loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustOptions {
    /// Skip the ownership and permission checks (`--insecure-trust-store`): a
    /// store anyone can write is then loaded. The regular-file and size checks
    /// still apply.
    pub insecure: bool,
}

/// The public keys a destination trusts, by key id.
#[derive(Default, Clone)]
pub struct TrustStore {
    keys: BTreeMap<KeyId, (VerifyingKey, String)>,
}

impl TrustStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; `origin` says where it came from (for messages).
    pub fn add(&mut self, key: VerifyingKey, origin: impl Into<String>) -> KeyId {
        let id = KeyId::of(&key);
        self.keys.insert(id, (key, origin.into()));
        id
    }

    /// Loads a `.pub` file, or every `*.pub` file in a directory, with every
    /// check of [`TrustStore::load_with`].
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, TrustOptions::default())
    }

    /// Loads a `.pub` file, or every `*.pub` file in a directory.
    ///
    /// The file, or the directory and each `*.pub` file in it, must be owned by
    /// root or the user running mdevmig and writable by no one else; a directory
    /// others may write is accepted only if it is root-owned and sticky (its files
    /// are then checked one by one). Anything else is
    /// `auth.trust_store_permissions` unless `opts.insecure`. A `.pub` that is not
    /// a regular file (a symlink, FIFO, socket, device) is `io.not_regular`
    /// without being read or waited on; one above [`MAX_KEY_FILE`] bytes is
    /// `limit.input_too_large`. A file store is not followed if it is a symlink; a
    /// directory store is (the operator named it), and its files are read
    /// relative to the directory that was checked.
    pub fn load_with(path: &Path, opts: TrustOptions) -> Result<Self> {
        let mut store = Self::new();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
        if meta.is_dir() {
            let (dir, meta) = files::open_dir(path)?;
            store.check(&meta, path, opts)?;
            let entries = std::fs::read_dir(path).map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
            let mut names: Vec<std::ffi::OsString> = entries
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| Path::new(n).extension().is_some_and(|x| x == "pub"))
                .collect();
            names.sort();
            if names.len() > MAX_TRUSTED_KEYS {
                return Err(Error::new(
                    Code::InputTooLarge,
                    format!("{}: more than {MAX_TRUSTED_KEYS} keys", path.display()),
                ));
            }
            for name in names {
                let file = path.join(&name);
                let (f, meta) = files::open_entry(&dir, &name, &file)?;
                store.check(&meta, &file, opts)?;
                store.add_file(f, &meta, &file)?;
            }
        } else {
            let (f, meta) = files::open_regular(path)?;
            store.check(&meta, path, opts)?;
            store.add_file(f, &meta, path)?;
        }
        if store.keys.is_empty() {
            return Err(Error::new(
                Code::EmptyTrustStore,
                format!("{}: no .pub keys found", path.display()),
            ));
        }
        Ok(store)
    }

    fn check(&self, meta: &std::fs::Metadata, path: &Path, opts: TrustOptions) -> Result<()> {
        match files::trust_problem(meta) {
            Some(p) if !opts.insecure => Err(Error::new(
                Code::TrustStorePermissions,
                format!(
                    "{}: trust store {p}: whoever can write it chooses which keys this host trusts; \
                     fix its owner and mode (or pass --insecure-trust-store)",
                    path.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn add_file(&mut self, f: std::fs::File, meta: &std::fs::Metadata, path: &Path) -> Result<()> {
        let pem = files::read_capped(f, meta, path)?;
        let key = parse_public_pem(&pem)
            .map_err(|e| Error::new(e.code, format!("{}: {}", path.display(), e.message)))?;
        self.add(key, path.display().to_string());
        Ok(())
    }

    /// The key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id).map(|(k, _)| k)
    }

    /// Where the key with this id came from.
    pub fn origin(&self, id: &KeyId) -> Option<&str> {
        self.keys.get(id).map(|(_, o)| o.as_str())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Verifies `sig` over `message` with `key`, strictly.
pub(crate) fn verify(key: &VerifyingKey, message: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
    key.verify_strict(message, &Signature::from_bytes(sig)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key_id() {
        let k = SigningKeyPair::from_seed(&[7; 32]);
        let again = SigningKeyPair::from_pem(&k.private_pem().unwrap()).unwrap();
        assert_eq!(k.id(), again.id());
        let public = parse_public_pem(&k.public_pem().unwrap()).unwrap();
        assert_eq!(KeyId::of(&public), k.id());
    }

    #[test]
    fn signatures_verify_only_for_their_message() {
        let k = SigningKeyPair::from_seed(&[1; 32]);
        let sig = k.sign(b"hello");
        assert!(verify(&k.verifying_key(), b"hello", &sig));
        assert!(!verify(&k.verifying_key(), b"hellp", &sig));
    }

    #[test]
    fn garbage_key_files_are_refused_with_a_code() {
        assert_eq!(
            SigningKeyPair::from_pem("nope").err().unwrap().code,
            Code::BadKeyFile
        );
        assert_eq!(
            parse_public_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .unwrap_err()
                .code,
            Code::BadKeyFile
        );
    }
}
