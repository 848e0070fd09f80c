//! The container against every way a file can be damaged or swapped, with the development key
//! file as the device key (the TPM and systemd-creds backends are exercised in tests/it/vault.rs).

use std::path::{Path, PathBuf};

use super::container::{self, Cipher, EncryptOptions};
use super::keystore::{self, Backend, InitOptions};
use super::recipient::{self, DeviceKey, Recipient};
use super::{KeyConfig, ModelSource, VaultError, open_model};
use crate::plan::GgmlType;
use crate::plan::gguf::GgufWriter;

struct Fixture {
    dir: tempfile::TempDir,
    keys: KeyConfig,
    recipient: Recipient,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("keys").join(keystore::FILE_NAME);
        let recipient = keystore::init(&store, &file_backend()).unwrap();
        Fixture {
            keys: KeyConfig {
                store: Some(store),
                allow_key_file: true,
                ..KeyConfig::default()
            },
            dir,
            recipient,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn file_backend() -> InitOptions {
    InitOptions {
        backend: Backend::File,
        tcti: String::new(),
        pcrs: vec![],
        with_key: String::new(),
        force: false,
    }
}

/// Pseudo-random bytes from a seed (xorshift; the content only has to differ; seeds that differ
/// only in their lowest bit give the same bytes).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A GGUF with two equal small tensors (their segments have the same length), and one large
/// tensor that content-defined chunking cuts into several segments. `big_seed` varies the
/// large tensor's second half only.
fn model(path: &Path, big_seed: u64) {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama")
        .tensor("a.weight", &[1024], GgmlType::F32)
        .tensor("b.weight", &[1024], GgmlType::F32)
        .tensor("big.weight", &[256 * 1024], GgmlType::F32);
    let mut big = noise(3, 1 << 20);
    big[512 << 10..].copy_from_slice(&noise(big_seed, 512 << 10));
    w.write_with_data(path, &[&noise(1, 4096), &noise(2, 4096), &big])
        .unwrap();
}

fn encrypt(f: &Fixture, plain: &Path, out: &Path, key: &recipient::DataKey) -> container::Body {
    container::encrypt(
        plain,
        out,
        key,
        &[f.recipient],
        &EncryptOptions {
            cipher: Cipher::for_this_cpu(),
            name: None,
        },
    )
    .unwrap()
}

fn open(f: &Fixture, path: &Path) -> Result<ModelSource, VaultError> {
    open_model(path, &f.keys, None)
}

/// Where segment `i`'s ciphertext starts in the container, and its length (with the tag).
fn segment_extents(path: &Path) -> Vec<(u64, u64)> {
    let mut file = std::fs::File::open(path).unwrap();
    let header = container::read_header(&mut file, path).unwrap();
    header.segment_extents()
}

#[test]
fn a_model_round_trips_through_a_sealed_memfd() {
    let f = Fixture::new();
    for cipher in [Cipher::Aes256Gcm, Cipher::Xchacha20Poly1305] {
        let (plain, enc) = (f.path("m.gguf"), f.path("m.gguf.enc"));
        model(&plain, 4);
        let body = container::encrypt(
            &plain,
            &enc,
            &recipient::new_data_key(),
            &[f.recipient],
            &EncryptOptions {
                cipher,
                name: Some("m".into()),
            },
        )
        .unwrap();
        assert!(body.segments >= 4, "{}", body.segments);
        assert!(container::is_container(&enc));
        assert!(!container::is_container(&plain));
        let source = open(&f, &enc).unwrap();
        assert_eq!(source.name(), Some("m"));
        let load = source.load_path().to_path_buf();
        assert!(load.starts_with("/proc/self/fd"), "{}", load.display());
        assert_eq!(
            std::fs::read(&load).unwrap(),
            std::fs::read(&plain).unwrap()
        );
        // Sealed: not even this process can write to it.
        let write = std::fs::OpenOptions::new().write(true).open(&load);
        assert!(write.is_err() || std::io::Write::write_all(&mut write.unwrap(), b"x").is_err());
        // The engine's GGUF reader reads the memfd as a file.
        crate::plan::gguf::read_header(&load).unwrap();
        // The ciphertext holds none of the plaintext's large tensor.
        let sample = &std::fs::read(&plain).unwrap()[20_000..20_064];
        let enc_bytes = std::fs::read(&enc).unwrap();
        assert!(!enc_bytes.windows(64).any(|w| w == sample));
    }
}

#[test]
fn each_kind_of_damage_is_refused_with_its_own_message() {
    let f = Fixture::new();
    let (plain, enc) = (f.path("m.gguf"), f.path("m.gguf.enc"));
    model(&plain, 4);
    encrypt(&f, &plain, &enc, &recipient::new_data_key());
    let original = std::fs::read(&enc).unwrap();
    let extents = segment_extents(&enc);
    let damaged = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| -> VaultError {
        let path = f.path(name);
        let mut bytes = original.clone();
        edit(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        open(&f, &path)
            .err()
            .unwrap_or_else(|| panic!("{name} opened"))
    };

    // A flipped byte in any segment: that segment, by number.
    for (i, &(at, len)) in extents.iter().enumerate() {
        let error = damaged("flip", &|b| b[(at + len / 2 - 8) as usize] ^= 0x20);
        assert!(
            matches!(error, VaultError::SegmentModified { index, .. } if index == i),
            "{i}: {error}"
        );
    }
    // A flipped byte in a segment's stored tag.
    let (at, len) = extents[2];
    let error = damaged("tag", &|b| b[(at + len - 1) as usize] ^= 1);
    assert!(matches!(error, VaultError::TagModified(2)), "{error}");
    // Two segments of the same length swapped (the two small tensors).
    let (a, b) = (1usize, 2usize);
    assert_eq!(extents[a].1, extents[b].1, "{extents:?}");
    let error = damaged("swap", &|bytes| {
        let (sa, sb) = (extents[a].0 as usize, extents[b].0 as usize);
        let len = extents[a].1 as usize;
        let first = bytes[sa..sa + len].to_vec();
        bytes.copy_within(sb..sb + len, sa);
        bytes[sb..sb + len].copy_from_slice(&first);
    });
    assert!(
        matches!(error, VaultError::OutOfOrder { at: 1, holds: 2 }),
        "{error}"
    );
    // Truncated, or with bytes appended.
    let error = damaged("short", &|b| b.truncate(b.len() - 100));
    assert!(matches!(error, VaultError::Truncated { .. }), "{error}");
    let error = damaged("long", &|b| b.extend_from_slice(b"more"));
    assert!(matches!(error, VaultError::Trailing(4)), "{error}");
    // The authenticated header (a nonce in the segment table) changed.
    let body_len = u32::from_le_bytes(original[8..12].try_into().unwrap()) as usize;
    let error = damaged("header", &|b| b[12 + body_len + 10] ^= 1);
    assert!(matches!(error, VaultError::HeaderModified), "{error}");

    // The texts differ from each other.
    let messages: std::collections::BTreeSet<String> = [
        VaultError::SegmentModified {
            index: 0,
            start: 0,
            end: 1,
        }
        .to_string(),
        VaultError::TagModified(0).to_string(),
        VaultError::OutOfOrder { at: 0, holds: 1 }.to_string(),
        VaultError::Truncated { have: 0, want: 1 }.to_string(),
        VaultError::HeaderModified.to_string(),
    ]
    .into();
    assert_eq!(messages.len(), 5);
}

#[test]
fn another_device_or_a_modified_wrapped_key_is_refused() {
    let f = Fixture::new();
    let other = Fixture::new();
    let (plain, enc) = (f.path("m.gguf"), f.path("m.gguf.enc"));
    model(&plain, 4);
    encrypt(&other, &plain, &enc, &recipient::new_data_key());
    let error = open(&f, &enc).err().unwrap();
    assert!(matches!(error, VaultError::NotARecipient { .. }), "{error}");
    assert!(error.to_string().contains(&other.recipient.id()), "{error}");
    // Its own entry, damaged: the wrapped key does not unwrap.
    encrypt(&f, &plain, &enc, &recipient::new_data_key());
    let mut bytes = std::fs::read(&enc).unwrap();
    let needle = b"\"wrapped\":\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(&enc, bytes).unwrap();
    let error = open(&f, &enc).err().unwrap();
    assert!(matches!(error, VaultError::Unwrap(_)), "{error}");
}

#[test]
fn a_new_release_under_the_same_data_key_shares_its_unchanged_segments() {
    let f = Fixture::new();
    let key = recipient::new_data_key();
    let segments = |seed: u64, name: &str| -> Vec<Vec<u8>> {
        let (plain, enc) = (
            f.path(&format!("{name}.gguf")),
            f.path(&format!("{name}.enc")),
        );
        model(&plain, seed);
        encrypt(&f, &plain, &enc, &key);
        let bytes = std::fs::read(&enc).unwrap();
        segment_extents(&enc)
            .iter()
            .map(|&(at, len)| bytes[at as usize..(at + len) as usize].to_vec())
            .collect()
    };
    let (old, new) = (segments(10, "v1"), segments(20, "v2"));
    let shared = new.iter().filter(|s| old.contains(s)).count();
    // The header region, both small tensors and the large tensor's unchanged first half.
    assert!(
        shared >= 4 && shared < new.len(),
        "{shared} of {}",
        new.len()
    );
    // Another data key shares nothing.
    let other = recipient::new_data_key();
    let plain = f.path("v1.gguf");
    model(&plain, 10);
    encrypt(&f, &plain, &f.path("v3.enc"), &other);
    let bytes = std::fs::read(f.path("v3.enc")).unwrap();
    let third: Vec<Vec<u8>> = segment_extents(&f.path("v3.enc"))
        .iter()
        .map(|&(at, len)| bytes[at as usize..(at + len) as usize].to_vec())
        .collect();
    assert_eq!(third.iter().filter(|s| old.contains(s)).count(), 0);
}

#[test]
fn rewrapping_changes_who_opens_it_and_no_segment_byte() {
    let (f, g) = (Fixture::new(), Fixture::new());
    let key = recipient::new_data_key();
    let (plain, enc, out) = (f.path("m.gguf"), f.path("m.enc"), f.path("m2.enc"));
    model(&plain, 4);
    encrypt(&f, &plain, &enc, &key);
    assert_eq!(
        container::rewrap(&enc, &out, &key, &[g.recipient]).unwrap(),
        1
    );
    assert!(open(&g, &out).is_ok());
    assert!(matches!(
        open(&f, &out).err().unwrap(),
        VaultError::NotARecipient { .. }
    ));
    let (a, b) = (std::fs::read(&enc).unwrap(), std::fs::read(&out).unwrap());
    let data = segment_extents(&enc)[0].0 as usize;
    let data_b = segment_extents(&out)[0].0 as usize;
    assert_eq!(a[data..], b[data_b..]);
    // Only with the model's own data key.
    let error = container::rewrap(&enc, &out, &recipient::new_data_key(), &[g.recipient]);
    assert!(error.is_err());
}

#[test]
fn the_key_file_backend_is_refused_unless_allowed_and_stores_are_checked() {
    let mut f = Fixture::new();
    let (plain, enc) = (f.path("m.gguf"), f.path("m.enc"));
    model(&plain, 4);
    encrypt(&f, &plain, &enc, &recipient::new_data_key());
    f.keys.allow_key_file = false;
    let error = open(&f, &enc).err().unwrap().to_string();
    assert!(error.contains("allow_key_file"), "{error}");
    f.keys.allow_key_file = true;
    // A store that points its key file elsewhere, or names another recipient.
    let store = f.keys.store.clone().unwrap();
    let text = std::fs::read_to_string(&store).unwrap();
    std::fs::write(&store, text.replace("\"device.key\"", "\"/etc/passwd\"")).unwrap();
    assert!(
        open(&f, &enc)
            .err()
            .unwrap()
            .to_string()
            .contains("plain name")
    );
    let other = DeviceKey::from_bytes(&DeviceKey::generate_secret()[..]).unwrap();
    std::fs::write(
        &store,
        text.replace(&f.recipient.to_string(), &other.recipient().to_string()),
    )
    .unwrap();
    assert!(
        open(&f, &enc)
            .err()
            .unwrap()
            .to_string()
            .contains("not the recipient")
    );
    // No store at all; an existing store is not replaced without force.
    std::fs::remove_file(&store).unwrap();
    assert!(
        open(&f, &enc)
            .err()
            .unwrap()
            .to_string()
            .contains("key init")
    );
    std::fs::write(&store, text).unwrap();
    assert!(keystore::init(&store, &file_backend()).is_err());
}

#[test]
fn a_plain_model_is_checked_against_its_configured_sha256() {
    let f = Fixture::new();
    let plain = f.path("m.gguf");
    model(&plain, 4);
    let sha = crate::model::import::sha256_file(&plain).unwrap();
    assert!(matches!(
        open_model(&plain, &f.keys, Some(&sha)).unwrap(),
        ModelSource::Plain(_)
    ));
    let wrong = "0".repeat(64);
    let error = open_model(&plain, &f.keys, Some(&wrong)).err().unwrap();
    assert!(
        matches!(error, VaultError::Sha256Mismatch { .. }),
        "{error}"
    );
    // An encrypted model: its header's plaintext sha256 is compared before any key is used.
    let enc = f.path("m.enc");
    encrypt(&f, &plain, &enc, &recipient::new_data_key());
    assert!(open_model(&enc, &f.keys, Some(&sha)).is_ok());
    let error = open_model(&enc, &f.keys, Some(&wrong)).err().unwrap();
    assert!(
        matches!(error, VaultError::Sha256Mismatch { .. }),
        "{error}"
    );
}

/// Mutated headers (a fixed corpus of seeds): every one is refused or opens, none panics or
/// allocates past the bounds.
#[test]
fn mutated_headers_never_panic() {
    let f = Fixture::new();
    let (plain, enc) = (f.path("m.gguf"), f.path("m.enc"));
    model(&plain, 4);
    encrypt(&f, &plain, &enc, &recipient::new_data_key());
    let original = std::fs::read(&enc).unwrap();
    let header_len = segment_extents(&enc)[0].0 as usize;
    let path = f.path("mutated");
    for seed in 1..300u64 {
        let mut bytes = original.clone();
        let r = noise(seed, 8);
        let at = (u32::from_le_bytes(r[..4].try_into().unwrap()) as usize) % header_len;
        bytes[at] = r[4];
        if seed % 7 == 0 {
            bytes.truncate(at);
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = open(&f, &path);
    }
    // Lengths at their limits.
    for body_len in [0u32, 1 << 20, u32::MAX] {
        let mut bytes = container::MAGIC.to_vec();
        bytes.extend_from_slice(&body_len.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            open(&f, &path).err().unwrap(),
            VaultError::Format(_)
        ));
    }
}

#[test]
fn local_keys_come_from_the_device_key_per_purpose() {
    let f = Fixture::new();
    let a = super::LocalKey::for_device(&f.keys, "prompt log").unwrap();
    let again = super::LocalKey::for_device(&f.keys, "prompt log").unwrap();
    let other = super::LocalKey::for_device(&f.keys, "packs").unwrap();
    assert_eq!(a, again);
    assert_ne!(a, other);
    assert_eq!(format!("{a:?}"), "LocalKey(..)");
    let sealed = a.seal("pump 7");
    assert_ne!(a.seal("pump 7"), sealed, "a fresh nonce each time");
    assert_eq!(again.open(&sealed).as_deref(), Some("pump 7"));
    assert_eq!(other.open(&sealed), None);
    assert_eq!(a.open("pump 7"), None);
    assert_eq!(a.open("enc1:!!"), None);
    // No device key: refused, not a key made up.
    let missing = KeyConfig {
        store: Some(f.path("none.json")),
        ..f.keys.clone()
    };
    assert!(super::LocalKey::for_device(&missing, "prompt log").is_err());
}

#[test]
fn a_pack_is_a_container_of_its_own_content_and_never_opens_as_a_model() {
    let f = Fixture::new();
    let (plain, enc) = (f.path("manuals.pack"), f.path("manuals.pack.enc"));
    {
        let conn = rusqlite::Connection::open(&plain).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA application_id = {}; CREATE TABLE t (x BLOB); INSERT INTO t VALUES (randomblob(300000));",
            crate::pack::store::APPLICATION_ID
        ))
        .unwrap();
    }
    assert!(crate::pack::store::is_pack_file(&plain));
    let body = encrypt(&f, &plain, &enc, &recipient::new_data_key());
    assert_eq!(body.model.content, super::Content::Pack);
    assert_eq!(body.model.name, "manuals");
    assert!(body.segments >= 2, "{}", body.segments);
    let unsealed = super::unseal(&enc, &f.keys, super::Content::Pack, None).unwrap();
    assert_eq!(
        std::fs::read(&unsealed.load_path).unwrap(),
        std::fs::read(&plain).unwrap()
    );
    let error = open(&f, &enc).unwrap_err().to_string();
    assert!(
        error.ends_with("holds a knowledge pack, not a model"),
        "{error}"
    );

    // A model's header says nothing of its content (containers from before packs read the
    // same), and a model never opens as a pack.
    let (model_plain, model_enc) = (f.path("m.gguf"), f.path("m.gguf.enc"));
    model(&model_plain, 4);
    encrypt(&f, &model_plain, &model_enc, &recipient::new_data_key());
    let bytes = std::fs::read(&model_enc).unwrap();
    let body_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&bytes[12..12 + body_len]);
    assert!(!header.contains("content"), "{header}");
    let error = super::unseal(&model_enc, &f.keys, super::Content::Pack, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.ends_with("holds a model, not a knowledge pack"),
        "{error}"
    );
    // Neither a model nor a pack: refused before anything is written.
    let other = f.path("notes.txt");
    std::fs::write(&other, "plain text").unwrap();
    let refused = container::encrypt(
        &other,
        &f.path("notes.enc"),
        &recipient::new_data_key(),
        &[f.recipient],
        &EncryptOptions {
            cipher: Cipher::for_this_cpu(),
            name: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("neither a GGUF model nor a knowledge pack"),
        "{refused}"
    );
    assert!(!f.path("notes.enc").exists());
}
