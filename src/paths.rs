//! Where edgellm keeps its files: `$EDGELLM_HOME` (default `~/.local/share/edgellm`).

use std::path::PathBuf;

/// File name of the default model (Gemma 3 270M, Q4_K_M), installed by `scripts/install-model.sh`.
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// File name of the default embedding model (all-MiniLM-L6-v2, F16), made by
/// `scripts/install-model.sh` with `edgellm model import`.
pub const DEFAULT_EMBEDDING_MODEL_FILE: &str = "all-minilm-l6-v2-f16.gguf";

/// The data directory: `$EDGELLM_HOME`, else `$XDG_DATA_HOME/edgellm`, else `~/.local/share/edgellm`.
pub fn home() -> PathBuf {
    if let Some(home) = std::env::var_os("EDGELLM_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(data).join("edgellm");
    }
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    user_home.join(".local/share/edgellm")
}

/// The model used when none is named: the active slot's (`edgellm model activate`), else the
/// installed default model.
pub fn default_model() -> PathBuf {
    let home = home();
    crate::delivery::slots::active_model(&home)
        .unwrap_or_else(|| home.join("models").join(DEFAULT_MODEL_FILE))
}

/// The default embedding model's path in the model directory.
pub fn default_embedding_model() -> PathBuf {
    home().join("models").join(DEFAULT_EMBEDDING_MODEL_FILE)
}
