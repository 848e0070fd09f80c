//! `edgellm model`: model files on this device. `import` converts a sentence-transformers BERT
//! directory into a GGUF the engine loads (the default embedding model is made this way by
//! `scripts/install-model.sh`). `keygen`, `push` and `pull` deliver models through an OCI
//! registry (`crate::delivery`).

pub mod import;
mod slots_cli;

use std::path::PathBuf;

use anyhow::Context;
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
    /// Write a new ed25519 signing key (KEY, mode 0600) and its public key (KEY.pub)
    Keygen(KeygenArgs),
    /// Chunk a GGUF, upload the chunks the registry lacks, and tag a signed manifest
    Push(PushArgs),
    /// Verify a signed model manifest, fetch the chunks this device lacks, assemble the file
    Pull(PullArgs),
    /// The pulled models, which one is active and which one it replaced
    List(ListArgs),
    /// Check a pulled model file against the sha256 its signed manifest gave
    Verify(SlotArgs),
    /// Health-gate a pulled model (verify, load, decode, the [activation] golden prompts), then
    /// make it the default model
    Activate(SlotArgs),
    /// Make the previous model active again (after checking its file)
    Rollback(ConfigArgs),
    /// Delete pulled models that are neither active nor previous, and interrupted pulls' files
    Gc(ConfigArgs),
    /// Encrypt a GGUF for devices (their `edgellm key init` recipients), in segments aligned
    /// with delivery chunks
    Encrypt(crate::vault::cli::EncryptArgs),
    /// Replace an encrypted model's recipients; its segments are copied unchanged
    Rewrap(crate::vault::cli::RewrapArgs),
}

pub use crate::usage::ConfigArgs;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SlotArgs {
    /// A pulled model: its file name in $EDGELLM_HOME/models, or a path [default: the active one]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub device: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The signing key file to create (refused if it exists)
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The GGUF file
    pub file: PathBuf,
    /// HOST[:PORT]/NAME[:TAG]
    pub reference: String,
    /// Signing key (from `edgellm model keygen`); repeat to sign with several during a rotation
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    /// Days until the manifest expires
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub valid_days: u64,
    /// A tag of an earlier release in the same repository (repeatable): chunks it holds are
    /// not uploaded again. The tag being replaced always counts.
    #[arg(long = "base")]
    pub bases: Vec<String>,
    /// Registry credentials: a Docker config.json (`docker login` / `oras login` write one)
    #[arg(long, env = "EDGELLM_REGISTRY_AUTH")]
    pub registry_auth: Option<PathBuf>,
    /// Plain HTTP to a registry that is not on loopback
    #[arg(long)]
    pub plain_http: bool,
    /// Print the result as one line of JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// HOST[:PORT]/NAME[:TAG]
    pub reference: String,
    /// A file of trusted public keys, one per line (repeatable); at least one is required
    #[arg(
        long = "trusted-key",
        env = "EDGELLM_TRUSTED_KEYS",
        value_delimiter = ','
    )]
    pub trusted_keys: Vec<PathBuf>,
    /// Bandwidth cap in bytes per second (suffixes k, m: 500k, 2m)
    #[arg(long, value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
    /// Pull even when the model's signed memory figures exceed this device's RAM
    #[arg(long)]
    pub ignore_memory: bool,
    /// Registry credentials: a Docker config.json [default: delivery.registry_auth]
    #[arg(long, env = "EDGELLM_REGISTRY_AUTH")]
    pub registry_auth: Option<PathBuf>,
    /// Plain HTTP to a registry that is not on loopback
    #[arg(long)]
    pub plain_http: bool,
    /// Progress and the result as JSON lines
    #[arg(long)]
    pub json: bool,
    /// `[delivery]` (links, daily download budget), `[network]`, `[budget]` and the ledger
    #[command(flatten)]
    pub device: ConfigArgs,
}

fn parse_rate(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, scale) = match lower.strip_suffix('k') {
        Some(d) => (d, 1_000),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 1_000_000),
            None => (lower.as_str(), 1),
        },
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (bytes/s, e.g. 500k or 2m)"))?;
    n.checked_mul(scale)
        .filter(|r| *r > 0)
        .ok_or_else(|| format!("{text:?} is not a positive rate"))
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
        ModelCommand::Keygen(keygen) => {
            let id = crate::delivery::manifest::keygen(&keygen.out)?;
            println!(
                "wrote {} and {} (key id {id})",
                keygen.out.display(),
                keygen.out.with_extension("pub").display()
            );
            Ok(())
        }
        ModelCommand::Push(push) => delivery_push(push),
        ModelCommand::Pull(pull) => delivery_pull(pull),
        ModelCommand::List(list) => slots_cli::list(list.json),
        ModelCommand::Verify(target) => slots_cli::verify(target.model.as_deref()),
        ModelCommand::Activate(target) => {
            slots_cli::activate(&Device::open(&target.device)?, target.model.as_deref())
        }
        ModelCommand::Rollback(device) => slots_cli::rollback(&Device::open(device)?),
        ModelCommand::Gc(device) => slots_cli::gc(&Device::open(device)?),
        ModelCommand::Encrypt(args) => crate::vault::cli::encrypt(args),
        ModelCommand::Rewrap(args) => crate::vault::cli::rewrap(args),
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

/// The device's settings and its ledger, opened before a step so that every step that changes
/// the models leaves its audit row (`kind = model`).
pub(crate) struct Device {
    pub raw: crate::config::RawConfig,
    pub ledger: crate::ledger::Ledger,
}

impl Device {
    fn open(args: &ConfigArgs) -> anyhow::Result<Device> {
        let (raw, budget, dir) = args.load()?;
        let options = crate::ledger::LedgerOptions::from_budget(&budget);
        let ledger = crate::delivery::policy::open_ledger(&dir, options)?;
        Ok(Device { raw, ledger })
    }

    /// Writes `record` with `result`'s outcome (`error:<class>` when it failed), then returns
    /// `result`; a step whose audit row cannot be written fails.
    pub fn audit<T>(
        &self,
        mut record: crate::ledger::AuditRecord,
        class: &'static str,
        result: anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if let Err(error) = &result {
            record.outcome = match error.downcast_ref::<crate::delivery::DeliveryError>() {
                Some(e) if e.class() == "download_budget" => {
                    crate::ledger::Outcome::Blocked(e.class().into())
                }
                Some(e) => crate::ledger::Outcome::Error(e.class().into()),
                None => crate::ledger::Outcome::Error(class.into()),
            };
        }
        self.ledger
            .record_audit(&record)
            .context("cannot write the audit row")?;
        result
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn delivery_push(args: &PushArgs) -> anyhow::Result<()> {
    use crate::delivery::{manifest, push, registry::Reference};
    let reference = Reference::parse(&args.reference, args.plain_http)?;
    let keys = args
        .keys
        .iter()
        .map(|p| manifest::load_signing_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let credentials = match &args.registry_auth {
        Some(path) => crate::delivery::auth::load(path, &reference.host)?,
        None => None,
    };
    let options = push::PushOptions {
        keys: &keys,
        valid_days: args.valid_days,
        bases: &args.bases,
        credentials,
    };
    let pushed = runtime()?.block_on(push::push(&args.file, reference, options))?;
    if args.json {
        println!("{}", serde_json::to_string(&pushed)?);
    } else {
        println!(
            "pushed {} ({} bytes, {} chunks, {} uploaded: {} bytes), manifest {}, signed by {}",
            pushed.reference,
            pushed.size,
            pushed.chunks,
            pushed.uploaded_chunks,
            pushed.uploaded_bytes,
            pushed.manifest_digest,
            pushed.key_ids.join(", ")
        );
    }
    Ok(())
}

/// The addresses `host` (a reference's host, maybe with a port) resolves to; none when it does
/// not resolve now (the gate then judges the default route, and the pull fails by itself).
fn registry_addresses(host: &str) -> Vec<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let with_port = if host.ends_with(']') || !host.contains(':') {
        format!("{host}:443")
    } else {
        host.to_string()
    };
    with_port
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

fn delivery_pull(args: &PullArgs) -> anyhow::Result<()> {
    use crate::delivery::{manifest, policy, pull, registry::Reference};
    use std::io::IsTerminal;
    let reference = Reference::parse(&args.reference, args.plain_http)?;
    if args.trusted_keys.is_empty() {
        anyhow::bail!(
            "no trusted keys: pass --trusted-key FILE (or EDGELLM_TRUSTED_KEYS); a device accepts no model it cannot verify"
        );
    }
    let trusted = manifest::load_trusted_keys(&args.trusted_keys)?;
    let device = Device::open(&args.device)?;
    let mut record = policy::audit_record(
        "pull",
        &reference.to_string(),
        Some(&reference.host),
        crate::ledger::Outcome::Ok,
    );
    // The links a pull may use, before anything is sent.
    let registry = registry_addresses(&reference.host);
    if let Err(refusal) = device
        .raw
        .delivery
        .check_network(&device.raw.network, &registry)
    {
        record.outcome = crate::ledger::Outcome::Blocked(refusal.reason().into());
        device.ledger.record_audit(&record)?;
        anyhow::bail!(
            "{refusal}: [delivery] does not allow pulls on this link; nothing downloaded"
        );
    }
    let credentials = match args.registry_auth.as_ref().or(device
        .raw
        .delivery
        .registry_auth
        .as_ref())
    {
        Some(path) => crate::delivery::auth::load(path, &reference.host)?,
        None => None,
    };
    let home = crate::paths::home();
    let json = args.json;
    let terminal = std::io::stderr().is_terminal();
    let mut last_percent = u64::MAX;
    let mut fetched = 0;
    let mut report = |p: &pull::Progress| {
        fetched = p.fetched_bytes;
        if json {
            if let Ok(line) = serde_json::to_string(&serde_json::json!({"progress": p})) {
                println!("{line}");
            }
        } else if terminal {
            let done = p.fetched_bytes + p.reused_bytes;
            let percent = (done * 100).checked_div(p.size).unwrap_or(100);
            if percent != last_percent {
                last_percent = percent;
                eprint!(
                    "\r{percent:3}%  {} of {} chunks, {} MB fetched, {} MB already here",
                    p.chunks_done,
                    p.chunks,
                    p.fetched_bytes / 1_000_000,
                    p.reused_bytes / 1_000_000
                );
            }
        }
    };
    let options = pull::PullOptions {
        trusted: &trusted,
        models: home.join("models"),
        rate_limit: args.limit_rate,
        ram_total: if args.ignore_memory {
            None
        } else {
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
            Some(crate::plan::probe::parse_meminfo(&meminfo).total).filter(|t| *t > 0)
        },
        progress: &mut report,
        budget: Some(pull::DownloadBudget {
            ledger: &device.ledger,
            daily_bytes: device.raw.delivery.daily_download_bytes,
        }),
        credentials,
    };
    // Several threads: a pull receives one range while it hashes and writes another.
    let pulled = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(pull::pull(reference, options))
        .map_err(anyhow::Error::from);
    record.bytes_received = fetched;
    if let Ok(pulled) = &pulled {
        record.detail = Some(format!("sha256:{}", pulled.sha256));
    }
    let pulled = device.audit(record, "pull", pulled)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({"pulled": pulled}))?
        );
    } else {
        if terminal {
            eprintln!();
        }
        println!(
            "pulled {} to {} (sha256 {}): {} chunks fetched ({} bytes), {} already here ({} bytes)",
            pulled.reference,
            pulled.path.display(),
            pulled.sha256,
            pulled.progress.fetched_chunks,
            pulled.progress.fetched_bytes,
            pulled.progress.reused_chunks,
            pulled.progress.reused_bytes
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_caps_parse_or_say_what_a_rate_is() {
        for (text, want) in [
            ("500k", 500_000),
            ("2m", 2_000_000),
            (" 1200 ", 1200),
            ("3M", 3_000_000),
        ] {
            assert_eq!(parse_rate(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "0",
            "0k",
            "fast",
            "-5m",
            "2g",
            "1.5m",
            "99999999999999999999m",
        ] {
            let error = parse_rate(bad).unwrap_err();
            assert!(error.contains("rate"), "{bad}: {error}");
        }
    }
}
