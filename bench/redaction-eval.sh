#!/usr/bin/env bash
# Held-out recall and precision of the egress guard's detectors, per category, on text that was
# NOT written together with them: values and noise come from Faker (PyPI `faker`, MIT, pinned;
# its own per-locale format tables, not edgellm's patterns or lists), generated at run time with
# a fixed seed and not shipped. The templates around them are field text (logs, YAML, .env,
# tickets) written here, apart from the development corpus (tests/data/redaction/).
#
#   bench/redaction-eval.sh [N] [SEED]   (N texts per category and locale, default 200; SEED
#                                        default 4242, the seed the detectors were last fixed
#                                        against: report another one as the held-out figure)
#
# Scores: a planted value is found when detections of its category cover it whole; a detection
# of a category that covers no planted value of that category is a false positive; a noise line
# is touched when anything in it is redacted. Needs target/release/edgellm.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
SEED=${2:-4242}
source bench/faker-venv.sh
"$VENV/bin/python" bench/redaction_eval.py generate "$N" "$SEED" > "$OUT/eval.jsonl"
"$BIN" redact --jsonl < "$OUT/eval.jsonl" > "$OUT/found.jsonl"
"$VENV/bin/python" bench/redaction_eval.py score "$OUT/eval.jsonl" "$OUT/found.jsonl"
