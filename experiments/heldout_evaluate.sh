#!/usr/bin/env bash
# Judge every finished seed of the held-out runs (docs/heldout.md): the held-out judge and the ignorant
# control (`--evaluate --controls ignorant`, into results.json), then evaluator seeds 1 and 2
# (results_evaluator1.json, results_evaluator2.json). A seed already judged is skipped.
# Then: python -m attacklab.tables runs/heldout/d56789 runs/heldout/odd ...
set -euo pipefail
cd "$(dirname "$0")/.."
for run in runs/heldout/*/seed_*; do
  [ -f "$run/results.json" ] || continue
  if ! python - "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/results.json"))
sys.exit(0 if "judge" in r["attack"] and "ignorant" in r["controls"] else 1)
PY
  then
    python main.py --evaluate "$run" --controls ignorant
  fi
  for e in ${EVALUATOR_SEEDS:-1 2}; do
    [ -f "$run/results_evaluator$e.json" ] || python main.py --evaluate "$run" --evaluator_seed "$e" --controls ignorant
  done
done
