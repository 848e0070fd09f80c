//! `edgellm model push FILE REF --key KEY [--base TAG]...`: chunk, upload what the registry
//! lacks, sign, tag.
//!
//! Chunks go up in packs: consecutive chunks concatenated into blobs of about `PACK_BYTES`, so
//! that a pull reads a model with a few dozen range requests instead of one request per chunk.
//! A chunk that a base release (the tag being replaced, and each `--base` tag) already holds is
//! not uploaded again: the new manifest points at its place in the base's pack. A base counts
//! only when one of the pushing keys signed it.

use std::collections::HashMap;
use std::path::Path;

use ed25519_dalek::SigningKey;
use serde::Serialize;

use super::chunk::{ChunkSizes, chunk_file};
use super::manifest::{self, Body, ChunkEntry, GgufSummary, PackEntry};
use super::registry::{Descriptor, OCI_MANIFEST, OciManifest, Reference, Registry};
use super::{DeliveryError, digest_of, io_error};

#[derive(Debug, Serialize)]
pub struct Pushed {
    pub reference: String,
    pub manifest_digest: String,
    pub chunks: usize,
    pub uploaded_chunks: usize,
    pub uploaded_bytes: u64,
    pub size: u64,
    pub sha256: String,
    pub key_ids: Vec<String>,
}

pub struct PushOptions<'a> {
    pub keys: &'a [SigningKey],
    pub valid_days: u64,
    /// Tags of earlier releases in the same repository whose packs this one may point into.
    pub bases: &'a [String],
    /// Sent when the registry asks for them.
    pub credentials: Option<super::auth::Credentials>,
}

/// About how large a pack is (a pack ends at the first chunk boundary past this).
const PACK_BYTES: u64 = 32 << 20;

pub async fn push(
    file: &Path,
    reference: Reference,
    options: PushOptions<'_>,
) -> Result<Pushed, DeliveryError> {
    if options.keys.is_empty() {
        return Err(DeliveryError::Key(
            "a push needs at least one signing key".into(),
        ));
    }
    if let Some(bad) = options.bases.iter().find(|t| !super::registry::is_tag(t)) {
        return Err(DeliveryError::Reference(format!(
            "--base {bad:?}: a tag is letters, digits, '.', '_' and '-', at most 128"
        )));
    }
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DeliveryError::Model(format!("{} has no file name", file.display())))?
        .to_string();
    let encrypted = crate::vault::is_container(file);
    let path = file.to_path_buf();
    let (chunks, sha256, gguf) = tokio::task::spawn_blocking(move || {
        let (chunks, gguf) = if encrypted {
            encrypted_chunks(&path)?
        } else {
            let header = crate::plan::gguf::read_header(&path)
                .map_err(|e| DeliveryError::Model(e.to_string()))?;
            let sizes = ChunkSizes::for_file(header.file_len);
            (
                chunk_file(&path, &header, sizes)?,
                GgufSummary::of(&header)?,
            )
        };
        let sha256 = crate::model::import::sha256_file(&path)
            .map_err(|e| DeliveryError::Model(format!("{e:#}")))?;
        Ok::<_, DeliveryError>((chunks, sha256, gguf))
    })
    .await
    .map_err(|e| DeliveryError::Model(e.to_string()))??;

    let registry = Registry::new(reference)?.with_credentials(options.credentials.clone());
    // Where the registry already holds each chunk: in a pack of a base release.
    let signers: Vec<_> = options.keys.iter().map(|k| k.verifying_key()).collect();
    let own_tag = registry.reference().tag.clone();
    let mut held: HashMap<String, (PackEntry, u64)> = HashMap::new();
    for tag in options.bases.iter().chain(std::iter::once(&own_tag)) {
        let base = match super::pull::signed_body(&registry, tag, &signers, 0).await {
            Ok(Some(base)) => base,
            // The tag being replaced may not exist yet, or be signed by someone else.
            Ok(None) | Err(_) if *tag == own_tag => continue,
            Ok(None) => {
                return Err(DeliveryError::Reference(format!(
                    "base {tag}: the registry has no such tag"
                )));
            }
            Err(e) => return Err(DeliveryError::Manifest(format!("base {tag}: {e}"))),
        };
        for chunk in base.chunks {
            let pack = base.packs[chunk.pack as usize].clone();
            held.entry(chunk.digest).or_insert((pack, chunk.offset));
        }
    }

    // Each new chunk once, in file order, in new packs.
    let mut file_handle = std::fs::File::open(file).map_err(io_error(file))?;
    let mut packer = Packer::default();
    let mut uploaded = (0, 0);
    for chunk in &chunks {
        if packer.placed.contains_key(&chunk.digest) {
            continue;
        }
        if let Some((pack, offset)) = held.get(&chunk.digest) {
            let index = packer.pack_index(pack);
            packer.placed.insert(chunk.digest.clone(), (index, *offset));
            continue;
        }
        let bytes = read_at(&mut file_handle, file, chunk.offset, chunk.size)?;
        packer.add(&chunk.digest, &bytes);
        if packer.open.len() as u64 >= PACK_BYTES {
            let (c, b) = upload(&registry, packer.seal()).await?;
            uploaded = (uploaded.0 + c, uploaded.1 + b);
        }
    }
    if !packer.open.is_empty() {
        let (c, b) = upload(&registry, packer.seal()).await?;
        uploaded = (uploaded.0 + c, uploaded.1 + b);
    }
    let Packer { packs, placed, .. } = packer;

    let now = unix_now();
    let body = Body {
        schema: manifest::SCHEMA,
        name,
        size: chunks.iter().map(|c| c.size).sum(),
        sha256: sha256.clone(),
        gguf,
        encrypted,
        created: now,
        expires: now + options.valid_days * 86_400,
        chunks: chunks
            .iter()
            .map(|c| {
                let (pack, offset) = placed[&c.digest];
                ChunkEntry {
                    digest: c.digest.clone(),
                    size: c.size,
                    pack,
                    offset,
                }
            })
            .collect(),
        packs,
    };
    let envelope = manifest::sign(&body, options.keys)?;
    let config_digest = digest_of(&envelope);
    let config_size = envelope.len() as u64;
    if !registry.has_blob(&config_digest).await? {
        registry.put_blob(&config_digest, envelope).await?;
    }
    let oci = OciManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: manifest::CONFIG_MEDIA_TYPE.into(),
            digest: config_digest,
            size: config_size,
        },
        layers: body
            .packs
            .iter()
            .map(|p| Descriptor {
                media_type: manifest::PACK_MEDIA_TYPE.into(),
                digest: p.digest.clone(),
                size: p.size,
            })
            .collect(),
    };
    let manifest_digest = registry.put_manifest(&oci).await?;
    Ok(Pushed {
        reference: registry.reference().to_string(),
        manifest_digest,
        chunks: chunks.len(),
        uploaded_chunks: uploaded.0,
        uploaded_bytes: uploaded.1,
        size: body.size,
        sha256,
        key_ids: options
            .keys
            .iter()
            .map(|k| manifest::key_id(&k.verifying_key()))
            .collect(),
    })
}

/// An encrypted container's chunks: its header, then each segment with its tag (the segments
/// are the plain model's delivery chunks, so releases under one data key share them).
fn encrypted_chunks(path: &Path) -> Result<(Vec<super::chunk::Chunk>, GgufSummary), DeliveryError> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let header = crate::vault::container::read_header(&mut file, path)
        .map_err(|e| DeliveryError::Model(e.to_string()))?;
    let mut chunks = Vec::new();
    for (offset, size) in header.chunk_extents() {
        let bytes = read_at(&mut file, path, offset, size)?;
        chunks.push(super::chunk::Chunk {
            offset,
            size,
            digest: digest_of(&bytes),
        });
    }
    let len = file.metadata().map_err(io_error(path))?.len();
    let end = chunks.last().map_or(0, |c| c.offset + c.size);
    if end != len {
        return Err(DeliveryError::Model(format!(
            "{}: the container's segments end at byte {end}, the file at {len}",
            path.display()
        )));
    }
    Ok((chunks, GgufSummary::of_encrypted(&header.body.model)))
}

/// Uploads a sealed pack unless the registry holds it; what was uploaded, in chunks and bytes.
async fn upload(
    registry: &Registry,
    (entry, bytes, chunks): (PackEntry, Vec<u8>, usize),
) -> Result<(usize, u64), DeliveryError> {
    if registry.has_blob(&entry.digest).await? {
        return Ok((0, 0));
    }
    registry.put_blob(&entry.digest, bytes).await?;
    Ok((chunks, entry.size))
}

/// The packs of a release: the base packs it points into and the new ones it fills.
#[derive(Default)]
struct Packer {
    packs: Vec<PackEntry>,
    /// Where each chunk is read from: (index into `packs`, offset in the pack).
    placed: HashMap<String, (u32, u64)>,
    /// The pack being filled, and the chunks in it.
    open: Vec<u8>,
    open_chunks: Vec<String>,
}

impl Packer {
    fn pack_index(&mut self, pack: &PackEntry) -> u32 {
        match self.packs.iter().position(|p| p.digest == pack.digest) {
            Some(i) => i as u32,
            None => {
                self.packs.push(pack.clone());
                self.packs.len() as u32 - 1
            }
        }
    }

    fn add(&mut self, digest: &str, bytes: &[u8]) {
        // The pack index is known when the pack is sealed.
        self.placed
            .insert(digest.to_string(), (u32::MAX, self.open.len() as u64));
        self.open_chunks.push(digest.to_string());
        self.open.extend_from_slice(bytes);
    }

    /// Closes the open pack: its entry, its bytes and how many chunks it holds.
    fn seal(&mut self) -> (PackEntry, Vec<u8>, usize) {
        let bytes = std::mem::take(&mut self.open);
        let entry = PackEntry {
            digest: digest_of(&bytes),
            size: bytes.len() as u64,
        };
        let index = self.pack_index(&entry);
        let count = self.open_chunks.len();
        for digest in self.open_chunks.drain(..) {
            if let Some(place) = self.placed.get_mut(&digest) {
                place.0 = index;
            }
        }
        (entry, bytes, count)
    }
}

fn read_at(
    file: &mut std::fs::File,
    path: &Path,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>, DeliveryError> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset)).map_err(io_error(path))?;
    let mut bytes = vec![0u8; size as usize];
    file.read_exact(&mut bytes).map_err(io_error(path))?;
    Ok(bytes)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_tag_that_is_not_a_tag_is_refused_before_anything_is_read_or_sent() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let keys = [SigningKey::from_bytes(&[1; 32])];
        for bad in ["../v1", "v1/manifests", "v1?x=1", "", &"a".repeat(129)] {
            let bases = [bad.to_string()];
            let options = PushOptions {
                keys: &keys,
                valid_days: 1,
                bases: &bases,
                credentials: None,
            };
            // Port 9 on loopback: nothing listens there, and nothing must be asked.
            let reference = Reference::parse("127.0.0.1:9/fleet/model:v2", false).unwrap();
            let error = runtime
                .block_on(push(Path::new("/no/such/model.gguf"), reference, options))
                .unwrap_err()
                .to_string();
            assert!(error.contains("--base"), "{bad:?}: {error}");
        }
    }
}
