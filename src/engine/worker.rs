//! The engine's worker thread: owns the llama.cpp context and runs continuous batching.
//!
//! Each step builds one batch from every active slot: the last sampled token of each generating
//! slot (so generation never waits for a long prompt to finish), then prompt chunks of slots still
//! prefilling, up to `n_batch` tokens. After one `decode`, every slot whose output is ready samples
//! its next token and sends it to its receiver. A slot whose receiver is gone is freed at the next
//! step; its KV entries stay, so a later prompt that starts the same way reuses them.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use tokio::sync::mpsc::UnboundedSender;

use crate::constraint::{Constraint, ConstraintError, JumpForward};

use super::memory::{self, BufferSizes};
use super::sampling::TokenSampler;
use super::text::TextAssembler;
use super::{
    EngineConfig, EngineError, EngineLoad, Event, GenerateRequest, KvType, PostSampling,
    StopReason, Summary, TokenEvent, TokenProb, TopLogprob, logprob,
};

/// A request arriving at an idle engine waits this long for more of its burst...
const BURST_GAP: std::time::Duration = std::time::Duration::from_millis(2);
/// ...and never longer than this in all.
const BURST_MAX: std::time::Duration = std::time::Duration::from_millis(8);

pub enum Command {
    Generate {
        request: GenerateRequest,
        events: UnboundedSender<Event>,
        queued_at: Instant,
    },
}

/// Starts the worker thread; returns once its context exists (or failed to be created).
pub fn spawn(
    model: Arc<LlamaModel>,
    config: &EngineConfig,
    load: Arc<EngineLoad>,
    log_mark: usize,
) -> Result<(Sender<Command>, BufferSizes), EngineError> {
    let (commands, inbox) = std::sync::mpsc::channel();
    let (ready, ready_rx) = std::sync::mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("edgellm-engine".into())
        .spawn(move || {
            let context = match create_context(&model, &config) {
                Ok(context) => context,
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return;
                }
            };
            let sizes = BufferSizes::from_log(&memory::log_since(log_mark));
            let mut context = context;
            warm_up(&model, &mut context);
            let _ = ready.send(Ok(sizes));
            Worker::new(&model, context, &config, load).run(inbox);
        })
        .map_err(|e| EngineError::ContextFailed(e.to_string()))?;
    let sizes = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
    Ok((commands, sizes))
}

fn create_context<'m>(
    model: &'m LlamaModel,
    config: &EngineConfig,
) -> Result<LlamaContext<'m>, EngineError> {
    let kv = match config.kv_type {
        KvType::F16 => KvCacheType::F16,
        KvType::Q8_0 => KvCacheType::Q8_0,
        KvType::Q4_0 => KvCacheType::Q4_0,
    };
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.n_ctx))
        .with_n_batch(config.n_batch)
        .with_n_ubatch(config.n_ubatch)
        .with_n_seq_max(config.slots)
        // One output (the last prompt token, or the token being generated) per sequence per
        // batch: sizes the logits in the compute buffer for `slots` rows, not `n_batch`.
        .with_n_outputs_max(config.slots)
        .with_n_threads(config.n_threads as i32)
        .with_n_threads_batch(config.n_threads_batch as i32)
        // Sliding-window layers keep only their window (llama.cpp's default keeps the full
        // context for them too: 5x the KV memory for Gemma 3, for no gain in generation).
        .with_swa_full(false)
        // One KV pool shared by all slots: llama.cpp can then put several sequences' prompt
        // tokens in one micro-batch (non-unified caches force equal-length splits per sequence).
        // Each slot stays within n_ctx / slots tokens (checked at submission), so the pool of
        // n_ctx cells always has room; with `kv_unified` each may use all of it, and a full pool
        // is handled in `Worker::run`.
        .with_kv_unified(true)
        .with_type_k(kv)
        .with_type_v(kv)
        .with_no_perf(true);
    model.new_context(super::backend()?, params).map_err(|e| {
        let reason = memory::last_log_lines(3).join(" | ");
        EngineError::ContextFailed(format!("{e}: {reason}"))
    })
}

/// One throw-away decode, as llama.cpp's tools do before serving: it pages the weights in and
/// sets up the compute graph, so the first request's prefill is not paying for it.
fn warm_up(model: &LlamaModel, context: &mut LlamaContext<'_>) {
    let mut batch = LlamaBatch::new(1, 1);
    if batch.add(model.vocab().bos(), 0, &[0], true).is_ok() {
        let _ = super::compute::run(|| context.decode(&mut batch));
    }
    context.clear_kv_cache();
}

struct Active {
    events: UnboundedSender<Event>,
    prompt: Vec<i32>,
    /// Prompt tokens already in the KV cache (starts at the reused prefix).
    prompt_done: usize,
    cached: usize,
    params: super::SamplingParams,
    sampler: TokenSampler,
    constraint: Option<Box<Constraint>>,
    text: TextAssembler,
    generated: usize,
    /// Tokens to decode next: the one sampled last step and any the constraint forced after it
    /// (the last of them gets logits).
    next_tokens: Vec<i32>,
    /// Index of this slot's logits in the current batch.
    output_index: Option<i32>,
    /// Whether the current batch holds tokens of this slot.
    in_batch: bool,
    queue_time: std::time::Duration,
    /// Time llama.cpp spent on the batches this request was in.
    compute_time: std::time::Duration,
    admitted_at: Instant,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    /// Prompt tokens processed when progress was last reported.
    progress_sent: usize,
}

struct Slot {
    seq: i32,
    /// Tokens whose KV entries this sequence holds, in position order.
    cache: Vec<i32>,
    active: Option<Active>,
}

struct Worker<'m> {
    model: &'m LlamaModel,
    context: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_swa: u32,
    slots: Vec<Slot>,
    pending: VecDeque<(GenerateRequest, UnboundedSender<Event>, Instant)>,
    load: Arc<EngineLoad>,
    piece: Vec<u8>,
    jump_forward: JumpForward,
}

impl<'m> Worker<'m> {
    fn new(
        model: &'m LlamaModel,
        context: LlamaContext<'m>,
        config: &EngineConfig,
        load: Arc<EngineLoad>,
    ) -> Self {
        let n_batch = config.n_batch as usize;
        let architecture = model
            .meta_val_str("general.architecture")
            .unwrap_or_default();
        let n_swa = model
            .meta_val_str(&format!("{architecture}.attention.sliding_window"))
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Worker {
            model,
            context,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            n_swa,
            slots: (0..config.slots as i32)
                .map(|seq| Slot {
                    seq,
                    cache: Vec::new(),
                    active: None,
                })
                .collect(),
            pending: VecDeque::new(),
            load,
            piece: Vec::with_capacity(32),
            jump_forward: config.jump_forward,
        }
    }

    fn run(mut self, inbox: Receiver<Command>) {
        loop {
            if !self.receive(&inbox) {
                return;
            }
            self.admit();
            self.drop_cancelled();
            if !self.fill_batch() {
                continue;
            }
            let (decoded, took) = loop {
                let (context, batch) = (&mut self.context, &mut self.batch);
                let (decoded, took) = super::compute::run(|| {
                    let started = Instant::now();
                    (context.decode(batch), started.elapsed())
                });
                // A full KV pool (only reachable with kv_unified): llama.cpp took nothing of the
                // batch, so give up idle slots' caches and decode it again.
                if decoded == Err(llama_cpp_2::DecodeError::NoKvCacheSlot)
                    && self.evict_idle_caches()
                {
                    continue;
                }
                break (decoded, took);
            };
            match decoded {
                Ok(()) => {}
                Err(llama_cpp_2::DecodeError::NoKvCacheSlot) => {
                    let n_ctx = self.context.n_ctx();
                    self.fail_batch(|| EngineError::KvFull { n_ctx });
                    continue;
                }
                Err(error) => {
                    self.fail_batch(|| EngineError::Decode(error.to_string()));
                    continue;
                }
            }
            let mut in_batch = 0;
            for active in self.slots.iter_mut().filter_map(|s| s.active.as_mut()) {
                if active.in_batch {
                    active.compute_time += took;
                    in_batch += 1;
                }
            }
            self.load.decodes.fetch_add(1, Ordering::Relaxed);
            self.load
                .decoded_sequences
                .fetch_add(in_batch as u64, Ordering::Relaxed);
            self.report_progress();
            self.sample_outputs();
        }
    }

    /// Takes new commands: blocks when there is nothing to do. Returns false when the engine is
    /// dropped and all work is done.
    fn receive(&mut self, inbox: &Receiver<Command>) -> bool {
        let idle = self.pending.is_empty() && self.slots.iter().all(|s| s.active.is_none());
        if idle {
            match inbox.recv() {
                Ok(command) => self.accept(command),
                Err(_) => return false,
            }
            // Requests often come in bursts (several clients, one event). Gather the burst into
            // the first batch: one decode of all prompts beats a lone prompt followed by the rest.
            let gathering = Instant::now();
            while self.pending.len() < self.slots.len() && gathering.elapsed() < BURST_MAX {
                match inbox.recv_timeout(BURST_GAP) {
                    Ok(command) => self.accept(command),
                    Err(_) => break,
                }
            }
        }
        loop {
            match inbox.try_recv() {
                Ok(command) => self.accept(command),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    return !(self.pending.is_empty()
                        && self.slots.iter().all(|s| s.active.is_none()));
                }
            }
        }
    }

    fn accept(&mut self, command: Command) {
        let Command::Generate {
            request,
            events,
            queued_at,
        } = command;
        self.pending.push_back((request, events, queued_at));
    }

    /// Moves queued requests into free slots, preferring the slot whose cache shares the longest
    /// prefix with the prompt.
    fn admit(&mut self) {
        while let Some((request, events, queued_at)) = self.pending.pop_front() {
            if events.is_closed() {
                self.load.queued.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.active.is_none())
                .max_by_key(|(_, slot)| common_prefix(&slot.cache, &request.prompt_tokens))
                .map(|(i, _)| i);
            let Some(index) = best else {
                self.pending.push_front((request, events, queued_at));
                return;
            };
            self.load.queued.fetch_sub(1, Ordering::Relaxed);
            let sampler = TokenSampler::new(self.model, &request.params);
            let reused = self.reuse_prefix(index, &request.prompt_tokens);
            self.load.busy_slots.fetch_add(1, Ordering::Relaxed);
            let text = TextAssembler::new(request.params.stop.clone());
            if request.params.prompt_progress {
                let _ = events.send(Event::Progress(super::PromptProgress {
                    total: request.prompt_tokens.len(),
                    cache: reused,
                    processed: reused,
                    elapsed: std::time::Duration::ZERO,
                }));
            }
            self.slots[index].active = Some(Active {
                events,
                prompt: request.prompt_tokens,
                prompt_done: reused,
                cached: reused,
                params: request.params,
                sampler,
                constraint: request.constraint,
                text,
                generated: 0,
                next_tokens: Vec::new(),
                output_index: None,
                in_batch: false,
                queue_time: queued_at.elapsed(),
                compute_time: std::time::Duration::ZERO,
                admitted_at: Instant::now(),
                first_token_at: None,
                last_token_at: None,
                progress_sent: reused,
            });
        }
    }

    /// Keeps the longest usable prefix of the slot's KV cache for `prompt`; returns its length.
    fn reuse_prefix(&mut self, index: usize, prompt: &[i32]) -> usize {
        let slot = &mut self.slots[index];
        // At least one prompt token must be decoded to get logits for the first new token.
        let mut keep = common_prefix(&slot.cache, prompt).min(prompt.len().saturating_sub(1));
        if keep > 0 && self.n_swa > 0 {
            // Sliding-window layers only hold the last n_swa positions; reusing a prefix needs the
            // window before it.
            let pos_min = self.context.kv_cache_seq_pos_min(slot.seq);
            let needed = keep.saturating_sub(self.n_swa as usize) as i32;
            if pos_min > needed {
                keep = 0;
            }
        }
        let removed = self
            .context
            .kv_cache_seq_rm(slot.seq, Some(keep as u32), None)
            .is_ok();
        if !removed {
            keep = 0;
            let _ = self
                .context
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
        }
        slot.cache.truncate(keep);
        keep
    }

    fn drop_cancelled(&mut self) {
        for slot in &mut self.slots {
            if slot.active.as_ref().is_some_and(|a| a.events.is_closed()) {
                slot.active = None;
                self.load.busy_slots.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Builds this step's batch; false if there is nothing to decode.
    fn fill_batch(&mut self) -> bool {
        self.batch.clear();
        // Generating slots first: their next token (plus any forced after it), the last with
        // logits. Forced runs longer than the room left go on in the next step, without logits
        // until their last token is in.
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            active.output_index = None;
            active.in_batch = false;
            let room = self.n_batch - self.batch.n_tokens() as usize;
            let take = active.next_tokens.len().min(room);
            if take == 0 {
                continue;
            }
            active.in_batch = true;
            let complete = take == active.next_tokens.len();
            for (i, token) in active.next_tokens.drain(..take).enumerate() {
                let last = complete && i + 1 == take;
                if last {
                    active.output_index = Some(self.batch.n_tokens());
                }
                let pos = slot.cache.len() as i32;
                let _ = self.batch.add(LlamaToken(token), pos, &[slot.seq], last);
                slot.cache.push(token);
            }
        }
        // Then prompt chunks, while the batch has room.
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            let room = self.n_batch - self.batch.n_tokens() as usize;
            if room == 0 {
                break;
            }
            let remaining = active.prompt.len() - active.prompt_done;
            if remaining == 0 || active.output_index.is_some() || !active.next_tokens.is_empty() {
                continue;
            }
            // The last prompt token is always decoded in a step of its own: its logits (the
            // first generated token's) then come from the same one-row step whether the rest
            // of the prompt was prefilled now or reused from the cache, so greedy output does
            // not depend on what the slot held before (llama.cpp's batched prompt kernels
            // round differently from one-row steps). It costs one decode step on a cache miss.
            let mut take = remaining.min(room);
            if take == remaining && remaining > 1 {
                take -= 1;
            }
            active.in_batch = true;
            for i in 0..take {
                let at = active.prompt_done + i;
                let last = at + 1 == active.prompt.len();
                if last {
                    active.output_index = Some(self.batch.n_tokens());
                }
                let token = active.prompt[at];
                let _ = self.batch.add(
                    LlamaToken(token),
                    slot.cache.len() as i32,
                    &[slot.seq],
                    last,
                );
                slot.cache.push(token);
            }
            active.prompt_done += take;
        }
        self.batch.n_tokens() > 0
    }

    /// Tells each request that asked how much of its prompt the last decode added.
    fn report_progress(&mut self) {
        for active in self.slots.iter_mut().filter_map(|s| s.active.as_mut()) {
            if active.params.prompt_progress && active.prompt_done > active.progress_sent {
                active.progress_sent = active.prompt_done;
                let _ = active.events.send(Event::Progress(super::PromptProgress {
                    total: active.prompt.len(),
                    cache: active.cached,
                    processed: active.prompt_done,
                    elapsed: active.admitted_at.elapsed(),
                }));
            }
        }
    }

    /// Clears the KV cache of every idle slot that holds one; false when there was none.
    fn evict_idle_caches(&mut self) -> bool {
        let mut evicted = false;
        for slot in &mut self.slots {
            if slot.active.is_none() && !slot.cache.is_empty() {
                let _ = self
                    .context
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                slot.cache.clear();
                evicted = true;
            }
        }
        evicted
    }

    fn fail_batch(&mut self, error: impl Fn() -> EngineError) {
        for slot in &mut self.slots {
            if !slot.active.as_ref().is_some_and(|a| a.in_batch) {
                continue;
            }
            if let Some(active) = slot.active.take() {
                let _ = active.events.send(Event::Failed(error()));
                self.load.busy_slots.fetch_sub(1, Ordering::Relaxed);
            }
            let _ = self
                .context
                .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
            slot.cache.clear();
        }
    }

    fn sample_outputs(&mut self) {
        let model = self.model;
        let vocab = model.vocab();
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            let Some(index) = active.output_index else {
                continue;
            };
            let Some(end) = step(
                active,
                &self.context,
                &vocab,
                &mut self.piece,
                index,
                self.jump_forward,
            ) else {
                continue;
            };
            if let Some(active) = slot.active.take() {
                // Counted free before the caller hears it is done.
                self.load.busy_slots.fetch_sub(1, Ordering::Relaxed);
                match end {
                    End::Stop(reason) => finish_request(active, reason),
                    End::Fail(error) => {
                        let _ = active.events.send(Event::Failed(error));
                    }
                }
            }
        }
    }
}

/// The most forced tokens appended after one sampled token: with it, a decode of at most 7
/// rows per sequence. Up to 7 rows, llama.cpp's CPU kernels give every row the same logits
/// and KV entries, bit for bit, as decoding the rows one at a time (measured: 0 differences in
/// 120 forced batches of 1 to 6 tokens at positions 1 to 40); from 8 rows on they do not
/// (10 of 20 runs diverged), and a near-tie later can go the other way. Past the cap, the next
/// step samples the one token the mask allows (the same token) and forces the rest, so
/// jump-forward stays exact: greedy output is byte-identical to sampling every token.
const MAX_FORCED_PER_STEP: usize = 6;

/// How a slot's request ends after a step.
enum End {
    Stop(StopReason),
    Fail(EngineError),
}

/// What sending one token's event decided.
enum Sent {
    Continue,
    Stopped(String),
    /// The receiver is gone: cancelled, freed by `drop_cancelled` next step.
    Cancelled,
}

/// Samples the slot's next token from output `index` (among the constraint's allowed tokens,
/// when it has one), sends it, then the tokens the constraint forces after it. Returns how the
/// request ends, or `None` to go on (`next_tokens` then holds what to decode next).
fn step(
    active: &mut Active,
    context: &LlamaContext<'_>,
    vocab: &LlamaVocab<'_>,
    piece: &mut Vec<u8>,
    index: i32,
    jump_forward: JumpForward,
) -> Option<End> {
    let now = Instant::now();
    let (token, mask_time) = match active.constraint.as_mut() {
        None => (active.sampler.sample(context, index), Duration::ZERO),
        Some(constraint) => {
            let mask = match constraint.mask() {
                Ok(mask) => mask,
                Err(error) => return Some(End::Fail(error.into())),
            };
            match active.sampler.sample_masked(context, index, mask) {
                Some(token) => (token, constraint.mask_time()),
                None => {
                    return Some(End::Fail(EngineError::Constraint(ConstraintError::Step(
                        "no token of the vocabulary can continue".into(),
                    ))));
                }
            }
        }
    };
    let logits = context.get_logits_ith(index);
    let lse = logprob::log_sum_exp(logits);
    let chosen = logits
        .get(token.0 as usize)
        .map_or(f32::NEG_INFINITY, |&x| x - lse);
    let mut top = logprob::top_n(
        logits,
        active.params.top_logprobs.max(active.params.spread_top),
        lse,
    );
    let spread = (active.params.spread_top > 0).then(|| {
        let n = active.params.spread_top.min(top.len());
        let values: Vec<f32> = top[..n].iter().map(|&(_, lp)| lp).collect();
        logprob::Spread::from_top(&values)
    });
    top.truncate(active.params.top_logprobs);
    let entry = |(id, logprob): (usize, f32)| TopLogprob {
        token: id as i32,
        bytes: vocab.token_to_piece(LlamaToken(id as i32), false, None),
        logprob,
    };
    let top = top.into_iter().map(entry).collect();
    let post = active.params.post_sampling_probs.then(|| {
        let p = &active.params;
        let (prob, top) = logprob::post_sampling(
            logits,
            p.top_k,
            p.top_p,
            p.min_p,
            p.temperature,
            token.0 as usize,
            p.top_logprobs,
        );
        PostSampling {
            prob,
            top: top
                .into_iter()
                .map(|(id, prob)| TokenProb {
                    token: id as i32,
                    bytes: vocab.token_to_piece(LlamaToken(id as i32), false, None),
                    prob,
                })
                .collect(),
        }
    });
    active.first_token_at.get_or_insert(now);
    active.last_token_at = Some(now);
    if active.params.stop_at_eog && vocab.is_eog(token) {
        return Some(End::Stop(StopReason::EndOfGeneration));
    }
    match send(
        active, vocab, piece, token.0, chosen, top, spread, post, false, mask_time,
    ) {
        Sent::Continue => {}
        Sent::Stopped(stop) => return Some(End::Stop(StopReason::StopString(stop))),
        Sent::Cancelled => return None,
    }
    let mut next = vec![token.0];
    if let Some(constraint) = active.constraint.as_mut() {
        if let Err(error) = constraint.accept(token.0 as u32) {
            return Some(End::Fail(error.into()));
        }
        if constraint.finished() {
            return Some(End::Stop(StopReason::EndOfGeneration));
        }
    }
    let budget = (active.params.max_tokens as usize).saturating_sub(active.generated);
    if budget == 0 {
        return Some(End::Stop(StopReason::Length));
    }
    if let Some(constraint) = active.constraint.as_mut() {
        let forced = match constraint.forced(budget.min(MAX_FORCED_PER_STEP), jump_forward) {
            Ok(forced) => forced,
            Err(error) => return Some(End::Fail(error.into())),
        };
        let finished = constraint.finished();
        for token in forced {
            let token = token as i32;
            active.sampler.accept(LlamaToken(token));
            let top = if active.params.top_logprobs > 0 {
                vec![TopLogprob {
                    token,
                    bytes: vocab.token_to_piece(LlamaToken(token), false, None),
                    logprob: 0.0,
                }]
            } else {
                Vec::new()
            };
            // Forced: certain, after the chain as before it.
            let post = active.params.post_sampling_probs.then(|| PostSampling {
                prob: 1.0,
                top: vec![TokenProb {
                    token,
                    bytes: vocab.token_to_piece(LlamaToken(token), false, None),
                    prob: 1.0,
                }],
            });
            match send(
                active,
                vocab,
                piece,
                token,
                0.0,
                top,
                None,
                post,
                true,
                Duration::ZERO,
            ) {
                Sent::Continue => next.push(token),
                Sent::Stopped(stop) => return Some(End::Stop(StopReason::StopString(stop))),
                Sent::Cancelled => return None,
            }
        }
        if finished {
            return Some(End::Stop(StopReason::EndOfGeneration));
        }
        if active.generated >= active.params.max_tokens as usize {
            return Some(End::Stop(StopReason::Length));
        }
    }
    active.next_tokens = next;
    None
}

/// Counts a generated token and sends its event (text assembled, stop strings checked).
#[allow(clippy::too_many_arguments)]
fn send(
    active: &mut Active,
    vocab: &LlamaVocab<'_>,
    piece: &mut Vec<u8>,
    token: i32,
    logprob: f32,
    top: Vec<TopLogprob>,
    spread: Option<logprob::Spread>,
    post: Option<PostSampling>,
    forced: bool,
    mask_time: Duration,
) -> Sent {
    active.generated += 1;
    piece.clear();
    vocab.token_to_piece_into(LlamaToken(token), piece, false, None);
    let scan = active.text.push(piece);
    let event = TokenEvent {
        token,
        piece: piece.clone(),
        text: scan.release,
        logprob,
        top,
        spread,
        post,
        forced,
        mask_time,
    };
    if active.events.send(Event::Token(event)).is_err() {
        return Sent::Cancelled;
    }
    match scan.stopped {
        Some(stop) => Sent::Stopped(stop),
        None => Sent::Continue,
    }
}

fn finish_request(mut active: Active, stop_reason: StopReason) {
    let tail_text = match stop_reason {
        StopReason::StopString(_) => String::new(),
        _ => active.text.finish(),
    };
    let first = active.first_token_at.unwrap_or(active.admitted_at);
    let summary = Summary {
        prompt_tokens: active.prompt.len(),
        cached_tokens: active.cached,
        generated_tokens: active.generated,
        stop_reason,
        tail_text,
        queue_time: active.queue_time,
        compute_time: active.compute_time,
        prefill_time: first.duration_since(active.admitted_at),
        decode_time: active
            .last_token_at
            .map_or_else(Default::default, |last| last.duration_since(first)),
    };
    let _ = active.events.send(Event::Done(summary));
}

fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
