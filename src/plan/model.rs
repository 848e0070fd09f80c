//! The shape of a model as the memory model needs it, read from a GGUF header (no IO here).
//!
//! Follows llama.cpp's `load_hparams`: `{arch}.block_count`, `embedding_length`,
//! `attention.head_count[_kv]` (a number or one per layer), `attention.key_length` /
//! `value_length` (default `n_embd / n_head`), and the sliding-window layout per architecture
//! (which layers use the window, and the window size `n_swa`).

use serde::Serialize;

use super::PlanError;
use super::ggml_type::GgmlType;
use super::gguf::{GgufHeader, MetaValue};

/// What the planner knows about a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub architecture: String,
    pub name: Option<String>,
    pub n_layer: u32,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_head: u64,
    /// KV heads of each layer (0 for a layer without attention).
    pub n_head_kv: Vec<u64>,
    pub head_dim_k: u64,
    pub head_dim_v: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
    /// Sliding-window size in tokens (`n_swa`), 0 when the model has no sliding-window layers.
    pub swa_window: u64,
    /// Whether each layer attends through the sliding window.
    #[serde(skip)]
    pub swa_layers: Vec<bool>,
    pub n_swa_layers: u32,
    /// Exact bytes of all tensor data.
    pub weight_bytes: u64,
    pub n_params: u64,
    /// Bytes of `token_embd.weight` (read one row per token, except when it is also the output).
    pub token_embd_bytes: u64,
    /// True when there is no `output.weight`: the output projection reuses `token_embd`.
    pub tied_output: bool,
    /// The ggml type holding most of the weight bytes (the quantization, in effect).
    pub main_type: GgmlType,
    /// Bits per weight over the whole file.
    pub bits_per_weight: f64,
    /// The 2-D matrices used in matrix products, for the CPU repack rules: (type, rows, bytes).
    #[serde(skip)]
    pub matrices: Vec<(GgmlType, u64, u64)>,
}

impl ModelSpec {
    /// Reads the spec from a header; fails with `PlanError::Model` when a required key is missing.
    pub fn from_header(header: &GgufHeader) -> Result<ModelSpec, PlanError> {
        let arch = header
            .architecture()
            .ok_or_else(|| PlanError::Model("no 'general.architecture' key".into()))?
            .to_string();
        let need = |suffix: &str| {
            header
                .arch_get(suffix)
                .and_then(MetaValue::as_u64)
                .ok_or_else(|| PlanError::Model(format!("no '{arch}.{suffix}' key")))
        };
        let n_layer = need("block_count")?;
        let n_layer = u32::try_from(n_layer)
            .ok()
            .filter(|&n| (1..=4096).contains(&n))
            .ok_or_else(|| PlanError::Model(format!("'{arch}.block_count' is {n_layer}")))?;
        let n_embd = need("embedding_length")?;
        let n_head_per_layer = per_layer(header, &arch, "attention.head_count", n_layer)?
            .ok_or_else(|| PlanError::Model(format!("no '{arch}.attention.head_count' key")))?;
        let n_head = n_head_per_layer.iter().copied().max().unwrap_or(0);
        if n_head == 0 || n_embd == 0 {
            return Err(PlanError::Model(
                "zero heads or zero embedding length".into(),
            ));
        }
        let n_head_kv = per_layer(header, &arch, "attention.head_count_kv", n_layer)?
            .unwrap_or(n_head_per_layer);
        let head_dim_k = header
            .arch_get("attention.key_length")
            .and_then(MetaValue::as_u64);
        let head_dim_k = head_dim_k.unwrap_or(n_embd / n_head);
        let head_dim_v = header
            .arch_get("attention.value_length")
            .and_then(MetaValue::as_u64);
        let head_dim_v = head_dim_v.unwrap_or(n_embd / n_head);
        let n_ff = header
            .arch_get("feed_forward_length")
            .and_then(|v| v.as_u64().or_else(|| max_of_array(v)))
            .unwrap_or(4 * n_embd);
        let n_vocab = vocab_size(header, n_embd);
        let n_ctx_train = header
            .arch_get("context_length")
            .and_then(MetaValue::as_u64)
            .unwrap_or(2048);
        let (swa_window, swa_layers) = sliding_window(header, &arch, n_layer);
        let token_embd_bytes = header.tensor("token_embd.weight").map_or(0, |t| t.n_bytes);
        let matrices = header
            .tensors
            .iter()
            .filter(|t| t.dims.len() == 2 && t.name != "token_embd.weight")
            .map(|t| (t.ggml_type, t.dims[1], t.n_bytes))
            .collect();
        let weight_bytes = header.weight_bytes();
        let n_params = header.n_params();
        Ok(ModelSpec {
            name: header.get_str("general.name").map(str::to_string),
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_vocab,
            n_ctx_train,
            swa_window,
            n_swa_layers: swa_layers.iter().filter(|&&s| s).count() as u32,
            swa_layers,
            weight_bytes,
            n_params,
            token_embd_bytes,
            tied_output: header.tensor("output.weight").is_none(),
            main_type: main_type(header),
            bits_per_weight: if n_params == 0 {
                0.0
            } else {
                weight_bytes as f64 * 8.0 / n_params as f64
            },
            matrices,
            architecture: arch,
        })
    }
}

/// A per-layer hyperparameter stored either as one number or as an array with one per layer.
fn per_layer(
    header: &GgufHeader,
    arch: &str,
    suffix: &str,
    n_layer: u32,
) -> Result<Option<Vec<u64>>, PlanError> {
    let Some(value) = header.arch_get(suffix) else {
        return Ok(None);
    };
    if let Some(n) = value.as_u64() {
        return Ok(Some(vec![n; n_layer as usize]));
    }
    let bad = || {
        PlanError::Model(format!(
            "'{arch}.{suffix}' is neither a number nor one per layer"
        ))
    };
    let values = value
        .as_array()
        .and_then(|a| a.values.as_ref())
        .ok_or_else(bad)?;
    if values.len() != n_layer as usize {
        return Err(bad());
    }
    values
        .iter()
        .map(|v| v.as_u64().ok_or_else(bad))
        .collect::<Result<_, _>>()
        .map(Some)
}

fn max_of_array(value: &MetaValue) -> Option<u64> {
    value
        .as_array()?
        .values
        .as_ref()?
        .iter()
        .filter_map(MetaValue::as_u64)
        .max()
}

/// `{arch}.vocab_size`, else the length of `tokenizer.ggml.tokens`, else the embedding rows.
fn vocab_size(header: &GgufHeader, n_embd: u64) -> u64 {
    if let Some(n) = header.arch_get("vocab_size").and_then(MetaValue::as_u64) {
        return n;
    }
    if let Some(array) = header
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
    {
        return array.len;
    }
    header
        .tensor("token_embd.weight")
        .filter(|t| t.dims.first() == Some(&n_embd))
        .and_then(|t| t.dims.get(1).copied())
        .unwrap_or(0)
}

/// The sliding-window layout, as llama.cpp's per-architecture `load_hparams` sets it:
/// (window size, whether each layer uses it). Architectures llama.cpp gives no sliding window
/// get none here either, whatever their metadata says.
fn sliding_window(header: &GgufHeader, arch: &str, n_layer: u32) -> (u64, Vec<bool>) {
    let none = (0, vec![false; n_layer as usize]);
    let window = header
        .arch_get("attention.sliding_window")
        .and_then(MetaValue::as_u64);
    // (default window, default pattern, dense layer first, window required)
    let (default_window, default_pattern, dense_first) = match arch {
        "gemma2" => (Some(4096), 2, false),
        "gemma3" => (None, 6, false),
        "cohere2" => (None, 4, false),
        "gpt-oss" | "openai-moe" => (None, 2, false),
        "exaone4" => (Some(4096), 4, false),
        "llama4" => (None, 4, false),
        _ => return none,
    };
    let Some(window) = window.or(default_window).filter(|&w| w > 0) else {
        return none;
    };
    let n = n_layer as usize;
    let key = format!("{arch}.attention.sliding_window_pattern");
    let layers = match header.get(&key) {
        Some(MetaValue::Array(array)) => match array.values.as_ref() {
            Some(values) if values.len() == n => values
                .iter()
                .map(|v| v.as_bool().unwrap_or(false))
                .collect(),
            _ => return none,
        },
        Some(value) => swa_pattern(value.as_u64().unwrap_or(default_pattern), dense_first, n),
        None => swa_pattern(default_pattern, dense_first, n),
    };
    (window, layers)
}

/// llama.cpp's `set_swa_pattern`: with pattern p, layer i uses the window unless it is the last
/// of each group of p (or the first, when `dense_first`); p = 0 means every layer does.
fn swa_pattern(pattern: u64, dense_first: bool, n_layer: usize) -> Vec<bool> {
    (0..n_layer as u64)
        .map(|il| match (pattern, dense_first) {
            (0, _) => true,
            (p, true) => il % p != 0,
            (p, false) => il % p < p - 1,
        })
        .collect()
}

/// The type holding the most bytes among the layer weights (`blk.*`), the file's quantization
/// in effect.
fn main_type(header: &GgufHeader) -> GgmlType {
    let mut bytes: std::collections::BTreeMap<GgmlType, u64> = Default::default();
    for tensor in header
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.") && t.dims.len() >= 2)
    {
        *bytes.entry(tensor.ggml_type).or_default() += tensor.n_bytes;
    }
    bytes
        .into_iter()
        .max_by_key(|&(_, b)| b)
        .map_or(GgmlType::F32, |(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swa_patterns_match_llama_cpp() {
        let gemma3: Vec<bool> = swa_pattern(6, false, 12);
        let full: Vec<usize> = (0..12).filter(|&i| !gemma3[i]).collect();
        assert_eq!(full, vec![5, 11]);
        let dense_first = swa_pattern(4, true, 8);
        assert_eq!(
            dense_first,
            vec![false, true, true, true, false, true, true, true]
        );
        assert!(swa_pattern(0, false, 3).iter().all(|&s| s));
    }
}
