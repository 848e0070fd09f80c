//! One gateway, wired in one place: the validated configuration, the local service on the
//! engine, the ledger, the egress guard, the routing walk and the task runtime (tasks, the
//! action registry and its ledger audit). `serve`, `edgellm task` and the tests all build it
//! with [`Gateway::new`]; the HTTP handlers get it as their one state.

use std::sync::Arc;

use crate::actions::ActionError;
use crate::config::ServeConfig;
use crate::egress::EgressGuard;
use crate::engine::EngineSlot;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::service::LocalService;
use crate::tasks::TaskRuntime;

pub struct Gateway {
    pub config: Arc<ServeConfig>,
    pub metrics: Arc<Metrics>,
    /// The embedded engine's service (the engine cell fills when the model has loaded).
    pub service: LocalService,
    /// The spend and audit store; open when anything can leave the device or act (remote tiers,
    /// actions), `None` otherwise.
    pub ledger: Option<Arc<Ledger>>,
    /// The routing walk (tiers, breakers, the egress guard).
    pub router: Arc<Router>,
    /// Tasks, the action registry (audited to the ledger) and the model of task runs; shared
    /// by the HTTP endpoint, the MQTT bridge and `edgellm task`.
    pub tasks: Arc<TaskRuntime>,
    /// Unix time the gateway was built (the `created` of the model list).
    pub started_unix: u64,
    /// The embedding model's service (`serve` loads the model into its cell).
    pub embeddings: crate::embeddings::EmbeddingService,
    /// Streamed answers a client may resume (`X-Conversation-Id`, `/v1/stream`).
    pub(crate) streams: crate::api::resume::Sessions,
}

impl Gateway {
    /// Fails when tasks and actions cannot be set up (the audit writer or the webhook client
    /// cannot start).
    pub fn new(
        config: Arc<ServeConfig>,
        engine: Arc<EngineSlot>,
        ledger: Option<Arc<Ledger>>,
        metrics: Arc<Metrics>,
    ) -> Result<Gateway, ActionError> {
        let service = LocalService::new(
            engine,
            config.limits.clone(),
            config.engine.slots,
            metrics.clone(),
        );
        // Remote tiers pass the egress guard; without a ledger nothing leaves the device.
        let egress = EgressGuard::for_ledger(&config.egress, ledger.as_ref());
        let router = Arc::new(
            Router::new(
                service.clone(),
                config.routing.clone(),
                metrics.clone(),
                egress,
            )
            .with_local_model(&config.model_alias),
        );
        let tasks = Arc::new(TaskRuntime::new(
            &config.tasks,
            &config.actions,
            router.clone(),
            ledger.clone(),
            metrics.clone(),
        )?);
        let embeddings =
            crate::embeddings::EmbeddingService::new(config.embedding.clone(), &config.limits)
                .with_gen_ai(metrics.clone());
        Ok(Gateway {
            embeddings,
            config,
            metrics,
            service,
            ledger,
            router,
            tasks,
            started_unix: unix_now(),
            streams: Default::default(),
        })
    }

    /// Whether handlers report prompt and answer text to the request record: for the log line
    /// (`server.log_prompts`) or for the ledger's prompt log (`[budget] prompt_log`). Both get
    /// it redacted.
    pub fn keeps_texts(&self) -> bool {
        self.config.log_prompts
            || self
                .ledger
                .as_ref()
                .is_some_and(|l| l.options().prompt_log_retention_days.is_some())
    }

    /// The whole `/metrics` text: the server's metrics, the breakers, and the egress guard's
    /// (with today's spend read from the ledger). The telemetry pusher scrapes the same text.
    pub async fn render_metrics(&self, scraper: crate::metrics::Scraper) -> String {
        // A sleeping engine's counters go on (they are the same once it wakes).
        let load = self.service.engine_load();
        let embed = self.embeddings.embedder().map(|e| e.load());
        let mut text = self.metrics.render(
            crate::metrics::EngineState {
                load: load.as_deref(),
                loaded: self.service.engine().is_some(),
                asleep: self.service.is_asleep(),
            },
            embed,
            self.config.engine.slots,
            scraper,
        );
        text.push_str(&self.metrics.render_breakers(&self.router.breaker_states()));
        if let Some(guard) = self.router.egress() {
            let ledger = guard.ledger().clone();
            let caps = *guard.caps();
            let usage = tokio::task::spawn_blocking(move || {
                ledger.usage_at(jiff::Timestamp::now(), &caps).ok()
            })
            .await
            .ok()
            .flatten();
            text.push_str(&crate::metrics::render_egress(
                &guard.metrics,
                usage.as_ref(),
                &caps,
            ));
        }
        if self.embeddings.config().is_some() {
            text.push_str(&crate::metrics::render_embeddings(
                &self.embeddings.metrics,
                self.embeddings.embedder().map(|e| e.load()),
            ));
        }
        let root = self.config.routing.sysfs_root.clone();
        if let Ok(reading) = tokio::task::spawn_blocking(move || crate::thermal::read(&root)).await
        {
            text.push_str(&crate::metrics::render_thermal(&reading));
        }
        text
    }

    pub fn model_name(&self) -> &str {
        &self.config.model_alias
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl crate::telemetry::Source for Gateway {
    fn scrape(&self) -> futures::future::BoxFuture<'_, String> {
        Box::pin(self.render_metrics(crate::metrics::Scraper::Push))
    }
}
