//! `edgellm model list | verify | activate | rollback | gc`: the A/B slots of pulled models
//! (`crate::delivery::slots`) from the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::delivery::gate::DECODE_TOKENS as GATE_TOKENS;
use crate::delivery::slots::{self, Slots};
use crate::engine::{Engine, EngineConfig};

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

pub fn activate(model: Option<&Path>) -> anyhow::Result<()> {
    let home = crate::paths::home();
    let Some(model) = model else {
        bail!("name the pulled model to activate (edgellm model list)");
    };
    let path = resolve(&home, Some(model))?;
    let sha = slots::verify(&path, None).context("refused before loading")?;
    let rate =
        health_gate(&path).context("the health gate failed; the active model is unchanged")?;
    let state = slots::activate(&home, &path, sha)?;
    println!(
        "active: {} (health gate: loaded, decoded {GATE_TOKENS} tokens at {rate:.1} tokens/s){}",
        state.active.path.display(),
        state
            .previous
            .map(|p| format!("; previous: {}", p.path.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// Loads the model through the engine and decodes a short greedy completion; returns the
/// decode rate.
fn health_gate(path: &Path) -> anyhow::Result<f64> {
    let mut config = EngineConfig::new(path.to_path_buf());
    config.n_ctx = 512;
    config.slots = 1;
    let engine = Engine::start(config)?;
    crate::delivery::gate::decode_rate(&engine)
}

pub fn rollback() -> anyhow::Result<()> {
    let home = crate::paths::home();
    let state = slots::rollback(&home)?;
    println!("active: {} (rolled back)", state.active.path.display());
    Ok(())
}

pub fn gc() -> anyhow::Result<()> {
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
    // What interrupted pulls left (a pull resumes from it; run gc when none is running).
    let mut partials = 0;
    if let Ok(entries) = std::fs::read_dir(home.join("models")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".partial") {
                freed += entry.metadata().map_or(0, |m| m.len());
                let _ = std::fs::remove_file(entry.path());
                partials += 1;
            }
        }
    }
    println!("removed {models} models and {partials} partial pulls, {freed} bytes");
    Ok(())
}
