//! Command-line definitions (clap). Only what the user typed is checked here; the commands build
//! their validated configuration from these arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::KvType;

#[derive(Debug, Parser)]
#[command(name = "edgellm", version, about = "A local-first LLM gateway for edge devices")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one prompt on the local model and report speed and memory (the on-device smoke test).
    Run(RunArgs),

}

/// Engine settings shared by the commands that load a model.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// GGUF model file [default: the installed default model]
    #[arg(short = 'm', long = "model", env = "EDGELLM_MODEL")]
    pub model: Option<PathBuf>,
    /// Threads for generation [default: number of cores]
    #[arg(short = 't', long = "threads")]
    pub threads: Option<u32>,
    /// Threads for prompt processing [default: --threads]
    #[arg(long = "threads-batch")]
    pub threads_batch: Option<u32>,
    /// Context size in tokens
    #[arg(short = 'c', long = "ctx-size", default_value_t = crate::engine::EngineConfig::DEFAULT_N_CTX)]
    pub ctx_size: u32,
    /// Logical batch size (most tokens per decode call)
    #[arg(short = 'b', long = "batch-size", default_value_t = crate::engine::EngineConfig::DEFAULT_N_BATCH)]
    pub batch_size: u32,
    /// Physical micro-batch size (sizes the compute buffer)
    #[arg(long = "ubatch-size", visible_alias = "ub", default_value_t = crate::engine::EngineConfig::DEFAULT_N_UBATCH)]
    pub ubatch_size: u32,
    /// KV-cache type
    #[arg(long = "kv-type", value_enum, default_value_t = KvType::F16)]
    pub kv_type: KvType,
    /// Print llama.cpp's own log to stderr
    #[arg(long)]
    pub verbose: bool,
}

impl EngineArgs {
    pub fn to_config(&self, slots: u32) -> crate::engine::EngineConfig {
        let mut config = crate::engine::EngineConfig::new(self.model.clone().unwrap_or_else(crate::paths::default_model));
        if let Some(threads) = self.threads {
            config.n_threads = threads;
            config.n_threads_batch = threads;
        }
        if let Some(threads) = self.threads_batch {
            config.n_threads_batch = threads;
        }
        config.n_ctx = self.ctx_size;
        config.n_batch = self.batch_size;
        config.n_ubatch = self.ubatch_size;
        config.kv_type = self.kv_type;
        config.slots = slots;
        config.verbose_llama_logs = self.verbose;
        config
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The prompt
    #[arg(short = 'p', long = "prompt", conflicts_with = "file", required_unless_present = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Format the prompt as one user message with the model's chat template
    #[arg(long)]
    pub chat: bool,
    /// Tokens to generate
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: u32,
    /// Sampling temperature (0 = greedy)
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: i32,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed [default: random]
    #[arg(short = 's', long)]
    pub seed: Option<u32>,
    /// Stop at this string (repeatable); it is not printed
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (always produce --n-predict tokens)
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Print one JSON summary (with the text) instead of streaming
    #[arg(long)]
    pub json: bool,
}
