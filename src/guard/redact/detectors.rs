//! The built-in detectors: categories in priority order, their regexes and validators.
//!
//! Each detector is one regex (alternations fold many formats of a category into one pass) plus
//! a validator (`checks.rs`) that accepts, trims or rejects each candidate. A regex may name a
//! key group `k` and value groups `v`, `v2`, ...: the first value group that took part is what
//! gets redacted; with no named groups, group 1 if the regex has one (user patterns), else the
//! whole match.

use std::ops::Range;

use super::scan::{Check, Detector, Hit, compile};
use super::{address, checks, person};

/// Built-in categories in priority order (earlier wins an overlap of equal standing), as
/// `(name, placeholder label)`. User patterns slot in after `secret`.
pub(super) const SECRET_CATEGORIES: &[(&str, &str)] = &[
    ("private_key", "PRIVATE_KEY"),
    ("jwt", "JWT"),
    ("api_key", "API_KEY"),
    ("auth_header", "AUTH"),
    ("url_credentials", "URL_CREDS"),
    ("secret", "SECRET"),
];
pub(super) const PERSONAL_CATEGORIES: &[(&str, &str)] = &[
    ("serial", "SERIAL"),
    ("card_number", "CARD"),
    ("iban", "IBAN"),
    ("ssn", "SSN"),
    ("email", "EMAIL"),
    ("mac_address", "MAC"),
    ("ipv6", "IPV6"),
    ("ipv4", "IPV4"),
    ("address", "ADDRESS"),
    ("person", "PERSON"),
    ("phone", "PHONE"),
    ("deny_word", "DENY_WORD"),
];

struct Spec {
    category: &'static str,
    pattern: &'static str,
    check: Check,
}

/// API key formats that are recognisable on their own (prefix + alphabet + length).
const API_KEY_FORMATS: &str = concat!(
    r"\b(?:",
    r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}", // AWS access key id
    r"|(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}", // GitHub
    r"|github_pat_[A-Za-z0-9_]{22,255}",    // GitHub fine-grained
    r"|glpat-[A-Za-z0-9_-]{20,64}",         // GitLab
    r"|xox[abprse]-[A-Za-z0-9-]{10,255}",   // Slack
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,255}", // Stripe secret / restricted
    r"|whsec_[A-Za-z0-9]{24,255}",          // Stripe webhook secret
    r"|sk-[A-Za-z0-9_-]{20,255}",           // OpenAI, Anthropic (sk-ant-), OpenRouter
    r"|AIza[0-9A-Za-z_-]{35}",              // Google API key
    r"|GOCSPX-[A-Za-z0-9_-]{28}",           // Google OAuth client secret
    r"|ya29\.[0-9A-Za-z_-]{20,255}",        // Google OAuth access token
    r"|(?:SK|AC)[0-9a-fA-F]{32}",           // Twilio API key / account SID
    r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", // SendGrid
    r"|npm_[A-Za-z0-9]{36}",                // npm
    r"|hf_[A-Za-z0-9]{34,64}",              // Hugging Face
    r"|gsk_[A-Za-z0-9]{48,64}",             // Groq
    r"|xai-[A-Za-z0-9]{40,100}",            // xAI
    r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}", // Shopify
    r"|dop_v1_[a-f0-9]{64}",                // DigitalOcean
    r"|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,255}", // PyPI
    r")"
);

/// A phone extension after the number: `x204`, ` ext. 204`, ` extension 204`.
macro_rules! ext {
    () => {
        r"(?:[ ]?(?i:x|ext\.?|extension)[ ]?[0-9]{1,6}\b)"
    };
}

/// A key/value separator after a key name, optionally JSON-quoted or escaped-JSON-quoted.
macro_rules! sep {
    () => {
        r#"\\?["']?[ \t]*(?:=>|:=|:|=)[ \t]*"#
    };
}

const SPECS: &[Spec] = &[
    Spec {
        category: "private_key",
        pattern: concat!(
            r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----",
            r"(?:[\s\S]*?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:,-]*)"
        ),
        check: accept,
    },
    // A key body without its BEGIN line: base64 lines that end in the END line, or the
    // unmistakable starts of a PKCS#1/PKCS#8 (`MII...`, DER) or OpenSSH (`openssh-key-v1`) body
    // running over more than one line.
    Spec {
        category: "private_key",
        pattern: concat!(
            r"(?:[A-Za-z0-9+/]{16,76}={0,2}(?:\r?\n|\\r?\\n))+-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----",
            r"|\b(?:MII[A-Za-z0-9+/]{20}|b3BlbnNzaC1rZXktdjE)[A-Za-z0-9+/]{24,76}",
            r"(?:(?:\r?\n|\\r?\\n)[A-Za-z0-9+/]{16,76}={0,2})+"
        ),
        check: accept,
    },
    Spec {
        category: "jwt",
        pattern: r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        check: key_token,
    },
    Spec {
        category: "api_key",
        pattern: API_KEY_FORMATS,
        check: api_key,
    },
    Spec {
        category: "api_key",
        pattern: concat!(
            r"(?i:aws_?secret_?access_?key|aws_?secret_?key|aws_?secret|secret_?access_?key)",
            sep!(),
            r#"\\?["']?(?P<v>[A-Za-z0-9/+]{40})"#
        ),
        check: random_token,
    },
    Spec {
        category: "api_key",
        pattern: concat!(
            r"(?i:\b(?:AccountKey|SharedAccessKey)=(?P<v>[A-Za-z0-9+/]{20,}={0,2})",
            r"|\b(?:ocp-apim-subscription-key|azure[_-]?(?:openai[_-]?)?(?:api[_-]?)?key|api-key)",
            sep!(),
            r#"\\?["']?(?P<v2>[0-9a-f]{32})\b)"#,
        ),
        check: key_token,
    },
    Spec {
        category: "api_key",
        pattern: r"hooks\.slack\.com/services/(?P<v>T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,})",
        check: accept,
    },
    Spec {
        category: "auth_header",
        pattern: concat!(
            r"(?i:\b(?:proxy-)?authorization)",
            sep!(),
            r#"\\?["']?(?i:bearer|basic|token|bot|apikey)[ \t]+(?P<v>[A-Za-z0-9._~+/=-]{6,})"#,
            r"|(?i:\bbearer)[ \t]+(?P<v2>[A-Za-z0-9._~+/-]{16,}=*)"
        ),
        check: auth_header,
    },
    Spec {
        category: "url_credentials",
        pattern: r#"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://(?P<v>[^\s:/?#@"'<>\[\]]*:[^\s/?#@"'<>\[\]]+)@"#,
        check: url_credentials,
    },
    Spec {
        category: "secret",
        pattern: concat!(
            r"(?P<k>[A-Za-z0-9_.-]*(?i:pass|pwd|secret|token|key|auth|credential|session)[A-Za-z0-9_.-]*)",
            sep!(),
            r#"(?:\\"(?P<v>(?:[^"\\\n]|\\[^"\n])+?)\\"|"(?P<v2>(?:[^"\\\n]|\\.){1,256})""#,
            r#"|'(?P<v3>[^'\n]{1,256})'|(?P<v4>[^\s"'`,;<>)\]}]{1,256}))"#
        ),
        check: assignment,
    },
    Spec {
        category: "secret",
        pattern: concat!(
            r"(?m:^[ \t]*(?:- |export )?(?P<k>[A-Za-z0-9_.-]*(?i:pass|pwd|secret)[A-Za-z0-9_.-]*)",
            r#"[ \t]*(?:=|:)[ \t]*(?P<v>[^\s"'#`][^\n]{0,255}))"#
        ),
        check: passphrase,
    },
    Spec {
        category: "secret",
        pattern: concat!(
            r"(?P<k>--(?i:password|passwd|pass|token|api-key|apikey|secret|access-token|auth-token))",
            r#"[ \t]+(?:"(?P<v>[^"\n]{1,256})"|'(?P<v2>[^'\n]{1,256})'|(?P<v3>[^\s"'-][^\s"']{0,255}))"#
        ),
        check: cli_flag,
    },
    Spec {
        category: "secret",
        pattern: concat!(
            r"(?i:\b(?:api[ _-]?key|key|token|secret|password|passwd|pwd|passphrase|credentials?|auth))",
            r"[^\n]{0,24}?\b(?P<v>[A-Za-z0-9][A-Za-z0-9+/_.-]{15,255}={0,2})"
        ),
        check: entropy_near_key_word,
    },
    // Serial numbers: IMEI / IMEISV after their name, a grouped or TAC-prefixed 15-digit Luhn
    // number on its own, and any value after a serial context.
    Spec {
        category: "serial",
        pattern: concat!(
            r"(?i:\bimei(?:sv)?(?:[ ]?(?:no\.?|number|#))?)[^0-9A-Za-z\n]{0,12}",
            r"(?P<v>[0-9]{2}[ -]?[0-9]{6}[ -]?[0-9]{6}[ -]?[0-9]{1,2})\b"
        ),
        check: |h| checks::imei(h.text, h.value.clone(), true),
    },
    Spec {
        category: "serial",
        pattern: r"\b[0-9]{2}-[0-9]{6}-[0-9]{6}-[0-9]\b|\b[0-9]{15}\b",
        check: |h| checks::imei(h.text, h.value.clone(), false),
    },
    Spec {
        category: "serial",
        pattern: concat!(
            r"(?:(?i:\b(?:s/n|serial[ _-]?(?:number|num|no\.?|nr\.?|#)?|service[ _-]?tag|svc[ _-]?tag",
            r"|asset[ _-]?tag|seriennummer|serienummer|num[ée]ro de s[ée]rie|n[uú]mero de serie",
            r"|numero di serie|numer seryjny)\b\.?",
            r#"\\?["']?[ \t]*(?:[:=#]|is)?[ \t]*\\?["']?)"#,
            r#"|(?i:\bsn\b\\?["']?[ \t]*[:=][ \t]*\\?["']?))"#,
            r"(?P<v>[A-Za-z0-9][A-Za-z0-9-]{3,40})\b"
        ),
        check: |h| checks::serial_value(h.text, h.value.clone()),
    },
    Spec {
        category: "card_number",
        pattern: r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        check: |h| checks::card_number(h.text, h.value.clone()),
    },
    Spec {
        category: "iban",
        pattern: r"(?i:\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,30}\b)",
        check: |h| checks::iban(h.text, h.value.clone()),
    },
    Spec {
        category: "ssn",
        pattern: concat!(
            r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
            r"|(?i:\b(?:ssn|social security(?: number| no\.?)?))[^0-9\n]{0,20}",
            r"(?P<v>[0-9]{9}|[0-9]{3} [0-9]{2} [0-9]{4})\b"
        ),
        check: |h| checks::ssn(h.text, h.value.clone()),
    },
    Spec {
        category: "email",
        pattern: concat!(
            r"\b[\p{L}\p{N}._%+'-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
            r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b"
        ),
        check: email,
    },
    Spec {
        category: "mac_address",
        pattern: concat!(
            r"\b(?:(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}|(?:[0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}",
            r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})\b"
        ),
        check: |h| checks::mac(h.text, h.value.clone()),
    },
    Spec {
        category: "ipv6",
        pattern: r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{0,4})",
        check: |h| checks::ipv6(h.text, h.value.clone()),
    },
    Spec {
        category: "ipv4",
        pattern: r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b",
        check: |h| checks::ipv4(h.text, h.value.clone()),
    },
    Spec {
        category: "phone",
        pattern: concat!(
            r"(?:\+|\b00)[1-9][0-9]{0,3}(?:[ .-]?(?:\(0\)|\([0-9]{1,4}\)|[0-9]{1,6})){1,6}",
            ext!(),
            r"?|(?:\b1[.-])?(?:\([2-9][0-9]{2}\)[ ]?[2-9][0-9]{2}[ .-]|\b[2-9][0-9]{2}[.-][2-9][0-9]{2}[.-])[0-9]{4}",
            r"(?:",
            ext!(),
            r"|\b)",
            r"|\b0[1-9][0-9]{0,4}[ /-][0-9]{2,8}(?:[ -][0-9]{2,8}){0,3}\b",
            r"|\(0[1-9][0-9]{0,4}\)[ ]?[0-9]{2,8}(?:[ -][0-9]{2,8}){0,3}\b"
        ),
        check: |h| checks::phone(h.text, h.value.clone()),
    },
];

/// Phone numbers after a word that names one (`phone:`, `tel.`, `mobile`, `fax`, ...), with
/// an optional extension: 7-15 digits.
const PHONE_CONTEXT: &str = concat!(
    r"(?i:\b(?:phone|telephone|tel|telefon|telefone|tel[ée]fono|telefono|mobile|mobil|m[óo]vil",
    r"|cell(?:phone)?|fax|whatsapp|ph|tlf|contact number|call (?:me|us) (?:at|on))\b\.?)",
    r"[ \t]*(?i:no\.?|number|nr\.?|#)?[ \t]*[:=]?[ \t]*",
    r"(?P<v>\+?\(?[0-9][0-9 ().-]{5,22}[0-9](?:[ ]?(?i:ext\.?|x|extension|#)[ ]?[0-9]{1,6})?)"
);

/// National numbers in groups (`415 555 2671`, `(11) 91234-5678`, `612 34 56 78`, `138 0013
/// 8000`), with an optional extension: kept only when valid for a configured region.
const PHONE_GROUPED: &str = concat!(
    r"(?:\([0-9]{1,4}\)[ .-]?|\b[0-9]{1,5}[ .-])(?:[0-9]{1,5}[ .-]){0,4}[0-9]{2,5}\b",
    ext!(),
    "?"
);

/// National numbers written without separators in shapes few other numbers take: a trunk-0
/// number of 10-11 digits (most of Europe) or a Chinese mobile (`1[3-9]` and 9 more); kept only
/// when valid for a configured region.
const PHONE_UNGROUPED: &str = r"\b0[1-9][0-9]{8,9}\b|\b1[3-9][0-9]{9}\b";

/// The region-aware phone detectors for `regions` (see [`checks::phone_regional`]).
pub(super) fn phone_detectors(
    category: usize,
    regions: Vec<checks::PhoneRegion>,
) -> Result<Vec<Detector>, regex::Error> {
    let regions: std::sync::Arc<[checks::PhoneRegion]> = regions
        .into_iter()
        .map(checks::PhoneRegion::with_fast_path)
        .collect();
    let mut out = Vec::new();
    for (pattern, context) in [
        (PHONE_CONTEXT, true),
        (PHONE_GROUPED, false),
        (PHONE_UNGROUPED, false),
    ] {
        let regions = regions.clone();
        out.push(Detector::with_check(
            category,
            compile(pattern, true)?,
            Box::new(move |h| checks::phone_regional(h.text, h.value.clone(), context, &regions)),
        ));
    }
    Ok(out)
}

fn accept(h: &Hit<'_>) -> Option<Range<usize>> {
    Some(h.value.clone())
}

/// A key-like token that does not continue into more key characters.
fn key_token(h: &Hit<'_>) -> Option<Range<usize>> {
    checks::token_bounded(h.text, &h.value, checks::is_key_char).then(|| h.value.clone())
}

fn api_key(h: &Hit<'_>) -> Option<Range<usize>> {
    let v = h.text.get(h.value.clone())?;
    // Prefixes that also start ordinary identifiers need a random-looking body.
    let loose = v.starts_with("sk-") || v.starts_with("hf_") || v.starts_with("xox");
    if loose && !checks::looks_random(v, 20, 3.0) {
        return None;
    }
    key_token(h)
}

fn random_token(h: &Hit<'_>) -> Option<Range<usize>> {
    let v = h.text.get(h.value.clone())?;
    (checks::looks_random(v, 16, 3.0)
        && checks::token_bounded(h.text, &h.value, checks::is_key_char))
    .then(|| h.value.clone())
}

fn auth_header(h: &Hit<'_>) -> Option<Range<usize>> {
    let v = h.text.get(h.value.clone())?;
    let after_header = h
        .text
        .get(..h.value.start)?
        .to_ascii_lowercase()
        .contains("authorization");
    let ok = if after_header {
        !checks::is_placeholder_value(v)
    } else {
        checks::looks_random(v, 16, 3.0)
    };
    ok.then(|| h.value.clone())
}

fn url_credentials(h: &Hit<'_>) -> Option<Range<usize>> {
    let v = h.text.get(h.value.clone())?;
    let (_, password) = v.split_once(':')?;
    (!checks::is_placeholder_value(password) && !password.starts_with('$')).then(|| h.value.clone())
}

/// Key-name segments, lowercased: `dbPassword` -> [db, password], `X-Api-Key` -> [x, api, key].
fn key_segments(key: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if matches!(c, '_' | '-' | '.') {
            if !current.is_empty() {
                segments.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            segments.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

const STRONG_KEY_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "secret",
    "secrets",
];
const WEAK_LAST_WORDS: &[&str] = &[
    "token",
    "apikey",
    "credential",
    "credentials",
    "auth",
    "sessionid",
    "secretkey",
    "accesskey",
];
const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "access",
    "private",
    "signing",
    "encryption",
    "master",
    "account",
    "app",
    "auth",
    "license",
    "subscription",
    "client",
];
/// Last segments that make a key name describe a secret instead of holding one.
const NOT_A_VALUE: &[&str] = &[
    "length",
    "len",
    "min",
    "max",
    "policy",
    "file",
    "path",
    "name",
    "id",
    "ref",
    "env",
    "type",
    "prompt",
    "label",
    "hint",
    "required",
    "enabled",
    "rotation",
    "expiry",
    "expires",
    "age",
    "strength",
    "reset",
    "count",
    "url",
    "manager",
    "store",
    "provider",
    "field",
    "mode",
    "format",
    "version",
    "arn",
    "size",
    "timeout",
    "ttl",
    "header",
    "scheme",
    "algorithm",
];

enum KeyStrength {
    Strong,
    Weak,
}

fn key_strength(key: &str) -> Option<KeyStrength> {
    let segs = key_segments(key);
    let last = segs.last()?.as_str();
    if NOT_A_VALUE.contains(&last) {
        return None;
    }
    // Whole segments, or compounds ending in one (`dbpassword`, `csrftoken`).
    let strong = |s: &String| {
        STRONG_KEY_WORDS.contains(&s.as_str())
            || ["password", "passwd", "passphrase", "secret"]
                .iter()
                .any(|w| s.ends_with(w))
    };
    if segs.iter().any(strong) {
        return Some(KeyStrength::Strong);
    }
    let weak_compound = ["token", "apikey", "accesskey", "secretkey"]
        .iter()
        .any(|w| last.ends_with(w));
    let qualified_key =
        last == "key" && segs.len() >= 2 && KEY_QUALIFIERS.contains(&segs[segs.len() - 2].as_str());
    let session_id = last == "id" && segs.len() >= 2 && segs[segs.len() - 2] == "session";
    (WEAK_LAST_WORDS.contains(&last) || weak_compound || qualified_key || session_id)
        .then_some(KeyStrength::Weak)
}

fn assignment(h: &Hit<'_>) -> Option<Range<usize>> {
    let key_span = h.key.clone()?;
    let key = h.text.get(key_span.clone())?;
    let mut value = h.value.clone();
    // In a URL query (`?token=...&page=2`) the value ends at the next `&`.
    if matches!(checks::char_before(h.text, key_span.start), Some('?' | '&')) {
        let v = h.text.get(value.clone())?;
        value.end = value.start + v.find('&').unwrap_or(v.len());
    }
    let v = h.text.get(value.clone())?;
    if checks::is_placeholder_value(v) || v.contains("-----BEGIN") || v.starts_with(['=', '>', ':'])
    {
        return None;
    }
    let quoted = matches!(checks::char_before(h.text, h.value.start), Some('"' | '\''));
    let ok = match key_strength(key)? {
        KeyStrength::Weak => checks::looks_random(v, 8, 2.5),
        // Prose guard: "Password: must be 8 characters" is not a password; an unquoted value
        // after `:` needs something besides lowercase letters, unless it is alone on a
        // configuration line (`password: hunter`, YAML).
        KeyStrength::Strong => {
            let colon = h
                .text
                .get(h.key.clone()?.end..h.value.start)
                .is_some_and(|s| s.contains(':') && !s.contains('='));
            quoted
                || !colon
                || v.chars().any(|c| !c.is_ascii_lowercase())
                || config_line(h.text, &key_span, &value)
        }
    };
    ok.then_some(value)
}

/// `key` starts its line (after indentation, a YAML `- ` or `export `) and `value` ends it
/// (before trailing spaces or a ` #` comment).
fn config_line(text: &str, key: &Range<usize>, value: &Range<usize>) -> bool {
    let line_start = text
        .get(..key.start)
        .map_or(0, |t| t.rfind('\n').map_or(0, |i| i + 1));
    let head = text.get(line_start..key.start).unwrap_or("x").trim_start();
    let head_ok = head.is_empty() || head == "- " || head == "-" || head == "export ";
    let tail = text.get(value.end..).unwrap_or("");
    let tail = &tail[..tail.find('\n').unwrap_or(tail.len())];
    let tail = tail.trim();
    head_ok && (tail.is_empty() || tail.starts_with('#'))
}

/// First words of a value that make `Password: must be 8 characters` a sentence, not a
/// passphrase.
const PROSE_WORDS: &[&str] = &[
    "must",
    "should",
    "is",
    "are",
    "was",
    "will",
    "can",
    "cannot",
    "needs",
    "need",
    "required",
    "optional",
    "at",
    "min",
    "minimum",
    "max",
    "maximum",
    "the",
    "a",
    "an",
    "your",
    "not",
    "see",
    "use",
    "set",
    "enter",
    "please",
    "only",
    "contains",
    "contain",
    "has",
    "have",
    "too",
    "length",
    "expired",
    "changed",
    "reset",
    "invalid",
    "incorrect",
    "wrong",
    "ok",
    "none",
];

/// A passphrase: several words after a password key on a configuration line.
fn passphrase(h: &Hit<'_>) -> Option<Range<usize>> {
    let key = h.text.get(h.key.clone()?)?;
    if !matches!(key_strength(key)?, KeyStrength::Strong) {
        return None;
    }
    let raw = h.text.get(h.value.clone())?;
    // A YAML / INI comment ends the value.
    let v = raw.split(" #").next().unwrap_or(raw).trim_end();
    let words: Vec<&str> = v.split_whitespace().collect();
    let first = words.first()?.to_ascii_lowercase();
    let prose = PROSE_WORDS.contains(&first.trim_end_matches([',', '.', ':']))
        || v.ends_with(['.', '?', '!', ':']);
    // One word alone on the line is a password whatever it holds (`$FQwC^1Pxx0)UobI`); the
    // token rule ends unquoted values at brackets and commas.
    if words.len() == 1 {
        let whole_line = checks::is_placeholder_value(v) || v.len() < 2;
        return (!whole_line).then(|| h.value.start..h.value.start + v.len());
    }
    if words.len() > 10 || prose || checks::is_placeholder_value(words[0]) {
        return None;
    }
    Some(h.value.start..h.value.start + v.len())
}

fn cli_flag(h: &Hit<'_>) -> Option<Range<usize>> {
    let v = h.text.get(h.value.clone())?;
    (!checks::is_placeholder_value(v)).then(|| h.value.clone())
}

fn entropy_near_key_word(h: &Hit<'_>) -> Option<Range<usize>> {
    let v = h.text.get(h.value.clone())?;
    let trimmed = v.trim_end_matches(['.', '-', '_']);
    let span = h.value.start..h.value.start + trimmed.len();
    // `prompt_tokens_1200`, `max_new_tokens`: identifiers made of words and numbers.
    let identifier = !trimmed.bytes().any(|b| b.is_ascii_uppercase())
        && trimmed.contains(['_', '.'])
        && trimmed.split(['_', '.']).all(|part| {
            part.bytes().all(|b| b.is_ascii_lowercase()) || part.bytes().all(|b| b.is_ascii_digit())
        });
    (!identifier
        && checks::looks_random(trimmed, 16, 3.5)
        && checks::token_bounded(h.text, &span, checks::is_key_char))
    .then_some(span)
}

fn email(h: &Hit<'_>) -> Option<Range<usize>> {
    let v = h.text.get(h.value.clone())?;
    let (local, domain) = v.rsplit_once('@')?;
    let tld = domain.rsplit('.').next()?.to_ascii_lowercase();
    let file_ext = matches!(
        tld.as_str(),
        "png" | "jpg" | "jpeg" | "gif" | "svg" | "webp" | "ico" | "css" | "js"
    );
    let git_remote = local == "git" && checks::char_at(h.text, h.value.end) == Some(':');
    let bad_local = local.starts_with(['.', '\'']) || local.ends_with('.') || local.contains("..");
    (!file_ext && !git_remote && !bad_local).then(|| h.value.clone())
}

/// Compiles the built-in detectors, skipping categories for which `enabled` says no.
pub(super) fn builtin_detectors(
    category_index: impl Fn(&str) -> Option<usize>,
    enabled: impl Fn(usize) -> bool,
) -> Result<Vec<Detector>, (&'static str, regex::Error)> {
    let mut out = Vec::new();
    for spec in SPECS {
        let Some(category) = category_index(spec.category) else {
            continue;
        };
        if !enabled(category) {
            continue;
        }
        let regex = compile(spec.pattern, true).map_err(|e| (spec.category, e))?;
        out.push(Detector::new(category, regex, spec.check));
    }
    if let Some(category) = category_index("person").filter(|c| enabled(*c)) {
        out.push(Detector::scanner(category, person::scanner()));
    }
    if let Some(category) = category_index("address").filter(|c| enabled(*c)) {
        let scanner = address::scanner().map_err(|e| ("address", e))?;
        out.push(Detector::scanner(category, scanner));
    }
    Ok(out)
}
