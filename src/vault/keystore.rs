//! The device key store, `$EDGELLM_HOME/keys/device.json`: the device's recipient (public) and
//! how its secret is held. The secret itself is never in this file: it is a TPM sealed object
//! (only the TPM that sealed it, with the same PCR values, unseals it), a systemd credential
//! (`systemd-creds`: the host key and/or the TPM), or, for development only, a key file that a
//! configuration has to allow explicitly.

use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::recipient::{DeviceKey, Recipient};
use super::{KeyConfig, VaultError, tpm};

/// The key store's file name in `$EDGELLM_HOME/keys`.
pub const FILE_NAME: &str = "device.json";
const MAX_STORE_BYTES: u64 = 64 << 10;
const CREDENTIAL_NAME: &str = "edgellm-device-key";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// A TPM 2.0 sealed object bound to PCRs
    Tpm,
    /// `systemd-creds encrypt` (host key and/or TPM, as systemd chooses or `--with-key` says)
    SystemdCreds,
    /// A plain key file (development only; refused unless `[keys] allow_key_file`)
    File,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub format: u32,
    pub recipient: String,
    pub backend: Backend,
    /// TPM: the TCTI used when sealing (`[keys] tpm_tcti` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<tpm::Sealed>,
    /// systemd-creds: the credential file; file: the key file (both beside this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What `edgellm key init` is asked to make.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub backend: Backend,
    pub tcti: String,
    pub pcrs: Vec<u8>,
    /// systemd-creds' `--with-key` (auto, host, tpm2, host+tpm2).
    pub with_key: String,
    pub force: bool,
}

pub fn store_path(config: &KeyConfig) -> PathBuf {
    config
        .store
        .clone()
        .unwrap_or_else(|| crate::paths::home().join("keys").join(FILE_NAME))
}

/// Reads the key store (bounded; unknown fields refused).
pub fn read(path: &Path) -> Result<Store, VaultError> {
    let text = super::read_bounded(path, MAX_STORE_BYTES)?;
    let store: Store = serde_json::from_slice(&text).map_err(|e| {
        VaultError::KeyStore(format!("{} is not a device key store: {e}", path.display()))
    })?;
    if store.format != 1 {
        return Err(VaultError::KeyStore(format!(
            "{} has format {}, this edgellm reads format 1",
            path.display(),
            store.format
        )));
    }
    Recipient::parse(&store.recipient)?;
    Ok(store)
}

/// Makes a new device key, seals it with the backend and writes the store (mode 0600).
/// Refused when a store exists, unless `force` (models encrypted for the old key are then lost).
pub fn init(path: &Path, options: &InitOptions) -> Result<Recipient, VaultError> {
    if path.exists() && !options.force {
        return Err(VaultError::KeyStore(format!(
            "{} exists: this device has a key (models encrypted for it need it; --force replaces it)",
            path.display()
        )));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(super::io_error(dir))?;
    set_mode(dir, 0o700)?;
    let secret = DeviceKey::generate_secret();
    let recipient = DeviceKey::from_bytes(&secret[..])?.recipient();
    let mut store = Store {
        format: 1,
        recipient: recipient.to_string(),
        backend: options.backend,
        tcti: None,
        tpm: None,
        file: None,
    };
    match options.backend {
        Backend::Tpm => {
            store.tpm = Some(tpm::seal(&options.tcti, &options.pcrs, &secret[..])?);
            store.tcti = Some(options.tcti.clone());
        }
        Backend::SystemdCreds => {
            let name = "device.cred";
            systemd_encrypt(&secret[..], &dir.join(name), &options.with_key)?;
            store.file = Some(name.into());
        }
        Backend::File => {
            let name = "device.key";
            write_private(
                &dir.join(name),
                format!("{}\n", hex::encode(&secret[..])).as_bytes(),
            )?;
            store.file = Some(name.into());
        }
    }
    let json = serde_json::to_vec_pretty(&store)
        .map_err(|e| VaultError::KeyStore(format!("cannot write the key store: {e}")))?;
    write_private(path, &json)?;
    Ok(recipient)
}

/// Unseals this device's key as the store says (one TPM or systemd call).
pub fn unlock(config: &KeyConfig) -> Result<DeviceKey, VaultError> {
    let path = store_path(config);
    if !path.exists() {
        return Err(VaultError::KeyStore(format!(
            "this device has no key: {} does not exist (`edgellm key init`)",
            path.display()
        )));
    }
    let store = read(&path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let beside = |store: &Store| -> Result<PathBuf, VaultError> {
        let name = store
            .file
            .as_deref()
            .ok_or_else(|| VaultError::KeyStore(format!("{} names no key file", path.display())))?;
        // Only a file beside the store, never a path it points elsewhere.
        if name.is_empty() || name.contains('/') || name == ".." {
            return Err(VaultError::KeyStore(format!(
                "{} names {name:?}: a key file must be a plain name beside it",
                path.display()
            )));
        }
        Ok(dir.join(name))
    };
    let secret: Zeroizing<Vec<u8>> = match store.backend {
        Backend::Tpm => {
            let sealed = store.tpm.as_ref().ok_or_else(|| {
                VaultError::KeyStore(format!("{} has no sealed TPM object", path.display()))
            })?;
            let tcti = config
                .tpm_tcti
                .clone()
                .or_else(|| std::env::var("EDGELLM_TPM_TCTI").ok())
                .or(store.tcti.clone())
                .unwrap_or_else(|| tpm::DEFAULT_TCTI.to_string());
            tpm::unseal(&tcti, sealed)?
        }
        Backend::SystemdCreds => systemd_decrypt(&beside(&store)?)?,
        Backend::File => {
            if !config.allow_key_file {
                return Err(VaultError::KeyStore(format!(
                    "the device key in {} is a plain key file (development only): set [keys] allow_key_file = true to use it",
                    path.display()
                )));
            }
            let file = beside(&store)?;
            let text = Zeroizing::new(super::read_bounded(&file, 1024)?);
            let text = std::str::from_utf8(&text)
                .map_err(|_| VaultError::KeyStore(format!("{} is not hex", file.display())))?;
            let mut bytes = Zeroizing::new(vec![0u8; 32]);
            hex::decode_to_slice(text.trim(), &mut bytes[..]).map_err(|_| {
                VaultError::KeyStore(format!("{} is not 64 hex digits", file.display()))
            })?;
            bytes
        }
    };
    let key = DeviceKey::from_bytes(&secret)?;
    if key.recipient().to_string() != store.recipient {
        return Err(VaultError::KeyStore(format!(
            "the key {} unseals is not the recipient it names (the store was edited or mixed up)",
            path.display()
        )));
    }
    Ok(key)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), VaultError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(super::io_error(path))
}

/// Writes a file only its owner reads, atomically (temporary file, fsync, rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(super::io_error(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(super::io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(super::io_error(path))
}

fn systemd_creds(
    args: &[&std::ffi::OsStr],
    input: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("systemd-creds")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| VaultError::KeyStore(format!("cannot run systemd-creds: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| VaultError::KeyStore(format!("systemd-creds: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| VaultError::KeyStore(format!("systemd-creds: {e}")))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr.lines().last().unwrap_or("").trim().to_string();
        return Err(VaultError::KeyStore(format!(
            "systemd-creds failed ({}): {line}",
            output.status
        )));
    }
    Ok(Zeroizing::new(stdout.to_vec()))
}

fn systemd_encrypt(secret: &[u8], out: &Path, with_key: &str) -> Result<(), VaultError> {
    let with_key = format!("--with-key={with_key}");
    let name = format!("--name={CREDENTIAL_NAME}");
    systemd_creds(
        &[
            "encrypt".as_ref(),
            with_key.as_ref(),
            name.as_ref(),
            "-".as_ref(),
            out.as_os_str(),
        ],
        secret,
    )?;
    set_mode(out, 0o600)
}

fn systemd_decrypt(credential: &Path) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let name = format!("--name={CREDENTIAL_NAME}");
    systemd_creds(
        &[
            "decrypt".as_ref(),
            name.as_ref(),
            credential.as_os_str(),
            "-".as_ref(),
        ],
        &[],
    )
}
