//! Per-request token selection: a fast greedy path, or a llama.cpp sampler chain, optionally
//! restricted to the tokens a constraint allows.
//!
//! Greedy decoding without penalties is an argmax over the logits, done here directly (over the
//! allowed tokens only, when constrained: the mask's set bits are walked word by word).
//! Everything else goes through llama.cpp's samplers in the order llama.cpp's own tools use:
//! penalties, top-k, top-p, min-p, temperature, then a seeded draw; a constrained request hands
//! the chain only its allowed candidates, so no sampler ever sees a forbidden token. Grammars
//! are never llama.cpp's: the constraint engine is `crate::constraint`.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;

use super::{SamplingParams, logprob};
use crate::constraint::SimpleVob;

pub enum TokenSampler {
    Greedy,
    Chain(LlamaSampler),
}

impl TokenSampler {
    pub fn new(model: &LlamaModel, params: &SamplingParams) -> TokenSampler {
        let penalised = params.repeat_penalty != 1.0
            || params.frequency_penalty != 0.0
            || params.presence_penalty != 0.0;
        let greedy = params.temperature <= 0.0;
        if greedy && !penalised {
            return TokenSampler::Greedy;
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
        TokenSampler::Chain(LlamaSampler::chain(chain, true))
    }

    /// Picks the next token from output `idx` of the last decode (and records it in the chain's
    /// state: penalties history).
    pub fn sample(&mut self, context: &LlamaContext<'_>, idx: i32) -> LlamaToken {
        match self {
            TokenSampler::Greedy => {
                let logits = context.get_logits_ith(idx);
                LlamaToken(logprob::argmax(logits) as i32)
            }
            TokenSampler::Chain(chain) => chain.sample(context, idx),
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
        match self {
            TokenSampler::Greedy => {
                let mut best: Option<(usize, f32)> = None;
                for_each_allowed(mask, logits.len(), |token| {
                    let logit = logits[token];
                    if best.is_none_or(|(_, b)| logit > b) {
                        best = Some((token, logit));
                    }
                });
                best.map(|(token, _)| LlamaToken(token as i32))
            }
            TokenSampler::Chain(chain) => {
                let mut candidates = Vec::with_capacity(mask.num_set().min(logits.len()));
                for_each_allowed(mask, logits.len(), |token| {
                    candidates.push(LlamaTokenData::new(
                        LlamaToken(token as i32),
                        logits[token],
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
        if let TokenSampler::Chain(chain) = self {
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
