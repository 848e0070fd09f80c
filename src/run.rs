//! `edgellm run`: one prompt on the local model, streamed to stdout, then speed and memory on
//! stderr (what `llama-cli` is in the llama.cpp world).

use std::io::Write;

use anyhow::{Context, bail};

use crate::cli::RunArgs;
use crate::engine::{
    ChatMessage, Engine, Event, GenerateRequest, ModelInfo, ProcessMemory, SamplingParams, Summary,
};

/// Text for `--synthetic-prompt`: ordinary gateway prose, so tokenization is typical.
const SYNTHETIC_TEXT: &str = "The gateway collects readings from forty sensors on the packaging line, \
    forwards alarms over MQTT, and keeps a rolling log of Modbus timeouts, PLC restarts and \
    temperature excursions for the maintenance team. ";

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let prompt = match (&args.prompt, &args.file) {
        (Some(prompt), _) => prompt.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read prompt file {}", file.display()))?,
        (None, None) if args.synthetic_prompt.is_some() => SYNTHETIC_TEXT.repeat(64),
        (None, None) => bail!("give a prompt with -p or a prompt file with -f"),
    };
    let engine = Engine::start(args.engine.to_config(1))?;
    let prompt = if args.chat {
        engine.apply_chat_template(&[ChatMessage::new("user", &prompt)])?
    } else {
        prompt
    };
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        max_tokens: args.n_predict,
        stop: args.stop.clone(),
        stop_at_eog: !args.ignore_eos,
        ..SamplingParams::default()
    };
    let mut prompt_tokens = engine.tokenize(&prompt);
    if let Some(n) = args.synthetic_prompt {
        if prompt_tokens.len() < n {
            bail!(
                "the synthetic prompt has only {} tokens",
                prompt_tokens.len()
            );
        }
        prompt_tokens.truncate(n);
    }
    let mut events = engine.submit(GenerateRequest::new(prompt_tokens, params))?;

    let mut text = String::new();
    let mut stdout = std::io::stdout().lock();
    let summary = loop {
        match events.blocking_recv() {
            // Not asked for.
            Some(Event::Progress(_)) => {}
            Some(Event::Token(token)) => {
                if !args.json {
                    stdout.write_all(token.text.as_bytes())?;
                    stdout.flush()?;
                }
                text.push_str(&token.text);
            }
            Some(Event::Done(summary)) => break summary,
            Some(Event::Failed(error)) => return Err(error.into()),
            None => bail!("the engine stopped unexpectedly"),
        }
    };
    text.push_str(&summary.tail_text);
    let memory = ProcessMemory::read();
    if args.json {
        let report = json_report(engine.info(), &summary, &memory, &text, args.chat);
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(stdout, "{}", summary.tail_text)?;
        drop(stdout);
        eprint!("{}", text_report(engine.info(), &summary, &memory));
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn stop_reason(summary: &Summary) -> String {
    match &summary.stop_reason {
        crate::engine::StopReason::EndOfGeneration => "end of generation".into(),
        crate::engine::StopReason::StopString(stop) => format!("stop string {stop:?}"),
        crate::engine::StopReason::Length => "length (-n reached)".into(),
    }
}

fn text_report(info: &ModelInfo, summary: &Summary, memory: &ProcessMemory) -> String {
    let swapped = if memory.swapped_bytes > 0 {
        format!("yes ({:.1} MiB)", mib(memory.swapped_bytes))
    } else {
        "no".into()
    };
    format!(
        "\n\
         model:               {} ({} parameters, {})\n\
         prompt tokens:       {}\n\
         prefill:             {:.1} tokens/s\n\
         time to first token: {:.1} ms\n\
         generated tokens:    {} (stopped: {})\n\
         decode:              {:.1} tokens/s\n\
         buffers:             model {:.1} MiB, KV cache {:.1} MiB, compute {:.1} MiB\n\
         peak resident:       {:.1} MiB\n\
         swapped:             {}\n",
        info.id,
        info.n_params,
        info.architecture,
        summary.prompt_tokens,
        summary.prefill_tokens_per_second(),
        summary.time_to_first_token().as_secs_f64() * 1000.0,
        summary.generated_tokens,
        stop_reason(summary),
        summary.decode_tokens_per_second(),
        mib(info.buffers.model_bytes),
        mib(info.buffers.kv_cache_bytes),
        mib(info.buffers.compute_bytes),
        mib(memory.peak_resident_bytes),
        swapped,
    )
}

fn json_report(
    info: &ModelInfo,
    summary: &Summary,
    memory: &ProcessMemory,
    text: &str,
    chat: bool,
) -> serde_json::Value {
    serde_json::json!({
        "model": info.id,
        "model_path": info.path,
        "architecture": info.architecture,
        "parameters": info.n_params,
        "template": if chat { info.template.as_str() } else { "none" },
        "n_ctx": info.n_ctx_slot,
        // From opening the file (decrypting it, for an encrypted model) to a ready context.
        "load_ms": info.load_time.as_secs_f64() * 1000.0,
        "text": text,
        "prompt_tokens": summary.prompt_tokens,
        "prefill_tokens_per_second": summary.prefill_tokens_per_second(),
        "time_to_first_token_ms": summary.time_to_first_token().as_secs_f64() * 1000.0,
        "generated_tokens": summary.generated_tokens,
        "decode_tokens_per_second": summary.decode_tokens_per_second(),
        "stop_reason": stop_reason(summary),
        "buffers": info.buffers,
        "memory": memory,
        "swapped": memory.swapped_bytes > 0,
    })
}
