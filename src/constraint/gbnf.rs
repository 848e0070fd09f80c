//! GBNF (llama.cpp's grammar format) read by a parser of our own and written out as the Lark
//! syntax llguidance compiles. Nothing of llama.cpp's grammar code runs: a grammar it would
//! throw on, recurse through or expand without bound is a [`GrammarError`] here, found before
//! any work.
//!
//! The parser follows llama.cpp's `grammar-parser.cpp` (rules `name ::= ...`, literals with
//! `\x \u \U \t \r \n \\ \" \[ \]` escapes, character classes with ranges and `^`, `.`, groups,
//! `* + ? {m} {m,} {m,n}`, `#` comments, `<[id]>` and `<name>` tokens) and refuses what it cannot
//! honour: inverted ranges and repetition bounds, undefined or twice-defined rules, negated
//! tokens, a missing `root`. Every count it reads is bounded by [`GrammarLimits`], and nesting
//! is bounded by depth, so the parser's own recursion is bounded too.
//!
//! One difference from llama.cpp's character-level matching: a literal and a repeated character
//! class each become one lexeme, matched greedily (as llguidance's own GBNF conversion does).
//! Output always matches the grammar; a few strings that need a lexeme cut short cannot be
//! produced.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

/// Bounds on what a grammar may hold; over any of them is a [`GrammarError`].
#[derive(Debug, Clone, PartialEq)]
pub struct GrammarLimits {
    pub max_bytes: usize,
    pub max_rules: usize,
    /// Alternatives (`|`) in the whole grammar.
    pub max_alternatives: usize,
    /// Nesting of parentheses.
    pub max_depth: usize,
    /// The largest count in `{m,n}`.
    pub max_repeat: u32,
}

impl Default for GrammarLimits {
    fn default() -> Self {
        GrammarLimits {
            max_bytes: 128 * 1024,
            max_rules: 4096,
            max_alternatives: 16_384,
            max_depth: 64,
            max_repeat: 1000,
        }
    }
}

/// A grammar that cannot be used, with where (1-based line and column) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", match .line { Some(line) => format!("line {line}, column {}: {}", .column, .message), None => .message.clone() })]
pub struct GrammarError {
    pub line: Option<usize>,
    pub column: usize,
    pub message: String,
}

/// Converts a GBNF grammar to Lark; `vocab_size` bounds `<[id]>` tokens.
pub fn to_lark(
    text: &str,
    limits: &GrammarLimits,
    vocab_size: usize,
) -> Result<String, GrammarError> {
    if text.len() > limits.max_bytes {
        return Err(whole(format!(
            "the grammar has {} bytes, more than the limit of {}",
            text.len(),
            limits.max_bytes
        )));
    }
    let grammar = Parser::new(text, limits, vocab_size).grammar()?;
    Ok(write_lark(&grammar))
}

fn whole(message: String) -> GrammarError {
    GrammarError {
        line: None,
        column: 0,
        message,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(String),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Any,
    Rule(usize),
    Token(String),
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

struct Grammar {
    /// Rule bodies by index; index 0 is `root`.
    rules: Vec<Node>,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    limits: &'a GrammarLimits,
    vocab_size: usize,
    names: HashMap<String, usize>,
    bodies: Vec<Option<Node>>,
    /// Where each rule was first referenced, for "undefined rule" errors.
    referenced_at: Vec<usize>,
    alternatives: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, limits: &'a GrammarLimits, vocab_size: usize) -> Self {
        let mut parser = Parser {
            src,
            pos: 0,
            limits,
            vocab_size,
            names: HashMap::new(),
            bodies: Vec::new(),
            referenced_at: Vec::new(),
            alternatives: 0,
        };
        parser.rule_index("root", 0);
        parser
    }

    fn error(&self, at: usize, message: impl Into<String>) -> GrammarError {
        let before = &self.src[..at.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        GrammarError {
            line: Some(line),
            column,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.src[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Skips spaces, tabs and comments; newlines too when `newline_ok`.
    fn space(&mut self, newline_ok: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                '\r' | '\n' if newline_ok => self.pos += 1,
                _ => break,
            }
        }
    }

    fn rule_index(&mut self, name: &str, at: usize) -> usize {
        if let Some(&index) = self.names.get(name) {
            return index;
        }
        let index = self.bodies.len();
        self.names.insert(name.to_string(), index);
        self.bodies.push(None);
        self.referenced_at.push(at);
        index
    }

    fn grammar(mut self) -> Result<Grammar, GrammarError> {
        self.space(true);
        while self.peek().is_some() {
            self.rule()?;
            self.space(true);
        }
        if self.bodies[0].is_none() {
            return Err(whole("the grammar has no `root` rule".into()));
        }
        let mut rules = Vec::with_capacity(self.bodies.len());
        for (index, body) in self.bodies.iter().enumerate() {
            match body {
                Some(body) => rules.push(body.clone()),
                None => {
                    let name = self
                        .names
                        .iter()
                        .find(|(_, i)| **i == index)
                        .map(|(n, _)| n.clone())
                        .unwrap_or_default();
                    return Err(self.error(
                        self.referenced_at[index],
                        format!("undefined rule `{name}`"),
                    ));
                }
            }
        }
        Ok(Grammar { rules })
    }

    fn rule(&mut self) -> Result<(), GrammarError> {
        let start = self.pos;
        let name = self.name()?;
        self.space(false);
        if !self.eat("::=") {
            return Err(self.error(self.pos, "expected `::=`"));
        }
        self.space(true);
        let body = self.alternates(0)?;
        let index = self.rule_index(&name, start);
        if self.bodies[index].is_some() {
            return Err(self.error(start, format!("rule `{name}` is defined twice")));
        }
        if self.names.len() > self.limits.max_rules {
            return Err(self.error(start, format!("more than {} rules", self.limits.max_rules)));
        }
        self.bodies[index] = Some(body);
        self.eat("\r");
        match self.peek() {
            None => Ok(()),
            Some('\n') => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(self.error(self.pos, "expected a newline or the end of the grammar")),
        }
    }

    fn name(&mut self) -> Result<String, GrammarError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error(start, "expected a rule name"));
        }
        Ok(self.src[start..self.pos].to_string())
    }

    fn alternates(&mut self, depth: usize) -> Result<Node, GrammarError> {
        let mut alternatives = vec![self.sequence(depth)?];
        while self.eat("|") {
            self.alternatives += 1;
            if self.alternatives > self.limits.max_alternatives {
                return Err(self.error(
                    self.pos,
                    format!(
                        "more than {} alternatives in the grammar",
                        self.limits.max_alternatives
                    ),
                ));
            }
            self.space(true);
            alternatives.push(self.sequence(depth)?);
        }
        Ok(if alternatives.len() == 1 {
            alternatives.pop().unwrap_or(Node::Seq(Vec::new()))
        } else {
            Node::Alt(alternatives)
        })
    }

    fn sequence(&mut self, depth: usize) -> Result<Node, GrammarError> {
        let nested = depth > 0;
        let mut items: Vec<Node> = Vec::new();
        loop {
            let at = self.pos;
            let Some(c) = self.peek() else { break };
            match c {
                '"' => {
                    self.pos += 1;
                    items.push(Node::Literal(self.literal()?));
                }
                '[' => {
                    self.pos += 1;
                    items.push(self.class()?);
                }
                '.' => {
                    self.pos += 1;
                    items.push(Node::Any);
                }
                '(' => {
                    self.pos += 1;
                    if depth + 1 > self.limits.max_depth {
                        return Err(self.error(
                            at,
                            format!("parentheses nested deeper than {}", self.limits.max_depth),
                        ));
                    }
                    self.space(true);
                    let inner = self.alternates(depth + 1)?;
                    if !self.eat(")") {
                        return Err(self.error(self.pos, "expected `)`"));
                    }
                    items.push(inner);
                }
                '<' => {
                    self.pos += 1;
                    items.push(self.token(at)?);
                }
                '!' => return Err(self.error(at, "negated tokens (`!<...>`) are not supported")),
                '*' | '+' | '?' => {
                    self.pos += 1;
                    let (min, max) = match c {
                        '*' => (0, None),
                        '+' => (1, None),
                        _ => (0, Some(1)),
                    };
                    self.repeat(&mut items, at, min, max)?;
                }
                '{' => {
                    self.pos += 1;
                    let (min, max) = self.bounds(at)?;
                    self.repeat(&mut items, at, min, max)?;
                }
                c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                    let name = self.name()?;
                    // `name ::=` starts the next rule: this sequence ends here.
                    let after = self.pos;
                    self.space(false);
                    if self.src[self.pos..].starts_with("::=") {
                        self.pos = at;
                        break;
                    }
                    self.pos = after;
                    let index = self.rule_index(&name, at);
                    items.push(Node::Rule(index));
                }
                _ => break,
            }
            self.space(nested);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Node::Seq(Vec::new()))
        } else {
            Node::Seq(items)
        })
    }

    fn repeat(
        &mut self,
        items: &mut Vec<Node>,
        at: usize,
        min: u32,
        max: Option<u32>,
    ) -> Result<(), GrammarError> {
        let Some(last) = items.pop() else {
            return Err(self.error(at, "a repetition needs an item before it"));
        };
        items.push(Node::Repeat {
            node: Box::new(last),
            min,
            max,
        });
        Ok(())
    }

    fn bounds(&mut self, at: usize) -> Result<(u32, Option<u32>), GrammarError> {
        self.space(true);
        let min = self.number()?;
        self.space(true);
        let max = if self.eat(",") {
            self.space(true);
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                Some(self.number()?)
            } else {
                None
            }
        } else {
            Some(min)
        };
        self.space(true);
        if !self.eat("}") {
            return Err(self.error(self.pos, "expected `}`"));
        }
        let limit = self.limits.max_repeat;
        if min > limit || max.is_some_and(|m| m > limit) {
            return Err(self.error(at, format!("repetition counts are limited to {limit}")));
        }
        if let Some(max) = max
            && max < min
        {
            return Err(self.error(
                at,
                format!("repetition {{{min},{max}}}: the maximum is below the minimum"),
            ));
        }
        Ok((min, max))
    }

    fn number(&mut self) -> Result<u32, GrammarError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error(start, "expected a number"));
        }
        self.src[start..self.pos]
            .parse()
            .map_err(|_| self.error(start, "the number is too large"))
    }

    fn literal(&mut self) -> Result<String, GrammarError> {
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.peek() {
                None => return Err(self.error(at, "unterminated string literal")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(_) => out.push(self.char()?),
            }
        }
    }

    fn class(&mut self) -> Result<Node, GrammarError> {
        let start = self.pos;
        let negated = self.eat("^");
        let mut ranges = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error(start, "unterminated character class")),
                Some(']') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => {
                    let at = self.pos;
                    let first = self.char()?;
                    let last = if self.src[self.pos..].starts_with('-')
                        && !self.src[self.pos + 1..].starts_with(']')
                    {
                        self.pos += 1;
                        self.char()?
                    } else {
                        first
                    };
                    if last < first {
                        return Err(self.error(
                            at,
                            format!(
                                "character range {}-{} is inverted",
                                first.escape_debug(),
                                last.escape_debug()
                            ),
                        ));
                    }
                    ranges.push((first, last));
                }
            }
        }
        if ranges.is_empty() && !negated {
            return Err(self.error(start, "empty character class"));
        }
        Ok(Node::Class { negated, ranges })
    }

    /// One character of a literal or class, escapes decoded.
    fn char(&mut self) -> Result<char, GrammarError> {
        let at = self.pos;
        let Some(c) = self.bump() else {
            return Err(self.error(at, "unexpected end of the grammar"));
        };
        if c != '\\' {
            return Ok(c);
        }
        let Some(e) = self.bump() else {
            return Err(self.error(at, "unexpected end of the grammar"));
        };
        let hex = |parser: &mut Self, digits: usize| -> Result<char, GrammarError> {
            let end = parser.pos + digits;
            let code = parser
                .src
                .get(parser.pos..end)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| parser.error(at, format!("expected {digits} hex digits")))?;
            parser.pos = end;
            char::from_u32(code)
                .ok_or_else(|| parser.error(at, format!("\\{e}{code:X} is not a character")))
        };
        match e {
            'x' => hex(self, 2),
            'u' => hex(self, 4),
            'U' => hex(self, 8),
            't' => Ok('\t'),
            'r' => Ok('\r'),
            'n' => Ok('\n'),
            '\\' | '"' | '[' | ']' => Ok(e),
            other => Err(self.error(at, format!("unknown escape \\{}", other.escape_debug()))),
        }
    }

    fn token(&mut self, at: usize) -> Result<Node, GrammarError> {
        let end = self.src[self.pos..]
            .find('>')
            .map(|i| self.pos + i)
            .ok_or_else(|| self.error(at, "unterminated token (`<...>`)"))?;
        let inner = &self.src[self.pos..end];
        self.pos = end + 1;
        if let Some(id) = inner.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let id: usize = id
                .parse()
                .map_err(|_| self.error(at, format!("token id `{id}` is not a number")))?;
            if id >= self.vocab_size {
                return Err(self.error(
                    at,
                    format!(
                        "token id {id} is outside the vocabulary (size {})",
                        self.vocab_size
                    ),
                ));
            }
            return Ok(Node::Token(format!("<[{id}]>")));
        }
        if inner.is_empty() || inner.contains(|c: char| c.is_whitespace() || c == '<') {
            return Err(self.error(at, "a token is `<[id]>` or `<name>`"));
        }
        Ok(Node::Token(format!("<{inner}>")))
    }
}

fn write_lark(grammar: &Grammar) -> String {
    let mut out = String::new();
    for (index, body) in grammar.rules.iter().enumerate() {
        let _ = write!(out, "{}: ", rule_name(index));
        write_node(&mut out, body, true);
        out.push('\n');
    }
    out
}

fn rule_name(index: usize) -> String {
    if index == 0 {
        "start".into()
    } else {
        format!("r{index}")
    }
}

fn write_node(out: &mut String, node: &Node, top: bool) {
    match node {
        Node::Literal(text) if text.is_empty() => out.push_str("\"\""),
        Node::Literal(text) => out.push_str(&Value::String(text.clone()).to_string()),
        Node::Class { .. } | Node::Any => {
            out.push('/');
            write_regex_atom(out, node);
            out.push('/');
        }
        Node::Rule(index) => out.push_str(&rule_name(*index)),
        Node::Token(token) => out.push_str(token),
        Node::Seq(items) if items.is_empty() => out.push_str("\"\""),
        Node::Seq(items) => {
            if !top {
                out.push('(');
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_node(out, item, false);
            }
            if !top {
                out.push(')');
            }
        }
        // Many literal alternatives (a word list) are one lexeme: the lexer matches them in one
        // automaton, where the Earley parser would carry an item per alternative.
        Node::Alt(alternatives)
            if alternatives.len() > 1
                && alternatives
                    .iter()
                    .all(|a| matches!(a, Node::Literal(text) if !text.is_empty())) =>
        {
            out.push_str("/(?:");
            for (i, alternative) in alternatives.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                if let Node::Literal(text) = alternative {
                    text.chars().for_each(|c| write_regex_char(out, c));
                }
            }
            out.push_str(")/");
        }
        Node::Alt(alternatives) => {
            if !top {
                out.push('(');
            }
            for (i, alternative) in alternatives.iter().enumerate() {
                if i > 0 {
                    out.push_str(" | ");
                }
                write_node(out, alternative, true);
            }
            if !top {
                out.push(')');
            }
        }
        Node::Repeat { node, min, max } => write_repeat(out, node, *min, *max),
    }
}

/// A repeated character class is one regex lexeme (a lexeme cannot be empty: `x*` is
/// `(/x+/)?`); anything else repeats at the parser level.
fn write_repeat(out: &mut String, node: &Node, min: u32, max: Option<u32>) {
    if matches!(max, Some(0)) {
        out.push_str("\"\"");
        return;
    }
    if matches!(node, Node::Class { .. } | Node::Any) {
        let low = min.max(1);
        let optional = min == 0;
        if optional {
            out.push('(');
        }
        out.push('/');
        write_regex_atom(out, node);
        match max {
            None => {
                let _ = write!(out, "{{{low},}}");
            }
            Some(max) => {
                let _ = write!(out, "{{{low},{max}}}");
            }
        }
        out.push('/');
        if optional {
            out.push_str(")?");
        }
        return;
    }
    out.push('(');
    write_node(out, node, true);
    out.push(')');
    match (min, max) {
        (0, None) => out.push('*'),
        (1, None) => out.push('+'),
        (0, Some(1)) => out.push('?'),
        (min, None) => {
            let _ = write!(out, "{{{min},}}");
        }
        (min, Some(max)) if min == max => {
            let _ = write!(out, "{{{min}}}");
        }
        (min, Some(max)) => {
            let _ = write!(out, "{{{min},{max}}}");
        }
    }
}

fn write_regex_atom(out: &mut String, node: &Node) {
    match node {
        Node::Any => out.push_str("(?s:.)"),
        Node::Class { negated, ranges } if *negated && ranges.is_empty() => {
            // `[^]`: any character.
            out.push_str("(?s:.)");
        }
        Node::Class { negated, ranges } => {
            out.push('[');
            if *negated {
                out.push('^');
            }
            for &(first, last) in ranges {
                write_regex_char(out, first);
                if last != first {
                    out.push('-');
                    write_regex_char(out, last);
                }
            }
            out.push(']');
        }
        _ => {}
    }
}

/// Every character in a class as an escape, so no character can close the class or the regex.
fn write_regex_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:X}}}", c as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lark(text: &str) -> Result<String, GrammarError> {
        to_lark(text, &GrammarLimits::default(), 1000)
    }

    fn refused(text: &str) -> String {
        match lark(text) {
            Ok(out) => panic!("accepted {text:?} as {out}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn converts_the_usual_shapes() {
        let cases = [
            ("root ::= \"yes\" | \"no\"", "start: /(?:yes|no)/\n"),
            (
                "root ::= \"a\" | x\nx ::= \"b\"",
                "start: \"a\" | r1\nr1: \"b\"\n",
            ),
            ("root ::= [a-z]+", "start: /[a-z]{1,}/\n"),
            ("root ::= [0-9]*", "start: (/[0-9]{1,}/)?\n"),
            ("root ::= x x\nx ::= \"a\"", "start: r1 r1\nr1: \"a\"\n"),
            (
                "root ::= (\"a\" | \"b\"){2,3} [^\"\\\\]",
                "start: (/(?:a|b)/){2,3} /[^\\x{22}\\x{5C}]/\n",
            ),
            ("root ::= <[7]> .", "start: <[7]> /(?s:.)/\n"),
            ("# c\nroot ::= \"\\x41\\u00e9\" # tail\n", "start: \"Aé\"\n"),
            ("root ::= ", "start: \"\"\n"),
        ];
        for (gbnf, expected) in cases {
            assert_eq!(lark(gbnf).as_deref(), Ok(expected), "{gbnf}");
        }
    }

    #[test]
    fn a_rule_may_continue_on_the_next_line_inside_parentheses() {
        assert_eq!(
            lark("root ::= (\n  \"a\"\n  | \"b\"\n)\n").as_deref(),
            Ok("start: /(?:a|b)/\n")
        );
    }

    /// The shapes that aborted the process or ran away in llama.cpp's own parser.
    #[test]
    fn refuses_what_llama_cpp_threw_on_or_expanded_without_bound() {
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(5000), ")".repeat(5000));
        let cases = [
            ("root ::= [z-a]", "inverted"),
            ("root ::= <[1]>", ""),
            (deep.as_str(), "nested deeper than 64"),
            ("root ::= \"a\"{2,1}", "below the minimum"),
            ("root ::= \"a\"{5,3}", "below the minimum"),
            ("root ::= [a-z]{10,2}", "below the minimum"),
            ("root ::= \"a\"{100000}", "limited to 1000"),
            ("root ::= \"a\"{99999999999}", "too large"),
            ("root ::= x", "undefined rule `x`"),
            ("x ::= \"a\"", "no `root` rule"),
            ("root ::= \"a\"\nroot ::= \"b\"", "defined twice"),
            ("root ::= \"abc", "unterminated string"),
            ("root ::= [abc", "unterminated character class"),
            ("root ::= []", "empty character class"),
            ("root ::= \"\\q\"", "unknown escape"),
            ("root ::= \"\\xZZ\"", "hex digits"),
            ("root ::= \"\\UFFFFFFFF\"", "not a character"),
            ("root ::= * \"a\"", "needs an item"),
            ("root ::= !<[1]>", "negated"),
            ("root ::= <[5000]>", "outside the vocabulary"),
            ("root = \"a\"", "expected `::=`"),
            ("root ::= (\"a\"", "expected `)`"),
            ("root ::= \"a\" )", "newline"),
        ];
        for (gbnf, fragment) in cases {
            if fragment.is_empty() {
                assert!(lark(gbnf).is_ok(), "{gbnf}");
                continue;
            }
            let message = refused(gbnf);
            assert!(message.contains(fragment), "{gbnf}: {message}");
        }
    }

    #[test]
    fn limits_hold() {
        let limits = GrammarLimits {
            max_bytes: 100,
            max_alternatives: 3,
            max_rules: 2,
            ..GrammarLimits::default()
        };
        let check = |text: &str, fragment: &str| {
            let message = to_lark(text, &limits, 10).unwrap_err().to_string();
            assert!(message.contains(fragment), "{text}: {message}");
        };
        check(&format!("root ::= \"{}\"", "a".repeat(200)), "bytes");
        check(
            "root ::= \"a\" | \"b\" | \"c\" | \"d\" | \"e\"",
            "alternatives",
        );
        check("root ::= a\na ::= b\nb ::= \"x\"", "rules");
    }

    #[test]
    fn errors_say_where() {
        let error = lark("root ::= \"a\"\nx ::= [z-a]").unwrap_err();
        assert_eq!((error.line, error.column), (Some(2), 8), "{error}");
    }
}
