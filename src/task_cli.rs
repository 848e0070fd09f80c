//! `edgellm task NAME --input FILE`: one task run from the shell, in-process. The configuration
//! is loaded as `serve` loads it; the engine, the routing walk, the action registry and its
//! ledger audit are the same as the server's. Prints the outcome in the HTTP endpoint's shape.

use std::io::Read;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::TaskArgs;
use crate::engine::Engine;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::serve::{load_config, open_ledger};
use crate::tasks::RunOptions;

pub fn run(args: &TaskArgs) -> anyhow::Result<()> {
    let config = load_config(&args.serve)?;
    if !config.tasks.iter().any(|t| t.name == args.name) {
        anyhow::bail!("no task named {:?} in the configuration", args.name);
    }
    let input = read_input(&args.input)?;
    let ledger = open_ledger(&config)?;
    let engine = Engine::start(config.engine.clone()).context("cannot load the model")?;
    let cell = Arc::new(crate::engine::EngineSlot::default());
    cell.set(engine);
    // Wired as `serve` wires it: remote tiers pass the same egress guard.
    let gateway = Gateway::new(Arc::new(config), cell, ledger, Arc::new(Metrics::default()))?;
    let tasks = &gateway.tasks;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = RunOptions {
        dry_run: args.dry_run,
        allowlist: None,
        request_id: Some(crate::api::request_id("task-")),
    };
    let outcome = runtime.block_on(tasks.run(&args.name, &input, &options));
    // Whatever happened, the audit records of the calls that ran are written before exiting.
    tasks.close();
    let outcome = outcome?;
    let body = crate::api::task_json(&args.name, &outcome);
    let text = if args.json {
        body.to_string()
    } else {
        serde_json::to_string_pretty(&body)?
    };
    println!("{text}");
    Ok(())
}

fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the input from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the input file {}", path.display()))
}
