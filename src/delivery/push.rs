//! `edgellm model push FILE REF --key KEY`: chunk, upload what the registry lacks, sign, tag.

use std::path::Path;

use ed25519_dalek::SigningKey;
use serde::Serialize;

use super::chunk::{ChunkSizes, chunk_file};
use super::manifest::{self, Body, ChunkEntry, GgufSummary};
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
}

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
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DeliveryError::Model(format!("{} has no file name", file.display())))?
        .to_string();
    let header =
        crate::plan::gguf::read_header(file).map_err(|e| DeliveryError::Model(e.to_string()))?;
    let sizes = ChunkSizes::for_file(header.file_len);
    let path = file.to_path_buf();
    let (chunks, sha256, header) = tokio::task::spawn_blocking(move || {
        let chunks = chunk_file(&path, &header, sizes)?;
        let sha256 = crate::model::import::sha256_file(&path)
            .map_err(|e| DeliveryError::Model(format!("{e:#}")))?;
        Ok::<_, DeliveryError>((chunks, sha256, header))
    })
    .await
    .map_err(|e| DeliveryError::Model(e.to_string()))??;

    let registry = Registry::new(reference)?;
    let mut file_handle = std::fs::File::open(file).map_err(io_error(file))?;
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut uploaded_chunks, mut uploaded_bytes) = (0, 0);
    for chunk in &chunks {
        if !seen.insert(chunk.digest.clone()) {
            continue;
        }
        layers.push(Descriptor {
            media_type: manifest::CHUNK_MEDIA_TYPE.into(),
            digest: chunk.digest.clone(),
            size: chunk.size,
        });
        if registry.has_blob(&chunk.digest).await? {
            continue;
        }
        let bytes = read_at(&mut file_handle, file, chunk.offset, chunk.size)?;
        registry.put_blob(&chunk.digest, bytes).await?;
        uploaded_chunks += 1;
        uploaded_bytes += chunk.size;
    }

    let now = unix_now();
    let body = Body {
        schema: manifest::SCHEMA,
        name,
        size: header.file_len,
        sha256: sha256.clone(),
        gguf: GgufSummary {
            architecture: header.architecture().unwrap_or("unknown").to_string(),
            tensors: header.tensors.len(),
            parameters: header.n_params(),
            weight_bytes: header.weight_bytes(),
            context_length: header.arch_get("context_length").and_then(|v| v.as_u64()),
        },
        created: now,
        expires: now + options.valid_days * 86_400,
        chunks: chunks
            .iter()
            .map(|c| ChunkEntry {
                digest: c.digest.clone(),
                size: c.size,
            })
            .collect(),
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
        layers,
    };
    let manifest_digest = registry.put_manifest(&oci).await?;
    Ok(Pushed {
        reference: registry.reference().to_string(),
        manifest_digest,
        chunks: chunks.len(),
        uploaded_chunks,
        uploaded_bytes,
        size: body.size,
        sha256,
        key_ids: options
            .keys
            .iter()
            .map(|k| manifest::key_id(&k.verifying_key()))
            .collect(),
    })
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
