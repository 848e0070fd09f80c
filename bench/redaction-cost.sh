#!/usr/bin/env bash
# What redacting a 10 KB prompt costs, per kind of text: p50 / p99 / max of the time
# `Session::redact` takes on one text, as a request pays it (`edgellm redact --jsonl` reports it
# per line as `redact_us`), with the default phone regions and with `phone_regions = ["US"]`.
# The texts come from the held-out generator (bench/redaction_eval.py, Faker) at run time.
#
#   bench/redaction-cost.sh [N] [SEED]   (N texts of each kind, default 200; SEED default 9001)
#
# Needs target/release/edgellm.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
SEED=${2:-9001}
source bench/faker-venv.sh
"$VENV/bin/python" bench/redaction_eval.py cost "$N" "$SEED" > "$OUT/texts.jsonl"
echo "default phone regions:"
"$BIN" redact --jsonl < "$OUT/texts.jsonl" > "$OUT/found.jsonl"
"$VENV/bin/python" bench/redaction_eval.py costscore "$OUT/texts.jsonl" "$OUT/found.jsonl"
printf '[redaction]\nphone_regions = ["US"]\n' > "$OUT/us.toml"
echo
echo 'phone_regions = ["US"]:'
"$BIN" redact --jsonl --config "$OUT/us.toml" < "$OUT/texts.jsonl" > "$OUT/found-us.jsonl"
"$VENV/bin/python" bench/redaction_eval.py costscore "$OUT/texts.jsonl" "$OUT/found-us.jsonl"
