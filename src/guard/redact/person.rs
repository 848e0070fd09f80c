//! Person names: runs of capitalised words accepted by context, not by a model.
//!
//! The scanner splits the text into words and classifies each one: a title (`Dr.`, `Mrs`,
//! `Herr`, `Mme`, `Sra.`, `Dott.`, `pan`), a degree or generational suffix (`PhD`, `B.Sc.`,
//! `Jr.`), a capitalised name word (`Müller`, `O'Brien`, `McDonald`, `Hans-Jürgen`,
//! `Michielsen-van`), an initial (`J.`), a particle (`van`, `de`, `da`), or anything else. A run
//! of such words (not crossing a line break or punctuation) is a person only when something
//! besides capitalisation says so:
//! - a title in it;
//! - a cue just before it on the same line (`by`, `contact:`, `operator`, `technician`,
//!   `assignee:`, `Ansprechpartner`, `técnico`, ...) or a salutation (`Hi`, `Dear`, `Hallo`);
//! - a sign-off on the line above (`Regards,`, `Mit freundlichen Grüßen`, `Cordialement`);
//! - or, with no context at all, a given name followed by at least one more name word: a
//!   name from `given_names.txt` (written for edgellm) or from the wider lists generated from
//!   mimesis and human-names (`names_given.txt`; a given name that is also an English word,
//!   `Mark`, only before a surname of `names_surnames.txt`), and a second word that is not an
//!   English word (`english_words.txt`) unless it is a listed surname.
//!
//! Capitalised words that are common in field text but are not names (weekdays, company
//! forms, equipment, log levels) end or reject a run. Why context rules and not a model:
//! `docs/redaction.md` ("Names and addresses"). Linear in the text; no regex.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::LazyLock;

use super::checks::{ceil_char, floor_char};
use super::scan::Scanner;

/// Lowercase particles inside a name (`Naud van der Ploeg`, `Benício da Cunha`) and inside a
/// hyphenated surname (`Michielsen-van Breukelveen`).
const PARTICLES: &[&str] = &[
    "de", "da", "do", "dos", "das", "del", "della", "di", "du", "des", "la", "le", "van", "von",
    "der", "den", "ter", "ten", "zu", "zur", "y", "e", "dei", "degli", "vom", "zum", "bin", "ibn",
    "al", "el", "'t", "und",
];

/// Titles and forms of address, as written (case matters: `pan` and `dhr.` are lowercase by
/// convention).
const TITLES: &[&str] = &[
    "Mr",
    "Mr.",
    "Mrs",
    "Mrs.",
    "Ms",
    "Ms.",
    "Mx.",
    "Dr",
    "Dr.",
    "Prof",
    "Prof.",
    "Dra.",
    "Profa.",
    "Sr.",
    "Sra.",
    "Srta.",
    "Srita.",
    "Sres.",
    "Dña.",
    "Lic.",
    "Mtro.",
    "Mtra.",
    "Ing.",
    "Arq.",
    "Dott.",
    "Dott.ssa",
    "Dr.ssa",
    "Avv.",
    "Sig.",
    "Sig.ra",
    "Mag.",
    "Mme",
    "Mme.",
    "Mlle",
    "Mlle.",
    "M.",
    "Hon.",
    "Rev.",
    "Capt.",
    "Col.",
    "Sgt.",
    "Lt.",
    "Herr",
    "Frau",
    "Miss",
    "Sir",
    "Dame",
    "Don",
    "Doña",
    "Dona",
    "Madame",
    "Monsieur",
    "Mademoiselle",
    "Señor",
    "Señora",
    "Señorita",
    "Senhor",
    "Senhora",
    "Signor",
    "Signora",
    "Signorina",
    "pan",
    "pani",
    "dhr.",
    "mevr.",
    "mw.",
    "ir.",
    "drs.",
    "ing.",
    "mr.",
    "dr.",
    "Univ.Prof.",
    "Univ.-Prof.",
];

/// Suffixes after a name, compared without dots and case (`B.Sc.` -> `bsc`).
const SUFFIXES: &[&str] = &[
    "jr", "sr", "ii", "iii", "iv", "phd", "md", "dds", "dvm", "esq", "mba", "cpa", "rn", "bsc",
    "ba", "beng", "bed", "msc", "ma", "meng", "med", "llb", "llm", "mphil",
];

/// Words (lowercase) that, just before a run on the same line, say a person is named.
const CUES: &[&str] = &[
    // English
    "by",
    "contact",
    "contact person",
    "contacts",
    "operator",
    "technician",
    "tech",
    "engineer",
    "supervisor",
    "foreman",
    "inspector",
    "manager",
    "lead",
    "assignee",
    "assigned to",
    "owner",
    "reporter",
    "requester",
    "customer",
    "caller",
    "driver",
    "attn",
    "attention",
    "cc",
    "bcc",
    "full name",
    "full_name",
    "contact_name",
    "customer_name",
    "first_name",
    "last_name",
    "signed",
    "on behalf of",
    "handed over to",
    "escalated to",
    // German, French, Spanish, Portuguese, Italian, Polish, Dutch
    "von",
    "ansprechpartner",
    "ansprechpartnerin",
    "kontakt",
    "techniker",
    "technikerin",
    "bearbeiter",
    "bearbeiterin",
    "betreiber",
    "kunde",
    "kundin",
    "par",
    "de la part de",
    "opérateur",
    "opératrice",
    "technicien",
    "technicienne",
    "interlocuteur",
    "responsable",
    "por",
    "contacto",
    "técnico",
    "técnica",
    "operador",
    "operadora",
    "cliente",
    "contato",
    "responsável",
    "da parte di",
    "referente",
    "tecnico",
    "operatore",
    "przez",
    "technik",
    "klient",
    "contactpersoon",
    "monteur",
    "klant",
];

/// Salutations (lowercase): a single capitalised word after one, ending its clause, is a name
/// (`Hi Henrike,`).
const SALUTATIONS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "dear",
    "good morning",
    "hallo",
    "liebe",
    "lieber",
    "sehr geehrte",
    "sehr geehrter",
    "guten tag",
    "bonjour",
    "cher",
    "chère",
    "hola",
    "estimado",
    "estimada",
    "olá",
    "oi",
    "prezado",
    "prezada",
    "caro",
    "cara",
    "ciao",
    "gentile",
    "buongiorno",
    "dzień dobry",
    "szanowny",
    "szanowna",
    "beste",
    "geachte",
];

/// Sign-off lines after which a name alone on its line is the writer's.
const SIGN_OFFS: &[&str] = &[
    "regards",
    "best regards",
    "kind regards",
    "warm regards",
    "best",
    "thanks",
    "thank you",
    "many thanks",
    "cheers",
    "sincerely",
    "yours sincerely",
    "yours truly",
    "br",
    "--",
    "mit freundlichen grüßen",
    "mit freundlichen grüssen",
    "viele grüße",
    "beste grüße",
    "grüße",
    "gruß",
    "cordialement",
    "bien cordialement",
    "bien à vous",
    "salutations",
    "saludos",
    "un saludo",
    "atentamente",
    "atenciosamente",
    "abraços",
    "cordiali saluti",
    "distinti saluti",
    "saluti",
    "met vriendelijke groet",
    "groeten",
    "pozdrawiam",
    "z poważaniem",
];

/// Capitalised words that are not names in field text: a run stops at the first one (a
/// leading one is dropped). The company forms below count as well.
const NOT_NAMES: &[&str] = &[
    "the",
    "this",
    "that",
    "these",
    "those",
    "a",
    "an",
    "and",
    "or",
    "but",
    "if",
    "when",
    "then",
    "in",
    "on",
    "at",
    "for",
    "from",
    "to",
    "by",
    "with",
    "of",
    "as",
    "is",
    "it",
    "we",
    "you",
    "he",
    "she",
    "they",
    "our",
    "your",
    "my",
    "please",
    "thanks",
    "thank",
    "hi",
    "hello",
    "dear",
    "team",
    "support",
    "customer",
    "client",
    "user",
    "admin",
    "service",
    "services",
    "system",
    "server",
    "pump",
    "sensor",
    "station",
    "line",
    "plant",
    "site",
    "building",
    "floor",
    "room",
    "unit",
    "device",
    "gateway",
    "controller",
    "panel",
    "valve",
    "motor",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "march",
    "july",
    "september",
    "october",
    "november",
    "december",
    "technology",
    "street",
    "avenue",
    "road",
    "north",
    "south",
    "east",
    "main",
    "new",
    "error",
    "warning",
    "info",
    "debug",
    "ticket",
    "order",
    "invoice",
    "note",
    "update",
    "maintenance",
    "operator",
    "engineer",
    "technician",
    "manager",
    "supervisor",
    "contact",
    "operations",
    "department",
    "office",
    "shift",
    "on",
    "site",
    "lead",
    "zone",
    "area",
    "north",
    "api",
    "model",
    "version",
    "release",
    "status",
    "alarm",
    "alert",
    "event",
    "job",
    "task",
    "report",
    "check",
    "test",
    "production",
    "quality",
    "security",
    "network",
    "data",
    "cloud",
    "edge",
    "web",
    "mobile",
    "app",
    "portal",
    "dashboard",
    "windows",
    "linux",
    "ubuntu",
    "debian",
    "android",
    "google",
    "microsoft",
    "amazon",
    "apple",
    "honeywell",
    "allen-bradley",
    "hannifin",
    "rexroth",
    "modbus",
    "profinet",
    "ethernet",
    "wifi",
    "bluetooth",
    "started",
    "stopped",
    "session",
    "hello",
    "world",
    "welcome",
    "yes",
    "no",
    "ok",
    "none",
    "null",
    "true",
    "false",
];

/// Words after a name that make it a company's (lowercase).
const COMPANY_FORMS: &[&str] = &[
    "inc",
    "ltd",
    "llc",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "sarl",
    "sl",
    "spa",
    "srl",
    "bv",
    "nv",
    "co",
    "corp",
    "corporation",
    "company",
    "group",
    "holdings",
    "industries",
    "solutions",
    "technologies",
    "systems",
    "electric",
    "energy",
    "manufacturing",
    "international",
    "kg",
    "ohg",
    "plc",
    "pty",
    "ltda",
    "eireli",
    "me",
    "cia",
];

/// The given names written for edgellm (one per line, `#` comments, any case).
const GIVEN_NAMES: &str = include_str!("given_names.txt");

/// The wide lists generated from mimesis (`scripts/given-names-from-mimesis.py`; lower case):
/// given names, given names that are also English words, surnames.
const WIDE_GIVEN: &str = include_str!("names_given.txt");
const WIDE_GIVEN_WORDS: &str = include_str!("names_given_words.txt");
const WIDE_SURNAMES: &str = include_str!("names_surnames.txt");
/// Lowercase English words (SCOWL, `LICENSE-SCOWL.txt`), from the same script.
const ENGLISH_WORDS: &str = include_str!("english_words.txt");

/// The lines of a list that are entries.
fn entries(list: &str) -> impl Iterator<Item = &str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The name lists, built once per process and shared by every scanner (about 116,000 entries,
/// 3 MB, borrowed from the binary's text where they are lower case already). Hash sets, not
/// sorted lists searched by bisection: those took a third less memory, but their 17 probes a
/// lookup were cache misses that made a 10 KB prompt's scan measurably slower.
struct NameLists {
    /// A word that starts a name on its own (`anna`, `hans`).
    given: HashSet<&'static str>,
    /// Given names that are also English words (`mark`, `crystal`): they start a name only
    /// before a listed surname (`Mark Morris`, not `Mark Done`).
    given_words: HashSet<&'static str>,
    surnames: HashSet<&'static str>,
    /// Lowercase English words: after a given name, not a surname unless listed as one.
    words: HashSet<&'static str>,
}

static NAME_LISTS: LazyLock<NameLists> = LazyLock::new(|| {
    // The hand-written list is mixed case: lower-cased once, kept for the process's life.
    let hand: &'static [String] = entries(GIVEN_NAMES)
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .leak();
    NameLists {
        given: hand
            .iter()
            .map(String::as_str)
            .chain(entries(WIDE_GIVEN))
            .collect(),
        given_words: entries(WIDE_GIVEN_WORDS).collect(),
        surnames: entries(WIDE_SURNAMES).collect(),
        words: entries(ENGLISH_WORDS).collect(),
    }
});

impl NameLists {
    /// A given name on its own: listed, or hyphenated from listed ones (`Hans-Dietrich`).
    fn given(&self, folded: &str) -> bool {
        self.given.contains(folded)
            || (folded.contains('-') && folded.split('-').all(|part| self.given.contains(part)))
    }
}

/// The person-name scanner.
pub(super) fn scanner() -> Scanner {
    let lists = Lists {
        names: &NAME_LISTS,
        // A company form ends a run as a stop word does (and then rejects it).
        not_names: NOT_NAMES.iter().chain(COMPANY_FORMS).copied().collect(),
        cues: CUES.iter().copied().collect(),
        salutations: SALUTATIONS.iter().copied().collect(),
    };
    Box::new(move |text, out| lists.scan(text, out))
}

struct Lists {
    names: &'static NameLists,
    not_names: HashSet<&'static str>,
    cues: HashSet<&'static str>,
    salutations: HashSet<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Title,
    Suffix,
    Name,
    Initial,
    Particle,
    Other,
}

/// One word: its span (punctuation around it left out), what it is, and whether punctuation
/// or a line break after it ends a run.
#[derive(Debug)]
struct Word {
    span: Range<usize>,
    kind: Kind,
    ends_run: bool,
}

impl Lists {
    fn scan(&self, text: &str, out: &mut Vec<Range<usize>>) {
        let words = classify(text);
        let mut i = 0;
        while i < words.len() {
            if matches!(words[i].kind, Kind::Other | Kind::Particle) {
                i += 1;
                continue;
            }
            let mut j = i;
            while !words[j].ends_run && j + 1 < words.len() && words[j + 1].kind != Kind::Other {
                j += 1;
            }
            let next = words.get(j + 1).filter(|_| !words[j].ends_run);
            if let Some(span) = self.check(text, &words[i..=j], next) {
                out.push(span);
            }
            i = j + 1;
        }
    }

    /// Accepts (and trims) one run, or rejects it.
    fn check(&self, text: &str, run: &[Word], next: Option<&Word>) -> Option<Range<usize>> {
        let fold = |w: &Word| text[w.span.clone()].to_lowercase();
        // Leading cue or stop words: a cue inside the run (`Contact Jane Doe`) counts as one
        // before it.
        let mut first = 0;
        let mut cue = Cue::None;
        while first < run.len() && run[first].kind != Kind::Title {
            let w = fold(&run[first]);
            if SALUTATIONS.contains(&w.as_str()) {
                cue = Cue::Salutation;
            } else if CUES.contains(&w.as_str()) {
                cue = Cue::Word;
            } else if run[first].kind == Kind::Name && !self.not_names.contains(w.as_str()) {
                break;
            }
            first += 1;
        }
        let run = &run[first..];
        // A stop word inside the run ends it; so does a trailing particle. A company form
        // (`Maria Stuart Inc`) makes the run a company.
        let mut end = run
            .iter()
            .position(|w| w.kind == Kind::Name && self.not_names.contains(fold(w).as_str()))
            .unwrap_or(run.len());
        let after = if end < run.len() { run.get(end) } else { next };
        if after.is_some_and(|w| COMPANY_FORMS.contains(&fold(w).trim_end_matches('.'))) {
            return None;
        }
        while end > 0 && run[end - 1].kind == Kind::Particle {
            end -= 1;
        }
        let run = &run[..end];
        let titled = run.iter().any(|w| w.kind == Kind::Title);
        let names: Vec<&Word> = run.iter().filter(|w| w.kind == Kind::Name).collect();
        names.first()?;
        // The name words in lower case, folded once for every list lookup below.
        let folded: Vec<String> = names.iter().map(|w| fold(w)).collect();
        let (start, end) = (run.first()?.span.start, run.last()?.span.end);
        let given = self.starts_given(&folded);
        if titled || (given && names.len() >= 2) {
            return Some(start..end);
        }
        // From here on a cue is needed; a lone word also has to end its clause (`Hi Anna,`).
        let clause_ends = single_name_ends(text, end);
        if names.len() == 1 && !clause_ends {
            return None;
        }
        if cue == Cue::None {
            cue = self.cue_before(text, start);
        }
        if cue == Cue::None && sign_off_above(text, start, end) {
            cue = Cue::Word;
        }
        let accept = match cue {
            Cue::None => false,
            Cue::Word => {
                (names.len() >= 2 && !self.english_phrase(&folded)) || (given && clause_ends)
            }
            Cue::Salutation => names.len() >= 2 || clause_ends,
        };
        if accept {
            return Some(start..end);
        }
        if cue != Cue::None {
            return None;
        }
        // No context for the whole run: a given name further in (`Yesterday Jane Doe`).
        let mut i =
            (1..names.len().saturating_sub(1)).find(|&i| self.starts_given(&folded[i..]))?;
        // Name words before it that are no English words belong to the name (`Hernán` of
        // `Hernán Ramón León`, not `Yesterday` of `Yesterday Jane Doe`).
        while i > 0 && !self.names.words.contains(folded[i - 1].as_str()) {
            i -= 1;
        }
        Some(names[i].span.start..end)
    }

    /// Whether `names` (the name words of a run) start with a given name and, when a second
    /// word follows, whether that word can be its surname: any word but an English one that
    /// is not also a listed surname (`Thomas Baker`, `Anna Zeldenrust`; not `Thomas Produce`).
    /// A given name that is also an English word (`Mark`) takes a listed surname only
    /// (`Mark Morris`; not `Mark Done`, `Brand Scalable`) and is not a name on its own.
    fn starts_given(&self, names: &[String]) -> bool {
        let Some(first) = names.first().map(String::as_str) else {
            return false;
        };
        let second = names.get(1).map(String::as_str);
        let listed_surname = second.is_some_and(|s| {
            s.split('-')
                .next()
                .is_some_and(|s| self.names.surnames.contains(s))
        });
        let own = self.names.given(first);
        if !own && !self.names.given_words.contains(first) {
            return false;
        }
        match second {
            None => own,
            Some(_) if !own => listed_surname,
            Some(s) => listed_surname || !self.names.words.contains(s),
        }
    }

    /// Whether every name word (each part of a hyphenated one) is an English word and none is
    /// a listed name: title-case text after a cue (`via Engineer Value-Added Infrastructures`),
    /// not a person (`Technician Will Smith` has a listed surname).
    fn english_phrase(&self, names: &[String]) -> bool {
        let lists = self.names;
        names.iter().map(String::as_str).all(|w| {
            let listed =
                lists.given(w) || lists.given_words.contains(w) || lists.surnames.contains(w);
            !listed && w.split('-').all(|part| lists.words.contains(part))
        })
    }

    /// The cue (1 to 4 words) that ends the text before `start` on the same line, after `:`,
    /// `=`, quotes: `Ticket opened by`, `"assignee": "`, `Dear`.
    fn cue_before(&self, text: &str, start: usize) -> Cue {
        let Some(before) = text.get(..start) else {
            return Cue::None;
        };
        let from = line_start(text, start)
            .unwrap_or_else(|| floor_char(text, start.saturating_sub(LINE_LOOK)));
        let line = &before[from..];
        let mut from = line.len().saturating_sub(48);
        while !line.is_char_boundary(from) {
            from += 1;
        }
        let tail = line[from..]
            .trim_end_matches([' ', '\t', ':', '=', '"', '\'', '-', '>', '(', '\\'])
            .trim_end_matches(['"', '\'', ' '])
            .to_lowercase();
        let words: Vec<&str> = tail.split_whitespace().collect();
        for n in 1..=words.len().min(4) {
            let mut cue = words[words.len() - n..].join(" ");
            let lead = cue.len()
                - cue
                    .trim_start_matches(|c: char| !c.is_alphanumeric() && c != '_')
                    .len();
            cue.drain(..lead);
            if self.salutations.contains(cue.as_str()) {
                return Cue::Salutation;
            }
            // `powered by`, `made by`: what follows is a company or a product.
            let company = cue == "by"
                && words
                    .len()
                    .checked_sub(2)
                    .is_some_and(|i| NOT_PERSON_BY.contains(&words[i]));
            if self.cues.contains(cue.as_str()) && !company {
                return Cue::Word;
            }
        }
        Cue::None
    }
}

/// Every word of `text`, classified. Words end at white space and at the escaped line breaks
/// and tabs of JSON text (`\\n`, `\\r`, `\\t`): tool arguments carry text that way.
fn classify(text: &str) -> Vec<Word> {
    let mut words: Vec<Word> = Vec::new();
    let mut token_start: Option<usize> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let escaped = c == '\\' && matches!(chars.peek(), Some((_, 'n' | 'r' | 't')));
        if !c.is_whitespace() && !escaped {
            token_start.get_or_insert(i);
            continue;
        }
        let line_break =
            matches!(c, '\n' | '\r') || (escaped && matches!(chars.peek(), Some((_, 'n' | 'r'))));
        if escaped {
            chars.next();
        }
        match token_start.take() {
            Some(start) => push_word(&mut words, text, start..i, line_break),
            None if line_break => {
                if let Some(last) = words.last_mut() {
                    last.ends_run = true;
                }
            }
            None => {}
        }
    }
    if let Some(start) = token_start {
        push_word(&mut words, text, start..text.len(), false);
    }
    words
}

/// Classifies the token at `span` (punctuation around it left out) and appends it.
fn push_word(words: &mut Vec<Word>, text: &str, span: Range<usize>, line_break_after: bool) {
    let token = &text[span.clone()];
    let lead = token.len() - token.trim_start_matches(LEADING).len();
    let body = &token[lead..];
    let core = body.trim_end_matches(TRAILING);
    let mut ends_run = core.len() < body.len() || line_break_after;
    let (core, kind) = match word_kind(core) {
        Kind::Other if core.ends_with('.') => {
            // A sentence's full stop.
            ends_run = true;
            let stem = &core[..core.len() - 1];
            (stem, word_kind(stem))
        }
        kind => (core, kind),
    };
    if core.is_empty() {
        if let Some(last) = words.last_mut() {
            last.ends_run = true;
        }
        return;
    }
    let start = span.start + lead;
    words.push(Word {
        span: start..start + core.len(),
        kind,
        ends_run,
    });
}

/// How far the line rules look around a name for the line's start and end: a long line costs
/// nothing more (a whole-line search per name would make a long one-line text quadratic).
const LINE_LOOK: usize = 256;

/// Where the line holding byte `at` starts (after a real line break or JSON's escaped `\\n`),
/// looked for at most [`LINE_LOOK`] bytes back; `None` when no break is that close.
fn line_start(text: &str, at: usize) -> Option<usize> {
    let from = floor_char(text, at.saturating_sub(LINE_LOOK));
    let window = &text[from..at];
    let real = window.rfind('\n').map(|i| from + i + 1);
    let escaped = window.rfind("\\n").map(|i| from + i + 2);
    match real.max(escaped) {
        None if from == 0 => Some(0),
        found => found,
    }
}

/// Where the line holding byte `at` ends (at its break, or the end of the text), looked for at
/// most [`LINE_LOOK`] bytes on; `None` when it ends further away.
fn line_end(text: &str, at: usize) -> Option<usize> {
    let to = ceil_char(text, at + LINE_LOOK);
    let window = &text[at..to];
    let real = window.find('\n');
    let escaped = window.find("\\n");
    match (real, escaped) {
        (None, None) if to == text.len() => Some(to),
        (None, None) => None,
        (a, b) => Some(at + a.unwrap_or(usize::MAX).min(b.unwrap_or(usize::MAX))),
    }
}

/// Punctuation before a word.
const LEADING: &[char] = &['(', '"', '\'', '“', '‘', '«', '[', '{', '<', '¿', '¡'];
/// Punctuation after a word (a run ends there).
const TRAILING: &[char] = &[
    ',', ';', ':', '!', '?', ')', '"', '\'', '”', '’', '»', ']', '}', '>',
];

fn word_kind(word: &str) -> Kind {
    let Some(first) = word.chars().next() else {
        return Kind::Other;
    };
    if !first.is_uppercase() {
        return if PARTICLES.contains(&word) {
            Kind::Particle
        } else if first.is_lowercase() && word.len() <= 5 && TITLES.contains(&word) {
            Kind::Title
        } else {
            Kind::Other
        };
    }
    if TITLES.contains(&word) || (word.starts_with("Dipl.-") && word.ends_with('.')) {
        return Kind::Title;
    }
    let bare: String = word.chars().filter(|c| *c != '.').collect();
    let suffix = SUFFIXES.contains(&bare.to_lowercase().as_str())
        && (word.contains('.') || bare.chars().filter(|c| c.is_uppercase()).count() >= 2);
    if suffix {
        return Kind::Suffix;
    }
    let initials = word.ends_with('.')
        && word
            .split_terminator('.')
            .all(|p| p.chars().count() == 1 && p.chars().all(char::is_uppercase));
    if initials {
        return Kind::Initial;
    }
    if is_name_word(word) {
        Kind::Name
    } else {
        Kind::Other
    }
}

/// `Müller`, `O'Brien`, `McDonald`, `Hans-Jürgen`, `García-Rodríguez`, `Michielsen-van`:
/// hyphen-joined parts, the first capitalised, each capitalised part with lowercase letters
/// (not `CPU`, not `S7`), the others particles.
fn is_name_word(word: &str) -> bool {
    let capitalised = |p: &str| {
        p.chars().next().is_some_and(char::is_uppercase)
            && p.chars().any(char::is_lowercase)
            && p.chars()
                .all(|c| c.is_alphabetic() || c == '\'' || c == '’')
    };
    let mut parts = word.split('-');
    parts.next().is_some_and(capitalised) && parts.all(|p| capitalised(p) || PARTICLES.contains(&p))
}

/// What says a person is named.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cue {
    None,
    /// `by`, `contact:`, `technician`, a sign-off above.
    Word,
    /// `Hi`, `Dear`, `Bonjour`.
    Salutation,
}

/// Words before `by` after which a company or product follows, not a person.
const NOT_PERSON_BY: &[&str] = &[
    "powered",
    "made",
    "provided",
    "sponsored",
    "developed",
    "built",
    "manufactured",
    "published",
    "hosted",
    "caused",
    "triggered",
    "generated",
    "supported",
    "distributed",
    "licensed",
    "owned",
    "sold",
    "supplied",
    "shipped",
    "offered",
    "acquired",
    "produced",
    "designed",
    "certified",
];

/// The run stands alone on its line and the line above is a sign-off (`Regards,`).
fn sign_off_above(text: &str, start: usize, end: usize) -> bool {
    if text.get(..start).is_none() || text.get(end..).is_none() {
        return false;
    }
    let Some(this_line) = line_start(text, start) else {
        return false;
    };
    if this_line == 0 || !text[this_line..start].trim().is_empty() {
        return false;
    }
    let Some(end_of_line) = line_end(text, end) else {
        return false;
    };
    let rest = &text[end..end_of_line];
    if !rest.trim().trim_end_matches(['.', ',']).is_empty() {
        return false;
    }
    // The line above ends just before this one's break (one byte, or two when escaped).
    let above_end = if text[..this_line].ends_with("\\n") {
        this_line - 2
    } else {
        this_line - 1
    };
    let above_end = text[..above_end].trim_end_matches(['\r', '\\']).len();
    let prev_start = line_start(text, above_end)
        .unwrap_or_else(|| floor_char(text, above_end.saturating_sub(LINE_LOOK)));
    let prev = text[prev_start..above_end]
        .trim()
        .trim_end_matches([',', '!', '.', ':'])
        .to_lowercase();
    // The sign-off ends the line above (`Best regards,`, `Context: Best regards,`).
    SIGN_OFFS.iter().any(|s| {
        prev.strip_suffix(s).is_some_and(|head| {
            head.chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric())
        })
    })
}

/// A single given name after a cue (`Hi Anna,`) is a name when the clause ends there.
fn single_name_ends(text: &str, end: usize) -> bool {
    text.get(end..)
        .and_then(|t| t.chars().next())
        .is_none_or(|c| matches!(c, ',' | '!' | '\n' | '\r' | ':' | ';' | '.' | ')' | '"'))
}
