//! Tests of `edgellm plan`: the GGUF header reader on the real default model, synthetic model
//! files for other architectures, hostile headers, devices, and the deployment decisions.

use std::path::{Path, PathBuf};

use clap::Parser;
use edgellm::plan::decide::Goals;
use edgellm::plan::device;
use edgellm::plan::gguf::{GgmlType, GgufError, GgufWriter, MetaValue, ValueType, read_header};
use edgellm::plan::{
    Deployment, ModelSpec, PlanArgs, PlanOptions, build_plan, plan_for, plan_json,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn default_model() -> PathBuf {
    let home = std::env::var_os("EDGELLM_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/edgellm")))
        .expect("HOME is set");
    home.join("models/gemma-3-270m-q4_k_m.gguf")
}

// ---------------------------------------------------------------------------------------------
// The default model, read exactly.

#[test]
fn default_model_header_reads_known_values() {
    let path = default_model();
    let h = read_header(&path).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.architecture(), Some("gemma3"));
    assert_eq!(h.get_str("general.name"), Some("Gemma 3 270m"));
    assert_eq!(h.metadata.len(), 33);
    assert_eq!(h.tensors.len(), 236);
    assert_eq!(h.file_len, 253_113_024);
    assert_eq!(h.data_offset, 6_525_120);
    assert_eq!(h.weight_bytes(), 246_587_904);
    assert_eq!(h.data_offset + h.weight_bytes(), h.file_len);
    let tokens = h
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
        .unwrap();
    assert_eq!(
        (tokens.elem_type, tokens.len, tokens.values.is_none()),
        (ValueType::String, 262_144, true)
    );
    let embd = h.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.dims.as_slice(), embd.ggml_type),
        (&[640, 262_144][..], GgmlType::Q8_0)
    );
    assert_eq!(embd.n_bytes, 178_257_920);
    let q4k = h
        .tensors
        .iter()
        .filter(|t| t.ggml_type == GgmlType::Q4_K)
        .count();
    assert_eq!(q4k, 27);

    let spec = ModelSpec::from_header(&h).unwrap();
    let got = (
        spec.n_layer,
        spec.n_embd,
        spec.n_ff,
        spec.n_head,
        spec.n_head_kv[0],
        spec.head_dim_k,
        spec.n_vocab,
        spec.n_ctx_train,
        spec.swa_window,
        spec.n_swa_layers,
        spec.tied_output,
    );
    assert_eq!(
        got,
        (18, 640, 2048, 4, 1, 256, 262_144, 32_768, 512, 15, true)
    );
    let full_layers: Vec<usize> = (0..18).filter(|&i| !spec.swa_layers[i]).collect();
    assert_eq!(full_layers, vec![5, 11, 17]);
    assert_eq!(spec.n_params, 268_098_176);
}

#[test]
fn default_model_plan_matches_llama_cpp_kv_and_model_buffer() {
    let device = device::preset("gateway-8gb").unwrap();
    let options = PlanOptions {
        contexts: vec![512, 2048, 8192, 32768],
        kv_types: vec![GgmlType::F16, GgmlType::Q8_0],
        n_seq: 1,
    };
    let plan = plan_for(&default_model(), &device, &Goals::default(), &options).unwrap();
    // KV MiB as llama.cpp logs them (docs/plan-accuracy.md), two decimals.
    let want = [9.00, 17.25, 35.25, 107.25, 4.78, 9.17, 18.73, 56.98];
    // llama.cpp logs the full-attention and the sliding-window caches separately.
    let rounded = |bytes: u64| (bytes as f64 / MIB as f64 * 100.0).round() / 100.0;
    let got: Vec<f64> = plan
        .table
        .iter()
        .map(|r| {
            ((rounded(r.memory.kv.bytes) + rounded(r.memory.kv.swa_bytes)) * 100.0).round() / 100.0
        })
        .collect();
    assert_eq!(got, want);
    for row in &plan.table {
        let model = (row.memory.weights + row.memory.repack) as f64 / MIB as f64;
        assert!((model - 247.82).abs() < 0.01, "{model}");
        assert!(row.fits);
    }
    assert_eq!(plan.decision.deployment, Deployment::FullyLocal);
    assert!(plan.speed.decode_tps_bound > 5.0);

    // `edgellm serve`'s defaults: 4 slots in one 8192-cell pool. llama.cpp allocated
    // 3 x 8192 full-attention cells and 15 x 2304 window cells (4 x 512 + 128, padded), 1 KiB
    // each, a 4-row output buffer, and 4 logits rows in the compute buffer.
    let server = PlanOptions {
        contexts: vec![8192],
        kv_types: vec![GgmlType::F16],
        n_seq: 4,
    };
    let plan = plan_for(&default_model(), &device, &Goals::default(), &server).unwrap();
    let mem = &plan.table[0].memory;
    assert_eq!(
        (mem.kv.cells, mem.kv.swa_cells, mem.kv_bytes()),
        (8192, 2304, (3 * 8192 + 15 * 2304) * 1024)
    );
    assert_eq!(mem.output, 4 * 262_144 * 4);
    assert!(mem.compute < 16 * MIB, "{}", mem.compute);
}

// ---------------------------------------------------------------------------------------------
// Synthetic model files.

struct Layout {
    arch: &'static str,
    n_layer: u64,
    n_embd: u64,
    n_head: u64,
    n_head_kv: u64,
    head_dim: u64,
    n_ff: u64,
    n_vocab: u64,
    n_ctx_train: u32,
    ty: GgmlType,
    tied: bool,
    sliding_window: Option<u32>,
}

fn bytes_of(ty: GgmlType, dims: &[u64]) -> u64 {
    let elements: u64 = dims.iter().product();
    elements / ty.block_size() * ty.type_size()
}

/// Writes a file with the metadata and full tensor table of `l` (data sparse) and returns its
/// path and the exact weight bytes, counted independently of the reader.
fn write_layout(dir: &Path, l: &Layout) -> (PathBuf, u64) {
    let mut w = GgufWriter::new();
    let key = |k: &str| format!("{}.{k}", l.arch);
    w.kv_str("general.architecture", l.arch)
        .kv_str("general.name", &format!("synthetic {}", l.arch))
        .kv_u32(&key("block_count"), l.n_layer as u32)
        .kv_u32(&key("context_length"), l.n_ctx_train)
        .kv_u32(&key("embedding_length"), l.n_embd as u32)
        .kv_u32(&key("feed_forward_length"), l.n_ff as u32)
        .kv_u32(&key("attention.head_count"), l.n_head as u32)
        .kv_u32(&key("attention.head_count_kv"), l.n_head_kv as u32)
        .kv_u32(&key("attention.key_length"), l.head_dim as u32)
        .kv_u32(&key("attention.value_length"), l.head_dim as u32)
        .kv_u32(&key("vocab_size"), l.n_vocab as u32)
        .kv("general.alignment", MetaValue::U32(32));
    if let Some(window) = l.sliding_window {
        w.kv_u32(&key("attention.sliding_window"), window);
    }
    let mut total = 0;
    let mut add = |w: &mut GgufWriter, name: &str, dims: &[u64], ty: GgmlType| {
        w.tensor(name, dims, ty);
        total += bytes_of(ty, dims);
    };
    let (q, kv) = (l.n_head * l.head_dim, l.n_head_kv * l.head_dim);
    add(&mut w, "token_embd.weight", &[l.n_embd, l.n_vocab], l.ty);
    for i in 0..l.n_layer {
        let name = |t: &str| format!("blk.{i}.{t}.weight");
        add(&mut w, &name("attn_norm"), &[l.n_embd], GgmlType::F32);
        add(&mut w, &name("attn_q"), &[l.n_embd, q], l.ty);
        add(&mut w, &name("attn_k"), &[l.n_embd, kv], l.ty);
        add(&mut w, &name("attn_v"), &[l.n_embd, kv], l.ty);
        add(&mut w, &name("attn_output"), &[q, l.n_embd], l.ty);
        add(&mut w, &name("ffn_norm"), &[l.n_embd], GgmlType::F32);
        add(&mut w, &name("ffn_gate"), &[l.n_embd, l.n_ff], l.ty);
        add(&mut w, &name("ffn_up"), &[l.n_embd, l.n_ff], l.ty);
        add(&mut w, &name("ffn_down"), &[l.n_ff, l.n_embd], l.ty);
    }
    add(&mut w, "output_norm.weight", &[l.n_embd], GgmlType::F32);
    if !l.tied {
        add(
            &mut w,
            "output.weight",
            &[l.n_embd, l.n_vocab],
            GgmlType::Q6_K,
        );
    }
    let path = dir.join(format!("{}-{}.gguf", l.arch, l.n_layer));
    w.write(&path).unwrap();
    (path, total)
}

fn llama_7b() -> Layout {
    Layout {
        arch: "llama",
        n_layer: 32,
        n_embd: 4096,
        n_head: 32,
        n_head_kv: 32,
        head_dim: 128,
        n_ff: 11008,
        n_vocab: 32000,
        n_ctx_train: 4096,
        ty: GgmlType::Q4_K,
        tied: false,
        sliding_window: None,
    }
}

fn llama_70b() -> Layout {
    Layout {
        n_layer: 80,
        n_embd: 8192,
        n_head: 64,
        n_head_kv: 8,
        n_ff: 28672,
        n_vocab: 128_256,
        n_ctx_train: 131_072,
        ..llama_7b()
    }
}

fn llama_gqa_1b() -> Layout {
    Layout {
        n_layer: 16,
        n_embd: 2048,
        n_head: 32,
        n_head_kv: 8,
        head_dim: 64,
        n_ff: 8192,
        n_vocab: 128_256,
        n_ctx_train: 131_072,
        tied: true,
        ..llama_7b()
    }
}

fn gemma3_1b() -> Layout {
    Layout {
        arch: "gemma3",
        n_layer: 26,
        n_embd: 1152,
        n_head: 4,
        n_head_kv: 1,
        head_dim: 256,
        n_ff: 6912,
        n_vocab: 262_144,
        n_ctx_train: 32_768,
        ty: GgmlType::Q8_0,
        tied: true,
        sliding_window: Some(512),
    }
}

/// (layout, context, expected f16 KV bytes at that context)
#[test]
fn synthetic_architectures_read_and_size_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Layout, u64, u64)> = vec![
        // Llama 2 7B: 0.5 MiB per token, 2 GiB at 4096.
        (llama_7b(), 4096, 2 * GIB),
        // Llama 3 70B: 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 320 KiB per token.
        (llama_70b(), 8192, 8192 * 320 * 1024),
        // Llama 3.2 1B-style GQA: 16 x 8 x 64 x 2 x 2 = 32 KiB per token.
        (llama_gqa_1b(), 4096, 4096 * 32 * 1024),
        // Gemma 3 1B: 4 full layers (5, 11, 17, 23) at 32768 cells, 22 window layers at 768.
        (gemma3_1b(), 32768, (4 * 32768 + 22 * 768) * 1024),
    ];
    for (layout, n_ctx, kv_bytes) in cases {
        let (path, weight_bytes) = write_layout(dir.path(), &layout);
        let h = read_header(&path).unwrap();
        assert_eq!(h.weight_bytes(), weight_bytes, "{}", layout.arch);
        let spec = ModelSpec::from_header(&h).unwrap();
        assert_eq!(
            (
                spec.n_layer as u64,
                spec.n_head_kv[0],
                spec.head_dim_k,
                spec.n_vocab,
                spec.tied_output
            ),
            (
                layout.n_layer,
                layout.n_head_kv,
                layout.head_dim,
                layout.n_vocab,
                layout.tied
            )
        );
        let cfg = edgellm::plan::estimate::RuntimeConfig {
            n_ctx,
            ..Default::default()
        };
        let mem = edgellm::plan::estimate::estimate_memory(&spec, &cfg).unwrap();
        assert_eq!(mem.kv_bytes(), kv_bytes, "{} at {n_ctx}", layout.arch);
        assert_eq!(mem.weights, weight_bytes);
    }
}

#[test]
fn seventy_b_layout_is_sized_from_a_sparse_file_in_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let (path, weight_bytes) = write_layout(dir.path(), &llama_70b());
    // About 40 GB of (sparse) tensor data, as a Q4_K 70B file has.
    assert!(
        weight_bytes > 39_000_000_000 && weight_bytes < 44_000_000_000,
        "{weight_bytes}"
    );
    assert_eq!(read_header(&path).unwrap().tensors.len(), 2 + 80 * 9 + 1);
}

// ---------------------------------------------------------------------------------------------
// Malformed, truncated and hostile headers.

fn header_prefix(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn push_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn read_bytes(bytes: &[u8]) -> Result<edgellm::plan::GgufHeader, GgufError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.gguf");
    std::fs::write(&path, bytes).unwrap();
    read_header(&path)
}

fn one_tensor(name: &str, dims: &[u64], ty: GgmlType) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama")
        .tensor(name, dims, ty);
    w
}

#[test]
fn hostile_headers_are_refused_with_one_line() {
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push((
        "absurd tensor count",
        header_prefix(u64::MAX, 0),
        "the tensor count is 18446744073709551615, the limit is 262144",
    ));
    cases.push((
        "absurd metadata count",
        header_prefix(0, 1 << 40),
        "the metadata count is",
    ));
    cases.push((
        "counts the file cannot hold",
        header_prefix(1000, 1000),
        "truncated GGUF: 1000 metadata entries",
    ));

    let mut huge_key = header_prefix(0, 1);
    huge_key.extend_from_slice(&(1u64 << 40).to_le_bytes());
    huge_key.extend_from_slice(&[0; 16]);
    cases.push((
        "huge key",
        huge_key,
        "the length of metadata key #0 is 1099511627776, the limit is 65535",
    ));

    let mut huge_string = header_prefix(0, 1);
    push_str(&mut huge_string, "general.name");
    huge_string.extend_from_slice(&8u32.to_le_bytes());
    huge_string.extend_from_slice(&(u64::MAX).to_le_bytes());
    cases.push((
        "huge string",
        huge_string,
        "the length of the value of 'general.name' is 18446744073709551615",
    ));

    let mut long_string = header_prefix(0, 1);
    push_str(&mut long_string, "general.name");
    long_string.extend_from_slice(&8u32.to_le_bytes());
    long_string.extend_from_slice(&(1u64 << 20).to_le_bytes());
    long_string.extend_from_slice(b"short");
    cases.push((
        "string past the end",
        long_string,
        "truncated GGUF: the value of 'general.name' ends at byte",
    ));

    let mut huge_array = header_prefix(0, 1);
    push_str(&mut huge_array, "tokenizer.ggml.scores");
    huge_array.extend_from_slice(&9u32.to_le_bytes());
    huge_array.extend_from_slice(&6u32.to_le_bytes());
    huge_array.extend_from_slice(&(1u64 << 60).to_le_bytes());
    cases.push((
        "huge array",
        huge_array,
        "the length of array 'tokenizer.ggml.scores' is 1152921504606846976",
    ));

    let mut short_array = header_prefix(0, 1);
    push_str(&mut short_array, "tokenizer.ggml.tokens");
    short_array.extend_from_slice(&9u32.to_le_bytes());
    short_array.extend_from_slice(&8u32.to_le_bytes());
    short_array.extend_from_slice(&(1u64 << 20).to_le_bytes());
    cases.push((
        "array past the end",
        short_array,
        "truncated GGUF: array 'tokenizer.ggml.tokens' (1048576 elements)",
    ));

    let mut nested = header_prefix(0, 1);
    push_str(&mut nested, "a");
    nested.extend_from_slice(&9u32.to_le_bytes());
    nested.extend_from_slice(&9u32.to_le_bytes());
    nested.extend_from_slice(&1u64.to_le_bytes());
    cases.push(("nested array", nested, "nested arrays are not supported"));

    let mut bad_type = header_prefix(0, 1);
    push_str(&mut bad_type, "a");
    bad_type.extend_from_slice(&77u32.to_le_bytes());
    cases.push((
        "unknown value type",
        bad_type,
        "key 'a' has unknown value type 77",
    ));

    let mut dup = GgufWriter::new();
    dup.kv_u32("a", 1).kv_u32("a", 2);
    cases.push((
        "duplicate key",
        dup.header_bytes(),
        "duplicate metadata key 'a'",
    ));

    let mut align = GgufWriter::new();
    align.kv_u32("general.alignment", 24);
    cases.push((
        "alignment",
        align.header_bytes(),
        "alignment 24 is not a power of 2",
    ));

    let overflow = one_tensor("x", &[1 << 40, 1 << 40], GgmlType::F32);
    cases.push((
        "overflowing shape",
        overflow.header_bytes(),
        "tensor 'x' has a shape that overflows",
    ));

    let bytes_overflow = one_tensor("x", &[1 << 31, 1 << 31], GgmlType::F32);
    cases.push((
        "overflowing size",
        bytes_overflow.header_bytes(),
        "tensor 'x' has a byte size that overflows",
    ));

    let not_blocks = one_tensor("x", &[100, 4], GgmlType::Q4_K);
    cases.push((
        "row not whole blocks",
        not_blocks.header_bytes(),
        "rows of 100 elements, not a multiple of 256",
    ));

    let long_name = one_tensor(&"n".repeat(64), &[4], GgmlType::F32);
    cases.push((
        "long tensor name",
        long_name.header_bytes(),
        "the limit is 63",
    ));

    let mut dims = GgufWriter::new();
    dims.tensor("x", &[1, 1, 1, 1, 1], GgmlType::F32);
    cases.push((
        "five dimensions",
        dims.header_bytes(),
        "tensor 'x' has 5 dimensions (at most 4)",
    ));

    let mut unknown = GgufWriter::new();
    unknown.tensor_raw("x", &[32], 4, None);
    cases.push((
        "removed ggml type",
        unknown.header_bytes(),
        "tensor 'x' has unknown ggml type 4",
    ));

    let mut offsets = GgufWriter::new();
    offsets
        .tensor("a", &[8], GgmlType::F32)
        .tensor_raw("b", &[8], 0, Some(4096));
    let mut bytes = offsets.header_bytes();
    bytes.resize(bytes.len() + 8192, 0);
    cases.push((
        "wrong data offset",
        bytes,
        "tensor 'b' has data offset 4096, expected 32",
    ));

    let mut dup_tensor = GgufWriter::new();
    dup_tensor
        .tensor("a", &[8], GgmlType::F32)
        .tensor("a", &[8], GgmlType::F32);
    let mut bytes = dup_tensor.header_bytes();
    bytes.resize(bytes.len() + 64, 0);
    cases.push(("duplicate tensor", bytes, "duplicate tensor name 'a'"));

    let mut bad_bool = header_prefix(0, 1);
    push_str(&mut bad_bool, "b");
    bad_bool.extend_from_slice(&7u32.to_le_bytes());
    bad_bool.push(7);
    cases.push(("bool out of range", bad_bool, "'b' holds bool value 7"));

    for (name, bytes, want) in cases {
        let err = read_bytes(&bytes).expect_err(name).to_string();
        assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
        assert!(!err.contains('\n'), "{name}: {err:?}");
    }
}

#[test]
fn truncated_tensor_data_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama");
    for i in 0..5 {
        w.tensor(
            &format!("blk.{i}.attn_q.weight"),
            &[256, 256],
            GgmlType::Q4_K,
        );
    }
    let path = dir.path().join("cut.gguf");
    let len = w.write(&path).unwrap();
    let header_len = w.header_bytes().len() as u64;
    // Cut the file inside the fourth tensor's data.
    let cut = header_len + 3 * 36864 + 100;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let err = read_header(&path).unwrap_err().to_string();
    let end = header_len + 4 * 36864;
    assert_eq!(
        err,
        format!(
            "truncated GGUF: tensor 'blk.3.attn_q.weight' ends at byte {end} but the file has {cut} bytes"
        )
    );
    assert!(len > cut);
}

#[test]
fn every_prefix_of_the_default_models_header_is_refused_without_panic() {
    let path = default_model();
    let h = read_header(&path).unwrap();
    let header = std::fs::read(&path)
        .map(|b| b[..h.data_offset as usize].to_vec())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut_path = dir.path().join("prefix.gguf");
    // Prefixes at a spread of lengths, including inside the metadata, the vocabulary, the
    // tensor table and the data section.
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((0..200).map(|i| i * header.len() / 200 + 7));
    cuts.push(header.len());
    for cut in cuts {
        std::fs::write(&cut_path, &header[..cut.min(header.len())]).unwrap();
        let err = read_header(&cut_path)
            .expect_err("a prefix must be refused")
            .to_string();
        assert!(
            err.starts_with("truncated GGUF") || err.starts_with("not a GGUF"),
            "{cut}: {err}"
        );
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv(
            "general.tags",
            MetaValue::array(ValueType::U32, vec![MetaValue::U32(1), MetaValue::U32(2)]),
        )
        .tensor("token_embd.weight", &[64, 4], GgmlType::Q8_0)
        .tensor("output_norm.weight", &[64], GgmlType::F32);
    let mut base = w.header_bytes();
    base.resize(base.len() + w.data_bytes() as usize, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flip.gguf");
    for i in 0..w.header_bytes().len() {
        for value in [0x00, 0xff, 0x80, 0x09] {
            let mut bytes = base.clone();
            bytes[i] = value;
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = read_header(&path) {
                assert!(!e.to_string().contains('\n'));
            }
        }
    }
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let err = read_header(Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/model.gguf"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Devices.

#[test]
fn presets_resolve_with_public_spec_figures() {
    // (id, RAM GiB, peak GB/s)
    let cases = [
        ("rpi4", 4.0, 12.8),
        ("rpi5", 8.0, 17.1),
        ("gateway-8gb", 8.0, 38.4),
        ("gateway-16gb", 16.0, 38.4),
        ("gateway-32gb", 32.0, 51.2),
        ("jetson-orin-nano", 8.0, 68.0),
        ("jetson-agx-orin", 64.0, 204.8),
        ("phone-npu", 12.0, 68.3),
    ];
    for (id, ram_gib, gbs) in cases {
        let d = device::resolve(id).unwrap();
        assert_eq!(d.ram_total, (ram_gib * GIB as f64) as u64, "{id}");
        assert!(d.ram_available < d.ram_total, "{id}");
        assert!((d.bandwidth / 1e9 - gbs).abs() < 1e-9, "{id}");
    }
    assert!(device::preset("mcu").unwrap().microcontroller);
    assert_eq!(device::preset_ids().len(), 9);
}

#[test]
fn device_files_parse_and_refuse_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("gw.toml");
    std::fs::write(
        &good,
        r#"
name = "plant gateway"
ram_mib = 16384
available_mib = 12000
cores = 4
arch = "x86_64"
cpu_features = ["avx2", "fma"]
bandwidth_gbs = 25.6
bandwidth_efficiency = 0.5
gflops = 150
"#,
    )
    .unwrap();
    let d = device::resolve(good.to_str().unwrap()).unwrap();
    assert_eq!(
        (d.name.as_str(), d.ram_available, d.cores),
        ("plant gateway", 12000 * MIB, 4)
    );
    assert_eq!(d.throughput().bandwidth, 12.8e9);

    let cases = [
        (
            "name = \"x\"\nram_mib = 1\ncores = 1\nbandwidth_gbs = 1\nfan = true\n",
            "unknown field `fan`",
        ),
        (
            "name = \"x\"\nram_mib = 1024\ncores = 1\nbandwidth_gbs = -1\n",
            "bandwidth_gbs must be a positive number",
        ),
        (
            "name = \"x\"\nram_mib = 1024\navailable_mib = 2048\ncores = 1\nbandwidth_gbs = 1\n",
            "available_mib exceeds ram_mib",
        ),
        (
            "name = \"x\"\ncores = 1\nbandwidth_gbs = 1\n",
            "missing field `ram_mib`",
        ),
    ];
    for (text, want) in cases {
        let err = device::from_toml(text, "dev.toml").unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("dev.toml"),
            "{err:?} lacks {want:?}"
        );
    }
    let err = device::resolve("toaster").unwrap_err().to_string();
    assert!(
        err.contains("unknown device 'toaster'") && err.contains("rpi5"),
        "{err}"
    );
}

#[test]
fn this_machine_is_probed() {
    let d = edgellm::plan::resolve_device(None).unwrap();
    assert!(d.ram_total > 0 && d.ram_available <= d.ram_total);
    assert!(d.cores >= 1 && d.bandwidth > 0.0 && d.flops > 0.0);
}

// ---------------------------------------------------------------------------------------------
// Decisions for the checklist cases.

#[test]
fn checklist_decisions_on_real_and_synthetic_models() {
    let dir = tempfile::tempdir().unwrap();
    let (seven_b, _) = write_layout(dir.path(), &llama_7b());
    let (seventy_b, _) = write_layout(dir.path(), &llama_70b());
    let small = default_model();
    let goals = Goals::default();
    let chat = Goals {
        min_decode_tps: Some(10.0),
        ..Goals::default()
    };
    let offline = Goals {
        offline_required: true,
        ..Goals::default()
    };
    let long = Goals {
        required_ctx: Some(131_072),
        ..Goals::default()
    };
    // (case, model, device, goals, deployment, meets goals)
    let cases: Vec<(&str, &Path, &str, &Goals, Deployment, bool)> = vec![
        (
            "270M on a Pi 4",
            &small,
            "rpi4",
            &goals,
            Deployment::FullyLocal,
            true,
        ),
        // Llama 2 7B has no GQA: 2 GiB of KV read per token at 4096 on top of 3.6 GiB weights.
        (
            "7B q4_K on an 8 GB gateway: fits, 3.9 tok/s",
            &seven_b,
            "gateway-8gb",
            &goals,
            Deployment::LocalFirstCloudFallback,
            false,
        ),
        (
            "7B q4_K on a 32 GB gateway",
            &seven_b,
            "gateway-32gb",
            &goals,
            Deployment::FullyLocal,
            true,
        ),
        (
            "7B on a Pi 5 at 10 tok/s chat: too slow",
            &seven_b,
            "rpi5",
            &chat,
            Deployment::LocalFirstCloudFallback,
            false,
        ),
        (
            "7B on a Pi 4 offline: local, goals missed",
            &seven_b,
            "rpi4",
            &offline,
            Deployment::FullyLocal,
            false,
        ),
        (
            "70B on a 16 GB gateway: cloud",
            &seventy_b,
            "gateway-16gb",
            &goals,
            Deployment::Cloud,
            false,
        ),
        (
            "70B on AGX Orin: fits, slow",
            &seventy_b,
            "jetson-agx-orin",
            &goals,
            Deployment::LocalFirstCloudFallback,
            false,
        ),
        (
            "70B at 128k on AGX Orin: KV does not fit",
            &seventy_b,
            "jetson-agx-orin",
            &long,
            Deployment::LocalFirstCloudFallback,
            false,
        ),
        (
            "anything on an MCU: cloud",
            &small,
            "mcu",
            &offline,
            Deployment::Cloud,
            false,
        ),
    ];
    for (name, model, dev, goals, deployment, meets) in cases {
        let device = device::resolve(dev).unwrap();
        let plan = plan_for(model, &device, goals, &PlanOptions::default()).unwrap();
        let d = &plan.decision;
        assert_eq!(
            (d.deployment, d.meets_goals),
            (deployment, meets),
            "{name}: {:#?}",
            d.reasons
        );
        assert!(
            d.reasons
                .iter()
                .any(|r| r.contains("MiB") || r.contains("GiB")),
            "{name}"
        );
    }
}

#[test]
fn seventy_b_kv_reason_names_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_layout(dir.path(), &llama_70b());
    let device = device::resolve("jetson-agx-orin").unwrap();
    let goals = Goals {
        required_ctx: Some(8192),
        ..Goals::default()
    };
    let plan = plan_for(&path, &device, &goals, &PlanOptions::default()).unwrap();
    let first = &plan.decision.reasons[0];
    assert!(first.contains("KV cache is 2.50 GiB of the"), "{first}");
    assert!(first.starts_with("total at 8192 context is"), "{first}");
}

// ---------------------------------------------------------------------------------------------
// The CLI surface and the JSON the server serves.

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    plan: PlanArgs,
}

#[test]
fn plan_args_parse_and_run() {
    let cli = Cli::try_parse_from([
        "plan",
        "--device",
        "rpi5",
        "--ctx",
        "1024,4096",
        "--kv-type",
        "q8_0",
        "--min-tps",
        "8",
        "--offline",
        "--headroom",
        "20%",
        "--json",
    ])
    .unwrap();
    let goals = cli.plan.goals().unwrap();
    assert_eq!(
        (goals.headroom, goals.offline_required, goals.min_decode_tps),
        (0.2, true, Some(8.0))
    );
    let options = cli.plan.options().unwrap();
    assert_eq!(
        (options.contexts.clone(), options.kv_types.clone()),
        (vec![1024, 4096], vec![GgmlType::Q8_0])
    );
    edgellm::plan::run(&cli.plan, &default_model()).unwrap();

    let bad = Cli::try_parse_from(["plan", "--kv-type", "q4_K"]).unwrap();
    assert!(
        bad.plan
            .options()
            .unwrap_err()
            .to_string()
            .contains("KV type 'q4_K'")
    );
    let bad = Cli::try_parse_from(["plan", "--headroom", "150%"]).unwrap();
    assert!(bad.plan.goals().is_err());
    let err = edgellm::plan::run(
        &Cli::try_parse_from(["plan", "/nonexistent.gguf"])
            .unwrap()
            .plan,
        &default_model(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent.gguf"), "{err}");
}

#[test]
fn plan_json_for_the_server() {
    let device = device::resolve("rpi5").unwrap();
    let value = plan_json(&default_model(), &device, &Goals::default()).unwrap();
    for key in [
        "model",
        "device",
        "runtime",
        "goals",
        "budget",
        "table",
        "max_context",
        "speed",
        "decision",
    ] {
        assert!(value.get(key).is_some(), "missing {key}");
    }
    assert_eq!(value["model"]["architecture"], "gemma3");
    assert_eq!(value["decision"]["deployment"], "fully_local");
    assert_eq!(value["table"][0]["memory"]["kv_type"], "f16");
    assert!(value["speed"]["decode_tps_bound"].as_f64().unwrap() > 0.0);

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let err = plan_json(&junk, &device, &Goals::default()).unwrap_err();
    assert_eq!(err.to_string(), "not a GGUF file (bad magic)");
}

#[test]
fn build_plan_rejects_bad_headroom() {
    let h = read_header(&default_model()).unwrap();
    let spec = ModelSpec::from_header(&h).unwrap();
    let device = device::preset("rpi5").unwrap();
    let goals = Goals {
        headroom: 1.5,
        ..Goals::default()
    };
    assert!(build_plan(&spec, &device, &goals, &PlanOptions::default()).is_err());
}

#[test]
fn the_table_shows_every_row_and_the_decision() {
    let device = edgellm::plan::resolve_device(None).unwrap();
    let goals = Goals {
        min_decode_tps: Some(10.0),
        ..Goals::default()
    };
    let plan = plan_for(&default_model(), &device, &goals, &PlanOptions::default()).unwrap();
    let text = edgellm::plan::render(&plan);
    println!("{text}");
    for needle in [
        "model:  Gemma 3 270m",
        "sliding window 512 on 15 of 18 layers",
        "llama.cpp",
        "decision:",
        "start from:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Six contexts by three KV types.
    let rows = text.lines().filter(|l| {
        l.ends_with("/s")
            && l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u64>().is_ok())
    });
    assert_eq!(rows.count(), 18);
}
