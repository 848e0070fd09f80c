//! The constraint engine on a small synthetic vocabulary (every byte, some multi-byte pieces,
//! an end-of-sequence token): hostile shapes fail as errors, random walks through the masks
//! always produce valid output, forced tokens are what the grammar forces.

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use super::*;

/// Greedy longest-match tokenization over the trie, declared canonical (it is, for this
/// vocabulary: the pieces were chosen so that longest match is the only split used).
struct TestEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TestEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        true
    }
}

const PIECES: &[&str] = &[
    "{\"", "\":", "\",\"", "\"}", "true", "false", "null", "ab", "abc", "name", "\":\"", "12",
    "low", "high", "severity", "  ",
];

fn compiler() -> &'static Compiler {
    static COMPILER: OnceLock<Compiler> = OnceLock::new();
    COMPILER.get_or_init(|| {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        words.extend(PIECES.iter().map(|p| p.as_bytes().to_vec()));
        let eos = words.len() as u32;
        words.push(b"\xff<eos>".to_vec());
        let info = TokRxInfo::new(words.len() as u32, eos);
        let env: TokEnv = Arc::new(TestEnv {
            trie: TokTrie::from(&info, &words),
        });
        Compiler::new(env, Limits::default()).unwrap()
    })
}

fn eos() -> u32 {
    compiler().vocab_size as u32 - 1
}

fn bytes_of(tokens: &[u32]) -> Vec<u8> {
    let trie = compiler().factory.tok_env().tok_trie();
    trie.decode_raw(tokens)
}

/// A tiny deterministic generator (xorshift), so the walks are the same every run.
struct Walk(u64);

impl Walk {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Samples uniformly among allowed tokens (end of sequence whenever allowed, half the time)
/// until the end; `None` if it ran past `steps`.
fn random_output(spec: &Spec, seed: u64, steps: usize) -> Option<String> {
    let mut constraint = compiler().compile(spec).unwrap();
    let mut walk = Walk(seed | 1);
    let mut out = Vec::new();
    for _ in 0..steps {
        let mask = constraint.mask().unwrap();
        let allowed = mask.to_list();
        assert!(
            !allowed.is_empty(),
            "empty mask after {:?}",
            String::from_utf8_lossy(&bytes_of(&out))
        );
        if allowed.contains(&eos()) && (allowed.len() == 1 || walk.next(2) == 0) {
            return Some(String::from_utf8(bytes_of(&out)).unwrap());
        }
        let choices: Vec<u32> = allowed.into_iter().filter(|t| *t != eos()).collect();
        let token = choices[walk.next(choices.len())];
        constraint.accept(token).unwrap();
        out.push(token);
        if constraint.finished() {
            return Some(String::from_utf8(bytes_of(&out)).unwrap());
        }
    }
    None
}

#[test]
fn random_walks_through_the_masks_always_validate() {
    let schemas = [
        json!({"type": "object", "properties": {"severity": {"enum": ["low", "medium", "high"]}, "component": {"type": "string", "maxLength": 12}}, "required": ["severity", "component"], "additionalProperties": false}),
        json!({"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 300}, "minItems": 1, "maxItems": 4}),
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "number"}}, "required": ["ok"]}),
        json!({"anyOf": [{"type": "string", "pattern": "^[a-c]{2,5}$"}, {"type": "null"}]}),
        json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}}, "required": ["tags"], "additionalProperties": false}),
    ];
    let mut complete = 0;
    for schema in &schemas {
        let validator = jsonschema::validator_for(schema).unwrap();
        for seed in 1..40u64 {
            let Some(text) = random_output(&Spec::JsonSchema(schema.clone()), seed * 7919, 300)
            else {
                continue;
            };
            complete += 1;
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{schema}: {text:?}: {e}"));
            assert!(validator.is_valid(&value), "{schema}: {text}");
        }
    }
    assert!(complete > 150, "only {complete} walks finished");
}

#[test]
fn json_mode_walks_parse_as_objects() {
    for seed in 1..30u64 {
        if let Some(text) = random_output(&Spec::JsonObject, seed, 200) {
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(value.is_object(), "{text}");
        }
    }
}

#[test]
fn gbnf_walks_match_the_grammar() {
    let grammar = "root ::= sev \" \" [a-z]{1,6} (\",\" [0-9]+)?\nsev ::= \"low\" | \"high\"";
    let shape = regex::Regex::new("^(low|high) [a-z]{1,6}(,[0-9]+)?$").unwrap();
    let mut complete = 0;
    for seed in 1..40u64 {
        if let Some(text) = random_output(&Spec::Gbnf(grammar.into()), seed, 100) {
            complete += 1;
            assert!(shape.is_match(&text), "{text:?}");
        }
    }
    assert!(complete > 20);
}

/// Every crash, runaway and wedge shape found against llama.cpp's grammar code, as specs:
/// each is an error (or compiles, for the ones that are merely large), never a panic or a hang.
#[test]
fn hostile_shapes_are_errors() {
    let refused = [
        Spec::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
        Spec::JsonSchema(json!({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 3})),
        Spec::JsonSchema(json!({"type": "string", "minLength": 3, "maxLength": 2})),
        Spec::JsonSchema(json!({"type": "array", "minItems": 3, "maxItems": 2})),
        Spec::JsonSchema(json!({"type": "string", "pattern": "(("})),
        Spec::JsonSchema(json!({"allOf": [{"type": "string"}, {"type": "integer"}]})),
        Spec::JsonSchema(json!(false)),
        Spec::Gbnf("root ::= [z-a]".into()),
        Spec::Gbnf(format!(
            "root ::= {}\"a\"{}",
            "(".repeat(5000),
            ")".repeat(5000)
        )),
        Spec::Gbnf("root ::= \"a\"{2,1}".into()),
        Spec::Gbnf("root ::= [a-z]{10,2}".into()),
        Spec::Gbnf("root ::= <notatoken>".into()),
    ];
    for spec in refused {
        let result = compiler().compile(&spec);
        assert!(result.is_err(), "{spec:?} compiled");
    }
}

#[test]
fn large_but_legal_constraints_compile_and_step_within_bounds() {
    let alternatives: Vec<String> = (0..10_000).map(|i| format!("\"w{i}x\"")).collect();
    let wide = format!("root ::= {}", alternatives.join(" | "));
    let specs = [
        Spec::Gbnf(wide),
        Spec::JsonSchema(json!({"type": "string", "maxLength": 100000000})),
        Spec::JsonSchema(json!({"type": "string", "minLength": 4000})),
        Spec::JsonSchema(json!({"type": "array", "minItems": 200, "items": {"type": "integer"}})),
        Spec::JsonSchema(json!({"type": "string", "pattern": "^(a|aa)*(b+)+c{1,1000}$"})),
    ];
    for spec in specs {
        match compiler().compile(&spec) {
            Ok(mut constraint) => {
                for _ in 0..20 {
                    let token = match constraint.mask() {
                        Ok(mask) => match mask.first_bit_set() {
                            Some(token) => token as u32,
                            None => break,
                        },
                        Err(_) => break,
                    };
                    if token == eos() || constraint.accept(token).is_err() {
                        break;
                    }
                }
            }
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.contains("cannot be compiled") || message.contains("limit"),
                    "{message}"
                );
            }
        }
    }
}

#[test]
fn forced_tokens_are_what_the_grammar_forces() {
    let schema = json!({"type": "object", "properties": {"severity": {"const": "high"}}, "required": ["severity"], "additionalProperties": false});
    let mut constraint = compiler()
        .compile(&Spec::JsonSchema(schema.clone()))
        .unwrap();
    let forced = constraint.forced(100, JumpForward::Canonical).unwrap();
    assert_eq!(
        String::from_utf8(bytes_of(&forced)).unwrap(),
        "{\"severity\":\"high\"}"
    );
    assert!(constraint.finished() || constraint.mask().unwrap().to_list() == vec![eos()]);
    // The budget cuts the forced run.
    let mut constraint = compiler()
        .compile(&Spec::JsonSchema(schema.clone()))
        .unwrap();
    assert_eq!(
        constraint.forced(2, JumpForward::Canonical).unwrap().len(),
        2
    );
    // Exact: while the mask allows one token. Where the grammar forces bytes, llguidance's mask
    // allows only the tokenizer's split of them (`{"`, not `{`), so exact forcing appends the
    // same tokens here, one mask at a time.
    let mut constraint = compiler()
        .compile(&Spec::JsonSchema(schema.clone()))
        .unwrap();
    assert_eq!(constraint.forced(100, JumpForward::Exact).unwrap(), forced);
    let mut constraint = compiler().compile(&Spec::JsonSchema(schema)).unwrap();
    assert_eq!(
        constraint.forced(100, JumpForward::Off).unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(constraint.mask().unwrap().to_list(), vec![forced[0]]);
}

#[test]
fn exact_forcing_appends_only_single_choices() {
    // `x` then a digit: after the sampler takes `x`, nothing is forced (ten digits); in a
    // grammar whose next byte has one token only, that token is forced.
    let mut constraint = compiler()
        .compile(&Spec::Gbnf("root ::= \"x\" \"~\" [0-9]".into()))
        .unwrap();
    constraint.accept(u32::from(b'x')).unwrap();
    assert_eq!(
        constraint.forced(10, JumpForward::Exact).unwrap(),
        vec![u32::from(b'~')]
    );
    assert_eq!(constraint.mask().unwrap().num_set(), 10);
}

#[test]
fn a_schemas_own_x_guidance_is_replaced() {
    // A whitespace regex of the caller's would let any text through between tokens.
    let schema = json!({"type": "object", "x-guidance": {"whitespace_flexible": true, "whitespace_pattern": "[a-z ]*"}});
    let mut constraint = compiler().compile(&Spec::JsonSchema(schema)).unwrap();
    let mask = constraint.mask().unwrap();
    assert!(!mask.is_allowed(u32::from(b' ')));
    assert!(mask.is_allowed(u32::from(b'{')));
}
