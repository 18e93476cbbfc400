#!/usr/bin/env bash
# The frozen disjoint recipe on the held-out splits declared in docs/heldout.md, three fresh seeds each.
# Rerunning it reads the finished seeds and resumes an interrupted one.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/heldout
for split in "d56789:5 6 7 8 9" "odd:1 3 5 7 9" "even:0 2 4 6 8" "rand21a:2 5 6 8 9" "rand21b:3 4 6 7 9"; do
  name=${split%%:*}; digits=${split#*:}
  # shellcheck disable=SC2086
  python main.py --protocol disjoint --private_digits $digits --seeds 41 42 43 --run_dir "runs/heldout/$name" \
    2>&1 | tee -a "runs/heldout/$name.log"
done
