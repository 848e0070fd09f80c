//! `edgellm serve` configuration: a TOML file, overridden by `EDGELLM_*` environment variables and
//! command-line flags (flags win). The raw file is parsed strictly (an unknown key is an error that
//! names it) and then validated into [`ServeConfig`], the type the server uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::{EngineConfig, KvType};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot read API key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The TOML file as written. Every section and key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub model: RawModel,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub api_keys: Option<Vec<String>>,
    pub api_key_file: Option<PathBuf>,
    pub log_prompts: Option<bool>,
    pub shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub path: Option<PathBuf>,
    /// The model name clients use (`model` field); defaults to the file name without `.gguf`.
    pub alias: Option<String>,
    pub threads: Option<u32>,
    pub threads_batch: Option<u32>,
    pub ctx_size: Option<u32>,
    pub batch_size: Option<u32>,
    pub ubatch_size: Option<u32>,
    pub kv_type: Option<KvType>,
    pub slots: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<usize>,
    pub max_prompt_tokens: Option<usize>,
    pub max_tokens: Option<u32>,
    pub queue_depth: Option<usize>,
    pub request_timeout_secs: Option<u64>,
}

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }
}

/// Explicit limits on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_prompt_tokens: usize,
    /// Most tokens a request may generate (also the default when it does not say).
    pub max_tokens: u32,
    /// Requests waiting for a slot beyond the busy ones; more get 503 with Retry-After.
    pub queue_depth: usize,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_prompt_tokens: 8192,
            max_tokens: 1024,
            queue_depth: 16,
            request_timeout: Duration::from_secs(300),
        }
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub engine: EngineConfig,
    pub model_alias: String,
    /// Bearer tokens accepted; empty means no authentication.
    pub api_keys: Vec<String>,
    pub log_prompts: bool,
    pub shutdown_grace: Duration,
    pub limits: Limits,
}

impl ServeConfig {
    pub const DEFAULT_SLOTS: u32 = 4;
    pub const DEFAULT_CTX: u32 = 8192;

    /// Validates a raw configuration (already merged with environment and flags).
    pub fn from_raw(raw: RawConfig) -> Result<ServeConfig, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let host = raw.server.host.unwrap_or_else(|| "127.0.0.1".into());
        let port = raw.server.port.unwrap_or(8080);
        let listen: SocketAddr = format!("{host}:{port}")
            .parse()
            .or_else(|_| format!("[{host}]:{port}").parse())
            .map_err(|_| invalid(format!("server.host {host:?} is not an IP address")))?;

        let model_path = raw.model.path.unwrap_or_else(crate::paths::default_model);
        let mut engine = EngineConfig::new(model_path);
        if let Some(t) = raw.model.threads {
            engine.n_threads = t;
            engine.n_threads_batch = t;
        }
        if let Some(t) = raw.model.threads_batch {
            engine.n_threads_batch = t;
        }
        engine.slots = raw.model.slots.unwrap_or(Self::DEFAULT_SLOTS);
        engine.n_ctx = raw.model.ctx_size.unwrap_or(Self::DEFAULT_CTX);
        engine.n_batch = raw
            .model
            .batch_size
            .unwrap_or(EngineConfig::DEFAULT_N_BATCH);
        engine.n_ubatch = raw
            .model
            .ubatch_size
            .unwrap_or(EngineConfig::DEFAULT_N_UBATCH);
        engine.kv_type = raw.model.kv_type.unwrap_or(KvType::F16);
        engine.validate().map_err(|e| invalid(e.to_string()))?;
        let model_alias = raw.model.alias.unwrap_or_else(|| {
            let name = engine
                .model_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.strip_suffix(".gguf").unwrap_or(&name).to_string()
        });

        let mut api_keys = raw.server.api_keys.unwrap_or_default();
        if let Some(path) = raw.server.api_key_file {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::KeyFile { path, source })?;
            api_keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        if api_keys.iter().any(|k| k.len() < 8) {
            return Err(invalid("API keys must be at least 8 characters".into()));
        }

        let defaults = Limits::default();
        let limits = Limits {
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_prompt_tokens: raw
                .limits
                .max_prompt_tokens
                .unwrap_or(defaults.max_prompt_tokens),
            max_tokens: raw.limits.max_tokens.unwrap_or(defaults.max_tokens),
            queue_depth: raw.limits.queue_depth.unwrap_or(defaults.queue_depth),
            request_timeout: raw
                .limits
                .request_timeout_secs
                .map_or(defaults.request_timeout, Duration::from_secs),
        };
        if limits.max_body_bytes < 1024 {
            return Err(invalid(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        if limits.max_tokens == 0 || limits.max_prompt_tokens == 0 {
            return Err(invalid(
                "limits.max_tokens and limits.max_prompt_tokens must be at least 1".into(),
            ));
        }
        if limits.request_timeout.is_zero() {
            return Err(invalid(
                "limits.request_timeout_secs must be at least 1".into(),
            ));
        }
        Ok(ServeConfig {
            listen,
            engine,
            model_alias,
            api_keys,
            log_prompts: raw.server.log_prompts.unwrap_or(false),
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs.unwrap_or(10)),
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let cases = [
            ("[server]\nprot = 1\n", "prot"),
            ("[modle]\n", "modle"),
            ("[limits]\nqueue = 3\n", "queue"),
        ];
        for (text, key) in cases {
            let error = RawConfig::from_toml(text).unwrap_err();
            assert!(error.contains(key), "{error:?} should name {key}");
        }
    }

    #[test]
    fn packaged_example_config_is_valid() {
        let raw = RawConfig::from_toml(include_str!("../packaging/edgellm.toml")).unwrap();
        let config = ServeConfig::from_raw(raw).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.engine.slots, 4);
    }

    #[test]
    fn defaults_bind_loopback() {
        let config = ServeConfig::from_raw(RawConfig::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.engine.slots, 4);
        assert!(config.api_keys.is_empty());
        assert!(!config.log_prompts);
    }

    #[test]
    fn invalid_values_table() {
        let cases = [
            ("[server]\nhost = \"not an ip\"\n", "server.host"),
            ("[model]\nslots = 0\n", "slots"),
            ("[server]\napi_keys = [\"short\"]\n", "at least 8"),
            ("[limits]\nmax_body_bytes = 10\n", "max_body_bytes"),
        ];
        for (text, want) in cases {
            let error = ServeConfig::from_raw(RawConfig::from_toml(text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(error.contains(want), "{error} should mention {want}");
        }
    }
}
