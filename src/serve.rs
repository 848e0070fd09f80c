//! `edgellm serve`: configuration, model loading, the HTTP listener and graceful shutdown.
//!
//! The listener starts before the model is loaded, so `/health` answers 503 while it loads (what
//! orchestrators and llama-server clients expect), then 200. With `[mqtt]` configured the MQTT
//! bridge runs beside the listener; on shutdown it is cancelled with the listener, awaited
//! briefly, and then the audit records still queued are written.

use std::sync::{Arc, OnceLock};

use anyhow::Context;

use crate::api;
use crate::cli::ServeArgs;
use crate::config::{RawConfig, ServeConfig};
use crate::engine::{Engine, EngineSlot};
use crate::gateway::Gateway;
use crate::ledger::{Ledger, LedgerOptions};
use crate::metrics::Metrics;
use crate::mqtt::MqttBridge;
use tokio_util::sync::CancellationToken;

/// Reads the config file, lays flags and environment over it, and validates the result.
pub fn load_config(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    let mut raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    args.overlay(&mut raw);
    let mut config = ServeConfig::from_raw(raw)?;
    config.engine.verbose_llama_logs = args.verbose;
    Ok(config)
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let config = load_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGELLM_LOG")
        // tss-esapi logs each TPM refusal as its own error; edgellm says it once, with the why.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tss_esapi=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// The ledger, when anything can leave the device (a remote tier) or act (an action), or when
/// `[budget] prompt_log` asks for prompts and answers to be kept. It is opened before the first
/// request: an unsettled reservation from an earlier run becomes in doubt here, counted and
/// never re-sent.
pub fn open_ledger(config: &ServeConfig) -> anyhow::Result<Option<Arc<Ledger>>> {
    let needed = config.routing.tiers.iter().any(|t| !t.on_device())
        || !config.actions.is_empty()
        || config.egress.budget.prompt_log_retention_days.is_some();
    if !needed {
        return Ok(None);
    }
    let mut options = LedgerOptions::from_budget(&config.egress.budget);
    if config.engine.keys.encrypt_prompt_log && options.prompt_log_retention_days.is_some() {
        // Fail closed: a prompt log that was asked to be encrypted is not written in the clear.
        let key = crate::vault::LocalKey::for_device(&config.engine.keys, "edgellm prompt log v1")
            .context("[keys] encrypt_prompt_log: cannot derive the prompt log's key")?;
        options.prompt_key = Some(Arc::new(key));
    }
    let ledger = Ledger::open_in(&config.data_dir, options, jiff::Timestamp::now())
        .with_context(|| format!("cannot open the ledger in {}", config.data_dir.display()))?;
    tracing::info!(path = %config.data_dir.join(crate::ledger::FILE_NAME).display(), "ledger open");
    Ok(Some(Arc::new(ledger)))
}

/// A model `serve` could not load: which one, its file, and why.
struct LoadFailure {
    embedding: bool,
    path: std::path::PathBuf,
    error: crate::engine::EngineError,
}

/// Loads the generation model, then the embedding model when one is configured (one after the
/// other: on a small device they would only compete for the same cores). One that fails does
/// not keep the other from loading; the failures are returned.
fn load_models(
    engine_config: crate::engine::EngineConfig,
    embed_config: Option<crate::engine::embed::EmbedConfig>,
    engine_cell: &EngineSlot,
    embed_cell: &OnceLock<crate::engine::embed::Embedder>,
    metrics: &Metrics,
    on_loaded: impl FnOnce(&Engine),
) -> Vec<LoadFailure> {
    let mut failures = Vec::new();
    let path = engine_config.model_path.clone();
    if let Err(error) = load_engine(engine_config, engine_cell, metrics, on_loaded) {
        // A configuration mistake ends the start (`report_load_failures`): nothing more to load.
        let refuses_start = !matches!(error, crate::engine::EngineError::Vault { .. });
        failures.push(LoadFailure {
            embedding: false,
            path,
            error,
        });
        if refuses_start {
            return failures;
        }
    }
    if let Some(embed_config) = embed_config {
        let started = std::time::Instant::now();
        let path = embed_config.model_path.clone();
        match crate::engine::embed::Embedder::start(embed_config) {
            Ok(embedder) => {
                let info = embedder.info();
                tracing::info!(
                    model = %info.id, dimensions = info.n_embd, pooling = info.pooling,
                    max_input_tokens = info.max_input_tokens,
                    load_ms = started.elapsed().as_millis() as u64, "embedding model loaded"
                );
                let _ = embed_cell.set(embedder);
            }
            Err(error) => failures.push(LoadFailure {
                embedding: true,
                path,
                error,
            }),
        }
    }
    failures
}

fn load_engine(
    engine_config: crate::engine::EngineConfig,
    engine_cell: &EngineSlot,
    metrics: &Metrics,
    on_loaded: impl FnOnce(&Engine),
) -> Result<(), crate::engine::EngineError> {
    let engine = Engine::start(engine_config)?;
    // Before /health turns ready, so whoever sees a ready server also sees the boot recorded.
    on_loaded(&engine);
    let info = engine.info();
    tracing::info!(
        model = %info.id, load_ms = info.load_time.as_millis() as u64,
        model_mib = info.buffers.model_bytes >> 20, kv_mib = info.buffers.kv_cache_bytes >> 20,
        compute_mib = info.buffers.compute_bytes >> 20,
        rss_before_model_mib = info.resident.before_model >> 20,
        rss_after_model_mib = info.resident.after_model >> 20,
        rss_after_context_mib = info.resident.after_context >> 20,
        template = info.template.as_str(), "model loaded"
    );
    metrics.set_model_load_time(info.load_time);
    engine.prepare_constraints();
    engine_cell.set(engine);
    Ok(())
}

/// Serves one listener until `stop`, then waits for its open connections to finish their
/// requests. HTTP/1 header names go out in title case (`Access-Control-Allow-Origin`), as
/// llama-server writes them: clients that copy headers into a plain map look them up so.
async fn accept(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let graceful = GracefulShutdown::new();
    let builder = Builder::new(TokioExecutor::new()).title_case_headers(true);
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors, say: back off rather than spin.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                });
            }
            () = &mut stopped => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let mut listeners = Vec::with_capacity(config.listen.len());
    for address in &config.listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        tracing::info!(address = %address, model = %config.engine.model_path.display(), slots = config.engine.slots, "listening");
        listeners.push(listener);
    }
    let engine_cell = Arc::new(EngineSlot::default());
    let metrics = Arc::new(Metrics::default());
    let config = Arc::new(config);
    let ledger = open_ledger(&config)?;
    if let Some(ledger) = &ledger {
        // Retention: expired audit and prompt-log rows go hourly, not only at start-up.
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
            hourly.tick().await;
            loop {
                hourly.tick().await;
                let ledger = ledger.clone();
                let purged =
                    tokio::task::spawn_blocking(move || ledger.purge(jiff::Timestamp::now())).await;
                if !matches!(purged, Ok(Ok(_))) {
                    tracing::warn!("cannot purge expired ledger rows");
                }
            }
        });
    }
    let gateway = Arc::new(
        Gateway::new(config.clone(), engine_cell.clone(), ledger, metrics.clone())
            .context("cannot set up tasks and actions")?,
    );
    // Batches that arrive while the model loads fail (counted in task_errors).
    let bridge = start_bridge(&config, &gateway, &metrics)?;
    let telemetry = start_telemetry(&config, &gateway, &metrics)?;

    // Load the model on a blocking thread while the listener already answers /health with 503.
    let mut engine_config = config.engine.clone();
    // The A/B slots' boot counter: a start of the active model counts until it has loaded;
    // after too many that never did, this start rolls back to the previous model.
    let home = crate::paths::home();
    let (model, rolled_back) =
        crate::delivery::slots::begin_boot(&home, &engine_config.model_path)?;
    if rolled_back {
        tracing::error!(
            failed = %engine_config.model_path.display(), now = %model.display(),
            "the active model failed to load {} starts in a row: rolled back",
            crate::delivery::slots::MAX_FAILED_BOOTS
        );
        let mut record = crate::delivery::policy::audit_record(
            "auto_rollback",
            &crate::delivery::policy::file_label(&model),
            None,
            crate::ledger::Outcome::Ok,
        );
        record.detail = Some(format!(
            "failed_boots={}",
            crate::delivery::slots::MAX_FAILED_BOOTS
        ));
        audit(&config, record).await;
        engine_config.model_path = model;
    }
    let booted_model = engine_config.model_path.clone();
    // Serving the active slot's model: follow the slots while running.
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let follows = crate::delivery::slots::load(&home)
        .ok()
        .flatten()
        .is_some_and(|s| s.active.path == booted_model);
    if follows && let Ok(Some(slots)) = crate::delivery::slots::load(&home) {
        // The active slot's model is checked against the sha256 its signed manifest gave (an
        // encrypted one is authenticated segment by segment as it is decrypted; its manifest's
        // sha256 is the container's, not the plaintext's the engine compares).
        if !crate::vault::is_container(&booted_model) {
            engine_config.sha256 = Some(slots.active.sha256);
        }
    }
    let booted_rate = Arc::new(std::sync::OnceLock::new());
    if follows {
        tokio::spawn(follow_slots(
            home.clone(),
            booted_model.clone(),
            engine_cell.clone(),
            booted_rate.clone(),
            config.clone(),
            shutdown_rx.clone(),
        ));
    }
    if let Some(idle) = config.sleep_idle {
        tokio::spawn(sleep_when_idle(
            engine_cell.clone(),
            gateway.service.clone(),
            idle,
            shutdown_rx.clone(),
        ));
    }
    let embed_config = config.embedding.as_ref().map(|e| {
        let mut engine = e.engine.clone();
        engine.keys = config.engine.keys.clone();
        engine
    });
    let embed_cell = gateway.embeddings.cell().clone();
    let embeddings = gateway.embeddings.clone();
    let (boot_home, boot_model) = (home.clone(), booted_model.clone());
    let (load_failed_tx, load_failed) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let failures = load_models(
            engine_config,
            embed_config,
            &engine_cell,
            &embed_cell,
            &metrics,
            |engine| {
                if let Err(error) = crate::delivery::slots::boot_succeeded(&boot_home, &boot_model)
                {
                    tracing::warn!(%error, "cannot clear the boot counter");
                }
                // The activation gate's yardstick, measured before any request competes.
                if follows {
                    match crate::delivery::gate::decode_rate(engine) {
                        Ok(rate) => {
                            let _ = booted_rate.set(rate);
                        }
                        Err(error) => tracing::warn!(%error, "cannot measure the decode rate"),
                    }
                }
            },
        );
        if !failures.is_empty() {
            // Before anyone hears of it: /health and requests name the reason from now on.
            for failure in &failures {
                let reason = failure.error.to_string();
                if failure.embedding {
                    embeddings.fail(reason);
                } else {
                    engine_cell.fail(reason);
                }
            }
            let _ = load_failed_tx.send(failures);
        }
    });

    let grace = config.shutdown_grace;
    // One app behind every listener; each stops taking connections at shutdown.
    let app = api::app(gateway.clone());
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        servers.spawn(accept(listener, app.clone(), shutdown_rx.clone()));
    }
    let server = tokio::spawn(async move {
        while let Some(joined) = servers.join_next().await {
            joined??;
        }
        Ok::<(), anyhow::Error>(())
    });

    let signal = tokio::select! {
        signal = shutdown_signal() => signal,
        Ok(failures) = load_failed => {
            report_load_failures(&config, &home, &booted_model, follows, failures).await?;
            shutdown_signal().await
        }
    };
    tracing::info!(
        signal,
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, finishing in-flight requests"
    );
    let _ = shutdown_tx.send(true);
    if let Some(telemetry) = &telemetry {
        // What is buffered stays in the file and is sent after the next start.
        telemetry.cancel();
    }
    let bridge = bridge.map(|bridge| {
        bridge.stop.cancel();
        bridge.task
    });
    let served = tokio::time::timeout(grace, server).await;
    if let Some(bridge) = bridge
        && tokio::time::timeout(BRIDGE_STOP, bridge).await.is_err()
    {
        tracing::warn!("the MQTT bridge did not stop in time");
    }
    // Every action has run (or been cancelled): write the audit records still queued.
    let tasks = gateway.tasks.clone();
    let _ = tokio::task::spawn_blocking(move || tasks.close()).await;
    match served {
        Ok(result) => {
            result
                .context("server task failed")?
                .context("server failed")?;
            tracing::info!("stopped");
        }
        Err(_) => tracing::warn!("grace period over: cancelling the requests still running"),
    }
    Ok(())
}

/// How often a server serving the active slot's model looks at the slots file.
const SLOTS_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Hot activation: when `edgellm model activate` (or `rollback`) makes another model active, the
/// server loads it beside the one it serves, checks its signed sha256, runs the health gate
/// (`[activation]`: golden prompts, decode rate against the running model's), and only then
/// switches. Requests in flight finish on the old engine, which is freed when the last of them
/// ends. A model that fails is not served: the slots roll back to the one still running.
async fn follow_slots(
    home: std::path::PathBuf,
    mut serving: std::path::PathBuf,
    cell: Arc<EngineSlot>,
    booted_rate: Arc<std::sync::OnceLock<f64>>,
    config: Arc<ServeConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use crate::delivery::slots;
    let mut refused: Option<std::path::PathBuf> = None;
    // The rate the last activated model showed in its gate; until one is, the booted model's.
    let mut activated_rate: Option<f64> = None;
    let mut unreadable = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SLOTS_POLL) => {}
            _ = stop.changed() => return,
        }
        let state = match slots::load(&home) {
            Ok(Some(state)) => {
                unreadable = false;
                state
            }
            Ok(None) => continue,
            Err(error) => {
                // Keep serving; say so once, not every poll.
                if !unreadable {
                    tracing::error!(%error, "the slots file is unreadable: no activation until it is fixed");
                }
                unreadable = true;
                continue;
            }
        };
        let target = state.active.path;
        if target == serving {
            // Rolled back (or never changed): a later activation of a refused model is an
            // operator's new try, and is gated again.
            refused = None;
            continue;
        }
        if refused.as_ref() == Some(&target) || !(cell.is_loaded() || cell.is_asleep()) {
            continue;
        }
        tracing::info!(from = %serving.display(), to = %target.display(), "activating a model");
        let started = std::time::Instant::now();
        let rate = activated_rate.or_else(|| booted_rate.get().copied());
        let (cell_for, config_for, target_for) = (cell.clone(), config.clone(), target.clone());
        let switched = tokio::task::spawn_blocking(move || {
            switch_model(&cell_for, &config_for, &target_for, rate)
        })
        .await
        .map_err(|e| anyhow::anyhow!("the activation panicked: {e}"))
        .and_then(|r| r);
        let mut record = crate::delivery::policy::audit_record(
            "activate",
            &crate::delivery::policy::file_label(&target),
            None,
            match &switched {
                Ok(_) => crate::ledger::Outcome::Ok,
                Err(_) => crate::ledger::Outcome::Error("health_gate".into()),
            },
        );
        record.detail = Some("serve".into());
        audit(&config, record).await;
        match switched {
            Ok(new_rate) => {
                activated_rate = Some(new_rate);
                tracing::info!(
                    model = %target.display(), decode_tokens_per_second = new_rate,
                    switch_ms = started.elapsed().as_millis() as u64,
                    "activated: new requests go to the new model, requests in flight finish on the old one"
                );
                if let Err(error) = slots::boot_succeeded(&home, &target) {
                    tracing::warn!(%error, "cannot clear the boot counter");
                }
                serving = target;
            }
            Err(error) => {
                tracing::error!(
                    model = %target.display(), error = format!("{error:#}"),
                    "activation refused: still serving {}", serving.display()
                );
                refused = Some(target.clone());
                let restore = slots::load(&home).ok().flatten().filter(|s| {
                    s.active.path == target
                        && s.previous.as_ref().is_some_and(|p| p.path == serving)
                });
                if restore.is_some()
                    && let Err(error) = slots::rollback(&home)
                {
                    tracing::error!(%error, "cannot roll the slots back");
                }
            }
        }
    }
}

/// Appends a delivery step's audit row to the ledger in the data directory (a failure is
/// logged: serving goes on).
async fn audit(config: &ServeConfig, record: crate::ledger::AuditRecord) {
    let dir = config.data_dir.clone();
    let options = crate::ledger::LedgerOptions::from_budget(&config.egress.budget);
    let _ = tokio::task::spawn_blocking(move || {
        crate::delivery::policy::record_in(&dir, options, &record)
    })
    .await;
}

/// A model that does not load is an audit row. One that this device refuses to open (a TPM that
/// refuses, a modified container, a sha256 that differs) is one error line, and the server
/// stays up without it: `/health` answers 503 naming it, requests that need it too, remote
/// tiers still answer. Except when the active delivery slot's model fails and a previous one is
/// on disk: then the start fails, and the boot counter rolls back to the previous model after a
/// few (`slots::begin_boot`). Any other load error (not a GGUF, not an embedding model) refuses
/// the start.
async fn report_load_failures(
    config: &ServeConfig,
    home: &std::path::Path,
    booted_model: &std::path::Path,
    follows: bool,
    failures: Vec<LoadFailure>,
) -> anyhow::Result<()> {
    for failure in &failures {
        let class = match &failure.error {
            crate::engine::EngineError::Vault { error, .. } => error.class(),
            _ => "engine",
        };
        let record = crate::delivery::policy::audit_record(
            "load",
            &crate::delivery::policy::file_label(&failure.path),
            None,
            crate::ledger::Outcome::Error(class.to_string()),
        );
        audit(config, record).await;
    }
    let can_roll_back = follows
        && crate::delivery::slots::load(home)
            .ok()
            .flatten()
            .is_some_and(|s| s.active.path == booted_model && s.previous.is_some());
    for failure in failures {
        let which = if failure.embedding {
            "the embedding model"
        } else {
            "the model"
        };
        // A configuration mistake (not a GGUF, not an embedding model) refuses the start, as
        // llama-server does; only what this device's keys or the file's integrity refuse keeps
        // the server up to report it.
        if !matches!(failure.error, crate::engine::EngineError::Vault { .. }) {
            return Err(anyhow::Error::new(failure.error).context("cannot serve"));
        }
        if !failure.embedding && can_roll_back {
            return Err(anyhow::Error::new(failure.error)
                .context("cannot serve (the next start rolls back to the previous model)"));
        }
        tracing::error!(
            error = %failure.error,
            "{which} did not load; serving without it (/health answers 503 naming it)"
        );
    }
    Ok(())
}

/// Puts the model to sleep (`EngineSlot::sleep`: it is unloaded) once no request has needed it
/// for `idle`; the next request that needs it wakes it (`LocalService::require_engine`).
async fn sleep_when_idle(
    cell: Arc<EngineSlot>,
    service: crate::service::LocalService,
    idle: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let poll = (idle / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(5),
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        if service.in_flight() > 0 {
            // A long request is not idleness: the timeout counts from its end.
            cell.touch();
            continue;
        }
        if cell.is_loaded() && cell.idle_for() >= idle && cell.sleep() {
            tracing::info!(
                idle_secs = idle.as_secs_f64(),
                "model asleep (unloaded until a request needs it)"
            );
            // The engine's worker frees the model and context once the last handle is gone;
            // hand the freed heap back to the system after it has.
            tokio::task::spawn_blocking(|| {
                std::thread::sleep(std::time::Duration::from_millis(200));
                // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
                unsafe { libc::malloc_trim(0) };
            });
        }
    }
}

/// Loads `model` beside the running engine, gates it, and puts it in `cell`.
fn switch_model(
    cell: &EngineSlot,
    config: &ServeConfig,
    model: &std::path::Path,
    running_rate: Option<f64>,
) -> anyhow::Result<f64> {
    crate::delivery::slots::verify(model, None)?;
    let mut engine_config = config.engine.clone();
    engine_config.model_path = model.to_path_buf();
    // Checked against its pull record just above (`[model] sha256` is the boot model's).
    engine_config.sha256 = None;
    let candidate = Engine::start(engine_config)?;
    let rate = crate::delivery::gate::check(&candidate, running_rate, &config.activation)?;
    candidate.prepare_constraints();
    cell.set(candidate);
    Ok(rate)
}

/// How long the MQTT bridge gets to send DISCONNECT after shutdown starts.
const BRIDGE_STOP: std::time::Duration = std::time::Duration::from_secs(2);

struct RunningBridge {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the MQTT bridge when `[mqtt]` is configured; its counters go into `/metrics`. It
/// shares the HTTP side's routing walk and action registry (one model, shared rate limits).
fn start_bridge(
    config: &ServeConfig,
    gateway: &Gateway,
    metrics: &Metrics,
) -> anyhow::Result<Option<RunningBridge>> {
    let Some(mqtt) = &config.mqtt else {
        return Ok(None);
    };
    let tasks = &gateway.tasks;
    let bridge = MqttBridge::new(
        mqtt.clone(),
        &tasks.tasks(),
        tasks.model(),
        tasks.registry(),
        false,
    )
    .context("cannot start the MQTT bridge")?;
    metrics.set_mqtt_counters(bridge.counters());
    tracing::info!(broker = %format!("{}:{}", mqtt.host, mqtt.port), subscriptions = mqtt.subscriptions.len(), "mqtt bridge starting");
    let stop = CancellationToken::new();
    let task = tokio::spawn(bridge.run(stop.clone()));
    Ok(Some(RunningBridge { stop, task }))
}

/// Starts the telemetry pusher when `[telemetry]` is configured; its buffer opens here, so a
/// bad data directory stops the start. Returns what stops it.
fn start_telemetry(
    config: &ServeConfig,
    gateway: &Arc<Gateway>,
    metrics: &Metrics,
) -> anyhow::Result<Option<CancellationToken>> {
    let Some(telemetry) = &config.telemetry else {
        return Ok(None);
    };
    let pusher = crate::telemetry::Pusher::new(
        telemetry.clone(),
        config.egress.network.clone(),
        &config.data_dir,
    )
    .context("cannot start telemetry")?;
    metrics.set_telemetry_stats(pusher.stats.clone());
    tracing::info!(url = %telemetry.url, interval_secs = telemetry.interval.as_secs(), "telemetry push starting");
    let stop = CancellationToken::new();
    let source: Arc<dyn crate::telemetry::Source> = gateway.clone();
    tokio::spawn(pusher.run(source, stop.clone()));
    Ok(Some(stop))
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
