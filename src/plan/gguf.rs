//! The GGUF header reader: metadata and tensor table, never the tensor data.
//!
//! `read_header` is the gate every model file passes before llama.cpp sees it, so it must refuse
//! any malformed, truncated or hostile file with a one-line error, in bounded memory, and never
//! panic. The rules are those of llama.cpp's own `gguf.cpp` (so a file we accept, it accepts),
//! plus hard limits on counts and lengths, and a check that every tensor lies inside the file.
//!
//! Memory stays bounded because every length is checked against the bytes left in the file
//! before anything is allocated, long arrays (the 262k-token vocabulary) are skipped rather than
//! kept, and the metadata kept in memory is capped at [`MAX_RETAINED_BYTES`].

mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub use super::ggml_type::GgmlType;
pub use writer::GgufWriter;

/// At most this many metadata key/value pairs (real models have about 40).
pub const MAX_METADATA_COUNT: u64 = 1 << 16;
/// At most this many tensors (a 70B dense model has 723; large MoE files a few thousand).
pub const MAX_TENSOR_COUNT: u64 = 1 << 18;
/// Longest metadata key, in bytes (the GGUF spec's limit).
pub const MAX_KEY_BYTES: u64 = 65_535;
/// Longest string value (chat templates run to tens of KiB).
pub const MAX_STRING_BYTES: u64 = 16 << 20;
/// Longest array (vocabularies and merge lists run to a few hundred thousand).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Longest tensor name: ggml's `GGML_MAX_NAME` (64) less the terminating NUL.
pub const MAX_TENSOR_NAME_BYTES: u64 = 63;
/// At most this many dimensions per tensor (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Arrays up to this length are kept in memory; longer ones are only counted.
pub const MAX_RETAINED_ARRAY_LEN: u64 = 4096;
/// Cap on the metadata bytes kept in memory over the whole header.
pub const MAX_RETAINED_BYTES: u64 = 64 << 20;

const GGUF_MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// Why a file is not a GGUF model this reader accepts. Display is one line.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a GGUF file (bad magic)")]
    BadMagic,
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("truncated GGUF: {what} ends at byte {end} but the file has {len} bytes")]
    Truncated { what: String, end: u64, len: u64 },
    #[error("GGUF over a limit: {what} is {value}, the limit is {limit}")]
    OverLimit {
        what: String,
        value: u64,
        limit: u64,
    },
    #[error("malformed GGUF: {0}")]
    Malformed(String),
}

/// The type tag of a metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Bytes of one value of a fixed-size type; `None` for strings and arrays.
    fn fixed_size(self) -> Option<u64> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(MetaArray),
}

/// An array value. Arrays longer than [`MAX_RETAINED_ARRAY_LEN`] keep only their type and length.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaArray {
    pub elem_type: ValueType,
    pub len: u64,
    /// The elements, or `None` when the array was too long to keep.
    pub values: Option<Vec<MetaValue>>,
}

impl MetaValue {
    /// An array value holding `values`, all of type `elem_type`.
    pub fn array(elem_type: ValueType, values: Vec<MetaValue>) -> MetaValue {
        MetaValue::Array(MetaArray {
            elem_type,
            len: values.len() as u64,
            values: Some(values),
        })
    }

    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::String(_) => ValueType::String,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F64(_) => ValueType::F64,
            MetaValue::Array(_) => ValueType::Array,
        }
    }

    /// The value as an unsigned integer, for any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// The shape, innermost dimension first (ggml's `ne`).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of tensor data.
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        // Checked when the header was read: the product fits in an i64.
        self.dims.iter().product()
    }
}

/// A GGUF file's header: its metadata and tensor table.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the tensor data section starts in the file.
    pub data_offset: u64,
    pub file_len: u64,
}

impl GgufHeader {
    /// `general.architecture` (`llama`, `gemma3`, ...).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetaValue::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(MetaValue::as_f64)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    /// The architecture-scoped key `{arch}.{suffix}`, e.g. `arch_get("block_count")`.
    pub fn arch_get(&self, suffix: &str) -> Option<&MetaValue> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Exact bytes of all tensor data (what llama.cpp maps or loads as the model buffer).
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }

    /// Total number of weights.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::n_elements).sum()
    }
}

/// Reads the header of the GGUF file at `path`: metadata and tensor table, not the tensor data.
pub fn read_header(path: &Path) -> Result<GgufHeader, GgufError> {
    let io_err = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut reader = Reader {
        inner: BufReader::with_capacity(64 * 1024, file),
        pos: 0,
        len,
        retained: 0,
    };
    reader.header().map_err(|e| match e {
        ReadError::Gguf(e) => e,
        ReadError::Io(source) => io_err(source),
    })
}

enum ReadError {
    Gguf(GgufError),
    Io(std::io::Error),
}

impl From<GgufError> for ReadError {
    fn from(e: GgufError) -> Self {
        ReadError::Gguf(e)
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

type ReadResult<T> = Result<T, ReadError>;

fn malformed(msg: String) -> ReadError {
    ReadError::Gguf(GgufError::Malformed(msg))
}

fn over_limit(what: String, value: u64, limit: u64) -> ReadResult<()> {
    if value > limit {
        return Err(GgufError::OverLimit { what, value, limit }.into());
    }
    Ok(())
}

fn align_up(n: u64, alignment: u64) -> Option<u64> {
    n.checked_add(alignment - 1)
        .map(|v| v / alignment * alignment)
}

struct Reader {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    retained: u64,
}

impl Reader {
    fn header(&mut self) -> ReadResult<GgufHeader> {
        let magic: [u8; 4] = self.array(|| "the magic number".into())?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic.into());
        }
        let version = self.u32(|| "the version".into())?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(GgufError::BigEndian.into());
        }
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version).into());
        }
        let n_tensors = self.u64(|| "the tensor count".into())?;
        let n_kv = self.u64(|| "the metadata count".into())?;
        over_limit("the tensor count".into(), n_tensors, MAX_TENSOR_COUNT)?;
        over_limit("the metadata count".into(), n_kv, MAX_METADATA_COUNT)?;
        // Each key/value takes at least 12 bytes and each tensor entry at least 24: refuse
        // counts the file cannot hold before looping over them.
        let min_bytes = n_kv * 12 + n_tensors * 24;
        self.need(min_bytes, || {
            format!("{n_kv} metadata entries and {n_tensors} tensor entries")
        })?;

        let mut metadata = BTreeMap::new();
        for index in 0..n_kv {
            let key = self.string(MAX_KEY_BYTES, || format!("metadata key #{index}"))?;
            let type_id = self.u32(|| format!("the type of '{key}'"))?;
            let value_type = ValueType::from_id(type_id).ok_or_else(|| {
                malformed(format!("key '{key}' has unknown value type {type_id}"))
            })?;
            let value = self.value(value_type, &key)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(malformed(format!("duplicate metadata key '{key}'")));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(MetaValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(MetaValue::U32(a)) => {
                return Err(malformed(format!("alignment {a} is not a power of 2")));
            }
            Some(_) => return Err(malformed("'general.alignment' must be a u32".into())),
        };

        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors.min(4096) as usize);
        let mut names = std::collections::HashSet::new();
        for index in 0..n_tensors {
            let tensor = self.tensor_info(index)?;
            if !names.insert(tensor.name.clone()) {
                return Err(malformed(format!(
                    "duplicate tensor name '{}'",
                    tensor.name
                )));
            }
            tensors.push(tensor);
        }

        let data_offset = align_up(self.pos, alignment)
            .ok_or_else(|| malformed("data section offset overflows".into()))?;
        self.check_tensor_data(&tensors, data_offset, alignment)?;

        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            file_len: self.len,
        })
    }

    fn tensor_info(&mut self, index: u64) -> ReadResult<TensorInfo> {
        let name = self.string(MAX_TENSOR_NAME_BYTES, || {
            format!("the name of tensor #{index}")
        })?;
        let n_dims = self.u32(|| format!("tensor '{name}'s dimension count"))?;
        if n_dims > MAX_DIMS {
            return Err(malformed(format!(
                "tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for _ in 0..n_dims {
            let dim = self.u64(|| format!("tensor '{name}'s shape"))?;
            n_elements = n_elements
                .checked_mul(dim)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| malformed(format!("tensor '{name}' has a shape that overflows")))?;
            dims.push(dim);
        }
        let type_id = self.u32(|| format!("tensor '{name}'s type"))?;
        let ggml_type = GgmlType::from_id(type_id)
            .ok_or_else(|| malformed(format!("tensor '{name}' has unknown ggml type {type_id}")))?;
        let row = dims.first().copied().unwrap_or(1);
        let row_bytes = ggml_type.row_bytes(row).ok_or_else(|| {
            malformed(format!(
                "tensor '{name}' of type {ggml_type} has rows of {row} elements, not a multiple of {}",
                ggml_type.block_size()
            ))
        })?;
        let rows = n_elements.checked_div(row).unwrap_or(0);
        let n_bytes = row_bytes
            .checked_mul(rows)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| malformed(format!("tensor '{name}' has a byte size that overflows")))?;
        let offset = self.u64(|| format!("tensor '{name}'s data offset"))?;
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        })
    }

    /// Tensors lie back to back in the data section, each padded to the alignment (as
    /// llama.cpp requires), and the last one must end inside the file.
    fn check_tensor_data(
        &self,
        tensors: &[TensorInfo],
        data_offset: u64,
        alignment: u64,
    ) -> ReadResult<()> {
        let mut expected: u64 = 0;
        for tensor in tensors {
            if tensor.offset != expected {
                return Err(malformed(format!(
                    "tensor '{}' has data offset {}, expected {expected}",
                    tensor.name, tensor.offset
                )));
            }
            let overflow = || malformed(format!("tensor '{}' ends past 2^64 bytes", tensor.name));
            let end = data_offset
                .checked_add(tensor.offset)
                .and_then(|v| v.checked_add(tensor.n_bytes))
                .ok_or_else(overflow)?;
            if end > self.len {
                return Err(GgufError::Truncated {
                    what: format!("tensor '{}'", tensor.name),
                    end,
                    len: self.len,
                }
                .into());
            }
            expected = expected
                .checked_add(align_up(tensor.n_bytes, alignment).ok_or_else(overflow)?)
                .ok_or_else(overflow)?;
        }
        Ok(())
    }

    fn value(&mut self, value_type: ValueType, key: &str) -> ReadResult<MetaValue> {
        if value_type == ValueType::Array {
            return self.meta_array(key);
        }
        self.scalar(value_type, key)
    }

    fn meta_array(&mut self, key: &str) -> ReadResult<MetaValue> {
        let type_id = self.u32(|| format!("the element type of '{key}'"))?;
        let elem_type = ValueType::from_id(type_id).ok_or_else(|| {
            malformed(format!("array '{key}' has unknown element type {type_id}"))
        })?;
        if elem_type == ValueType::Array {
            return Err(malformed(format!(
                "array '{key}' holds arrays (nested arrays are not supported)"
            )));
        }
        let len = self.u64(|| format!("the length of '{key}'"))?;
        over_limit(format!("the length of array '{key}'"), len, MAX_ARRAY_LEN)?;
        let min_elem = elem_type.fixed_size().unwrap_or(8);
        self.need(len * min_elem, || format!("array '{key}' ({len} elements)"))?;

        if len > MAX_RETAINED_ARRAY_LEN {
            match elem_type.fixed_size() {
                Some(size) => self.skip(len * size)?,
                None => {
                    for _ in 0..len {
                        let n = self.u64(|| format!("a string in '{key}'"))?;
                        over_limit(format!("a string in '{key}'"), n, MAX_STRING_BYTES)?;
                        self.need(n, || format!("a string in '{key}'"))?;
                        self.skip(n)?;
                    }
                }
            }
            return Ok(MetaValue::Array(MetaArray {
                elem_type,
                len,
                values: None,
            }));
        }
        let mut values = Vec::with_capacity(len as usize);
        for _ in 0..len {
            values.push(self.scalar(elem_type, key)?);
        }
        self.retain(len * 16, key)?;
        Ok(MetaValue::array(elem_type, values))
    }

    fn scalar(&mut self, value_type: ValueType, key: &str) -> ReadResult<MetaValue> {
        let what = || format!("the value of '{key}'");
        Ok(match value_type {
            ValueType::U8 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            ValueType::I8 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => MetaValue::U32(self.u32(what)?),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let [b] = self.array(what)?;
                if b > 1 {
                    return Err(malformed(format!("'{key}' holds bool value {b}")));
                }
                MetaValue::Bool(b == 1)
            }
            ValueType::String => {
                let s = self.string(MAX_STRING_BYTES, what)?;
                self.retain(s.len() as u64, key)?;
                MetaValue::String(s)
            }
            ValueType::U64 => MetaValue::U64(self.u64(what)?),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Array => return Err(malformed(format!("'{key}' nests an array"))),
        })
    }

    fn retain(&mut self, bytes: u64, key: &str) -> ReadResult<()> {
        self.retained = self.retained.saturating_add(bytes);
        over_limit(
            format!("the metadata kept in memory (at '{key}')"),
            self.retained,
            MAX_RETAINED_BYTES,
        )
    }

    /// Fails with `Truncated` unless `n` more bytes lie in the file.
    fn need(&self, n: u64, what: impl FnOnce() -> String) -> ReadResult<()> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            end => Err(GgufError::Truncated {
                what: what(),
                end: end.unwrap_or(u64::MAX),
                len: self.len,
            }
            .into()),
        }
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> ReadResult<[u8; N]> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf)?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> ReadResult<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> ReadResult<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, limit: u64, what: impl Fn() -> String) -> ReadResult<String> {
        let n = self.u64(&what)?;
        over_limit(format!("the length of {}", what()), n, limit)?;
        self.need(n, &what)?;
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf)?;
        self.pos += n;
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn skip(&mut self, n: u64) -> ReadResult<()> {
        self.need(n, || "skipped data".into())?;
        let offset = i64::try_from(n).map_err(|_| malformed("skip past 2^63 bytes".into()))?;
        self.inner.seek_relative(offset)?;
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
