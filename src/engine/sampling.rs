//! Per-request token selection: a fast greedy path, or a llama.cpp sampler chain, optionally
//! restricted to the tokens a constraint allows.
//!
//! Greedy decoding without penalties is an argmax over the logits, done here directly (over the
//! allowed tokens only, when constrained: the mask's set bits are walked word by word).
//! Everything else goes through llama.cpp's samplers in the order llama.cpp's own tools use:
//! penalties, top-k, top-p, min-p, temperature, then a seeded draw; a constrained request hands
//! the chain only its allowed candidates, so no sampler ever sees a forbidden token. Grammars
//! are never llama.cpp's: the constraint engine is `crate::constraint`.
//!
//! A request's `logit_bias` is one dense per-token vector added to the logits before either
//! path looks at them (entries for the same token add up, as in llama.cpp); with a bias, the
//! chain is handed candidates built here rather than reading the logits itself.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;

use super::{BiasTarget, LogitBias, SamplingParams, logprob};
use crate::constraint::SimpleVob;

pub struct TokenSampler {
    kind: Kind,
    /// The request's logit bias, one entry per vocabulary token; `None` without one.
    bias: Option<Vec<f32>>,
}

enum Kind {
    Greedy,
    Chain(LlamaSampler),
}

impl TokenSampler {
    pub fn new(model: &LlamaModel, params: &SamplingParams) -> TokenSampler {
        let bias = (!params.logit_bias.is_empty())
            .then(|| dense_bias(model.n_vocab(), &params.logit_bias));
        TokenSampler {
            kind: Kind::new(model, params),
            bias,
        }
    }
}

/// The bias entries (token ids by now) as one vector over the vocabulary.
fn dense_bias(n_vocab: i32, entries: &[LogitBias]) -> Vec<f32> {
    let mut dense = vec![0.0f32; usize::try_from(n_vocab).unwrap_or(0)];
    for entry in entries {
        if let BiasTarget::Token(token) = entry.target
            && let Some(slot) = usize::try_from(token).ok().and_then(|t| dense.get_mut(t))
        {
            *slot += entry.bias;
        }
    }
    dense
}

impl Kind {
    fn new(model: &LlamaModel, params: &SamplingParams) -> Kind {
        let penalised = params.repeat_penalty != 1.0
            || params.frequency_penalty != 0.0
            || params.presence_penalty != 0.0;
        let greedy = params.temperature <= 0.0;
        if greedy && !penalised {
            return Kind::Greedy;
        }
        let mut chain = Vec::new();
        if penalised {
            chain.push(LlamaSampler::penalties(
                model.n_vocab(),
                params.repeat_last_n,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            ));
        }
        if greedy {
            chain.push(LlamaSampler::greedy());
        } else {
            if params.top_k > 0 {
                chain.push(LlamaSampler::top_k(params.top_k));
            }
            if params.top_p < 1.0 {
                chain.push(LlamaSampler::top_p(params.top_p, 1));
            }
            if params.min_p > 0.0 {
                chain.push(LlamaSampler::min_p(params.min_p, 1));
            }
            chain.push(LlamaSampler::temp(params.temperature));
            let seed = params.seed.unwrap_or_else(rand::random);
            chain.push(LlamaSampler::dist(seed));
        }
        Kind::Chain(LlamaSampler::chain(chain, true))
    }
}

impl TokenSampler {
    /// Picks the next token from output `idx` of the last decode (and records it in the chain's
    /// state: penalties history).
    pub fn sample(&mut self, context: &LlamaContext<'_>, idx: i32) -> LlamaToken {
        let Some(bias) = &self.bias else {
            return match &mut self.kind {
                Kind::Greedy => {
                    let logits = context.get_logits_ith(idx);
                    LlamaToken(logprob::argmax(logits) as i32)
                }
                Kind::Chain(chain) => chain.sample(context, idx),
            };
        };
        let logits = context.get_logits_ith(idx);
        let biased = logits.iter().zip(bias).map(|(logit, bias)| logit + bias);
        match &mut self.kind {
            Kind::Greedy => {
                let mut best: Option<(usize, f32)> = None;
                for (token, value) in biased.enumerate() {
                    if value > f32::NEG_INFINITY && best.is_none_or(|(_, b)| value > b) {
                        best = Some((token, value));
                    }
                }
                // Every token forbidden: take the least unlikely, as without a bias.
                let token = best.map_or_else(|| logprob::argmax(logits), |(token, _)| token);
                LlamaToken(token as i32)
            }
            Kind::Chain(chain) => {
                let candidates = biased
                    .enumerate()
                    .map(|(token, value)| LlamaTokenData::new(LlamaToken(token as i32), value, 0.0))
                    .collect();
                let mut array = LlamaTokenDataArray::new(candidates, false);
                chain.apply(&mut array);
                // Every token forbidden: the chain selects nothing; take the least unlikely.
                let token = array
                    .selected_token()
                    .unwrap_or(LlamaToken(logprob::argmax(logits) as i32));
                chain.accept(token);
                token
            }
        }
    }

    /// [`Self::sample`] among the tokens `mask` allows; `None` if it allows none.
    pub fn sample_masked(
        &mut self,
        context: &LlamaContext<'_>,
        idx: i32,
        mask: &SimpleVob,
    ) -> Option<LlamaToken> {
        let logits = context.get_logits_ith(idx);
        let bias = self.bias.as_deref();
        let value = |token: usize| logits[token] + bias.map_or(0.0, |b| b[token]);
        match &mut self.kind {
            Kind::Greedy => {
                let mut best: Option<(usize, f32)> = None;
                for_each_allowed(mask, logits.len(), |token| {
                    let logit = value(token);
                    if best.is_none_or(|(_, b)| logit > b) {
                        best = Some((token, logit));
                    }
                });
                best.map(|(token, _)| LlamaToken(token as i32))
            }
            Kind::Chain(chain) => {
                let mut candidates = Vec::with_capacity(mask.num_set().min(logits.len()));
                for_each_allowed(mask, logits.len(), |token| {
                    candidates.push(LlamaTokenData::new(
                        LlamaToken(token as i32),
                        value(token),
                        0.0,
                    ));
                });
                if candidates.is_empty() {
                    return None;
                }
                let mut array = LlamaTokenDataArray::new(candidates, false);
                chain.apply(&mut array);
                let token = array.selected_token()?;
                chain.accept(token);
                Some(token)
            }
        }
    }

    /// Records tokens the model did not choose (forced by the constraint) in the chain's
    /// history, as llama.cpp's penalties expect.
    pub fn accept(&mut self, token: LlamaToken) {
        if let Kind::Chain(chain) = &mut self.kind {
            chain.accept(token);
        }
    }
}

/// Calls `f` with every allowed token id below `limit`, skipping empty 32-token words.
fn for_each_allowed(mask: &SimpleVob, limit: usize, mut f: impl FnMut(usize)) {
    for (word_index, &word) in mask.as_slice().iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let token = word_index * 32 + bits.trailing_zeros() as usize;
            if token >= limit {
                return;
            }
            f(token);
            bits &= bits - 1;
        }
    }
}
