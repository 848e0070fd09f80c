use super::*;

fn write(w: &GgufWriter) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    w.write(&path).unwrap();
    (dir, path)
}

fn write_bytes(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn round_trip() {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 2)
        .kv(
            "general.tags",
            MetaValue::array(ValueType::String, vec![MetaValue::String("a".into())]),
        )
        .tensor("token_embd.weight", &[64, 10], GgmlType::Q8_0)
        .tensor("output_norm.weight", &[64], GgmlType::F32);
    let (_dir, path) = write(&w);
    let h = read_header(&path).unwrap();
    assert_eq!(h.architecture(), Some("llama"));
    assert_eq!(
        h.arch_get("block_count").and_then(MetaValue::as_u64),
        Some(2)
    );
    assert_eq!(h.tensors.len(), 2);
    assert_eq!(h.tensor("token_embd.weight").unwrap().n_bytes, 10 * 2 * 34);
    assert_eq!(h.weight_bytes(), 680 + 256);
    assert_eq!(h.tensors[1].offset, 704); // 680 padded to 32
}

#[test]
fn one_line_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GGML\x03\0\0\0".to_vec(), "not a GGUF file (bad magic)"),
        (
            b"GG".to_vec(),
            "truncated GGUF: the magic number ends at byte 4 but the file has 2 bytes",
        ),
        (b"GGUF\x01\0\0\0".to_vec(), "unsupported GGUF version 1"),
        (b"GGUF\0\0\0\x03".to_vec(), "big-endian"),
    ];
    for (bytes, want) in cases {
        let (_dir, path) = write_bytes(&bytes);
        let err = read_header(&path).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
        assert!(!err.contains('\n'));
    }
}
