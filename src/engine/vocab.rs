//! The model's vocabulary as llguidance sees it: every token's bytes in a `toktrie` trie
//! (control tokens as `0xFF` + their text, so no text lexeme can produce them; every
//! end-of-generation token registered as one), and the model's own tokenizer for the bytes a
//! grammar forces, so forced tokens are the canonical split the model was trained on.

use std::sync::Arc;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

struct LlamaTokEnv {
    model: Arc<LlamaModel>,
    trie: TokTrie,
}

impl TokenizerEnv for LlamaTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Text is tokenized by llama.cpp (no BOS, no special tokens parsed); bytes that are
        // not UTF-8 fall back to the trie's greedy split.
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.model
                .vocab()
                .tokenize(text.as_bytes(), false, false)
                .into_iter()
                .map(|t| t.0 as TokenId)
                .collect()
        })
    }

    fn tokenize_is_canonical(&self) -> bool {
        true
    }
}

/// Walks the vocabulary once (two piece lookups per token at most).
pub fn tok_env(model: Arc<LlamaModel>) -> TokEnv {
    let trie = trie(&model);
    Arc::new(LlamaTokEnv { model, trie })
}

fn trie(model: &LlamaModel) -> TokTrie {
    let vocab = model.vocab();
    let n_vocab = u32::try_from(model.n_vocab()).unwrap_or(0);
    let eot = vocab.eot().0;
    let eos = if eot >= 0 { eot } else { vocab.eos().0 } as TokenId;
    let mut eog = vec![eos];
    let mut words = Vec::with_capacity(n_vocab as usize);
    for id in 0..n_vocab as i32 {
        let token = LlamaToken(id);
        if vocab.is_eog(token) && id as TokenId != eos {
            eog.push(id as TokenId);
        }
        let piece = vocab.token_to_piece(token, false, None);
        if !piece.is_empty() {
            words.push(piece);
            continue;
        }
        let special = vocab.token_to_piece(token, true, None);
        if special.is_empty() {
            words.push(Vec::new());
        } else {
            let mut marked = Vec::with_capacity(special.len() + 1);
            marked.push(TokTrie::SPECIAL_TOKEN_MARKER);
            marked.extend(special);
            words.push(marked);
        }
    }
    let mut info = TokRxInfo::new(n_vocab, eos);
    info.tok_bos = Some(vocab.bos().0 as TokenId).filter(|&b| b < n_vocab);
    TokTrie::from(&info, &words).with_eos_tokens(&eog)
}
