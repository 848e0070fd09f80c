//! Device keys and recipients. A device holds one X25519 secret (sealed by the TPM, by
//! systemd-creds, or in a development key file); its public half is the recipient a publisher
//! encrypts a model for. A model's random data key is wrapped once per recipient, as age wraps
//! file keys: an ephemeral X25519 exchange, HKDF-SHA256, ChaCha20-Poly1305. Adding a device to
//! a fleet wraps the data key once more; the model's segments are never encrypted again.

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::VaultError;

/// How a recipient is written: this prefix and the X25519 public key in hex.
pub const RECIPIENT_PREFIX: &str = "edgellm-x25519:";
const WRAP_INFO: &[u8] = b"edgellm model data key wrap v1";

/// A model's data key: 32 random bytes, zeroised when dropped.
pub type DataKey = Zeroizing<[u8; 32]>;

pub fn new_data_key() -> DataKey {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::fill(&mut key[..]);
    key
}

/// This device's secret key (zeroised when dropped: `x25519-dalek`'s `zeroize` feature).
pub struct DeviceKey {
    secret: x25519_dalek::StaticSecret,
}

impl DeviceKey {
    /// 32 fresh random bytes, for `edgellm key init` to seal.
    pub fn generate_secret() -> Zeroizing<[u8; 32]> {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::fill(&mut secret[..]);
        secret
    }

    /// The key from its 32 bytes (as a backend unsealed them).
    pub fn from_bytes(bytes: &[u8]) -> Result<DeviceKey, VaultError> {
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(bytes.try_into().map_err(|_| {
            VaultError::KeyStore(format!(
                "the unsealed device key has {} bytes, not 32",
                bytes.len()
            ))
        })?);
        Ok(DeviceKey {
            secret: x25519_dalek::StaticSecret::from(*bytes),
        })
    }

    /// A 32-byte key for one purpose (the prompt log's), derived from this key with HKDF.
    pub fn derive(&self, purpose: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes never exceed HKDF-SHA256's output limit.
        let _ = hkdf::Hkdf::<Sha256>::new(Some(b"edgellm local key"), self.secret.as_bytes())
            .expand(purpose, &mut out[..]);
        out
    }

    pub fn recipient(&self) -> Recipient {
        Recipient(x25519_dalek::PublicKey::from(&self.secret).to_bytes())
    }
}

/// A device's public key: what a model is encrypted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient([u8; 32]);

impl Recipient {
    pub fn parse(text: &str) -> Result<Recipient, VaultError> {
        let bad = || {
            VaultError::Recipient(format!(
                "{text:?} is not a recipient ({RECIPIENT_PREFIX} and 64 hex digits, as `edgellm key init` prints)"
            ))
        };
        let hex_part = text.trim().strip_prefix(RECIPIENT_PREFIX).ok_or_else(bad)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| bad())?;
        Ok(Recipient(bytes))
    }

    /// A short name of the key: the first 8 bytes of its SHA-256, in hex.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{RECIPIENT_PREFIX}{}", hex::encode(self.0))
    }
}

/// The data key wrapped for one recipient, as the container stores it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// [`Recipient::id`] of the device it is for.
    pub id: String,
    /// The ephemeral X25519 public key, hex.
    pub epk: String,
    /// The data key sealed with ChaCha20-Poly1305 (48 bytes), hex.
    pub wrapped: String,
}

fn wrap_key(shared: &[u8; 32], epk: &[u8; 32], to: &Recipient) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(epk);
    salt[32..].copy_from_slice(&to.0);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes are far below HKDF-SHA256's limit of 255 blocks: expand cannot fail.
    let _ = hkdf::Hkdf::<Sha256>::new(Some(&salt), shared).expand(WRAP_INFO, &mut out[..]);
    out
}

/// Wraps `data_key` so that only `to`'s secret unwraps it.
pub fn wrap(data_key: &DataKey, to: &Recipient) -> Result<WrappedKey, VaultError> {
    let ephemeral = x25519_dalek::StaticSecret::from(*DeviceKey::generate_secret());
    let epk = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(to.0));
    if !shared.was_contributory() {
        return Err(VaultError::Recipient(format!(
            "{to} is a low-order point, not a device key"
        )));
    }
    let key = wrap_key(shared.as_bytes(), &epk, to);
    let cipher = ChaCha20Poly1305::new_from_slice(&key[..])
        .map_err(|_| VaultError::Crypto("wrap key length".into()))?;
    // The wrap key is used once (a fresh ephemeral key each time): a zero nonce is safe.
    let wrapped = cipher
        .encrypt(&Default::default(), &data_key[..])
        .map_err(|_| VaultError::Crypto("cannot wrap the data key".into()))?;
    Ok(WrappedKey {
        id: to.id(),
        epk: hex::encode(epk),
        wrapped: hex::encode(wrapped),
    })
}

/// Unwraps the entry meant for `key`'s recipient among `entries`.
pub fn unwrap(entries: &[WrappedKey], key: &DeviceKey) -> Result<DataKey, VaultError> {
    let me = key.recipient();
    let id = me.id();
    let Some(entry) = entries.iter().find(|e| e.id == id) else {
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        return Err(VaultError::NotARecipient {
            device: id,
            recipients: ids.join(", "),
        });
    };
    let modified = || VaultError::Unwrap(id.clone());
    let mut epk = [0u8; 32];
    hex::decode_to_slice(&entry.epk, &mut epk).map_err(|_| modified())?;
    let wrapped = hex::decode(&entry.wrapped).map_err(|_| modified())?;
    let shared = key
        .secret
        .diffie_hellman(&x25519_dalek::PublicKey::from(epk));
    if !shared.was_contributory() {
        return Err(modified());
    }
    let wrap = wrap_key(shared.as_bytes(), &epk, &me);
    let cipher = ChaCha20Poly1305::new_from_slice(&wrap[..]).map_err(|_| modified())?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(&Default::default(), wrapped.as_slice())
            .map_err(|_| modified())?,
    );
    let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| modified())?;
    Ok(Zeroizing::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceKey {
        DeviceKey::from_bytes(&DeviceKey::generate_secret()[..]).unwrap()
    }

    #[test]
    fn a_wrapped_key_unwraps_for_its_recipient_only() {
        let (a, b) = (device(), device());
        let key = new_data_key();
        let entries = vec![wrap(&key, &a.recipient()).unwrap()];
        assert_eq!(*unwrap(&entries, &a).unwrap(), *key);
        let error = unwrap(&entries, &b).err().unwrap();
        assert!(matches!(error, VaultError::NotARecipient { .. }), "{error}");
        // Two recipients: each unwraps the same key.
        let entries = vec![
            wrap(&key, &a.recipient()).unwrap(),
            wrap(&key, &b.recipient()).unwrap(),
        ];
        assert_eq!(*unwrap(&entries, &b).unwrap(), *key);
    }

    #[test]
    fn a_modified_wrapped_key_is_refused_by_name() {
        let a = device();
        let key = new_data_key();
        let mut entry = wrap(&key, &a.recipient()).unwrap();
        let mut bytes = hex::decode(&entry.wrapped).unwrap();
        bytes[3] ^= 1;
        entry.wrapped = hex::encode(bytes);
        let error = unwrap(&[entry], &a).err().unwrap();
        assert!(matches!(error, VaultError::Unwrap(_)), "{error}");
    }

    #[test]
    fn recipients_round_trip_and_garbage_is_refused() {
        let r = device().recipient();
        assert_eq!(Recipient::parse(&r.to_string()).unwrap(), r);
        for bad in [
            "",
            "edgellm-x25519:",
            "edgellm-x25519:zz",
            "age1abc",
            &r.to_string()[..40],
        ] {
            assert!(Recipient::parse(bad).is_err(), "{bad}");
        }
        // The all-zero point is low order: nothing can be wrapped for it.
        let zero = Recipient::parse(&format!("{RECIPIENT_PREFIX}{}", "0".repeat(64))).unwrap();
        assert!(wrap(&new_data_key(), &zero).is_err());
    }
}
