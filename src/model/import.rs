//! `edgellm model import DIR -o FILE`: a sentence-transformers BERT model (Hugging Face
//! `config.json`, `model.safetensors`, `tokenizer.json`, `1_Pooling/config.json`) becomes a GGUF
//! that llama.cpp's `bert` architecture loads, written with the project's GGUF writer.
//!
//! It does what llama.cpp's `convert_hf_to_gguf.py` does for `BertModel` (tensor names,
//! phantom-space WordPiece vocabulary, pooling type), without Python or PyTorch: 2-D weight
//! matrices become F16 (rounded to nearest even, as NumPy's `astype(float16)`), norms, biases
//! and the token-type table stay F32. The output is a pure function of the input files, so its
//! sha256 can be pinned (`scripts/install-model.sh`).
//!
//! Every input is treated as untrusted: sizes, shapes, dtypes and the vocabulary are checked
//! before anything is written, and the output appears only once complete (written to a
//! temporary name, synced, renamed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::plan::gguf::{GgmlType, GgufWriter, MetaValue, ValueType};

/// Largest `model.safetensors` read (a BERT-large in F32 is 1.3 GB).
const MAX_WEIGHTS_BYTES: u64 = 2 << 30;
/// Largest `tokenizer.json` / `config.json` read.
const MAX_JSON_BYTES: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
struct BertConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: String,
    hidden_size: u32,
    intermediate_size: u32,
    num_attention_heads: u32,
    num_hidden_layers: u32,
    max_position_embeddings: u32,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: u32,
    vocab_size: u32,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_type_vocab() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Debug, Deserialize)]
struct TokenizerJson {
    model: TokenizerModel,
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    #[serde(default)]
    normalizer: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct TokenizerModel {
    #[serde(rename = "type")]
    kind: String,
    vocab: HashMap<String, u32>,
}

#[derive(Debug, Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub tensors: usize,
    pub vocab: usize,
    pub embedding_length: u32,
    pub pooling: &'static str,
}

/// llama.cpp's pooling type ids (`enum llama_pooling_type`).
fn pooling_type(dir: &Path) -> anyhow::Result<(u32, &'static str)> {
    let path = dir.join("1_Pooling/config.json");
    if !path.exists() {
        // A plain BERT without a sentence-transformers head: CLS, as llama.cpp's converter does.
        return Ok((2, "cls"));
    }
    let pooling: PoolingConfig = read_json(&path)?;
    match (
        pooling.pooling_mode_mean_tokens,
        pooling.pooling_mode_cls_token,
        pooling.pooling_mode_max_tokens,
        pooling.pooling_mode_mean_sqrt_len_tokens,
    ) {
        (true, false, false, false) => Ok((1, "mean")),
        (false, true, false, false) => Ok((2, "cls")),
        _ => bail!(
            "{}: only mean or CLS pooling is supported (llama.cpp has no max or sqrt-length pooling)",
            path.display()
        ),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = read_bounded(path, MAX_JSON_BYTES)?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not the expected JSON", path.display()))
}

fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > max {
        bail!(
            "{} is {} bytes, more than the {} allowed",
            path.display(),
            meta.len(),
            max
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The WordPiece vocabulary in llama.cpp's phantom-space form: a word-initial piece gets a
/// leading U+2581, a continuation loses its `##`, bracketed specials stay as they are.
fn phantom(token: &str) -> String {
    if token.starts_with('[') && token.ends_with(']') {
        token.to_string()
    } else if let Some(rest) = token.strip_prefix("##") {
        rest.to_string()
    } else {
        format!("\u{2581}{token}")
    }
}

/// Maps a Hugging Face BERT tensor name to llama.cpp's; `None` for tensors llama.cpp does not
/// use (position ids, the pooler, which mean pooling never applies).
fn gguf_name(name: &str, layers: u32) -> anyhow::Result<Option<String>> {
    let name = name.strip_prefix("bert.").unwrap_or(name);
    let fixed = match name {
        "embeddings.word_embeddings.weight" => Some("token_embd.weight"),
        "embeddings.token_type_embeddings.weight" => Some("token_types.weight"),
        "embeddings.position_embeddings.weight" => Some("position_embd.weight"),
        "embeddings.LayerNorm.weight" => Some("token_embd_norm.weight"),
        "embeddings.LayerNorm.bias" => Some("token_embd_norm.bias"),
        "embeddings.position_ids" => return Ok(None),
        _ if name.starts_with("pooler.") => return Ok(None),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return Ok(Some(fixed.to_string()));
    }
    let Some(rest) = name.strip_prefix("encoder.layer.") else {
        bail!("unexpected tensor {name:?} (not a BERT encoder)");
    };
    let Some((index, part)) = rest.split_once('.') else {
        bail!("unexpected tensor {name:?}");
    };
    let index: u32 = index
        .parse()
        .with_context(|| format!("tensor {name:?}: bad layer index"))?;
    if index >= layers {
        bail!("tensor {name:?}: layer {index} but the config says {layers} layers");
    }
    let (module, kind) = part
        .rsplit_once('.')
        .with_context(|| format!("unexpected tensor {name:?}"))?;
    if kind != "weight" && kind != "bias" {
        bail!("unexpected tensor {name:?}");
    }
    let target = match module {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => bail!("unexpected tensor {name:?}"),
    };
    Ok(Some(format!("blk.{index}.{target}.{kind}")))
}

/// Converts the model in `dir` and writes `output` (atomically). Refuses anything it does not
/// understand rather than writing a file llama.cpp would misread.
pub fn import_bert(dir: &Path, output: &Path) -> anyhow::Result<Imported> {
    let config: BertConfig = read_json(&dir.join("config.json"))?;
    if config.model_type != "bert" {
        bail!(
            "config.json: model_type {:?}; only BERT sentence-transformers models are supported",
            config.model_type
        );
    }
    if !config.architectures.is_empty()
        && !config.architectures.iter().any(|a| a.starts_with("Bert"))
    {
        bail!(
            "config.json: architectures {:?} are not BERT",
            config.architectures
        );
    }
    if config.hidden_act.as_deref().is_some_and(|a| a != "gelu") {
        bail!(
            "config.json: hidden_act {:?}; llama.cpp's BERT uses GELU",
            config.hidden_act
        );
    }
    if config
        .position_embedding_type
        .as_deref()
        .is_some_and(|p| p != "absolute")
    {
        bail!(
            "config.json: position_embedding_type {:?} is not supported",
            config.position_embedding_type
        );
    }
    let sane = |v: u32, lo: u32, hi: u32| v >= lo && v <= hi;
    if !sane(config.hidden_size, 8, 8192)
        || !sane(config.num_attention_heads, 1, 256)
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        || !sane(config.num_hidden_layers, 1, 128)
        || !sane(config.intermediate_size, 8, 65536)
        || !sane(config.max_position_embeddings, 8, 65536)
        || !sane(config.vocab_size, 8, 1 << 20)
        || !sane(config.type_vocab_size, 1, 16)
        || !(config.layer_norm_eps > 0.0 && config.layer_norm_eps < 1e-2)
    {
        bail!("config.json: hyperparameters out of range: {config:?}");
    }
    let (pooling_id, pooling) = pooling_type(dir)?;

    let tokenizer: TokenizerJson = read_json(&dir.join("tokenizer.json"))?;
    if tokenizer.model.kind != "WordPiece" {
        bail!(
            "tokenizer.json: model type {:?}, expected WordPiece",
            tokenizer.model.kind
        );
    }
    let n_vocab = tokenizer.model.vocab.len();
    if n_vocab != config.vocab_size as usize {
        bail!(
            "tokenizer.json has {n_vocab} tokens, config.json says {}",
            config.vocab_size
        );
    }
    let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
    for (token, &id) in &tokenizer.model.vocab {
        let slot = tokens
            .get_mut(id as usize)
            .with_context(|| format!("tokenizer.json: token id {id} out of range"))?;
        if slot.is_some() {
            bail!("tokenizer.json: token id {id} appears twice");
        }
        *slot = Some(phantom(token));
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.with_context(|| format!("tokenizer.json: no token with id {id}")))
        .collect::<anyhow::Result<_>>()?;
    let special: HashMap<u32, &str> = tokenizer
        .added_tokens
        .iter()
        .filter(|t| t.special)
        .map(|t| (t.id, t.content.as_str()))
        .collect();
    let special_id = |content: &str| -> anyhow::Result<u32> {
        tokenizer
            .model
            .vocab
            .get(content)
            .copied()
            .with_context(|| format!("tokenizer.json: no {content} token"))
    };
    // llama.cpp's token types: 1 normal, 3 control.
    let token_types: Vec<MetaValue> = (0..n_vocab as u32)
        .map(|id| MetaValue::I32(if special.contains_key(&id) { 3 } else { 1 }))
        .collect();
    let lowercase = tokenizer
        .normalizer
        .as_ref()
        .and_then(|n| n.get("lowercase"))
        .and_then(|v| v.as_bool())
        .unwrap_or(true);

    let weights_path = dir.join("model.safetensors");
    let weights = read_bounded(&weights_path, MAX_WEIGHTS_BYTES)?;
    let st = safetensors::SafeTensors::deserialize(&weights)
        .map_err(|e| anyhow::anyhow!("{}: {e}", weights_path.display()))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();

    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bert".into());
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "bert")
        .kv_str("general.name", &name)
        .kv_u32("general.file_type", 1)
        .kv_u32("bert.context_length", config.max_position_embeddings)
        .kv_u32("bert.embedding_length", config.hidden_size)
        .kv_u32("bert.feed_forward_length", config.intermediate_size)
        .kv_u32("bert.block_count", config.num_hidden_layers)
        .kv_u32("bert.attention.head_count", config.num_attention_heads)
        .kv(
            "bert.attention.layer_norm_epsilon",
            MetaValue::F32(config.layer_norm_eps as f32),
        )
        .kv("bert.attention.causal", MetaValue::Bool(false))
        .kv_u32("bert.pooling_type", pooling_id)
        .kv_str("tokenizer.ggml.model", "bert")
        .kv(
            "tokenizer.ggml.tokens",
            MetaValue::array(
                ValueType::String,
                tokens
                    .iter()
                    .map(|t| MetaValue::String(t.clone()))
                    .collect(),
            ),
        )
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::array(ValueType::I32, token_types),
        )
        .kv_u32("tokenizer.ggml.token_type_count", config.type_vocab_size)
        .kv(
            "tokenizer.ggml.normalizer.lowercase",
            MetaValue::Bool(lowercase),
        )
        .kv_u32("tokenizer.ggml.bos_token_id", special_id("[CLS]")?)
        .kv_u32("tokenizer.ggml.cls_token_id", special_id("[CLS]")?)
        .kv_u32("tokenizer.ggml.seperator_token_id", special_id("[SEP]")?)
        .kv_u32("tokenizer.ggml.unknown_token_id", special_id("[UNK]")?)
        .kv_u32("tokenizer.ggml.padding_token_id", special_id("[PAD]")?)
        .kv_u32("tokenizer.ggml.mask_token_id", special_id("[MASK]")?);

    let mut data: Vec<Vec<u8>> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for hf_name in &names {
        let Some(target) = gguf_name(hf_name, config.num_hidden_layers)? else {
            continue;
        };
        let view = st
            .tensor(hf_name)
            .map_err(|e| anyhow::anyhow!("tensor {hf_name}: {e}"))?;
        if view.dtype() != safetensors::Dtype::F32 {
            bail!("tensor {hf_name}: dtype {:?}, expected F32", view.dtype());
        }
        let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        let expect: Vec<u64> = expected_shape(&target, &config);
        if shape != expect {
            bail!("tensor {hf_name}: shape {shape:?}, the config implies {expect:?}");
        }
        let floats = view.data();
        // GGUF lists dimensions fastest-first; the row-major data is the same bytes.
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        let as_f16 = shape.len() == 2 && target != "token_types.weight";
        if as_f16 {
            let mut out = Vec::with_capacity(floats.len() / 2);
            for chunk in floats.chunks_exact(4) {
                let v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
            w.tensor(&target, &dims, GgmlType::F16);
            data.push(out);
        } else {
            w.tensor(&target, &dims, GgmlType::F32);
            data.push(floats.to_vec());
        }
        seen.push(target);
    }
    // Every tensor llama.cpp requires must be there.
    let mut required: Vec<String> = [
        "token_embd.weight",
        "position_embd.weight",
        "token_embd_norm.weight",
        "token_embd_norm.bias",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..config.num_hidden_layers {
        for t in [
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_output.weight",
            "attn_output_norm.weight",
            "attn_output_norm.bias",
            "ffn_up.weight",
            "ffn_down.weight",
            "layer_output_norm.weight",
            "layer_output_norm.bias",
        ] {
            required.push(format!("blk.{i}.{t}"));
        }
    }
    if let Some(missing) = required.iter().find(|r| !seen.contains(r)) {
        bail!("{}: tensor {missing} is missing", weights_path.display());
    }

    let partial = output.with_extension("gguf.partial");
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let slices: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    let bytes = w
        .write_with_data(&partial, &slices)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, output)
        .with_context(|| format!("cannot move {} into place", partial.display()))?;
    let sha256 = sha256_file(output)?;
    Ok(Imported {
        path: output.to_path_buf(),
        bytes,
        sha256,
        tensors: seen.len(),
        vocab: n_vocab,
        embedding_length: config.hidden_size,
        pooling,
    })
}

/// The shape (PyTorch order) a tensor must have under this config.
fn expected_shape(target: &str, c: &BertConfig) -> Vec<u64> {
    let (h, ff) = (u64::from(c.hidden_size), u64::from(c.intermediate_size));
    let kind_bias = target.ends_with(".bias");
    match target {
        "token_embd.weight" => vec![u64::from(c.vocab_size), h],
        "token_types.weight" => vec![u64::from(c.type_vocab_size), h],
        "position_embd.weight" => vec![u64::from(c.max_position_embeddings), h],
        _ if target.contains("ffn_up") => {
            if kind_bias {
                vec![ff]
            } else {
                vec![ff, h]
            }
        }
        _ if target.contains("ffn_down") => {
            if kind_bias {
                vec![h]
            } else {
                vec![h, ff]
            }
        }
        _ if target.contains("norm") || kind_bias => vec![h],
        _ => vec![h, h],
    }
}

pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_space_vocabulary() {
        assert_eq!(phantom("hello"), "\u{2581}hello");
        assert_eq!(phantom("##ing"), "ing");
        assert_eq!(phantom("[CLS]"), "[CLS]");
        assert_eq!(phantom("["), "\u{2581}[");
    }

    #[test]
    fn tensor_names_map_to_llama_cpp() {
        let n = |s| gguf_name(s, 6).unwrap();
        assert_eq!(
            n("embeddings.word_embeddings.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(
            n("encoder.layer.5.attention.output.LayerNorm.bias").as_deref(),
            Some("blk.5.attn_output_norm.bias")
        );
        assert_eq!(
            n("encoder.layer.0.output.dense.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(n("pooler.dense.weight"), None);
        assert_eq!(n("embeddings.position_ids"), None);
        assert!(gguf_name("encoder.layer.6.output.dense.weight", 6).is_err());
        assert!(gguf_name("encoder.layer.0.crossattention.q.weight", 6).is_err());
        assert!(gguf_name("lm_head.weight", 6).is_err());
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let dir = tempfile::tempdir().unwrap();
        let err = import_bert(dir.path(), &dir.path().join("out.gguf")).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err:#}");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type":"llama","hidden_size":8,"intermediate_size":8,"num_attention_heads":1,
                "num_hidden_layers":1,"max_position_embeddings":8,"vocab_size":8}"#,
        )
        .unwrap();
        let err = import_bert(dir.path(), &dir.path().join("out.gguf")).unwrap_err();
        assert!(err.to_string().contains("only BERT"), "{err:#}");
        assert!(!dir.path().join("out.gguf").exists());
    }
}
