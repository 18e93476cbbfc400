#!/usr/bin/env bash
# Judge every finished seed of the given held-out split folders (docs/heldout.md; default: all of runs/heldout):
# the held-out judge, the ignorant control and ART's MI-FACE (`--evaluate --controls ignorant mi_face_art`, into
# results.json), then evaluator seeds 1 and 2 (results_evaluator1.json, results_evaluator2.json). A seed already
# judged is skipped. ADD_CONTROLS="..." names other controls to add; ADD_CONTROLS=none adds none.
# Then: python -m attacklab.tables runs/heldout/d56789 ...
set -euo pipefail
cd "$(dirname "$0")/.."
controls=${ADD_CONTROLS:-ignorant mi_face_art}
splits=("$@")
[ ${#splits[@]} -gt 0 ] || splits=(runs/heldout/*/)
for split in "${splits[@]}"; do
  for run in "${split%/}"/seed_*; do
    [ -f "$run/results.json" ] || continue
    if ! python - "$run" "$controls" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/results.json"))
wanted = [c for c in sys.argv[2].split() if c != "none"]
sys.exit(0 if "judge" in r["attack"] and all(c in r["controls"] for c in wanted) else 1)
PY
    then
      # shellcheck disable=SC2086
      python main.py --evaluate "$run" --controls $controls
    fi
    for e in ${EVALUATOR_SEEDS-1 2}; do
      [ -f "$run/results_evaluator$e.json" ] || python main.py --evaluate "$run" --evaluator_seed "$e" --controls $controls
    done
  done
done
