//! `edgellm model list | verify | activate | rollback | gc`: the A/B slots of pulled models
//! (`crate::delivery::slots`) from the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::Device;
use crate::delivery::gate::{DECODE_TOKENS as GATE_TOKENS, GateConfig};
use crate::delivery::policy::{audit_record, file_label};
use crate::delivery::slots::{self, Slots};
use crate::engine::{Engine, EngineConfig};
use crate::ledger::Outcome;

fn resolve(home: &Path, model: Option<&Path>) -> anyhow::Result<PathBuf> {
    match model {
        Some(path) if path.components().count() == 1 => Ok(home.join("models").join(path)),
        Some(path) => Ok(path.to_path_buf()),
        None => slots::load(home)?
            .map(|s| s.active.path)
            .context("nothing is active: name a model"),
    }
}

/// Pulled models: every GGUF in the model directory with a pull record beside it.
pub fn list(json: bool) -> anyhow::Result<()> {
    let home = crate::paths::home();
    let state = slots::load(&home)?;
    let role = |path: &Path| match &state {
        Some(s) if s.active.path == path => "active",
        Some(Slots {
            previous: Some(p), ..
        }) if p.path == path => "previous",
        _ => "",
    };
    let models: Vec<serde_json::Value> = slots::pulled(&home.join("models"))
        .iter()
        .filter_map(|path| {
            let record = slots::read_record(path)?;
            Some(serde_json::json!({
                "file": path.file_name()?.to_string_lossy(),
                "role": role(path),
                "reference": record.reference,
                "sha256": record.body.sha256,
                "size": record.body.size,
                "architecture": record.body.gguf.architecture,
                "parameters": record.body.gguf.parameters,
            }))
        })
        .collect();
    if json {
        let answer = serde_json::json!({"models": models, "slots": state});
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(());
    }
    if models.is_empty() {
        println!("no pulled models in {}", home.join("models").display());
    }
    for m in &models {
        let text = |key: &str| m[key].as_str().unwrap_or_default().to_string();
        let sha = text("sha256");
        println!(
            "{:<9} {}  {}  {} bytes  {}",
            text("role"),
            text("file"),
            text("reference"),
            m["size"],
            sha.get(..12).unwrap_or(&sha)
        );
    }
    Ok(())
}

pub fn verify(model: Option<&Path>) -> anyhow::Result<()> {
    let home = crate::paths::home();
    let path = resolve(&home, model)?;
    let sha = slots::verify(&path, None)?;
    println!("{}: sha256 {sha} as signed", path.display());
    Ok(())
}

pub fn activate(device: &Device, model: Option<&Path>) -> anyhow::Result<()> {
    let home = crate::paths::home();
    let Some(model) = model else {
        bail!("name the pulled model to activate (edgellm model list)");
    };
    let path = resolve(&home, Some(model))?;
    let record = audit_record("activate", &file_label(&path), None, Outcome::Ok);
    // Verified, gated, recorded in the slots: one audit row, naming the check that failed.
    let activated = match slots::verify(&path, None) {
        Err(e) => Err(("verify", anyhow::anyhow!("refused before loading: {e}"))),
        Ok(sha) => match health_gate(&path, &device.raw.activation) {
            Err(e) => Err((
                "health_gate",
                e.context("the health gate failed; the active model is unchanged"),
            )),
            Ok(rate) => slots::activate(&home, &path, sha)
                .map(|state| (state, rate))
                .map_err(|e| ("slots", e.into())),
        },
    };
    let (class, activated) = match activated {
        Ok(done) => ("", Ok(done)),
        Err((class, error)) => (class, Err(error)),
    };
    let (state, rate) = device.audit(record, class, activated)?;
    println!(
        "active: {} (health gate: loaded, decoded {GATE_TOKENS} tokens at {rate:.1} tokens/s{}){}",
        state.active.path.display(),
        match device.raw.activation.golden.len() {
            0 => String::new(),
            n => format!(", {n} golden prompts answered"),
        },
        state
            .previous
            .map(|p| format!("; previous: {}", p.path.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// Loads the model through the engine, decodes a short greedy completion and answers the
/// configured golden prompts; returns the decode rate.
fn health_gate(path: &Path, gate: &GateConfig) -> anyhow::Result<f64> {
    gate.validate()
        .map_err(|e| anyhow::anyhow!("[activation]: {e}"))?;
    let mut config = EngineConfig::new(path.to_path_buf());
    config.n_ctx = gate.context_needed();
    config.slots = 1;
    let engine = Engine::start(config)?;
    crate::delivery::gate::check(&engine, None, gate)
}

pub fn rollback(device: &Device) -> anyhow::Result<()> {
    let home = crate::paths::home();
    let previous = slots::load(&home)
        .ok()
        .flatten()
        .and_then(|s| s.previous)
        .map_or_else(|| "none".to_string(), |p| file_label(&p.path));
    let record = audit_record("rollback", &previous, None, Outcome::Ok);
    let state = device.audit(
        record,
        "rollback",
        slots::rollback(&home).map_err(Into::into),
    )?;
    println!("active: {} (rolled back)", state.active.path.display());
    Ok(())
}

pub fn gc(device: &Device) -> anyhow::Result<()> {
    let home = crate::paths::home();
    let Some(state) = slots::load(&home)? else {
        bail!("nothing is active yet: gc keeps every model until one is activated");
    };
    let kept: Vec<PathBuf> = Some(state)
        .iter()
        .flat_map(|s| {
            std::iter::once(s.active.path.clone()).chain(s.previous.iter().map(|p| p.path.clone()))
        })
        .collect();
    let (mut models, mut freed) = (0, 0u64);
    for path in slots::pulled(&home.join("models")) {
        if kept.contains(&path) {
            continue;
        }
        freed += std::fs::metadata(&path).map_or(0, |m| m.len());
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        let _ = std::fs::remove_file(slots::record_path(&path));
        models += 1;
    }
    // What interrupted pulls left (a pull resumes from it); a running pull holds a lock on its
    // partial file, which stays.
    let mut partials = 0;
    if let Ok(entries) = std::fs::read_dir(home.join("models")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with('.') && name.ends_with(".partial")) {
                continue;
            }
            let idle = std::fs::File::open(entry.path()).is_ok_and(|f| f.try_lock().is_ok());
            if idle {
                freed += entry.metadata().map_or(0, |m| m.len());
                let _ = std::fs::remove_file(entry.path());
                partials += 1;
            }
        }
    }
    let mut record = audit_record(
        "gc",
        &format!("{models} models, {partials} partial pulls"),
        None,
        Outcome::Ok,
    );
    record.detail = Some(format!("freed={freed}"));
    device.audit(record, "gc", Ok(()))?;
    println!("removed {models} models and {partials} partial pulls, {freed} bytes");
    Ok(())
}
