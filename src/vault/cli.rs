//! `edgellm key` (this device's key) and `edgellm model encrypt | rewrap` (the publisher's side).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::container::{self, Cipher, EncryptOptions};
use super::keystore::{self, Backend, InitOptions};
use super::recipient::{self, DataKey, Recipient};
use super::{KeyConfig, VaultError};

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make this device's key, held by the TPM (sealed to PCRs), systemd-creds, or a
    /// development key file, and print its recipient (what models are encrypted for)
    Init(InitArgs),
    /// Print this device's recipient
    Show(KeyFlags),
    /// Unseal this device's key and check that it opens an encrypted model, every segment
    /// authenticated (the plaintext stays in memory and is dropped)
    Check(CheckArgs),
}

/// Where the device key is, for commands that use it.
#[derive(Debug, Args, Clone, Default)]
pub struct KeyFlags {
    /// The key store [default: $EDGELLM_HOME/keys/device.json]
    #[arg(long = "key-store", env = "EDGELLM_KEY_STORE")]
    pub store: Option<PathBuf>,
    /// Let a plain key file hold the device key (development only)
    #[arg(long)]
    pub allow_key_file: bool,
    /// The TPM (a TCTI: device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321) [default: the
    /// store's]
    #[arg(long, env = "EDGELLM_TPM_TCTI")]
    pub tpm_tcti: Option<String>,
}

impl KeyFlags {
    pub fn config(&self) -> KeyConfig {
        KeyConfig {
            store: self.store.clone(),
            allow_key_file: self.allow_key_file,
            tpm_tcti: self.tpm_tcti.clone(),
            encrypt_prompt_log: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long, value_enum, default_value_t = Backend::Tpm)]
    pub backend: Backend,
    /// PCRs (SHA-256 bank) the TPM key is bound to, comma-separated: 7 is the Secure Boot
    /// state; add 4 (boot loader) or 11 (unified kernel image) to bind more of the boot chain
    #[arg(long, value_delimiter = ',', default_value = "7")]
    pub pcrs: Vec<u8>,
    /// systemd-creds' --with-key (auto, host, tpm2, host+tpm2)
    #[arg(long, default_value = "auto")]
    pub with_key: String,
    /// Replace an existing key (models encrypted for it can no longer be opened here)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub keys: KeyFlags,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The encrypted model
    pub file: PathBuf,
    #[command(flatten)]
    pub keys: KeyFlags,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// The GGUF model or knowledge pack
    pub file: PathBuf,
    /// The container to write [default: FILE.enc]
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// A device's recipient, as `edgellm key init` printed it (repeatable)
    #[arg(long = "recipient", required = true)]
    pub recipients: Vec<String>,
    /// The data key (64 hex digits; created, mode 0600, when it does not exist). Encrypt each
    /// release of a model with the same one: unchanged segments stay byte-identical, so
    /// delivery moves only what changed. Keep it where the signing keys are.
    #[arg(long)]
    pub data_key: PathBuf,
    /// [default: aes-256-gcm where this CPU has AES instructions, else xchacha20-poly1305]
    #[arg(long, value_enum)]
    pub cipher: Option<Cipher>,
    /// The name in the header [default: the file name without .gguf or .pack]
    #[arg(long)]
    pub name: Option<String>,
    /// Print the result as one line of JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// The encrypted model
    pub file: PathBuf,
    /// The recipients it is wrapped for from now on (repeatable; replaces the list)
    #[arg(long = "recipient", required = true)]
    pub recipients: Vec<String>,
    /// The data key it was encrypted with
    #[arg(long)]
    pub data_key: PathBuf,
    /// Where to write it [default: in place]
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: &KeyArgs) -> anyhow::Result<()> {
    match &args.command {
        KeyCommand::Init(init) => {
            let config = init.keys.config();
            let path = keystore::store_path(&config);
            let tcti = init
                .keys
                .tpm_tcti
                .clone()
                .unwrap_or_else(|| super::tpm::DEFAULT_TCTI.to_string());
            let recipient = keystore::init(
                &path,
                &InitOptions {
                    backend: init.backend,
                    tcti,
                    pcrs: init.pcrs.clone(),
                    with_key: init.with_key.clone(),
                    force: init.force,
                },
            )?;
            eprintln!(
                "device key sealed ({:?}) in {}",
                init.backend,
                path.display()
            );
            println!("{recipient}");
            Ok(())
        }
        KeyCommand::Show(flags) => {
            let path = keystore::store_path(&flags.config());
            println!("{}", keystore::read(&path)?.recipient);
            Ok(())
        }
        KeyCommand::Check(check) => {
            let path = &check.file;
            if !container::is_container(path) {
                super::open_model(path, &check.keys.config(), None)?;
                println!("{}: a plain file (not encrypted)", path.display());
                return Ok(());
            }
            let content = {
                let mut file = std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                container::read_header(&mut file, path)?.body.model.content
            };
            let unsealed = super::unseal(path, &check.keys.config(), content, None)?;
            println!(
                "{}: opens on this device: {} ({})",
                path.display(),
                unsealed.summary.name,
                content.noun()
            );
            Ok(())
        }
    }
}

fn recipients(texts: &[String]) -> Result<Vec<Recipient>, VaultError> {
    texts.iter().map(|t| Recipient::parse(t)).collect()
}

/// Reads the publisher's data key, or makes it (mode 0600) when the file does not exist.
fn data_key(path: &Path, create: bool) -> anyhow::Result<DataKey> {
    if create && !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        let key = recipient::new_data_key();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create the data key {}", path.display()))?;
        file.write_all(format!("{}\n", hex::encode(&key[..])).as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write the data key {}", path.display()))?;
        eprintln!("new data key in {}", path.display());
        return Ok(key);
    }
    let text = Zeroizing::new(super::read_bounded(path, 1024)?);
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(String::from_utf8_lossy(&text).trim(), &mut key[..])
        .map_err(|_| anyhow::anyhow!("{} is not a data key (64 hex digits)", path.display()))?;
    Ok(key)
}

pub fn encrypt(args: &EncryptArgs) -> anyhow::Result<()> {
    let recipients = recipients(&args.recipients)?;
    let key = data_key(&args.data_key, true)?;
    let output = args.output.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".enc");
        PathBuf::from(name)
    });
    let started = std::time::Instant::now();
    let body = container::encrypt(
        &args.file,
        &output,
        &key,
        &recipients,
        &EncryptOptions {
            cipher: args.cipher.unwrap_or_else(Cipher::for_this_cpu),
            name: args.name.clone(),
        },
    )?;
    let result = serde_json::json!({
        "output": output,
        "model": body.model.name,
        "sha256": body.model.sha256,
        "size": body.model.size,
        "segments": body.segments,
        "cipher": body.cipher,
        "recipients": recipients.iter().map(Recipient::id).collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "{}: {} ({} bytes) in {} segments, {:?}, for {} recipient(s)",
            output.display(),
            body.model.name,
            body.model.size,
            body.segments,
            body.cipher,
            recipients.len()
        );
    }
    Ok(())
}

pub fn rewrap(args: &RewrapArgs) -> anyhow::Result<()> {
    let recipients = recipients(&args.recipients)?;
    let key = data_key(&args.data_key, false)?;
    let output = args.output.clone().unwrap_or_else(|| args.file.clone());
    let n = container::rewrap(&args.file, &output, &key, &recipients)?;
    println!("{}: wrapped for {n} recipient(s)", output.display());
    Ok(())
}
