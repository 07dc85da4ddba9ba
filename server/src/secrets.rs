//! The master key and what it protects: secrets at rest (signing keys, later plugin
//! configuration and credential records) are sealed with AES-256-GCM under it.
//!
//! The key comes from `GATEHOUSE_MASTER_KEY` (32 bytes, base64) or, on the embedded default,
//! from `master.key` in the data dir, generated on first start with mode 0600. Each sealed value
//! is bound to its purpose (the AEAD's associated data), so a value cannot be moved to another
//! use: a signing key's ciphertext does not open as another key's.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// The file the embedded default keeps its master key in.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The format marker of sealed values (AES-256-GCM, 96-bit random nonce).
const SEALED_V1: &str = "v1.";

/// Why a sealed value does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value does not open under this master key and purpose")]
    Rejected,
}

/// The master key. Its bytes are never printed (`Debug` shows nothing of them).
pub struct MasterKey {
    cipher: Aes256Gcm,
    /// The seed of keys derived for other purposes ([`Self::derive`]).
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 {
            bail!("the master key must be 32 bytes, got {}", bytes.len());
        }
        let cipher = Aes256Gcm::new_from_slice(bytes)
            .map_err(|_| anyhow::anyhow!("the master key must be 32 bytes"))?;
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"gatehouse derived keys\0");
        h.update(bytes);
        let seed = Zeroizing::new(h.finalize().into());
        Ok(Self { cipher, seed })
    }

    /// A key of its own for `purpose`, derived from the master key (so the same on every
    /// node that shares it), and useless for anything else.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(&self.seed[..]);
        h.update(purpose.as_bytes());
        Zeroizing::new(h.finalize().into())
    }

    /// A key from base64 text (`GATEHOUSE_MASTER_KEY`).
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .context("`GATEHOUSE_MASTER_KEY` must be base64 (32 bytes)")?,
        );
        Self::from_bytes(&bytes).context("`GATEHOUSE_MASTER_KEY`")
    }

    /// A fresh random key (tests, and the embedded default's first start).
    pub fn generate() -> Result<(Self, Zeroizing<[u8; 32]>)> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut bytes[..])
            .map_err(|e| anyhow::anyhow!("no randomness for the master key: {e}"))?;
        Ok((Self::from_bytes(&bytes[..])?, bytes))
    }

    /// The configured key: `env` (the value of `GATEHOUSE_MASTER_KEY`) when given, else the one
    /// in `data_dir`, created (mode 0600) if there is none yet.
    pub fn load(env: Option<&str>, data_dir: &Path) -> Result<Self> {
        if let Some(text) = env {
            return Self::from_base64(text);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return Self::from_base64(&text)
                    .with_context(|| format!("master key file `{}`", path.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read master key file `{}`", path.display()));
            }
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir `{}`", data_dir.display()))?;
        let (key, bytes) = Self::generate()?;
        let text = Zeroizing::new(STANDARD.encode(&bytes[..]));
        // `create_new`: two processes starting at once do not overwrite each other's key.
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path)?;
                return Self::from_base64(&text);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create master key file `{}`", path.display())
                });
            }
        };
        f.write_all(text.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write master key file `{}`", path.display()))?;
        tracing::info!(path = %path.display(), "generated a master key");
        Ok(key)
    }

    /// Seals `plaintext` for `purpose`: `v1.` and base64 of nonce and ciphertext.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(format!("{SEALED_V1}{}", STANDARD.encode(out)))
    }

    /// Opens a value sealed for `purpose`.
    pub fn open(
        &self,
        purpose: &str,
        sealed: &str,
    ) -> std::result::Result<Zeroizing<Vec<u8>>, OpenError> {
        let body = sealed.strip_prefix(SEALED_V1).ok_or(OpenError::Malformed)?;
        let raw = STANDARD.decode(body).map_err(|_| OpenError::Malformed)?;
        if raw.len() < 12 + 16 {
            return Err(OpenError::Malformed);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: purpose.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Rejected)
    }
}

/// A random secret for a cookie, code or token: `prefix` and 32 random bytes in hex.
pub fn random_token(prefix: &str) -> gatehouse_engine::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| gatehouse_engine::Error::Unavailable(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(b)))
}

/// SHA-256 (hex) of a token: what is stored of secrets that are shown once.
pub fn sha256_hex(s: &str) -> String {
    sha256_hex_bytes(s.as_bytes())
}

/// SHA-256 of bytes, in hex.
pub fn sha256_hex_bytes(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_purpose_and_key() {
        let (k, _) = MasterKey::generate().unwrap();
        let s = k.seal("signing-key:a", b"secret bytes").unwrap();
        assert!(s.starts_with("v1."));
        assert!(!s.contains("secret"));
        assert_eq!(&k.open("signing-key:a", &s).unwrap()[..], b"secret bytes");
        // Two seals of the same value differ (random nonce).
        assert_ne!(s, k.seal("signing-key:a", b"secret bytes").unwrap());
        assert_eq!(k.open("signing-key:b", &s), Err(OpenError::Rejected));
        let (other, _) = MasterKey::generate().unwrap();
        assert_eq!(other.open("signing-key:a", &s), Err(OpenError::Rejected));
        // Tampering with any byte is caught.
        let mut raw = STANDARD.decode(&s[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("v1.{}", STANDARD.encode(raw));
        assert_eq!(k.open("signing-key:a", &tampered), Err(OpenError::Rejected));
        for bad in ["", "v2.AAAA", "v1.!!!", "v1.AAAA"] {
            assert_eq!(
                k.open("signing-key:a", bad),
                Err(OpenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_embedded_default_generates_a_private_key_file_once() {
        let dir = std::env::temp_dir().join(format!("gh-master-{}", ulid::Ulid::new()));
        let k1 = MasterKey::load(None, &dir).unwrap();
        let path = dir.join(MASTER_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        let sealed = k1.seal("p", b"x").unwrap();
        // The next start reads the same key.
        let k2 = MasterKey::load(None, &dir).unwrap();
        assert_eq!(&k2.open("p", &sealed).unwrap()[..], b"x");
        // The environment wins over the file.
        let (_, bytes) = MasterKey::generate().unwrap();
        let k3 = MasterKey::load(Some(&STANDARD.encode(&bytes[..])), &dir).unwrap();
        assert_eq!(k3.open("p", &sealed), Err(OpenError::Rejected));
        assert_eq!(format!("{k3:?}"), "MasterKey(..)");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_master_keys_are_refused() {
        for bad in ["", "not base64!", "AAAA", &STANDARD.encode([0u8; 31])] {
            assert!(MasterKey::from_base64(bad).is_err(), "{bad}");
        }
        assert!(MasterKey::from_base64(&STANDARD.encode([7u8; 32])).is_ok());
    }
}
