//! The encrypted model container. A GGUF is cut where model delivery cuts it (the header, each
//! tensor, content-defined chunks inside large tensors: `crate::delivery::chunk`) and each piece
//! is one authenticated-encryption segment, so a new release encrypted with the same data key
//! shares every unchanged segment byte for byte with the old one (delta delivery still works).
//!
//! ```text
//! "ELLMENC\x01" | body length u32 LE | body (JSON) | segment table | header MAC (32)
//!   | recipients length u32 LE | recipients (JSON) | segment 0 | tag 0 | segment 1 | tag 1 | ...
//! ```
//!
//! The body names the model (name, plaintext sha256 and size, architecture, `plan` memory
//! figures) without revealing weights. The table holds each segment's length, nonce and tag.
//! A segment's nonce is an HMAC of its plaintext (a synthetic IV): equal plaintext gives equal
//! ciphertext under one data key, distinct plaintexts distinct nonces. The MAC (HMAC-SHA256
//! under a key derived from the data key) covers magic, body and table; the recipients (the data
//! key wrapped per device) lie outside it, so re-wrapping for a fleet rewrites only them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use aes_gcm::Aes256Gcm;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::recipient::{self, DataKey, DeviceKey, Recipient, WrappedKey};
use super::{VaultError, io_error};

pub const MAGIC: [u8; 8] = *b"ELLMENC\x01";
const TAG: usize = 16;
const NONCE: usize = 24;
const ENTRY: usize = 4 + NONCE + TAG;
const MAC: usize = 32;
const MAX_BODY: u32 = 1 << 20;
const MAX_RECIPIENTS_JSON: u32 = 4 << 20;
const MAX_SEGMENT: u32 = 256 << 20;
const MAX_SEGMENTS: u64 = 1 << 20;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Cipher {
    Aes256Gcm,
    Xchacha20Poly1305,
}

impl Cipher {
    /// AES-256-GCM where the CPU has AES and carry-less multiply instructions, XChaCha20-Poly1305
    /// otherwise (as fast in software as AES is in hardware, and constant-time).
    pub fn for_this_cpu() -> Cipher {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            return Cipher::Aes256Gcm;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("aes") {
            return Cipher::Aes256Gcm;
        }
        Cipher::Xchacha20Poly1305
    }
}

/// What a container holds: a GGUF model or a knowledge pack (`content` is absent from a
/// model's header, so containers written before packs could be encrypted read the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Content {
    #[default]
    Model,
    Pack,
}

impl Content {
    fn is_model(&self) -> bool {
        *self == Content::Model
    }

    pub fn noun(self) -> &'static str {
        match self {
            Content::Model => "a model",
            Content::Pack => "a knowledge pack",
        }
    }
}

/// What the container says about its model (readable without a key).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSummary {
    #[serde(default, skip_serializing_if = "Content::is_model")]
    pub content: Content,
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub architecture: String,
    pub parameters: u64,
    pub memory: Vec<crate::delivery::manifest::MemoryAtContext>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub format: u32,
    pub cipher: Cipher,
    pub model: ModelSummary,
    pub segments: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    len: u32,
    nonce: [u8; NONCE],
    tag: [u8; TAG],
}

/// A container's header, read and bounds-checked, not yet authenticated.
#[derive(Debug)]
pub struct Header {
    pub body: Body,
    pub recipients: Vec<WrappedKey>,
    entries: Vec<Entry>,
    /// Magic, body length, body and table: what the MAC covers.
    authenticated: Vec<u8>,
    mac: [u8; MAC],
    /// Where the recipients' length field starts, and where segment 0 starts.
    recipients_offset: u64,
    data_offset: u64,
}

/// The keys a data key expands into.
struct Keys {
    segment: Zeroizing<[u8; 32]>,
    nonce: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
}

impl Keys {
    fn derive(data_key: &DataKey) -> Keys {
        let hk = hkdf::Hkdf::<Sha256>::new(None, &data_key[..]);
        let expand = |info: &[u8]| {
            let mut out = Zeroizing::new([0u8; 32]);
            // 32 bytes never exceed HKDF-SHA256's output limit.
            let _ = hk.expand(info, &mut out[..]);
            out
        };
        Keys {
            segment: expand(b"edgellm container v1 segment key"),
            nonce: expand(b"edgellm container v1 nonce key"),
            mac: expand(b"edgellm container v1 header mac key"),
        }
    }

    fn hmac(key: &[u8; 32]) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
    }
}

enum SegmentCipher {
    Gcm(Box<Aes256Gcm>),
    XChaCha(Box<XChaCha20Poly1305>),
}

impl SegmentCipher {
    fn new(cipher: Cipher, key: &[u8; 32]) -> SegmentCipher {
        match cipher {
            Cipher::Aes256Gcm => SegmentCipher::Gcm(Box::new(Aes256Gcm::new(key.into()))),
            Cipher::Xchacha20Poly1305 => {
                SegmentCipher::XChaCha(Box::new(XChaCha20Poly1305::new(key.into())))
            }
        }
    }

    fn seal(&self, nonce: &[u8; NONCE], data: &mut [u8]) -> Result<[u8; TAG], VaultError> {
        let tag = match self {
            SegmentCipher::Gcm(c) => c.encrypt_inout_detached(gcm_nonce(nonce), &[], data.into()),
            SegmentCipher::XChaCha(c) => c.encrypt_inout_detached(nonce.into(), &[], data.into()),
        }
        .map_err(|_| VaultError::Crypto("segment too large to encrypt".into()))?;
        let mut out = [0u8; TAG];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts `sealed` into `out` (same length) if its tag checks out.
    fn open_into(
        &self,
        nonce: &[u8; NONCE],
        sealed: &[u8],
        out: &mut [u8],
        tag: &[u8; TAG],
    ) -> bool {
        let Ok(buffer) = aes_gcm::aead::inout::InOutBuf::new(sealed, out) else {
            return false;
        };
        match self {
            SegmentCipher::Gcm(c) => c
                .decrypt_inout_detached(gcm_nonce(nonce), &[], buffer, tag.into())
                .is_ok(),
            SegmentCipher::XChaCha(c) => c
                .decrypt_inout_detached(nonce.into(), &[], buffer, tag.into())
                .is_ok(),
        }
    }
}

/// AES-GCM takes the first 12 bytes of the 24-byte synthetic nonce.
fn gcm_nonce(nonce: &[u8; NONCE]) -> &aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
    let first: &[u8; 12] = nonce.first_chunk().unwrap_or_else(|| unreachable!());
    first.into()
}

/// True when `path` starts with the container's magic (false for anything unreadable: the
/// engine then says what is wrong with it as a model file).
pub fn is_container(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == MAGIC
}

/// What `encrypt` is asked for.
#[derive(Debug, Clone)]
pub struct EncryptOptions {
    pub cipher: Cipher,
    /// The model's name in the header [default: the file name without `.gguf`].
    pub name: Option<String>,
}

/// Encrypts `input`, a GGUF model (segments cut at tensor boundaries, then by content) or a
/// knowledge pack (cut by content), into `output` (written beside, fsynced, renamed), the data
/// key wrapped for each recipient.
pub fn encrypt(
    input: &Path,
    output: &Path,
    data_key: &DataKey,
    recipients: &[Recipient],
    options: &EncryptOptions,
) -> Result<Body, VaultError> {
    // Before the model is read: a bad recipient list fails at once.
    let recipients_json = wrap_all(data_key, recipients)?;
    let file_name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A pack is cut by content only; a model at its tensors' boundaries first, with `plan`'s
    // figures in the header when it can read the model (a GGUF of an architecture it does not
    // know is still encrypted, without them).
    let (content, size, regions, architecture, parameters, memory) =
        if crate::pack::store::is_pack_file(input) {
            let size = std::fs::metadata(input).map_err(io_error(input))?.len();
            (
                Content::Pack,
                size,
                vec![(0, size)],
                String::new(),
                0,
                Vec::new(),
            )
        } else {
            let header = crate::plan::gguf::read_header(input).map_err(|e| {
                VaultError::Format(format!(
                    "{} is neither a GGUF model nor a knowledge pack: {e}",
                    input.display()
                ))
            })?;
            (
                Content::Model,
                header.file_len,
                crate::delivery::chunk::regions(&header),
                header.architecture().unwrap_or("unknown").to_string(),
                header.n_params(),
                crate::delivery::manifest::memory_figures(&header).unwrap_or_default(),
            )
        };
    let sizes = crate::delivery::chunk::ChunkSizes::for_file(size);
    let chunks = crate::delivery::chunk::chunk_regions(input, &regions, sizes)
        .map_err(|e| VaultError::Format(e.to_string()))?;
    let suffix = match content {
        Content::Model => ".gguf",
        Content::Pack => ".pack",
    };
    let summary = ModelSummary {
        content,
        name: file_name
            .strip_suffix(suffix)
            .unwrap_or(&file_name)
            .to_string(),
        sha256: String::new(),
        size,
        architecture,
        parameters,
        memory,
    };
    if chunks.len() as u64 > MAX_SEGMENTS {
        return Err(VaultError::Format("the file has too many segments".into()));
    }
    let source = File::open(input).map_err(io_error(input))?;
    let sha256 = crate::model::import::sha256_file(input)
        .map_err(|e| VaultError::Format(format!("cannot hash {}: {e}", input.display())))?;
    let body = Body {
        format: 1,
        cipher: options.cipher,
        model: ModelSummary {
            sha256,
            name: options.name.clone().unwrap_or(summary.name),
            ..summary
        },
        segments: chunks.len() as u64,
    };
    let body_json = serde_json::to_vec(&body)
        .map_err(|e| VaultError::Format(format!("cannot write the header: {e}")))?;
    let keys = Keys::derive(data_key);
    let cipher = SegmentCipher::new(body.cipher, &keys.segment);
    let mut prefix = Vec::with_capacity(12 + body_json.len());
    prefix.extend_from_slice(&MAGIC);
    prefix.extend_from_slice(&(body_json.len() as u32).to_le_bytes());
    prefix.extend_from_slice(&body_json);
    let table_at = prefix.len() as u64;
    let mut table = Vec::with_capacity(chunks.len() * ENTRY);

    let tmp = output.with_extension("enc-partial");
    let mut out = File::create(&tmp).map_err(io_error(&tmp))?;
    let result = (|| -> Result<(), VaultError> {
        out.write_all(&prefix).map_err(io_error(&tmp))?;
        out.write_all(&vec![0u8; chunks.len() * ENTRY + MAC])
            .map_err(io_error(&tmp))?;
        out.write_all(&(recipients_json.len() as u32).to_le_bytes())
            .and_then(|()| out.write_all(&recipients_json))
            .map_err(io_error(&tmp))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut out);
        let mut data = Vec::new();
        for chunk in &chunks {
            data.resize(chunk.size as usize, 0);
            source
                .read_exact_at(&mut data, chunk.offset)
                .map_err(io_error(input))?;
            let mut nonce = [0u8; NONCE];
            let mut mac = Keys::hmac(&keys.nonce);
            mac.update(&data);
            nonce.copy_from_slice(&mac.finalize().into_bytes()[..NONCE]);
            let tag = cipher.seal(&nonce, &mut data)?;
            writer.write_all(&data).map_err(io_error(&tmp))?;
            writer.write_all(&tag).map_err(io_error(&tmp))?;
            table.extend_from_slice(&(chunk.size as u32).to_le_bytes());
            table.extend_from_slice(&nonce);
            table.extend_from_slice(&tag);
        }
        writer.flush().map_err(io_error(&tmp))?;
        drop(writer);
        let mut mac = Keys::hmac(&keys.mac);
        mac.update(&prefix);
        mac.update(&table);
        out.seek(SeekFrom::Start(table_at))
            .and_then(|_| out.write_all(&table))
            .and_then(|()| out.write_all(&mac.finalize().into_bytes()))
            .and_then(|()| out.sync_all())
            .map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, output).map_err(io_error(output))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| body)
}

fn read_u32(file: &mut File, path: &Path) -> Result<u32, VaultError> {
    let mut bytes = [0u8; 4];
    file.read_exact(&mut bytes)
        .map_err(|_| VaultError::Format(format!("{} ends inside its header", path.display())))?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_vec(file: &mut File, path: &Path, len: usize) -> Result<Vec<u8>, VaultError> {
    let mut bytes = Vec::new();
    file.take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() != len {
        return Err(VaultError::Format(format!(
            "{} ends inside its header",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Reads and bounds-checks a container's header (any file: every length is checked before it
/// is used, nothing is allocated past the bounds above).
pub fn read_header(file: &mut File, path: &Path) -> Result<Header, VaultError> {
    let format = |what: String| VaultError::Format(format!("{}: {what}", path.display()));
    file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| format("not an encrypted model container".into()))?;
    if magic != MAGIC {
        return Err(format("not an encrypted model container".into()));
    }
    let body_len = read_u32(file, path)?;
    if body_len > MAX_BODY {
        return Err(format(format!("header of {body_len} bytes is too large")));
    }
    let body_json = read_vec(file, path, body_len as usize)?;
    let body: Body = serde_json::from_slice(&body_json)
        .map_err(|e| format(format!("unreadable header: {e}")))?;
    if body.format != 1 {
        return Err(format(format!(
            "container format {}, this edgellm reads format 1",
            body.format
        )));
    }
    if body.segments == 0 || body.segments > MAX_SEGMENTS {
        return Err(format(format!("{} segments", body.segments)));
    }
    let table = read_vec(file, path, body.segments as usize * ENTRY)?;
    let mut entries = Vec::with_capacity(body.segments as usize);
    let mut total = 0u64;
    for raw in table.chunks_exact(ENTRY) {
        let len = u32::from_le_bytes(raw[..4].try_into().unwrap_or_default());
        if len == 0 || len > MAX_SEGMENT {
            return Err(format(format!("a segment of {len} bytes")));
        }
        total += u64::from(len);
        let mut entry = Entry {
            len,
            nonce: [0; NONCE],
            tag: [0; TAG],
        };
        entry.nonce.copy_from_slice(&raw[4..4 + NONCE]);
        entry.tag.copy_from_slice(&raw[4 + NONCE..]);
        entries.push(entry);
    }
    if total != body.model.size {
        return Err(format(format!(
            "segments add up to {total} bytes, the model has {}",
            body.model.size
        )));
    }
    let mut mac = [0u8; MAC];
    file.read_exact(&mut mac)
        .map_err(|_| format("ends inside its header".into()))?;
    let recipients_offset = 12 + u64::from(body_len) + table.len() as u64 + MAC as u64;
    let recipients_len = read_u32(file, path)?;
    if recipients_len > MAX_RECIPIENTS_JSON {
        return Err(format(format!(
            "recipient list of {recipients_len} bytes is too large"
        )));
    }
    let recipients: Vec<WrappedKey> =
        serde_json::from_slice(&read_vec(file, path, recipients_len as usize)?)
            .map_err(|e| format(format!("unreadable recipient list: {e}")))?;
    let mut authenticated = Vec::with_capacity(12 + body_json.len() + table.len());
    authenticated.extend_from_slice(&MAGIC);
    authenticated.extend_from_slice(&body_len.to_le_bytes());
    authenticated.extend_from_slice(&body_json);
    authenticated.extend_from_slice(&table);
    Ok(Header {
        body,
        recipients,
        entries,
        authenticated,
        mac,
        recipients_offset,
        data_offset: recipients_offset + 4 + u64::from(recipients_len),
    })
}

impl Header {
    /// The data key, unwrapped with this device's key, once the header's MAC checks out.
    pub fn unlock(&self, device: &DeviceKey) -> Result<DataKey, VaultError> {
        let key = recipient::unwrap(&self.recipients, device)?;
        self.check_mac(&key)?;
        Ok(key)
    }

    fn check_mac(&self, key: &DataKey) -> Result<(), VaultError> {
        let keys = Keys::derive(key);
        let mut mac = Keys::hmac(&keys.mac);
        mac.update(&self.authenticated);
        mac.verify_slice(&self.mac)
            .map_err(|_| VaultError::HeaderModified)
    }

    /// The container cut for delivery: its header (up to segment 0), then each segment with
    /// its tag, as (offset, length).
    pub fn chunk_extents(&self) -> Vec<(u64, u64)> {
        let mut out = vec![(0, self.data_offset)];
        out.extend(self.segment_extents());
        out
    }

    /// Each segment's place in the container and its length with its tag.
    pub fn segment_extents(&self) -> Vec<(u64, u64)> {
        let mut at = self.data_offset;
        self.entries
            .iter()
            .map(|e| {
                let extent = (at, u64::from(e.len) + TAG as u64);
                at += extent.1;
                extent
            })
            .collect()
    }

    /// The container's length when whole.
    fn expected_len(&self) -> u64 {
        self.data_offset + self.body.model.size + self.entries.len() as u64 * TAG as u64
    }
}

/// Decrypts every segment into a sealed memfd (anonymous memory; no filesystem holds it),
/// checking each segment's place and tag first. Two or more threads, each over a contiguous run
/// of segments, decrypt from a read-only mapping of the container into a small buffer of their
/// own and write it into the memfd.
pub fn decrypt_to_memfd(
    file: &File,
    path: &Path,
    header: &Header,
    data_key: &DataKey,
) -> Result<OwnedFd, VaultError> {
    let want = header.expected_len();
    let have = file.metadata().map_err(io_error(path))?.len();
    if have < want {
        return Err(VaultError::Truncated { have, want });
    }
    if have > want {
        return Err(VaultError::Trailing(have - want));
    }
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new descriptor.
    let raw = unsafe {
        libc::memfd_create(
            c"edgellm-model".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(VaultError::Memory(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a descriptor this process just opened and nothing else owns.
    let memfd = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    memfd
        .set_len(header.body.model.size)
        .map_err(VaultError::Memory)?;
    // The container, mapped read-only: each segment is decrypted from the page cache with no
    // copy in between (reading it first cost a third more load time). Its length was checked
    // just above; a process that can truncate the model file meanwhile could as well replace it.
    let source_len = want as usize;
    // SAFETY: a new read-only mapping of the container's checked length; unmapped below.
    let source = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            source_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if source == libc::MAP_FAILED {
        return Err(VaultError::Memory(std::io::Error::last_os_error()));
    }
    // SAFETY: the mapping is live until the munmap below, and only read.
    let sealed = unsafe { std::slice::from_raw_parts(source.cast::<u8>(), source_len) };
    let result = decrypt_segments(sealed, header, data_key, &memfd);
    // SAFETY: unmapping the mapping made above; `sealed` is not used after this.
    unsafe { libc::munmap(source, source_len) };
    result?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on the memfd we own; it has no writable mapping, so F_SEAL_WRITE applies.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(VaultError::Memory(std::io::Error::last_os_error()));
    }
    Ok(OwnedFd::from(memfd))
}

fn decrypt_segments(
    sealed: &[u8],
    header: &Header,
    data_key: &DataKey,
    out: &File,
) -> Result<(), VaultError> {
    let keys = Keys::derive(data_key);
    let cipher = SegmentCipher::new(header.body.cipher, &keys.segment);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let share = (header.body.model.size as usize).div_ceil(threads).max(1);
    // Contiguous runs of segments of about `share` bytes each.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, entry) in header.entries.iter().enumerate() {
        bytes += entry.len as usize;
        if bytes >= share || i + 1 == header.entries.len() {
            runs.push((start, i + 1));
            start = i + 1;
            bytes = 0;
        }
    }
    let mut results: Vec<Result<(), VaultError>> = Vec::new();
    std::thread::scope(|scope| {
        let mut plain_at = 0u64;
        let mut file_at = header.data_offset;
        let mut handles = Vec::new();
        for &(first, end) in &runs {
            let run_len: u64 = header.entries[first..end]
                .iter()
                .map(|e| u64::from(e.len))
                .sum();
            let (cipher, starts) = (&cipher, (plain_at, file_at));
            handles.push(
                scope.spawn(move || decrypt_run(sealed, header, cipher, first..end, out, starts)),
            );
            plain_at += run_len;
            file_at += run_len + (end - first) as u64 * TAG as u64;
        }
        for handle in handles {
            results.push(handle.join().unwrap_or_else(|_| {
                Err(VaultError::Crypto("a decryption thread panicked".into()))
            }));
        }
    });
    // The first failing run names the earliest bad segment.
    results.into_iter().collect()
}

/// Decrypts one run of segments. Plaintext gathers in a buffer of about `WRITE_EVERY` bytes
/// that goes into the memfd with one `pwrite`: the kernel then fills shmem pages without a
/// page fault each (writing through a mapping of the memfd took a fault per 4 KiB page, most of
/// the load's cost).
fn decrypt_run(
    sealed: &[u8],
    header: &Header,
    cipher: &SegmentCipher,
    range: std::ops::Range<usize>,
    out: &File,
    (mut plain_at, file_at): (u64, u64),
) -> Result<(), VaultError> {
    let mut from = file_at as usize;
    let largest = header.entries[range.clone()]
        .iter()
        .map(|e| e.len as usize)
        .max()
        .unwrap_or(0);
    let mut buffer = vec![0u8; largest.max(WRITE_EVERY)];
    let (mut filled, mut buffer_at) = (0usize, plain_at);
    let flush = |buffer: &[u8], at: u64| out.write_all_at(buffer, at).map_err(VaultError::Memory);
    // The container's pages this run has decrypted leave the process's page tables every few
    // MiB (they stay in the page cache): mapped whole, they would count in its resident memory.
    let mut released = from & !(PAGE - 1);
    for index in range {
        let entry = &header.entries[index];
        let len = entry.len as usize;
        let data = &sealed[from..from + len];
        let tag: [u8; TAG] = sealed[from + len..from + len + TAG]
            .try_into()
            .unwrap_or_default();
        if tag != entry.tag {
            return Err(match header.entries.iter().position(|e| e.tag == tag) {
                Some(holds) => VaultError::OutOfOrder { at: index, holds },
                None => VaultError::TagModified(index),
            });
        }
        if filled + len > buffer.len() {
            flush(&buffer[..filled], buffer_at)?;
            (filled, buffer_at) = (0, plain_at);
        }
        if !cipher.open_into(
            &entry.nonce,
            data,
            &mut buffer[filled..filled + len],
            &entry.tag,
        ) {
            return Err(VaultError::SegmentModified {
                index,
                start: plain_at,
                end: plain_at + len as u64,
            });
        }
        filled += len;
        from += len + TAG;
        plain_at += len as u64;
        let done = from & !(PAGE - 1);
        if done - released >= RELEASE_EVERY {
            release(sealed, released, done);
            released = done;
        }
    }
    flush(&buffer[..filled], buffer_at)?;
    release(sealed, released, from & !(PAGE - 1));
    Ok(())
}

const WRITE_EVERY: usize = 2 << 20;
const PAGE: usize = 4096;
const RELEASE_EVERY: usize = 4 << 20;

/// Drops `sealed[from..to]` (page-aligned offsets of a file mapping) from the page tables.
fn release(sealed: &[u8], from: usize, to: usize) {
    if to > from {
        // SAFETY: a page-aligned range inside the read-only shared file mapping `sealed` (its
        // base is page-aligned); MADV_DONTNEED on it only unmaps page-cache pages, which a later
        // read would map again. Nothing reads this range afterwards.
        unsafe {
            libc::madvise(
                sealed.as_ptr().add(from).cast_mut().cast(),
                to - from,
                libc::MADV_DONTNEED,
            )
        };
    }
}

/// Replaces the recipients of `path` (the data key checked against its MAC first), writing
/// `output`: the header before the recipients and every segment are copied unchanged.
pub fn rewrap(
    path: &Path,
    output: &Path,
    data_key: &DataKey,
    recipients: &[Recipient],
) -> Result<usize, VaultError> {
    let json = wrap_all(data_key, recipients)?;
    let mut file = File::open(path).map_err(io_error(path))?;
    let header = read_header(&mut file, path)?;
    header.check_mac(data_key).map_err(|_| {
        VaultError::KeyStore(format!(
            "the data key does not open {} (another model's key, or the header was modified)",
            path.display()
        ))
    })?;
    let tmp = output.with_extension("enc-partial");
    let result = (|| -> Result<(), VaultError> {
        let mut out = File::create(&tmp).map_err(io_error(&tmp))?;
        file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
        std::io::copy(&mut (&mut file).take(header.recipients_offset), &mut out)
            .map_err(io_error(&tmp))?;
        out.write_all(&(json.len() as u32).to_le_bytes())
            .and_then(|()| out.write_all(&json))
            .map_err(io_error(&tmp))?;
        file.seek(SeekFrom::Start(header.data_offset))
            .map_err(io_error(path))?;
        std::io::copy(&mut file, &mut out).map_err(io_error(&tmp))?;
        out.sync_all().map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, output).map_err(io_error(output))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| recipients.len())
}

/// The data key wrapped for each recipient, as the container's recipient list (JSON).
fn wrap_all(data_key: &DataKey, recipients: &[Recipient]) -> Result<Vec<u8>, VaultError> {
    if recipients.is_empty() {
        return Err(VaultError::Recipient(
            "at least one --recipient is required".into(),
        ));
    }
    let wrapped = recipients
        .iter()
        .map(|r| recipient::wrap(data_key, r))
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_vec(&wrapped)
        .map_err(|e| VaultError::Format(format!("cannot write the recipients: {e}")))
}
