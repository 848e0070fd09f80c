# Sourced by the redaction benchmarks: the Python environment with Faker (PyPI `faker`, MIT,
# pinned) that bench/redaction_eval.py generates its held-out texts with, and the binary.
BIN=${EDGELLM_BIN:-target/release/edgellm}
VENV=${EDGELLM_EVAL_VENV:-$HOME/.cache/edgellm-eval/venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import faker" 2>/dev/null || "$VENV/bin/pip" install --quiet "faker==40.63.0"
OUT=$(mktemp -d)
