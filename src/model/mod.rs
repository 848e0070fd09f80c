//! `edgellm model`: model files on this device. `import` converts a sentence-transformers BERT
//! directory into a GGUF the engine loads (the default embedding model is made this way by
//! `scripts/install-model.sh`).

pub mod import;

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Convert a sentence-transformers BERT model (config.json, model.safetensors,
    /// tokenizer.json) into a GGUF embedding model
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The model directory
    pub dir: PathBuf,
    /// The GGUF file to write
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print what was written as one line of JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ModelArgs) -> anyhow::Result<()> {
    match &args.command {
        ModelCommand::Import(import) => {
            let done = import::import_bert(&import.dir, &import.output)?;
            if import.json {
                println!("{}", serde_json::to_string(&done)?);
            } else {
                println!(
                    "wrote {} ({} bytes, {} tensors, {} tokens, {} dimensions, {} pooling)\nsha256 {}",
                    done.path.display(),
                    done.bytes,
                    done.tensors,
                    done.vocab,
                    done.embedding_length,
                    done.pooling,
                    done.sha256
                );
            }
            Ok(())
        }
    }
}
