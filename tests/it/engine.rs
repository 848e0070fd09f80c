//! The embedded engine on the real default model.

use std::time::Duration;

use edgellm::engine::{
    Engine, EngineConfig, EngineError, Event, GenerateRequest, SamplingParams, StopReason,
};

use crate::support::{default_model, generate, greedy, shared_engine, solo_engine, text_of};

const PROMPT: &str = "The three most common protocols for IoT devices are";

#[test]
fn generation_produces_text() {
    let engine = shared_engine();
    let (tokens, summary) = generate(engine, PROMPT, greedy(24));
    let text = text_of(&tokens, &summary);
    assert!(!text.trim().is_empty(), "no text generated");
    assert_eq!(summary.generated_tokens, tokens.len());
    assert!(summary.generated_tokens > 0 && summary.generated_tokens <= 24);
    assert_eq!(summary.prompt_tokens, engine.tokenize(PROMPT).len());
    if summary.generated_tokens == 24 {
        assert_eq!(summary.stop_reason, StopReason::Length);
    }
}

#[test]
fn greedy_is_deterministic() {
    let engine = solo_engine();
    let (a, _) = generate(engine, PROMPT, greedy(32));
    let (b, _) = generate(engine, PROMPT, greedy(32));
    let ids = |t: &[edgellm::engine::TokenEvent]| t.iter().map(|t| t.token).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
}

#[test]
fn seeds_reproduce_and_differ() {
    let engine = solo_engine();
    let sampled = |seed| SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(seed),
        max_tokens: 24,
        ..SamplingParams::default()
    };
    let ids = |seed| {
        generate(engine, PROMPT, sampled(seed))
            .0
            .iter()
            .map(|t| t.token)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(42), ids(42), "same seed, same tokens");
    let others: Vec<_> = (1..=4).map(ids).collect();
    assert!(
        others.iter().any(|o| *o != ids(42)),
        "different seeds all gave the same tokens"
    );
}

#[test]
fn stop_strings_stop_and_are_not_emitted() {
    let engine = solo_engine();
    let (tokens, summary) = generate(engine, PROMPT, greedy(40));
    let full = text_of(&tokens, &summary);
    // Stop at a word from the middle of what greedy decoding produces anyway.
    let words: Vec<&str> = full.split_whitespace().filter(|w| w.len() >= 4).collect();
    assert!(
        words.len() >= 2,
        "greedy output too short to pick a stop word: {full:?}"
    );
    let stop = words[words.len() / 2].to_string();
    let (tokens, summary) = generate(
        engine,
        PROMPT,
        SamplingParams {
            stop: vec![stop.clone()],
            ..greedy(40)
        },
    );
    let text = text_of(&tokens, &summary);
    assert_eq!(summary.stop_reason, StopReason::StopString(stop.clone()));
    assert!(!text.contains(&stop), "stop string emitted: {text:?}");
    assert_eq!(
        text,
        full[..full.find(&stop).unwrap()],
        "text before the stop string must match"
    );
}

#[test]
fn logprobs_are_real() {
    let engine = shared_engine();
    let (tokens, _) = generate(
        engine,
        PROMPT,
        SamplingParams {
            top_logprobs: 5,
            ..greedy(16)
        },
    );
    for token in &tokens {
        assert!(
            token.logprob <= 0.0 && token.logprob.is_finite(),
            "logprob {}",
            token.logprob
        );
        assert_eq!(token.top.len(), 5);
        // Greedy picks the most likely token: it heads the alternatives with the same logprob.
        assert_eq!(token.top[0].token, token.token);
        assert!((token.top[0].logprob - token.logprob).abs() < 1e-5);
        assert!(token.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        let mass: f32 = token.top.iter().map(|t| t.logprob.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "top-5 probability mass {mass}");
    }
}

#[test]
fn context_overflow_is_refused_with_the_numbers() {
    let engine = shared_engine();
    let n_ctx = engine.info().n_ctx_slot;
    let prompt_tokens = engine.tokenize(&"sensor reading ok. ".repeat(200));
    let count = prompt_tokens.len();
    let error = engine
        .submit(GenerateRequest::new(prompt_tokens, greedy(n_ctx)))
        .unwrap_err();
    assert!(matches!(error, EngineError::ContextOverflow { .. }));
    let message = error.to_string();
    assert!(message.contains(&count.to_string()), "{message}");
    assert!(message.contains(&n_ctx.to_string()), "{message}");
}

#[test]
fn cancellation_frees_the_slot() {
    let mut config = EngineConfig::new(default_model());
    config.n_ctx = 1024;
    config.slots = 1;
    let engine = Engine::start(config).expect("engine");
    let prompt_tokens = engine.tokenize(PROMPT);
    let params = SamplingParams {
        stop_at_eog: false,
        ..greedy(900)
    };
    let mut events = engine
        .submit(GenerateRequest::new(prompt_tokens.clone(), params))
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(events.blocking_recv(), Some(Event::Token(_))));
    }
    drop(events);
    // The only slot was busy with a 900-token request: a second request can only finish if the
    // first one stopped at its next token.
    let started = std::time::Instant::now();
    let (tokens, _) = generate(&engine, PROMPT, greedy(4));
    assert!(!tokens.is_empty());
    assert_eq!(
        engine
            .load()
            .busy_slots
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn prompt_prefix_is_reused() {
    let mut config = EngineConfig::new(default_model());
    config.slots = 1;
    let engine = Engine::start(config).expect("engine");
    let system = "You are the maintenance assistant of gateway GW-17. Answer briefly.\n";
    let (_, first) = generate(&engine, &format!("{system}Q: What is MQTT?\nA:"), greedy(4));
    assert_eq!(first.cached_tokens, 0);
    let (_, second) = generate(
        &engine,
        &format!("{system}Q: What is Modbus?\nA:"),
        greedy(4),
    );
    let shared = engine.tokenize(system).len();
    assert!(
        second.cached_tokens >= shared - 1,
        "cached {} of a {shared}-token shared prefix",
        second.cached_tokens
    );
}

#[test]
fn concurrent_requests_decode_together() {
    let engine = shared_engine();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let prompt = format!("Gateway {i} reports the following status:");
                generate(shared_engine(), &prompt, greedy(12))
            })
        })
        .collect();
    for handle in handles {
        let (tokens, summary) = handle.join().expect("thread");
        assert!(!tokens.is_empty());
        assert!(summary.generated_tokens <= 12);
    }
    assert!(engine.info().slots >= 4);
}

#[test]
fn missing_model_is_refused() {
    let config = EngineConfig::new("/nonexistent/model.gguf".into());
    let error = Engine::start(config).err().expect("refused");
    assert!(matches!(error, EngineError::ModelNotFound(_)), "{error}");
}

#[test]
fn reports_buffer_sizes() {
    let info = shared_engine().info();
    assert!(info.buffers.model_bytes > 200 << 20, "{:?}", info.buffers);
    assert!(info.buffers.kv_cache_bytes > 0, "{:?}", info.buffers);
    // The engine's 128-token micro-batch keeps the compute buffer of this 262k-vocabulary model
    // at or under 150 MiB (llama.cpp's default micro-batch of 512 needs 523 MiB).
    assert!(
        info.buffers.compute_bytes > 0 && info.buffers.compute_bytes <= 150 << 20,
        "{:?}",
        info.buffers
    );
}
