//! A small GGUF writer: synthetic model headers with zero (sparse) tensor data and the raw header
//! bytes to corrupt on purpose (for tests), and whole files with their tensor data
//! (`edgellm model import`).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{DEFAULT_ALIGNMENT, GgmlType, MetaValue, align_up};

/// Builds a GGUF file: metadata, then a tensor table whose data section is left as zeros.
///
/// ```no_run
/// # use edgellm::plan::gguf::{GgufWriter, GgmlType, MetaValue};
/// let mut w = GgufWriter::new();
/// w.kv("general.architecture", MetaValue::String("llama".into()))
///     .tensor("token_embd.weight", &[4096, 32000], GgmlType::Q4_K);
/// w.write(std::path::Path::new("/tmp/synthetic.gguf")).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<WriterTensor>,
}

#[derive(Debug, Clone)]
struct WriterTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: Option<u64>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// An empty GGUF version 3 file.
    pub fn new() -> GgufWriter {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Writes this version number into the header (for tests of unsupported versions).
    pub fn version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    pub fn kv(&mut self, key: &str, value: MetaValue) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    pub fn kv_u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.kv(key, MetaValue::U32(value))
    }

    pub fn kv_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.kv(key, MetaValue::String(value.to_string()))
    }

    /// Adds a tensor; its data goes right after the previous one, padded to the alignment.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType) -> &mut Self {
        self.tensor_raw(name, dims, ggml_type.id(), None)
    }

    /// Adds a tensor with any type id and, when `offset` is given, that data offset instead of
    /// the right one (for tests of corrupt tables).
    pub fn tensor_raw(
        &mut self,
        name: &str,
        dims: &[u64],
        type_id: u32,
        offset: Option<u64>,
    ) -> &mut Self {
        self.tensors.push(WriterTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            offset,
        });
        self
    }

    /// The alignment the file declares (`general.alignment`) or the default 32.
    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find_map(|(key, value)| match value {
                MetaValue::U32(a) if key == "general.alignment" && a.is_power_of_two() => {
                    Some(u64::from(*a))
                }
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Bytes of each tensor's data (0 for a type id or shape that has no valid size).
    fn tensor_bytes(tensor: &WriterTensor) -> u64 {
        let Some(ty) = GgmlType::from_id(tensor.type_id) else {
            return 0;
        };
        let row = tensor.dims.first().copied().unwrap_or(1);
        let rows: Option<u64> = tensor
            .dims
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        match (ty.row_bytes(row), rows) {
            (Some(row_bytes), Some(rows)) => row_bytes.saturating_mul(rows),
            _ => 0,
        }
    }

    /// The header: magic, counts, metadata, tensor table, and the padding up to the data section.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut out, value);
        }
        let alignment = self.alignment();
        let mut offset = 0u64;
        for tensor in &self.tensors {
            put_str(&mut out, &tensor.name);
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                out.extend_from_slice(&dim.to_le_bytes());
            }
            out.extend_from_slice(&tensor.type_id.to_le_bytes());
            out.extend_from_slice(&tensor.offset.unwrap_or(offset).to_le_bytes());
            offset = offset.saturating_add(
                align_up(Self::tensor_bytes(tensor), alignment).unwrap_or(u64::MAX),
            );
        }
        let padded = align_up(out.len() as u64, alignment).unwrap_or(out.len() as u64);
        out.resize(padded as usize, 0);
        out
    }

    /// Bytes of the data section: every tensor, each padded to the alignment but the last.
    pub fn data_bytes(&self) -> u64 {
        let alignment = self.alignment();
        let mut total = 0u64;
        for (i, tensor) in self.tensors.iter().enumerate() {
            let n = Self::tensor_bytes(tensor);
            let n = if i + 1 == self.tensors.len() {
                n
            } else {
                align_up(n, alignment).unwrap_or(u64::MAX)
            };
            total = total.saturating_add(n);
        }
        total
    }

    /// Writes the file: the header, then a zero (sparse) data section of the right length.
    /// Returns the file length.
    pub fn write(&self, path: &Path) -> std::io::Result<u64> {
        let header = self.header_bytes();
        let mut file = File::create(path)?;
        file.write_all(&header)?;
        let len = (header.len() as u64).saturating_add(self.data_bytes());
        file.set_len(len)?;
        Ok(len)
    }
}

impl GgufWriter {
    /// Writes the file with its tensor data: `data[i]` is the bytes of the i-th tensor added,
    /// exactly as long as its type and shape say. Returns the file length.
    pub fn write_with_data(&self, path: &Path, data: &[&[u8]]) -> std::io::Result<u64> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        if data.len() != self.tensors.len() {
            return Err(invalid(format!(
                "{} tensors declared, {} given",
                self.tensors.len(),
                data.len()
            )));
        }
        let alignment = self.alignment();
        let header = self.header_bytes();
        let mut file = std::io::BufWriter::new(File::create(path)?);
        file.write_all(&header)?;
        let mut len = header.len() as u64;
        for (i, (tensor, bytes)) in self.tensors.iter().zip(data).enumerate() {
            if bytes.len() as u64 != Self::tensor_bytes(tensor) {
                return Err(invalid(format!(
                    "tensor {} is {} bytes, its type and shape need {}",
                    tensor.name,
                    bytes.len(),
                    Self::tensor_bytes(tensor)
                )));
            }
            file.write_all(bytes)?;
            len += bytes.len() as u64;
            if i + 1 < self.tensors.len() {
                let padded = align_up(len, alignment).unwrap_or(len);
                file.write_all(&vec![0u8; (padded - len) as usize])?;
                len = padded;
            }
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(len)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::String(v) => put_str(out, v),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Array(array) => {
            out.extend_from_slice(&(array.elem_type as u32).to_le_bytes());
            let values = array.values.as_deref().unwrap_or(&[]);
            out.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for v in values {
                put_value(out, v);
            }
        }
    }
}
