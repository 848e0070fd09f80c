//! The check every remote answer passes before the router sees it, the same one local output
//! passes: tool calls fit the request's tools (`ToolSet::check`), JSON output parses and matches
//! the request's schema. A streamed answer that must be checked is held until it is complete.

use futures::StreamExt;
use serde_json::Value;

use super::{EventStream, UpstreamError, UpstreamEvent, UpstreamRequest};
use crate::engine::{StopReason, ToolCall};

/// Checks a whole answer.
pub(super) fn answer(
    request: &UpstreamRequest,
    text: &str,
    calls: &[ToolCall],
    stop: &StopReason,
) -> Result<(), UpstreamError> {
    match &request.tools {
        Some(tools) => tools.check(calls).map_err(UpstreamError::InvalidOutput)?,
        None if !calls.is_empty() => return Err(uninvited_calls()),
        None => {}
    }
    // As for local output, JSON cut off by the token limit is passed on as it is ("length").
    let Some(format) = &request.json else {
        return Ok(());
    };
    if !calls.is_empty() || *stop == StopReason::Length {
        return Ok(());
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| UpstreamError::InvalidOutput(format!("the answer is not JSON: {e}")))?;
    match format {
        Value::Null if !value.is_object() => Err(UpstreamError::InvalidOutput(
            "the answer is not a JSON object".into(),
        )),
        Value::Null => Ok(()),
        schema => {
            let validator = jsonschema::validator_for(schema).map_err(|e| {
                UpstreamError::InvalidOutput(format!("the request's schema is invalid: {e}"))
            })?;
            validator.validate(&value).map_err(|e| {
                UpstreamError::InvalidOutput(format!(
                    "the answer does not match the JSON schema: {e}"
                ))
            })
        }
    }
}

fn uninvited_calls() -> UpstreamError {
    UpstreamError::InvalidOutput("the answer calls tools, but the request offered none".into())
}

/// A stream passed on as it comes (no tools, no JSON), where tool calls are an error.
pub(super) fn without_calls(events: EventStream) -> EventStream {
    Box::pin(events.map(|event| match event {
        Ok(UpstreamEvent::ToolCalls(_)) => Err(uninvited_calls()),
        other => other,
    }))
}

/// Reads a streamed answer to its end, checks it, and replays it: its text as one delta, its
/// tool calls, the end. A failure here happens before any of it reached the client.
pub(super) async fn held(
    request: &UpstreamRequest,
    mut events: EventStream,
) -> Result<EventStream, UpstreamError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    while let Some(event) = events.next().await {
        match event? {
            UpstreamEvent::Delta(delta) => text.push_str(&delta),
            UpstreamEvent::ToolCalls(more) => calls.extend(more),
            UpstreamEvent::Done { stop_reason, usage } => {
                answer(request, &text, &calls, &stop_reason)?;
                let mut replay = Vec::new();
                if !text.is_empty() {
                    replay.push(Ok(UpstreamEvent::Delta(text)));
                }
                if !calls.is_empty() {
                    replay.push(Ok(UpstreamEvent::ToolCalls(calls)));
                }
                replay.push(Ok(UpstreamEvent::Done { stop_reason, usage }));
                return Ok(Box::pin(futures::stream::iter(replay)));
            }
        }
    }
    Err(UpstreamError::Transport(
        "the stream ended before the answer did".into(),
    ))
}
