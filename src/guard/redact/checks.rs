//! Validators that turn a regex candidate into a detection or reject it: checksums (Luhn,
//! IBAN mod-97), number rules (SSN areas, IP octets), character context around a match, and
//! the Shannon-entropy test for generic tokens. Pure functions over `&str`; no regexes here.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// The character just before byte `at`, if any.
pub(super) fn char_before(text: &str, at: usize) -> Option<char> {
    text.get(..at)?.chars().next_back()
}

/// `at`, or the closest char boundary before it.
pub(super) fn floor_char(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// `at`, or the closest char boundary after it.
pub(super) fn ceil_char(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// The character starting at byte `at`, if any.
pub(super) fn char_at(text: &str, at: usize) -> Option<char> {
    text.get(at..)?.chars().next()
}

/// The character after the one starting at byte `at` (one character of look-ahead past it).
fn char_after_next(text: &str, at: usize) -> Option<char> {
    let mut it = text.get(at..)?.chars();
    it.next()?;
    it.next()
}

/// The character two before byte `at`.
fn char_before_prev(text: &str, at: usize) -> Option<char> {
    let mut it = text.get(..at)?.chars().rev();
    it.next()?;
    it.next()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Neither side of `span` continues a token made of `token` characters.
pub(super) fn token_bounded(text: &str, span: &Range<usize>, token: fn(char) -> bool) -> bool {
    !char_before(text, span.start).is_some_and(token) && !char_at(text, span.end).is_some_and(token)
}

/// Base64 / base64url / key alphabet, used for boundaries of key-like tokens.
pub(super) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '/')
}

/// A number-like match (card, phone, SSN, IPv4) is not part of a bigger number, word, dotted
/// version, date or identifier: the neighbours are not word characters, and a neighbouring
/// `. , - / : +` is not itself followed (or preceded) by a digit.
pub(super) fn numeric_bounded(text: &str, span: &Range<usize>) -> bool {
    let joiner = |c: char| matches!(c, '.' | ',' | '-' | '/' | ':' | '+' | '_');
    match char_before(text, span.start) {
        Some(c) if is_word(c) => return false,
        Some(c) if joiner(c) && char_before_prev(text, span.start).is_some_and(is_word) => {
            return false;
        }
        _ => {}
    }
    match char_at(text, span.end) {
        Some(c) if is_word(c) => false,
        Some(c) if joiner(c) => {
            !char_after_next(text, span.end).is_some_and(|n| n.is_ascii_digit())
        }
        _ => true,
    }
}

/// The match at `at` continues a run of digit groups (`DE89 3704 ...`, `0044 0532 ...`): one
/// space or dash before it, and a digit before that. Such a tail is part of a longer number
/// (an account number, a table row), not a card or phone number of its own.
pub(super) fn follows_digit_group(text: &str, at: usize) -> bool {
    matches!(char_before(text, at), Some(' ' | '-'))
        && char_before_prev(text, at).is_some_and(|c| c.is_ascii_digit())
}

/// The word right before `at`, skipping spaces and `: = #`, lowercased (at most 16 bytes).
pub(super) fn preceding_word(text: &str, at: usize) -> String {
    let head = text.get(..at).unwrap_or("");
    let head = head.trim_end_matches([' ', '\t', ':', '=', '#']);
    let word: String = head
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .take(16)
        .collect();
    word.chars().rev().collect::<String>().to_ascii_lowercase()
}

/// Luhn checksum over the ASCII digits of `s` (other characters ignored).
pub(super) fn luhn(s: &str) -> bool {
    let mut sum = 0u32;
    for (i, d) in s.bytes().filter(u8::is_ascii_digit).rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// A payment card number: 13–19 digits, a known network prefix, consistent grouping, Luhn.
pub(super) fn card_number(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let s = text.get(span.clone())?;
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if !(13..=19).contains(&digits.len())
        || !numeric_bounded(text, &span)
        || follows_digit_group(text, span.start)
    {
        return None;
    }
    let seps: Vec<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
    if let Some(first) = seps.first() {
        if seps.iter().any(|c| c != first) {
            return None;
        }
        let groups: Vec<usize> = s.split(*first).map(str::len).collect();
        let card_like = matches!(groups.as_slice(), [4, 6, 5] | [4, 6, 4])
            || (groups.len() >= 3
                && groups[..groups.len() - 1].iter().all(|g| *g == 4)
                && (1..=4).contains(&groups[groups.len() - 1]));
        if !card_like {
            return None;
        }
    }
    if !known_card_prefix(&digits) || digits.bytes().all(|b| b == digits.as_bytes()[0]) {
        return None;
    }
    luhn(&digits).then_some(span)
}

fn known_card_prefix(digits: &str) -> bool {
    let p2: u32 = digits.get(..2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let p4: u32 = digits.get(..4).and_then(|p| p.parse().ok()).unwrap_or(0);
    match p2 {
        40..=49 => true,                        // Visa
        51..=55 => true,                        // Mastercard
        22..=27 => (2221..=2720).contains(&p4), // Mastercard 2-series
        34 | 37 => true,                        // American Express
        30 | 36 | 38 | 39 => true,              // Diners Club
        35 => (3528..=3589).contains(&p4),      // JCB
        50 | 56..=69 => true,                   // Maestro, Discover, UnionPay, RuPay
        _ => false,
    }
}

/// IBAN lengths by country (SWIFT IBAN registry).
#[rustfmt::skip]
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24), ("AE", 23), ("AL", 28), ("AT", 20), ("AZ", 28), ("BA", 20), ("BE", 16),
    ("BG", 22), ("BH", 22), ("BI", 27), ("BR", 29), ("BY", 28), ("CH", 21), ("CR", 22),
    ("CY", 28), ("CZ", 24), ("DE", 22), ("DJ", 27), ("DK", 18), ("DO", 28), ("EE", 20),
    ("EG", 29), ("ES", 24), ("FI", 18), ("FK", 18), ("FO", 18), ("FR", 27), ("GB", 22),
    ("GE", 22), ("GI", 23), ("GL", 18), ("GR", 27), ("GT", 28), ("HR", 21), ("HU", 28),
    ("IE", 22), ("IL", 23), ("IQ", 23), ("IS", 26), ("IT", 27), ("JO", 30), ("KW", 30),
    ("KZ", 20), ("LB", 28), ("LC", 32), ("LI", 21), ("LT", 20), ("LU", 20), ("LV", 21),
    ("LY", 25), ("MC", 27), ("MD", 24), ("ME", 22), ("MK", 19), ("MN", 20), ("MR", 27),
    ("MT", 31), ("MU", 30), ("NI", 28), ("NL", 18), ("NO", 15), ("OM", 23), ("PK", 24),
    ("PL", 28), ("PS", 29), ("PT", 25), ("QA", 29), ("RO", 24), ("RS", 22), ("RU", 33),
    ("SA", 24), ("SC", 31), ("SD", 18), ("SE", 24), ("SI", 19), ("SK", 24), ("SM", 27),
    ("SO", 23), ("ST", 25), ("SV", 28), ("TL", 23), ("TN", 24), ("TR", 26), ("UA", 29),
    ("VA", 22), ("VG", 24), ("XK", 20),
];

/// An IBAN: known country, exact country length (the candidate is cut to it at a group
/// boundary), mod-97 remainder 1.
pub(super) fn iban(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let s = text.get(span.clone())?;
    let country = s.get(..2)?.to_ascii_uppercase();
    let want = IBAN_LENGTHS.iter().find(|(c, _)| *c == country)?.1;
    let mut taken = 0;
    let mut end = span.start;
    let mut compact = String::with_capacity(want);
    for (i, c) in s.char_indices() {
        if taken == want {
            break;
        }
        if c.is_ascii_alphanumeric() {
            compact.push(c.to_ascii_uppercase());
            taken += 1;
            end = span.start + i + 1;
        }
    }
    if taken != want {
        return None;
    }
    let cut = span.start..end;
    if !token_bounded(text, &cut, |c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let rotated = compact.get(4..)?.chars().chain(compact.get(..4)?.chars());
    let mut rem = 0u32;
    for c in rotated {
        let v = c.to_digit(36)?;
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    (rem == 1).then_some(cut)
}

/// A US SSN `AAA-GG-SSSS` (or 9 digits after a key word): area not 000, 666 or 9xx, group not
/// 00, serial not 0000, and not one of the well-known advertising numbers.
pub(super) fn ssn(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let digits: String = text
        .get(span.clone())?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if digits.len() != 9 || !numeric_bounded(text, &span) {
        return None;
    }
    let (area, group, serial) = (&digits[..3], &digits[3..5], &digits[5..]);
    let bad = area == "000"
        || area == "666"
        || area.starts_with('9')
        || group == "00"
        || serial == "0000"
        || digits == "078051120"
        || digits == "219099999";
    (!bad).then_some(span)
}

/// IPv4 that is personal: valid octets without leading zeros, not loopback, unspecified,
/// broadcast or a netmask, not part of a longer dotted number, and not a version number.
pub(super) fn ipv4(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let addr: Ipv4Addr = text.get(span.clone())?.parse().ok()?;
    // Ports (`:8080`) and prefixes (`/24`) may follow; a longer dotted number may not.
    let before_ok = !char_before(text, span.start).is_some_and(|c| is_word(c) || c == '.');
    let after_ok = match char_at(text, span.end) {
        Some(c) if is_word(c) => false,
        Some('.') => !char_after_next(text, span.end).is_some_and(|n| n.is_ascii_digit()),
        _ => true,
    };
    if !before_ok
        || !after_ok
        || addr.is_loopback()
        || addr.is_unspecified()
        || addr.octets()[0] == 255
        || is_version_context(text, span.start)
    {
        return None;
    }
    Some(span)
}

fn is_version_context(text: &str, at: usize) -> bool {
    if matches!(char_before(text, at), Some('v' | 'V')) {
        return true;
    }
    let word = preceding_word(text, at);
    matches!(
        word.as_str(),
        "version"
            | "ver"
            | "release"
            | "build"
            | "firmware"
            | "fw"
            | "rev"
            | "rv"
            | "sdk"
            | "kernel"
    ) || (char_before(text, at) == Some('/')
        && char_before_prev(text, at).is_some_and(|c| c.is_ascii_alphabetic()))
}

/// IPv6 that is personal: parses with `std::net`, not loopback or unspecified, has a digit (so
/// `a::b` and `dead::beef` style code is left alone), and is not eight 2-digit hex groups
/// (a hex dump).
pub(super) fn ipv6(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let s = text.get(span.clone())?;
    let addr: Ipv6Addr = s.parse().ok()?;
    let hexish = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '_' || c.is_alphanumeric();
    if addr.is_loopback()
        || addr.is_unspecified()
        || !s.bytes().any(|b| b.is_ascii_digit())
        || !token_bounded(text, &span, hexish)
        || (!s.contains("::") && s.split(':').all(|g| g.len() == 2))
    {
        return None;
    }
    // A trailing `.digit` means a longer dotted number, not an address.
    if matches!(char_at(text, span.end), Some('.'))
        && char_after_next(text, span.end).is_some_and(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some(span)
}

/// A MAC address: not part of a longer hex run, not all-zero or broadcast.
pub(super) fn mac(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let s = text.get(span.clone())?;
    let hex: String = s.chars().filter(char::is_ascii_hexdigit).collect();
    let joined = |c: char| matches!(c, ':' | '-' | '.');
    let before_ok = match char_before(text, span.start) {
        Some(c) if c.is_alphanumeric() || c == '_' => false,
        Some(c) if joined(c) => {
            !char_before_prev(text, span.start).is_some_and(|p| p.is_ascii_hexdigit())
        }
        _ => true,
    };
    let after_ok = match char_at(text, span.end) {
        Some(c) if c.is_alphanumeric() || c == '_' => false,
        Some(c) if joined(c) => {
            !char_after_next(text, span.end).is_some_and(|n| n.is_ascii_hexdigit())
        }
        _ => true,
    };
    let trivial = hex.bytes().all(|b| b == b'0') || hex.bytes().all(|b| b == b'f' || b == b'F');
    (before_ok && after_ok && !trivial).then_some(span)
}

/// A phone number in one of the supported shapes (see `detectors.rs`): 8–15 digits for `+`
/// international numbers, NANP with consistent separators, national trunk-0 numbers with 10–12
/// digits.
pub(super) fn phone(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let s = text.get(span.clone())?;
    if !numeric_bounded(text, &span) {
        return None;
    }
    if s.starts_with('+') && char_before(text, span.start).is_some_and(|c| c == '+' || is_word(c)) {
        return None;
    }
    // A national number right after another digit group ("0044 0532 0130 00") is the tail of
    // a longer number (an account number, a table row), not a phone number.
    if !s.starts_with('+') && follows_digit_group(text, span.start) {
        return None;
    }
    let number = without_extension(s);
    let digits = number
        .replace("(0)", "")
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    let ok = if s.starts_with('+') {
        (8..=15).contains(&digits)
    } else if let Some(international) = number.strip_prefix("00") {
        // `00` is the international prefix: only a number a country owns counts
        // (`00 11 22 33 44 55` is a hex dump).
        valid_phone(&format!("+{international}"), &[])
    } else if s.starts_with('0') || s.starts_with("(0") {
        (10..=12).contains(&digits)
    } else {
        // NANP: the two separators after area code and exchange agree, unless the area code
        // is in parentheses.
        let seps: Vec<char> = number
            .trim_start_matches(['1', '+'])
            .chars()
            .filter(|c| !c.is_ascii_digit() && *c != '(' && *c != ')')
            .collect();
        s.contains('(') || seps.windows(2).all(|w| w[0] == w[1])
    };
    ok.then_some(span)
}

/// Shannon entropy of `s` in bits per character.
pub(super) fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// A value that looks like a machine-made secret: long enough, letters and digits mixed,
/// high entropy.
pub(super) fn looks_random(s: &str, min_len: usize, min_entropy: f64) -> bool {
    let lower = s.bytes().any(|b| b.is_ascii_lowercase());
    let upper = s.bytes().any(|b| b.is_ascii_uppercase());
    let digit = s.bytes().any(|b| b.is_ascii_digit());
    s.len() >= min_len && (lower || upper) && digit && entropy(s) >= min_entropy
}

/// Values that are obviously not secrets: empty, masked, templated, booleans and nulls, and our
/// own placeholders (so redacting twice is harmless).
pub(super) fn is_placeholder_value(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    v.is_empty()
        || v.starts_with('<')
        || v.starts_with("${")
        || v.starts_with("{{")
        || v.starts_with('$')
            && v[1..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
        || v.starts_with('%')
        || v.bytes()
            .all(|b| matches!(b, b'*' | b'x' | b'X' | b'.' | b'-' | b'#' | b'?'))
        || matches!(
            lower.as_str(),
            "null"
                | "none"
                | "nil"
                | "true"
                | "false"
                | "undefined"
                | "redacted"
                | "[redacted]"
                | "hidden"
                | "required"
                | "optional"
                | "string"
                | "str"
                | "env"
                | "secret"
                | "password"
                | "token"
                | "yes"
                | "no"
                | "on"
                | "off"
                | "empty"
        )
}

/// An IMEI (15 digits, Luhn) or IMEISV (16 digits, no check digit), grouped or not. `context`:
/// the text named it (`IMEI:`); without it only a 15-digit Luhn number whose reporting-body
/// prefix is not a payment network's (cards own 34, 37 and the rest) is taken as an IMEI.
pub(super) fn imei(text: &str, span: Range<usize>, context: bool) -> Option<Range<usize>> {
    let s = text.get(span.clone())?;
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if !numeric_bounded(text, &span) || digits.bytes().all(|b| b == digits.as_bytes()[0]) {
        return None;
    }
    match digits.len() {
        15 if context => luhn(&digits).then_some(span),
        // Reporting bodies of GSMA type allocation codes in use: 01, 35, 86, 99 (and 30-33, 44,
        // 45, 49, 50-54 for older TACs).
        15 => {
            let body = digits.get(..2)?;
            let tac = matches!(
                body,
                "01" | "30"
                    | "31"
                    | "32"
                    | "33"
                    | "35"
                    | "44"
                    | "45"
                    | "49"
                    | "50"
                    | "51"
                    | "52"
                    | "53"
                    | "54"
                    | "86"
                    | "99"
            );
            (tac && luhn(&digits)).then_some(span)
        }
        16 if context => Some(span),
        _ => None,
    }
}

/// A serial number after a serial context (`S/N:`, `serial=`, `Service Tag`): at least five
/// characters, a digit among them (hex `0x...` needs six hex digits), digits only needs seven
/// (`serial: 115200` is a baud rate), and not a word, a placeholder or one character repeated.
pub(super) fn serial_value(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let v = text.get(span.clone())?;
    let v = v.trim_end_matches(['-', '.', '/']);
    let span = span.start..span.start + v.len();
    if is_placeholder_value(v) || v.len() < 5 {
        return None;
    }
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        return (hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(span);
    }
    let digits = v.bytes().filter(u8::is_ascii_digit).count();
    let alnum = v.bytes().filter(u8::is_ascii_alphanumeric).count();
    let same = v.bytes().all(|b| b == v.as_bytes()[0]);
    let ok = digits > 0 && !same && (digits < alnum || digits >= 7);
    ok.then_some(span)
}

/// Whether `candidate` (digits with separators, maybe a `+` and an extension) is a valid phone
/// number for one of `regions` (or, with a `+`, for the country it names), by libphonenumber's
/// metadata (the `phonenumber` crate). A panic inside the parser counts as a number: a fault
/// must not let a value out.
pub(super) fn valid_phone(candidate: &str, regions: &[PhoneRegion]) -> bool {
    let run = || {
        if candidate.starts_with('+') {
            let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
            return super::phone_fast::international_verdict(&digits)
                .unwrap_or_else(|| international_accepts(candidate));
        }
        let written = digit_groups(candidate);
        let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
        regions.iter().filter(|r| r.may_hold(&digits)).any(|r| {
            match r.fast.as_ref().and_then(|f| f.verdict(&digits)) {
                Some(v) => v.valid && (written.len() == 1 || v.groups == written),
                None => region_accepts(r.id, candidate, &written),
            }
        })
    };
    std::panic::catch_unwind(run).unwrap_or(true)
}

/// The `phonenumber` crate's verdict on a number written with `+`.
pub(super) fn international_accepts(candidate: &str) -> bool {
    phonenumber::parse(None, candidate).is_ok_and(|n| phonenumber::is_valid(&n))
}

/// The `phonenumber` crate's verdict for one region: the number parses for `region`, its
/// country is that region, it is valid, and it is written in the region's national groups
/// (`415 555 2671` is a US number and not a German one: Germany writes those digits `04155
/// 550132`); digits written without separators have no grouping to compare. The fast path
/// (`phone_fast.rs`) gives the same answers without the crate's regex cache.
pub(super) fn region_accepts(
    region: phonenumber::country::Id,
    candidate: &str,
    written: &[usize],
) -> bool {
    phonenumber::parse(Some(region), candidate).is_ok_and(|n| {
        let national = phonenumber::format(&n)
            .mode(phonenumber::Mode::National)
            .to_string();
        n.country().id() == Some(region)
            && phonenumber::is_valid(&n)
            && (written.len() == 1 || digit_groups(&national) == written)
    })
}

/// One configured phone region and what a cheap look at a number needs of its metadata (its
/// trunk prefix and the lengths its national numbers take), so that the parser only runs
/// against the regions a number could belong to.
pub(super) struct PhoneRegion {
    pub(super) id: phonenumber::country::Id,
    trunk: Option<String>,
    lengths: Vec<u16>,
    /// The crate's checks on regexes compiled here (`None`: always ask the crate).
    pub(super) fast: Option<super::phone_fast::FastRegion>,
}

impl PhoneRegion {
    pub fn new(id: phonenumber::country::Id) -> Option<PhoneRegion> {
        use phonenumber::Type;
        let metadata = phonenumber::metadata::DATABASE.by_id(id.as_ref())?;
        // The metadata keeps lengths per number type (the general descriptor's are empty).
        let mut lengths: Vec<u16> = [
            Type::FixedLine,
            Type::Mobile,
            Type::TollFree,
            Type::PremiumRate,
            Type::SharedCost,
            Type::PersonalNumber,
            Type::Voip,
            Type::Pager,
            Type::Uan,
            Type::Voicemail,
        ]
        .into_iter()
        .filter_map(|kind| metadata.descriptors().get(kind))
        .flat_map(|d| d.possible_length().iter().copied())
        .collect();
        lengths.sort_unstable();
        lengths.dedup();
        Some(PhoneRegion {
            id,
            trunk: metadata.national_prefix().map(String::from),
            lengths,
            fast: None,
        })
    }

    /// Compiles the region's rules for the fast path (`phone_fast.rs`); done only when phone
    /// numbers are detected at all: the rules of 13 regions take about 40 MB.
    pub(super) fn with_fast_path(mut self) -> PhoneRegion {
        self.fast = super::phone_fast::FastRegion::new(self.id.as_ref());
        self
    }

    /// Whether `digits` (the national number as written) has a length this region's national
    /// numbers take, with or without its trunk prefix.
    fn may_hold(&self, digits: &str) -> bool {
        // No lengths known: every number may be the region's.
        let fits =
            |n: usize| self.lengths.is_empty() || self.lengths.iter().any(|l| usize::from(*l) == n);
        let trunk_off = self
            .trunk
            .as_deref()
            .and_then(|t| digits.strip_prefix(t))
            .map(str::len);
        fits(digits.len()) || trunk_off.is_some_and(fits)
    }
}

/// A phone number without its extension (`x204`, `ext. 204`, `#204`).
fn without_extension(s: &str) -> &str {
    s.find(['x', 'X', 'e', 'E', '#'])
        .map_or(s, |i| s[..i].trim_end())
}

/// The lengths of the digit runs of `s`.
pub(super) fn digit_groups(s: &str) -> Vec<usize> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect()
}

/// Two or more decimal numbers separated by spaces (`930.94 -676.12 595.27`): sensor
/// readings, also after a word that names a phone elsewhere (`load cell: ...`).
fn decimal_readings(number: &str) -> bool {
    let decimal = |t: &str| {
        let t = t.strip_prefix('-').unwrap_or(t);
        t.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
    };
    number.split_whitespace().filter(|t| decimal(t)).count() >= 2
}

/// A phone number found by the region-aware detectors: `context` says a `phone:` / `tel:` word
/// named it (then 7-15 digits are enough), otherwise it must be valid for a region. Dates and
/// times in groups (`2024 05 02`, `10.11.12`) and tails of longer digit runs are not numbers.
pub(super) fn phone_regional(
    text: &str,
    span: Range<usize>,
    context: bool,
    regions: &[PhoneRegion],
) -> Option<Range<usize>> {
    let s = text.get(span.clone())?;
    let s_trim = s.trim_end_matches([' ', '.', '-']);
    let span = span.start..span.start + s_trim.len();
    if !numeric_bounded(text, &span)
        || (!s_trim.starts_with('+') && follows_digit_group(text, span.start))
    {
        return None;
    }
    let number = without_extension(s_trim);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let lengths = digit_groups(number);
    let first_group = number.trim_start_matches(|c: char| !c.is_ascii_digit());
    let year_first = first_group.starts_with("19") || first_group.starts_with("20");
    let date_like = lengths.len() >= 3
        && lengths.iter().all(|l| *l <= 4)
        && (lengths[0] == 4 && year_first || lengths == [2, 2, 2]);
    let dotted_quad = number.contains('.') && lengths.len() == 4 && lengths.iter().all(|l| *l <= 3);
    // US social security numbers (3-2-4) and ZIP+4 codes (5-4) are other categories' shapes;
    // a leading 00 is an international dialling prefix, not a national number.
    let other_shape = matches!(lengths.as_slice(), [3, 2, 4] | [5, 4]) || number.starts_with("00");
    if (date_like || dotted_quad || other_shape) && !context || decimal_readings(number) {
        return None;
    }
    let ok = if context {
        (7..=15).contains(&digits)
    } else {
        (8..=13).contains(&digits) && valid_phone(number, regions)
    };
    ok.then_some(span)
}
