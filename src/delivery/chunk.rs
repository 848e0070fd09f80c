//! Where a GGUF is cut for delivery. The header (metadata and tensor table) is one chunk; each
//! tensor's data (with the alignment padding after it) is one chunk when it is small, and is cut
//! by content-defined chunking (FastCDC 2020) when it is large, so a fine-tune that changes some
//! tensors, or part of one, shares every other chunk with its base model.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::{DeliveryError, io_error};
use crate::plan::gguf::GgufHeader;

/// How large chunks are: FastCDC's minimum, average and maximum. The average grows with the
/// file so that a model has at most about `TARGET_CHUNKS` chunks (the OCI manifest lists them
/// all, and registries bound a manifest's size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

const TARGET_CHUNKS: u64 = 4096;
const SMALLEST_AVG: u32 = 64 << 10;
const LARGEST_AVG: u32 = 4 << 20;

impl ChunkSizes {
    pub fn for_file(len: u64) -> ChunkSizes {
        let wanted = (len / TARGET_CHUNKS).max(1).next_power_of_two();
        let avg = u32::try_from(wanted)
            .unwrap_or(LARGEST_AVG)
            .clamp(SMALLEST_AVG, LARGEST_AVG);
        ChunkSizes {
            min: avg / 4,
            avg,
            max: avg * 4,
        }
    }
}

/// One chunk of a file: its place and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub size: u64,
    pub digest: String,
}

/// The regions a GGUF is cut along before content-defined chunking: the header, then each
/// tensor's data up to the next tensor's start (or the end of the file). Pure over the header.
pub fn regions(header: &GgufHeader) -> Vec<(u64, u64)> {
    let mut starts: Vec<u64> = header
        .tensors
        .iter()
        .map(|t| header.data_offset + t.offset)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let mut out = Vec::with_capacity(starts.len() + 1);
    let mut at = 0;
    for start in starts.into_iter().chain(std::iter::once(header.file_len)) {
        if start > at {
            out.push((at, start - at));
            at = start;
        }
    }
    out
}

/// Cuts the GGUF into chunks along its `regions` and digests each one, streaming: memory stays
/// at one chunk.
pub fn chunk_file(
    path: &Path,
    header: &GgufHeader,
    sizes: ChunkSizes,
) -> Result<Vec<Chunk>, DeliveryError> {
    chunk_regions(path, &regions(header), sizes)
}

/// Cuts each `(start, len)` region of the file into content-defined chunks (a region no
/// larger than `sizes.max` is one chunk) and digests each one.
pub fn chunk_regions(
    path: &Path,
    regions: &[(u64, u64)],
    sizes: ChunkSizes,
) -> Result<Vec<Chunk>, DeliveryError> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut chunks = Vec::new();
    for &(start, len) in regions {
        file.seek(SeekFrom::Start(start)).map_err(io_error(path))?;
        let region = (&mut file).take(len);
        if len <= u64::from(sizes.max) {
            let mut data = Vec::with_capacity(len as usize);
            let mut region = region;
            region.read_to_end(&mut data).map_err(io_error(path))?;
            if data.len() as u64 != len {
                return Err(DeliveryError::Model(format!(
                    "{} ended while it was read",
                    path.display()
                )));
            }
            chunks.push(chunk_of(start, &data));
            continue;
        }
        let cdc = fastcdc::v2020::StreamCDC::new(region, sizes.min, sizes.avg, sizes.max);
        let mut seen = 0;
        for piece in cdc {
            let piece = piece.map_err(|e| DeliveryError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
            seen += piece.length as u64;
            chunks.push(chunk_of(start + piece.offset, &piece.data));
        }
        if seen != len {
            return Err(DeliveryError::Model(format!(
                "{} ended while it was read",
                path.display()
            )));
        }
    }
    Ok(chunks)
}

fn chunk_of(offset: u64, data: &[u8]) -> Chunk {
    Chunk {
        offset,
        size: data.len() as u64,
        digest: super::digest_of(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_grow_with_the_file_within_fastcdc_bounds() {
        let small = ChunkSizes::for_file(10 << 20);
        assert_eq!(small.avg, 64 << 10);
        let model = ChunkSizes::for_file(253 << 20);
        assert_eq!(model.avg, 64 << 10);
        let big = ChunkSizes::for_file(8 << 30);
        assert_eq!(big.avg, 2 << 20);
        let huge = ChunkSizes::for_file(1 << 40);
        assert_eq!(huge.avg, 4 << 20);
        for s in [small, model, big, huge] {
            assert!(s.min >= fastcdc::v2020::MINIMUM_MIN && s.max <= fastcdc::v2020::MAXIMUM_MAX);
        }
    }
}
