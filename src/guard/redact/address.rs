//! Postal addresses: found from their postal code outwards, by the layout addresses share.
//!
//! An address is a few comma- or line-separated parts around a postal code: `083 Crosby Plaza
//! Apt. 533, Farleytown, MT 73436`, `Hoffmanngasse 9-2, 41586 Ilmenau`, `87, rue de Barre,
//! 29793 Samson`, `ul. Zaułek 08/37, 64-567 Pabianice`, `Via Roma, 12, 25131, Brescia (BS)`,
//! `Rua X, 512, Bairro, 86834-497 Cidade / PR`. The scanner finds postal codes (US/MX state and
//! ZIP, five digits, Brazilian CEP, Polish, Dutch and British codes), takes the city after the
//! code (or the part after it), then walks back over the parts before it while they look like
//! address parts (capitalised words, house numbers, street and unit words), trimming the
//! sentence the address sits in. It keeps a span only with a street (a house number or a
//! street word) before the code and a city beside it, so a bare number is never an address.
//!
//! Bounded work: each code looks at most [`WINDOW_BACK`] bytes before and [`WINDOW_AHEAD`]
//! after it.

use std::ops::Range;

use regex::Regex;

use super::checks::{ceil_char, floor_char};
use super::scan::{Scanner, compile};

/// Postal codes, each alternative a layout. Leftmost first: the state of a US/MX ZIP is part
/// of the match.
const POSTAL: &str = concat!(
    r"(?P<us>\b[A-Z](?:\.[ ]?)?[A-Z]{1,3}[ ][0-9]{5}(?:-[0-9]{4})?\b)",
    r"|(?P<gb>\b[A-Z]{1,2}[0-9][A-Z0-9]?[ ][0-9][A-Z]{2}\b)",
    r"|(?P<br>\b[0-9]{5}-?[0-9]{3}\b)",
    r"|(?P<pl>\b[0-9]{2}-[0-9]{3}\b)",
    r"|(?P<nl>\b[0-9]{4}[ ]?[A-Z]{2}\b)",
    r"|(?P<five>\b[0-9]{5}\b)",
);

const WINDOW_BACK: usize = 320;
const WINDOW_AHEAD: usize = 160;
/// Parts walked back over before the code's own part.
const MAX_PARTS_BACK: usize = 5;

/// Street words, lowercase, whole tokens (`rue`, `Calle`, `ul.`), across the languages of the
/// default phone regions.
const STREET_WORDS: &[&str] = &[
    "street",
    "st.",
    "avenue",
    "ave",
    "ave.",
    "road",
    "rd",
    "rd.",
    "boulevard",
    "blvd",
    "blvd.",
    "lane",
    "ln.",
    "drive",
    "dr.",
    "court",
    "ct.",
    "place",
    "pl.",
    "way",
    "terrace",
    "plaza",
    "square",
    "highway",
    "hwy",
    "parkway",
    "pkwy",
    "circle",
    "trail",
    "row",
    "close",
    "crescent",
    "gardens",
    "mews",
    "rue",
    "chemin",
    "allée",
    "impasse",
    "quai",
    "route",
    "cours",
    "passage",
    "bd",
    "av.",
    "calle",
    "c/",
    "avenida",
    "avda.",
    "paseo",
    "camino",
    "carretera",
    "ronda",
    "pasaje",
    "travesía",
    "glorieta",
    "rambla",
    "rua",
    "travessa",
    "praça",
    "estrada",
    "rodovia",
    "alameda",
    "largo",
    "via",
    "viale",
    "piazza",
    "piazzale",
    "corso",
    "vicolo",
    "strada",
    "contrada",
    "ulica",
    "ul.",
    "aleja",
    "al.",
    "os.",
    "osiedle",
    "plac",
    "straat",
    "laan",
    "weg",
    "plein",
    "kade",
    "gracht",
    "singel",
    "dreef",
    "steeg",
    "dijk",
    "straße",
    "strasse",
    "str.",
    "gasse",
    "allee",
    "platz",
    "ring",
    "damm",
    "ufer",
    "chaussee",
    "privada",
    "calzada",
    "retorno",
    "andador",
    "cerrada",
    "prolongación",
    "periférico",
    "circuito",
    "quadra",
    "setor",
    // Brazilian kinds of logradouro (from the Correios address directory's list, abridged).
    "aeroporto",
    "área",
    "campo",
    "chácara",
    "colônia",
    "condomínio",
    "conjunto",
    "distrito",
    "esplanada",
    "estação",
    "favela",
    "fazenda",
    "feira",
    "jardim",
    "ladeira",
    "lago",
    "lagoa",
    "loteamento",
    "morro",
    "núcleo",
    "parque",
    "passarela",
    "pátio",
    "recanto",
    "residencial",
    "sítio",
    "trecho",
    "trevo",
    "vale",
    "vereda",
    "viaduto",
    "viela",
    "vila",
];

/// Endings of one-word street names (`Hoffmanngasse`, `Zeppelinstr.`, `Stefansteeg`).
const STREET_ENDINGS: &[&str] = &[
    "straße", "strasse", "str.", "gasse", "weg", "allee", "platz", "ring", "damm", "ufer",
    "straat", "laan", "dreef", "steeg", "plein", "kade", "gracht", "singel", "dijk", "hof",
];

/// Unit and military-address words.
const UNIT_WORDS: &[&str] = &[
    "apt.",
    "apt",
    "suite",
    "ste",
    "unit",
    "box",
    "psc",
    "cmr",
    "usns",
    "uss",
    "uscgc",
    "usnv",
    "flat",
    "studio",
    "floor",
    "piso",
    "puerta",
    "depto.",
    "dpto.",
    "edif.",
    "interior",
    "appartamento",
    "piano",
    "scala",
    "int.",
    "bloco",
    "casa",
    "lote",
    "sala",
    "andar",
    "apto",
    "apto.",
    "lok.",
    "m.",
];

/// Lowercase words inside street and place names.
const PLACE_PARTICLES: &[&str] = &[
    "de", "da", "do", "dos", "das", "del", "della", "di", "du", "des", "la", "le", "les", "van",
    "von", "der", "den", "am", "an", "im", "auf", "ob", "bei", "y", "e", "sur", "sous", "lès",
    "dei", "degli", "delle", "dello", "dal", "los", "las", "el", "al", "ter", "het", "'t", "of",
    "upon", "d'", "l'",
];

/// The address scanner.
pub(super) fn scanner() -> Result<Scanner, regex::Error> {
    let postal = compile(POSTAL, true)?;
    Ok(Box::new(move |text, out| scan(&postal, text, out)))
}

fn scan(postal: &Regex, text: &str, out: &mut Vec<Range<usize>>) {
    let mut last_end = 0;
    for caps in postal.captures_iter(text) {
        let Some(code) = caps.get(0) else { continue };
        if code.start() < last_end {
            continue;
        }
        let us = caps.name("us").is_some();
        if let Some(span) = around_code(text, code.range(), us) {
            last_end = span.end;
            out.push(span);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sep {
    /// `,` or a line break: parts of one address.
    Part,
    /// A sentence end, `:`, `;`, `|`, or the window's edge: an address does not cross it.
    Hard,
}

#[derive(Debug)]
enum Item {
    Word(Range<usize>),
    Sep(Sep),
}

/// The address around the postal code at `code`, if the parts around it make one.
fn around_code(text: &str, code: Range<usize>, us: bool) -> Option<Range<usize>> {
    let lo = floor_char(text, code.start.saturating_sub(WINDOW_BACK));
    let hi = ceil_char(text, (code.end + WINDOW_AHEAD).min(text.len()));
    let items = tokenize(text, lo..hi);
    let word = |i: usize| match &items[i] {
        Item::Word(r) => Some(r.clone()),
        Item::Sep(_) => None,
    };
    let token = |i: usize| word(i).and_then(|r| text.get(r)).unwrap_or("");
    // The code's first and last words.
    let first_code = items
        .iter()
        .position(|it| matches!(it, Item::Word(r) if r.end > code.start))?;
    let last_code = (first_code..items.len())
        .take_while(|&i| matches!(&items[i], Item::Word(r) if r.start < code.end))
        .last()?;
    if word(first_code)?.start != code.start || word(last_code)?.end != code.end {
        return None; // the code is glued to something (`v12345`, `12345ms`)
    }

    // The city after the code, in its part or (a code that ends its part) the next one.
    let mut end_item = last_code;
    let mut has_city = us;
    let mut i = last_code + 1;
    let mut taken = 0;
    while i < items.len() && taken < 6 && word(i).is_some() && is_city_word(token(i)) {
        has_city |= starts_upper(token(i));
        end_item = i;
        taken += 1;
        i += 1;
    }
    if taken == 0 && matches!(items.get(i), Some(Item::Sep(Sep::Part))) {
        let part: Vec<usize> = (i + 1..items.len())
            .take_while(|&j| word(j).is_some())
            .collect();
        let ends_clean = items
            .get(i + 1 + part.len())
            .is_none_or(|it| matches!(it, Item::Sep(_)));
        if (1..=5).contains(&part.len())
            && ends_clean
            && starts_upper(token(part[0]))
            && part.iter().all(|&j| is_city_word(token(j)))
        {
            has_city = true;
            end_item = *part.last()?;
        }
    }

    // Walk back: the code's own part, then earlier parts.
    let mut start_item = first_code;
    let mut j = first_code;
    let mut parts_back = 0;
    // Whether a part with a street in it (a house number, a street word) was taken, and
    // whether the last part taken starts with a house number (`87, rue de Barre`, `Via Roma,
    // 12 Piano 3`: the street's name comes one part earlier).
    let mut anchored = false;
    let mut after_number = false;
    loop {
        // The words of the part ending just before `j`.
        let mut k = j;
        while k > 0 && word(k - 1).is_some() {
            k -= 1;
        }
        let part: Vec<usize> = (k..j).collect();
        let city_slot = parts_back == 1;
        if !part.is_empty() {
            let strict = part.iter().all(|&w| is_address_word(token(w)));
            let city = city_slot
                && part.len() <= 6
                && starts_upper(token(part[0]))
                && part.iter().all(|&w| is_city_word_loose(token(w)));
            let whole = (strict && part.len() <= 8) || city;
            // The sentence the address sits in: only its address-like tail.
            let taken: &[usize] = if whole {
                &part
            } else {
                let tail = part
                    .iter()
                    .rev()
                    .take_while(|&&w| is_address_word(token(w)))
                    .count();
                &part[part.len() - tail..]
            };
            let has_street = taken
                .iter()
                .any(|&w| is_house_number(token(w)) || is_street_word(token(w)));
            // Past the street, a part of capitalised words is a name or a heading, not the
            // address (`Technician Jane Roe, Hauptstr. 5, ...`).
            if taken.is_empty() || (anchored && !has_street && !after_number) {
                break;
            }
            has_city |= city_slot && whole && starts_upper(token(part[0]));
            start_item = taken[0];
            anchored |= has_street && !(city_slot && city && !strict);
            after_number = is_house_number(token(taken[0]));
            if !whole {
                break;
            }
        }
        if parts_back >= MAX_PARTS_BACK {
            break;
        }
        match &items[k - 1] {
            Item::Sep(Sep::Part) => {}
            _ => break,
        }
        j = k - 1;
        parts_back += 1;
    }
    // A leading particle (`de`, `la`) is the sentence's, not the street's.
    while start_item < first_code {
        let t = token(start_item).to_lowercase();
        if word(start_item).is_some() && !PLACE_PARTICLES.contains(&t.as_str()) && !t.is_empty() {
            break;
        }
        start_item += 1;
    }

    // A street before the code: a house number, a street word, or a military unit.
    let before: Vec<&str> = (start_item..first_code)
        .filter(|&w| word(w).is_some())
        .map(token)
        .collect();
    let street = before
        .iter()
        .any(|w| is_house_number(w) || is_street_word(w));
    if before.len() < 2 || !street || !has_city {
        return None;
    }
    let start = word(start_item)?.start;
    let mut end = word(end_item)?.end;
    if text.get(..end).is_some_and(|t| t.ends_with('.')) && !is_abbreviation(token(end_item)) {
        end -= 1;
    }
    Some(start..end)
}

/// Words and separators of `text[range]`.
fn tokenize(text: &str, range: Range<usize>) -> Vec<Item> {
    let mut items = vec![Item::Sep(Sep::Hard)];
    let slice = &text[range.clone()];
    let base = range.start;
    let mut start: Option<usize> = None;
    let chars: Vec<(usize, char)> = slice.char_indices().collect();
    let flush = |items: &mut Vec<Item>, s: usize, e: usize| {
        let word = &slice[s..e];
        // A sentence end: `Pabianice.` before a capital, a line end or the end.
        if let Some(stem) = word.strip_suffix('.') {
            let after = slice[e..].trim_start_matches([' ', '\t']);
            let next_upper_or_end = after
                .chars()
                .next()
                .is_none_or(|c| c.is_uppercase() || c == '\n' || c == '\r');
            let word_like = stem.chars().count() >= 4 || !stem.chars().all(char::is_alphabetic);
            if word_like && next_upper_or_end && !is_abbreviation(word) {
                items.push(Item::Word(base + s..base + e - 1));
                items.push(Item::Sep(Sep::Hard));
                return;
            }
        }
        items.push(Item::Word(base + s..base + e));
    };
    let mut skip = false;
    for (n, &(i, c)) in chars.iter().enumerate() {
        if std::mem::take(&mut skip) {
            continue;
        }
        let next = chars.get(n + 1).map(|&(_, c)| c);
        // JSON's escaped `\n` is a line break, `\t` a space (tool arguments carry text so).
        let escaped = c == '\\' && matches!(next, Some('n' | 'r' | 't'));
        let sep = match c {
            _ if escaped => (next == Some('n')).then_some(Sep::Part),
            ',' | '\n' => Some(Sep::Part),
            ';' | '|' | '\r' | '"' | '{' | '}' | '[' | ']' | '<' | '>' => Some(Sep::Hard),
            ':' if next.is_none_or(|c| c.is_whitespace() || c == '\\') => Some(Sep::Hard),
            _ => None,
        };
        skip = escaped;
        if c.is_whitespace() && c != '\n' || sep.is_some() || escaped {
            if let Some(s) = start.take() {
                flush(&mut items, s, i);
            }
            if let Some(sep) = sep {
                if c == '\r' {
                    continue;
                }
                items.push(Item::Sep(sep));
            }
            continue;
        }
        if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        flush(&mut items, s, slice.len());
    }
    items.push(Item::Sep(Sep::Hard));
    items
}

fn starts_upper(word: &str) -> bool {
    word.chars().next().is_some_and(char::is_uppercase)
}

fn is_street_word(word: &str) -> bool {
    let w = word.to_lowercase();
    STREET_WORDS.contains(&w.as_str())
        || UNIT_WORDS.contains(&w.as_str())
        || (starts_upper(word)
            && w.chars().count() > 5
            && STREET_ENDINGS.iter().any(|e| w.ends_with(e)))
}

/// `12`, `083`, `9-2`, `58/68`, `12a`, `36U`, `3ª`.
fn is_house_number(word: &str) -> bool {
    let mut parts = word.splitn(2, ['/', '-']);
    let ok = |p: &str| {
        let digits = p.chars().take_while(char::is_ascii_digit).count();
        let rest = p.chars().skip(digits).count();
        (1..=5).contains(&digits)
            && rest <= 1
            && p.chars()
                .skip(digits)
                .all(|c| c.is_alphabetic() || c == 'ª' || c == 'º')
    };
    parts.next().is_some_and(ok) && parts.next().is_none_or(ok)
}

/// A word that can be part of a street, unit or place part.
fn is_address_word(word: &str) -> bool {
    let w = word.to_lowercase();
    starts_upper(word)
        || (word.chars().any(|c| c.is_ascii_digit()) && word.len() <= 12)
        || PLACE_PARTICLES.contains(&w.as_str())
        || STREET_WORDS.contains(&w.as_str())
        || UNIT_WORDS.contains(&w.as_str())
        || matches!(word, "/" | "-" | "&" | "#")
        || (word.starts_with('(') && word.ends_with(')') && word.len() <= 6)
}

/// A word of a city after its postal code: `Nowy Dwór Mazowiecki`, `Pastor do Norte / PR`,
/// `Brescia (BS)`, `Fontaine-sur-Voisin`.
fn is_city_word(word: &str) -> bool {
    let w = word.to_lowercase();
    (starts_upper(word) && !word.chars().any(|c| c.is_ascii_digit()))
        || PLACE_PARTICLES.contains(&w.as_str())
        || word == "/"
        || (word.starts_with('(') && word.ends_with(')') && word.len() <= 6)
}

/// A word of the part just before a US/MX state and ZIP or a bare code: the city or district,
/// which may hold lowercase words (`San Eric los bajos`) and numbers (`São Jorge 3ª Seção`).
fn is_city_word_loose(word: &str) -> bool {
    let w = word.to_lowercase();
    word.chars()
        .all(|c| c.is_alphanumeric() || "-'’.ªº()".contains(c))
        && word.len() <= 30
        && !SENTENCE_WORDS.contains(&w.as_str())
}

/// Lowercase words of the sentence around an address, never of a place name.
const SENTENCE_WORDS: &[&str] = &[
    "the",
    "to",
    "a",
    "an",
    "for",
    "and",
    "or",
    "with",
    "at",
    "in",
    "on",
    "from",
    "by",
    "please",
    "send",
    "ship",
    "is",
    "are",
    "was",
    "this",
    "that",
    "it",
    "we",
    "our",
    "your",
    "his",
    "her",
    "their",
    "will",
    "be",
    "has",
    "have",
    "unit",
    "replacement",
    "deliver",
    "address",
    "at",
];

fn is_abbreviation(word: &str) -> bool {
    let w = word.to_lowercase();
    STREET_WORDS.contains(&w.as_str()) || UNIT_WORDS.contains(&w.as_str())
}
