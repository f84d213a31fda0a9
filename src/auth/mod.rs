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
use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Code, Error, Result};

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

    /// Reads a PKCS#8 PEM private key file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_pem(&read_key_file(path)?)
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

    /// Writes `PREFIX.key` (mode 0600) and `PREFIX.pub`.
    pub fn write_files(&self, prefix: &Path) -> Result<(PathBuf, PathBuf)> {
        let key_path = with_suffix(prefix, ".key");
        let pub_path = with_suffix(prefix, ".pub");
        write_private(&key_path, self.private_pem()?.as_bytes())?;
        std::fs::write(&pub_path, self.public_pem()?)
            .map_err(|e| Error::io(Code::IoOpen, pub_path.display(), &e))?;
        Ok((key_path, pub_path))
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    // An existing file keeps its old mode through open(); force 0600.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(bytes))
        .map_err(|e| Error::io(Code::IoWrite, path.display(), &e))
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

fn read_key_file(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    let mut s = String::new();
    let n = f
        .take(MAX_KEY_FILE.saturating_add(1))
        .read_to_string(&mut s)
        .map_err(|e| Error::new(Code::BadKeyFile, format!("{}: {e}", path.display())))?;
    if u64::try_from(n).map_or(true, |n| n > MAX_KEY_FILE) {
        return Err(Error::new(
            Code::InputTooLarge,
            format!("{}: key file larger than {MAX_KEY_FILE} bytes", path.display()),
        ));
    }
    Ok(s)
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

    /// Loads a `.pub` file, or every `*.pub` file in a directory.
    pub fn load(path: &Path) -> Result<Self> {
        let mut store = Self::new();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            files.sort();
            if files.len() > MAX_TRUSTED_KEYS {
                return Err(Error::new(
                    Code::InputTooLarge,
                    format!("{}: more than {MAX_TRUSTED_KEYS} keys", path.display()),
                ));
            }
            for f in files {
                store.add_file(&f)?;
            }
        } else {
            store.add_file(path)?;
        }
        if store.keys.is_empty() {
            return Err(Error::new(
                Code::EmptyTrustStore,
                format!("{}: no .pub keys found", path.display()),
            ));
        }
        Ok(store)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let pem = read_key_file(path)?;
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
pub fn verify(key: &VerifyingKey, message: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
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
