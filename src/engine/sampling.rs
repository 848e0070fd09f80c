//! Per-request token selection: a fast greedy path, or a llama.cpp sampler chain.
//!
//! Greedy decoding without penalties or grammar is an argmax over the logits, done here directly;
//! everything else goes through llama.cpp's samplers in the order llama.cpp's own tools use:
//! penalties, grammar, top-k, top-p, min-p, temperature, then a seeded draw.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::{EngineError, SamplingParams, logprob};

pub enum TokenSampler {
    Greedy,
    Chain(LlamaSampler),
}

impl TokenSampler {
    pub fn new(model: &LlamaModel, params: &SamplingParams) -> Result<TokenSampler, EngineError> {
        let penalised = params.repeat_penalty != 1.0
            || params.frequency_penalty != 0.0
            || params.presence_penalty != 0.0;
        let greedy = params.temperature <= 0.0;
        if greedy && !penalised && params.grammar.is_none() {
            return Ok(TokenSampler::Greedy);
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
        if let Some(grammar) = &params.grammar {
            let sampler = LlamaSampler::grammar(model, grammar, "root")
                .map_err(|e| EngineError::Grammar(e.to_string()))?;
            chain.push(sampler);
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
        Ok(TokenSampler::Chain(LlamaSampler::chain(chain, true)))
    }

    /// Picks the next token from output `idx` of the last decode (and records it in the chain's
    /// state: penalties history, grammar position).
    pub fn sample(&mut self, context: &LlamaContext<'_>, idx: i32) -> LlamaToken {
        match self {
            TokenSampler::Greedy => {
                let logits = context.get_logits_ith(idx);
                LlamaToken(logprob::argmax(logits) as i32)
            }
            TokenSampler::Chain(chain) => chain.sample(context, idx),
        }
    }
}
