//! The hot path of national phone numbers: the `phonenumber` crate's parse, validate and
//! national-format steps for a number written without `+`, ported onto regexes compiled here
//! from the same metadata.
//!
//! Why: each of the crate's regex uses takes a global mutex and hashes the pattern text into an
//! LRU cache, so one parse + format + validate costs about 13 µs, and a 10 KB text dense with
//! phone numbers spent 8 ms in it with the 13 default regions. Here every pattern is compiled
//! once per region, and a verdict costs a few regex matches on a short string.
//!
//! The port follows the crate step by step (`parser::parse_with`, `helper::country_code`,
//! `helper::national_number`, `validator::{length, number_type, source_for}`,
//! `formatter::{formatter, replace}` of phonenumber 0.3.10), quirks included, so that it gives
//! the crate's verdict. Where a step would go down a path not ported (an international dialling
//! prefix, a country code written in front, a national-prefix transform rule, a carrier code
//! the format uses), [`FastRegion::verdict`] answers `None` and the caller asks the crate. The
//! differential test in `tests.rs` holds the two to the same answers.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexSet};

/// A number descriptor: possible lengths and the national-number pattern (the crate's
/// `Descriptor::is_match`: a length it lists, and a match that starts at 0).
struct Desc {
    lengths: Vec<u16>,
    starts: Regex,
}

impl Desc {
    fn new(d: &Descriptor) -> Option<Desc> {
        Some(Desc {
            lengths: d.possible_length().to_vec(),
            starts: compile_anchored(d.national_number().as_str())?,
        })
    }

    fn is_match(&self, value: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(value.len() as u16)))
            && self.starts.is_match(value)
    }
}

/// One national format: the crate's `Format`, with its regexes compiled here.
struct Format {
    pattern: Regex,
    /// The format with the national-prefix rule folded in (`formatter::replace`'s second
    /// argument for a number without a carrier code).
    template: String,
    leading_last: Option<Regex>,
    domestic_carrier: bool,
}

/// What a region needs to be told a valid number and its national grouping.
struct RegionRules {
    general: Desc,
    general_local_lengths: Vec<u16>,
    /// premium, toll-free, shared cost, VoIP, personal, pager, UAN, voicemail, fixed, mobile:
    /// a number of any of these types is valid. One set, one pass; each type's lengths apart.
    types: RegexSet,
    type_lengths: Vec<Vec<u16>>,
    leading_digits: Option<Regex>,
    national_prefix: Option<String>,
    prefix_for_parsing: Option<Regex>,
    transform: bool,
}

impl RegionRules {
    fn new(meta: &Metadata) -> Option<RegionRules> {
        use phonenumber::Type;
        let d = meta.descriptors();
        let mut patterns = Vec::new();
        let mut type_lengths = Vec::new();
        for kind in [
            Type::PremiumRate,
            Type::TollFree,
            Type::SharedCost,
            Type::Voip,
            Type::PersonalNumber,
            Type::Pager,
            Type::Uan,
            Type::Voicemail,
            Type::FixedLine,
            Type::Mobile,
        ] {
            if let Some(desc) = d.get(kind) {
                patterns.push(anchored(desc.national_number().as_str()));
                type_lengths.push(desc.possible_length().to_vec());
            }
        }
        let types = RegexSet::new(&patterns).ok()?;
        let leading_digits = match meta.leading_digits() {
            Some(r) => Some(compile_anchored(r.as_str())?),
            None => None,
        };
        let prefix_for_parsing = match meta.national_prefix_for_parsing() {
            Some(r) => Some(compile_anchored(r.as_str())?),
            None => None,
        };
        Some(RegionRules {
            national_prefix: meta.national_prefix().map(String::from),
            prefix_for_parsing,
            transform: meta.national_prefix_transform_rule().is_some(),
            general: Desc::new(d.general())?,
            general_local_lengths: d.general().possible_local_length().to_vec(),
            types,
            type_lengths,
            leading_digits,
        })
    }

    /// `validator::number_type(..) != Unknown`.
    fn valid(&self, national: &str) -> bool {
        let length = national.len() as u16;
        self.general.is_match(national)
            && self.types.matches(national).iter().any(|i| {
                let lengths = &self.type_lengths[i];
                lengths.is_empty() || lengths.contains(&length)
            })
    }

    /// Whether `validator::source_for` picks this region for `national` (leading digits, else
    /// validity).
    fn claims(&self, national: &str) -> bool {
        match &self.leading_digits {
            Some(ld) => ld.is_match(national),
            None => self.valid(national),
        }
    }

    /// The national number the crate parses out of `digits` for this region
    /// (`helper::national_number`, then `parse_with`'s second strip of the national prefix and
    /// its length rule) and whether a carrier code was taken; `None` where a transform rule
    /// rewrites it (not ported).
    fn national_of<'d>(&self, digits: &'d str) -> Option<(&'d str, bool)> {
        let mut carrier = false;
        let mut potential: &str = digits;
        match &self.prefix_for_parsing {
            None => {
                if let Some(p) = self.national_prefix.as_deref() {
                    potential = potential.strip_prefix(p).unwrap_or(potential);
                }
            }
            Some(parsing) => {
                if let Some(caps) = parsing.captures(digits)
                    && let Some(whole) = caps.get(0)
                    && whole.start() == 0
                {
                    let last = caps.get(caps.len() - 1);
                    if self.transform && last.is_some() {
                        return None;
                    }
                    carrier = last.is_some();
                    potential = &digits[whole.end()..];
                }
            }
        }
        if let Some(p) = self.national_prefix.as_deref() {
            potential = potential.strip_prefix(p).unwrap_or(potential);
        }
        if self.too_short(potential) {
            Some((digits, false))
        } else {
            Some((potential, carrier))
        }
    }

    /// `validator::length(meta, number, Unknown) == TooShort`.
    fn too_short(&self, national: &str) -> bool {
        self.length(national) == Length::TooShort
    }

    /// `validator::length(meta, number, Unknown)`, reduced to what the parser asks of it.
    fn length(&self, national: &str) -> Length {
        let length = national.len() as u16;
        let possible = &self.general.lengths;
        let (Some(&minimum), Some(&maximum)) = (possible.first(), possible.last()) else {
            return Length::Other;
        };
        if self.general_local_lengths.contains(&length) || length == minimum {
            Length::Possible
        } else if length < minimum {
            Length::TooShort
        } else if length <= maximum && possible.contains(&length) {
            Length::Possible
        } else {
            Length::Other
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Length {
    Possible,
    TooShort,
    Other,
}

/// Every region of one country code, in the crate's order (the first that claims a number is
/// its country: NANP lists the US before Canada), and the formats of the code's main region
/// (the crate formats with those), each with its template (the national-prefix rule folded in).
struct CodeRules {
    code: String,
    regions: Vec<RegionRules>,
    formats: Vec<Format>,
}

impl CodeRules {
    /// `validator::source_for`: the region a national number belongs to.
    fn pick(&self, national: &str) -> Option<usize> {
        if self.regions.len() == 1 {
            Some(0)
        } else {
            self.regions.iter().position(|r| r.claims(national))
        }
    }

    /// [`CodeRules::country_and_valid`] gives region `me` and validity, asked in the cheap
    /// order: `me`'s own claim first (most numbers fail it), the regions before it only then.
    fn ours_and_valid(&self, me: usize, national: &str) -> bool {
        let value = national.trim_start_matches('0');
        let value = if value.is_empty() { "0" } else { value };
        if self.regions.len() > 1 {
            let mine = &self.regions[me];
            if !mine.claims(value) || self.regions[..me].iter().any(|r| r.claims(value)) {
                return false;
            }
            // Without leading digits, the claim was validity itself.
            if national == value && mine.leading_digits.is_none() {
                return true;
            }
        }
        let validity_region = if self.regions.len() == 1 || national == value {
            Some(me)
        } else {
            self.pick(national)
        };
        validity_region.is_some_and(|i| self.regions[i].valid(national))
    }

    /// `PhoneNumber::country().id()` is found from the national number's value, without
    /// leading zeros; `is_valid` from the string with them.
    fn country_and_valid(&self, national: &str) -> (Option<usize>, bool) {
        let value = national.trim_start_matches('0');
        let value = if value.is_empty() { "0" } else { value };
        let valid = self
            .pick(national)
            .is_some_and(|i| self.regions[i].valid(national));
        (self.pick(value), valid)
    }
}

/// One configured region, ready for the fast path.
pub(super) struct FastRegion {
    rules: Arc<CodeRules>,
    me: usize,
    idd: Option<Regex>,
}

/// The fast path's answer for one region: valid for it (with its country being this region)
/// and the digit-group lengths of its national format.
pub(super) struct Verdict {
    pub valid: bool,
    pub groups: Vec<usize>,
}

impl FastRegion {
    /// `None` where the metadata uses a pattern this crate's regex syntax does not take, or the
    /// region is not in the database: the caller then always asks the crate.
    pub(super) fn new(id: &str) -> Option<FastRegion> {
        let meta = DATABASE.by_id(id)?;
        let code = meta.country_code();
        let me = DATABASE.region(&code)?.iter().position(|r| *r == id)?;
        let idd = match meta.international_prefix() {
            Some(r) => Some(compile_anchored(r.as_str())?),
            None => None,
        };
        Some(FastRegion {
            rules: code_rules(code, true)?,
            me,
            idd,
        })
    }

    /// The crate's verdict on `digits` (the ASCII digits of a number written without `+` or
    /// extension) for this region, or `None` where the port does not follow the crate.
    pub(super) fn verdict(&self, digits: &str) -> Option<Verdict> {
        let invalid = Some(Verdict {
            valid: false,
            groups: Vec::new(),
        });
        if digits.len() < 2 {
            return invalid;
        }
        // An international dialling prefix in front: not ported.
        if self.idd.as_ref().is_some_and(|idd| idd.is_match(digits)) {
            return None;
        }
        let region = &self.rules.regions[self.me];
        // `helper::country_code`: the country code written in front comes off when the number
        // is not valid-shaped or not of a possible length with it.
        let digits = match digits.strip_prefix(self.rules.code.as_str()) {
            Some(rest)
                if !region.general.is_match(digits)
                    || region.length(digits) != Length::Possible =>
            {
                rest
            }
            _ => digits,
        };
        let (national, carrier) = region.national_of(digits)?;
        if !(2..=17).contains(&national.len()) {
            return invalid;
        }
        if !self.rules.ours_and_valid(self.me, national) {
            return invalid;
        }
        let groups = self.national_groups(national, carrier)?;
        Some(Verdict {
            valid: true,
            groups,
        })
    }

    /// Digit-group lengths of the national format (`formatter::formatter` + `replace`).
    fn national_groups(&self, national: &str, carrier: bool) -> Option<Vec<usize>> {
        let chosen = self.rules.formats.iter().find(|f| {
            f.leading_last.is_none()
                || f.leading_last
                    .as_ref()
                    .is_some_and(|l| l.is_match(national))
                    && f.pattern
                        .find(national)
                        .is_some_and(|m| m.start() == 0 && m.end() == national.len())
        });
        let Some(f) = chosen else {
            return Some(digit_groups(national));
        };
        if carrier && f.domestic_carrier {
            return None;
        }
        Some(digit_groups(
            &f.pattern.replace(national, f.template.as_str()),
        ))
    }
}

/// The crate's verdict on a number written with `+` (`digits`: its ASCII digits after the
/// `+`, extension removed): `parse(None, ..)` then `is_valid`. `None` where the port does not
/// follow the crate (a non-geographic code, a transform rule).
pub(super) fn international_verdict(digits: &str) -> Option<bool> {
    // `helper::country_code`, source `Plus`: the first 1-3 digits that are a country code.
    if digits.len() <= 2 || digits.starts_with('0') {
        return Some(false);
    }
    let Some((code, national)) = (1..=3).find_map(|len| {
        let code: u16 = digits.get(..len)?.parse().ok()?;
        DATABASE.by_code(&code).map(|_| (code, &digits[len..]))
    }) else {
        return Some(false);
    };
    // Only the configured regions' codes: rules built for every code a text names would grow
    // without bound (about 1.3 MB a region); other codes go to the crate, whose cache is bounded.
    let rules = code_rules(code, false)?;
    // `parse_with`: the region is found from the number without leading zeros, then its
    // national prefix comes off.
    let national = match rules.pick(national.trim_start_matches('0')) {
        Some(i) => rules.regions[i].national_of(national)?.0,
        None => national,
    };
    if !(2..=17).contains(&national.len()) {
        return Some(false);
    }
    Some(rules.country_and_valid(national).1)
}

/// The rules of every region of a country code, built once per process for each code; with
/// `build` false, only a code already built (for a configured region) is answered.
fn code_rules(code: u16, build: bool) -> Option<Arc<CodeRules>> {
    static CACHE: LazyLock<Mutex<HashMap<u16, Option<Arc<CodeRules>>>>> =
        LazyLock::new(Default::default);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !build {
        return cache.get(&code).cloned().flatten();
    }
    cache
        .entry(code)
        .or_insert_with(|| build_code_rules(code).map(Arc::new))
        .clone()
}

fn build_code_rules(code: u16) -> Option<CodeRules> {
    let regions = DATABASE.region(&code)?;
    if regions.contains(&"001") {
        return None; // non-geographic numbering (+800, +882, ...): not ported
    }
    let mut all = Vec::new();
    for id in &regions {
        all.push(RegionRules::new(DATABASE.by_id(*id)?)?);
    }
    let main = DATABASE.by_code(&code)?.into_iter().next()?;
    let main_prefix = main.national_prefix().unwrap_or("");
    let mut formats = Vec::new();
    for f in main.formats() {
        let leading_last = match f.leading_digits().last() {
            Some(r) => Some(compile_anchored(r.as_str())?),
            None => None,
        };
        let template = match f.national_prefix() {
            Some(rule) => {
                let first = first_group(f.format())?;
                let rule = rule
                    .replace("$NP", main_prefix)
                    .replace("$FG", &format!("${first}"))
                    .replace("$CC", "");
                replace_first_group(f.format(), &rule)
            }
            None => f.format().to_string(),
        };
        formats.push(Format {
            pattern: compile(&clean(f.pattern().as_str()))?,
            template,
            leading_last,
            domestic_carrier: f.domestic_carrier().is_some(),
        });
    }
    Some(CodeRules {
        code: code.to_string(),
        regions: all,
        formats,
    })
}

/// `consts::FIRST_GROUP` (`(\$\d)`): the digit of the first `$n` in a format.
fn first_group(format: &str) -> Option<char> {
    let at = format
        .as_bytes()
        .windows(2)
        .position(|w| w[0] == b'$' && w[1].is_ascii_digit())?;
    Some(format.as_bytes()[at + 1] as char)
}

/// `FIRST_GROUP.replace(format, rule)`: the first `$n` replaced by `rule` as the regex
/// crate expands a replacement (there, `$1` and `$0` are the `$n` matched; another group
/// name is empty; `$$` is `$`).
fn replace_first_group(format: &str, rule: &str) -> String {
    let Some(at) = format
        .as_bytes()
        .windows(2)
        .position(|w| w[0] == b'$' && w[1].is_ascii_digit())
    else {
        return format.to_string();
    };
    let matched = &format[at..at + 2];
    let mut expanded = String::new();
    let mut rest = rule;
    while let Some(i) = rest.find('$') {
        expanded.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            expanded.push('$');
            rest = r;
            continue;
        }
        let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", rest),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            expanded.push('$');
            continue;
        }
        if name == "0" || name == "1" {
            expanded.push_str(matched);
        }
        rest = after;
    }
    expanded.push_str(rest);
    format!("{}{}{}", &format[..at], expanded, &format[at + 2..])
}

/// The lengths of the digit runs of `s`.
fn digit_groups(s: &str) -> Vec<usize> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect()
}

/// The metadata's patterns carry layout whitespace.
fn clean(pattern: &str) -> String {
    pattern.chars().filter(|c| !c.is_whitespace()).collect()
}

fn compile(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

/// A metadata pattern that matches only at the start of the string (the crate's `lookingAt`
/// uses, and its `find` uses that count only a match at 0: that match is the leftmost one).
fn anchored(pattern: &str) -> String {
    format!("^(?:{})", clean(pattern))
}

fn compile_anchored(pattern: &str) -> Option<Regex> {
    compile(&anchored(pattern))
}
