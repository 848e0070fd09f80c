//! A/B model slots: which pulled model is active and which one it replaced, in
//! `$EDGELLM_HOME/slots.json` (written to a temporary file, fsync'd, renamed). The active model
//! is the default model of `serve`, `run`, `plan` and `bench`; the previous one stays on disk for
//! `rollback`. A boot counter, as A/B updaters keep one: `serve` counts a start of the active
//! model before loading it and clears the count once it has loaded; after `MAX_FAILED_BOOTS`
//! starts in a row that never loaded, the next start rolls back to the previous model.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DeliveryError;
use super::durable::write_durably;
use super::manifest::Body;

pub const FILE: &str = "slots.json";
pub const MAX_FAILED_BOOTS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slots {
    pub active: Slot,
    pub previous: Option<Slot>,
    /// Starts of the active model since it last loaded.
    pub boots: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub reference: Option<String>,
    /// Unix seconds.
    pub activated: u64,
}

/// What a pull leaves beside the model: the verified manifest and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub reference: String,
    pub body: Body,
}

pub fn record_path(model: &Path) -> PathBuf {
    let mut name = model.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    model.with_file_name(name)
}

pub fn read_record(model: &Path) -> Option<Record> {
    let text = std::fs::read(record_path(model)).ok()?;
    serde_json::from_slice(&text).ok()
}

pub fn write_record(model: &Path, record: &Record) -> Result<(), DeliveryError> {
    let bytes =
        serde_json::to_vec_pretty(record).map_err(|e| DeliveryError::Model(e.to_string()))?;
    write_durably(&record_path(model), &bytes)
}

/// A model file's name: `.gguf`, or `.gguf.enc` for an encrypted one.
fn is_model_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".gguf") || n.ends_with(".gguf.enc"))
}

/// The pulled models in `models` (those with a record beside them), by path.
pub fn pulled(models: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(models) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_model_file(p) && read_record(p).is_some())
        .collect();
    out.sort();
    out
}

/// The slots of `home`; `None` when nothing was ever activated.
pub fn load(home: &Path) -> Result<Option<Slots>, DeliveryError> {
    let path = home.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            DeliveryError::Model(format!(
                "{}: unreadable ({e}); fix or remove it",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DeliveryError::Io { path, source: e }),
    }
}

pub fn save(home: &Path, slots: &Slots) -> Result<(), DeliveryError> {
    let bytes =
        serde_json::to_vec_pretty(slots).map_err(|e| DeliveryError::Model(e.to_string()))?;
    write_durably(&home.join(FILE), &bytes)
}

/// The model `serve`, `run`, `plan` and `bench` use when none is named: the active slot's.
pub fn active_model(home: &Path) -> Option<PathBuf> {
    match load(home) {
        Ok(Some(slots)) => Some(slots.active.path),
        Ok(None) => None,
        Err(error) => {
            eprintln!("warning: {error}; using the installed default model");
            None
        }
    }
}

/// `serve -m`: an existing file is itself; otherwise, a registry reference names the newest
/// pulled model recorded under it; anything else is left for the engine to refuse.
pub fn resolve_reference(home: &Path, model: PathBuf) -> Result<PathBuf, String> {
    let Some(text) = model.to_str() else {
        return Ok(model);
    };
    let path_like = text.starts_with('.')
        || text.starts_with('/')
        || text.ends_with(".gguf")
        || text.ends_with(".gguf.enc");
    if model.exists() || path_like || super::registry::Reference::parse(text, false).is_err() {
        return Ok(model);
    }
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(home.join("models"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_model_file(p))
        .filter_map(|p| {
            let record = read_record(&p)?;
            (record.reference == text).then_some((record.body.created, p))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        format!("model {text}: no pulled model has this reference (edgellm model pull {text})")
    })
}

/// Checks a model file against the sha256 its pull recorded (or `expected`).
pub fn verify(model: &Path, expected: Option<&str>) -> Result<String, DeliveryError> {
    let want = match expected {
        Some(sha) => sha.to_string(),
        None => read_record(model).map(|r| r.body.sha256).ok_or_else(|| {
            DeliveryError::Model(format!("{}: no pull record beside it", model.display()))
        })?,
    };
    let actual = crate::model::import::sha256_file(model)
        .map_err(|e| DeliveryError::Model(format!("{e:#}")))?;
    if actual != want {
        return Err(DeliveryError::Model(format!(
            "{}: sha256 {actual}, expected {want}",
            model.display()
        )));
    }
    Ok(actual)
}

/// Makes `model` active (after the caller's health gate); the active one becomes previous.
pub fn activate(home: &Path, model: &Path, sha256: String) -> Result<Slots, DeliveryError> {
    let slot = Slot {
        name: model
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        path: model.to_path_buf(),
        sha256,
        reference: read_record(model).map(|r| r.reference),
        activated: super::push::unix_now(),
    };
    let previous = load(home)?
        .map(|s| s.active)
        .filter(|a| a.path != slot.path);
    let slots = Slots {
        active: slot,
        previous,
        boots: 0,
    };
    save(home, &slots)?;
    Ok(slots)
}

/// Swaps active and previous, after checking the previous file is still intact.
pub fn rollback(home: &Path) -> Result<Slots, DeliveryError> {
    let slots = load(home)?
        .ok_or_else(|| DeliveryError::Model("nothing was activated; no rollback".into()))?;
    let previous = slots
        .previous
        .ok_or_else(|| DeliveryError::Model("there is no previous model to roll back to".into()))?;
    verify(&previous.path, Some(&previous.sha256))?;
    let rolled = Slots {
        active: previous,
        previous: Some(slots.active),
        boots: 0,
    };
    save(home, &rolled)?;
    Ok(rolled)
}

/// Called by `serve` before it loads `model`: counts the start, and rolls back first when the
/// active model has failed `MAX_FAILED_BOOTS` starts in a row. Returns the model to load and
/// whether it rolled back.
pub fn begin_boot(home: &Path, model: &Path) -> Result<(PathBuf, bool), DeliveryError> {
    let Some(mut slots) = load(home)? else {
        return Ok((model.to_path_buf(), false));
    };
    if slots.active.path != model {
        return Ok((model.to_path_buf(), false));
    }
    if slots.boots >= MAX_FAILED_BOOTS && slots.previous.is_some() {
        let mut rolled = rollback(home)?;
        rolled.boots = 1;
        save(home, &rolled)?;
        return Ok((rolled.active.path, true));
    }
    slots.boots += 1;
    save(home, &slots)?;
    Ok((model.to_path_buf(), false))
}

/// Called by `serve` once `model` has loaded: the start counts as good.
pub fn boot_succeeded(home: &Path, model: &Path) -> Result<(), DeliveryError> {
    if let Some(mut slots) = load(home)?
        && slots.active.path == model
        && slots.boots != 0
    {
        slots.boots = 0;
        save(home, &slots)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, String) {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let sha = crate::model::import::sha256_file(&path).unwrap();
        (path, sha)
    }

    #[test]
    fn activate_rollback_and_the_boot_counter() {
        let home = tempfile::tempdir().unwrap();
        let (a, sha_a) = model(home.path(), "a.gguf", b"model a");
        let (b, sha_b) = model(home.path(), "b.gguf", b"model b");
        assert_eq!(active_model(home.path()), None);
        activate(home.path(), &a, sha_a).unwrap();
        let slots = activate(home.path(), &b, sha_b).unwrap();
        assert_eq!(
            (slots.active.path.clone(), slots.previous.unwrap().path),
            (b.clone(), a.clone())
        );
        assert_eq!(active_model(home.path()), Some(b.clone()));

        // Three starts of b that never load; the fourth start rolls back to a.
        for n in 1..=MAX_FAILED_BOOTS {
            assert_eq!(begin_boot(home.path(), &b).unwrap(), (b.clone(), false));
            assert_eq!(load(home.path()).unwrap().unwrap().boots, n);
        }
        assert_eq!(begin_boot(home.path(), &b).unwrap(), (a.clone(), true));
        boot_succeeded(home.path(), &a).unwrap();
        let slots = load(home.path()).unwrap().unwrap();
        assert_eq!((slots.active.path, slots.boots), (a.clone(), 0));

        // A previous file changed on disk is not rolled back to.
        std::fs::write(&b, b"tampered").unwrap();
        let error = rollback(home.path()).unwrap_err().to_string();
        assert!(error.contains("sha256"), "{error}");
        assert_eq!(active_model(home.path()), Some(a));
    }
}
