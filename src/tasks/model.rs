//! [`RouterModel`]: the gateway's [`TaskModel`]. A task run is one chat generation through the
//! routing walk (local first, the same escalation rules as any request), greedy and constrained
//! by the run schema, collected whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{ModelFailure, TaskGeneration, TaskModel, TaskRequest};
use crate::engine::{ChatMessage, SamplingParams};
use crate::route::RouteOverride;
use crate::router::{Mode, Router};
use crate::service::{Generation, OutputFormat, Prompt, Step};

/// Runs task generations through the routing walk.
#[derive(Clone)]
pub struct RouterModel {
    router: Arc<Router>,
}

impl RouterModel {
    pub fn new(router: Arc<Router>) -> RouterModel {
        RouterModel { router }
    }

    async fn run(&self, request: TaskRequest) -> Result<TaskGeneration, ModelFailure> {
        let generation = Generation {
            sources: Vec::new(),
            prompt: Prompt::Chat(vec![
                ChatMessage::new("system", &request.system),
                ChatMessage::new("user", &request.user),
            ]),
            params: SamplingParams {
                temperature: 0.0,
                max_tokens: request.max_tokens,
                ..SamplingParams::default()
            },
            format: OutputFormat::JsonSchema(request.schema),
            tools: None,
        };
        let mut routed = self
            .router
            .start(generation, RouteOverride::Auto, Mode::Whole)
            .await?;
        let mut text = String::new();
        loop {
            match routed.next().await? {
                Step::Token(token) => text.push_str(&token.text),
                // Task generations offer no tools; a tier that answers with calls anyway is
                // refused by the output check before this point.
                Step::ToolCalls(_) | Step::Progress(_) => {}
                Step::Done(summary) => {
                    text.push_str(&summary.tail_text);
                    break;
                }
            }
        }
        Ok(TaskGeneration {
            text,
            tier: routed.meta.tier.clone(),
        })
    }
}

impl TaskModel for RouterModel {
    fn generate(
        &self,
        request: TaskRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TaskGeneration, ModelFailure>> + Send + '_>> {
        Box::pin(self.run(request))
    }
}
