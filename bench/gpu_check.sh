#!/usr/bin/env bash
# The CUDA path in one call: a dry run of every protocol and attack on the GPU, then one full default run.
# Prints, per run, its wall time, the device its config.json records and its headline numbers; exits non-zero
# when a run fails or does not run on CUDA. Usage: bash bench/gpu_check.sh [OUT_DIR] (default runs/gpu_check).
# SKIP_FULL=1 leaves out the full run; ALLOW_CPU=1 checks the script itself on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
if [ "${ALLOW_CPU:-0}" != 1 ] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "bench/gpu_check.sh: torch sees no CUDA device here; run it on a machine with a GPU" >&2
  exit 2
fi
if [ -e "$out" ]; then
  echo "bench/gpu_check.sh: $out exists; pass another OUT_DIR or remove it" >&2
  exit 2
fi
mkdir -p "$out"
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
                              torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
failed=0

check() {  # NAME ARGS...: one main.py run into $out/NAME, timed, then its summary line
  local name=$1; shift
  local t0=$SECONDS
  if python main.py --run_dir "$out/$name" "$@" > "$out/$name.log" 2>&1; then
    python - "$out/$name" "$((SECONDS - t0))" "${ALLOW_CPU:-0}" <<'PY' || failed=1
import json, sys
run, wall, allow_cpu = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
cfg, r = json.load(open(f"{run}/config.json")), json.load(open(f"{run}/results.json"))
if r.get("attack") == "fgsm":
    headline = f"FGSM accuracy by eps {r['fgsm']['accuracy']}"
elif r.get("attack") == "extraction":
    headline = f"extraction agreement softmax {r['extraction']['softmax']['agreement']:.4f}"
else:
    a = r["attack"]
    judge = f", held-out judge {a['judge']['accuracy']:.3f}" if "judge" in a else ""
    headline = f"accuracy by the evaluator {a['accuracy_by_evaluator']:.3f}{judge}"
print(f"{run}: {wall} s on {cfg['device']}, target test accuracy {r['target']['test_accuracy']:.4f}; {headline}")
sys.exit(0 if cfg["device"].startswith("cuda") or allow_cpu else f"{run} ran on {cfg['device']}, not on CUDA")
PY
  else
    echo "$out/$name: FAILED after $((SECONDS - t0)) s; the end of $out/$name.log:"
    tail -n 20 "$out/$name.log"
    failed=1
  fi
}

check dry_same --dry_run
check dry_disjoint --dry_run --protocol disjoint
check dry_disjoint_59 --dry_run --protocol disjoint --private_digits 5 6 7 8 9
check dry_letters --dry_run --protocol letters
check dry_fgsm --dry_run --attack fgsm
check dry_extraction --dry_run --attack extraction
for defence in label_smoothing_neg dp_sgd mid bido; do  # each defence's training on CUDA (DP-SGD: Opacus' hooks)
  check "dry_defence_$defence" --dry_run --protocol disjoint --defence "$defence" --controls none
done
# the frontier's Ray runner with a GPU share per cell (dry cells)
t0=$SECONDS
if python -m attacklab.sweep frontier --out "$out/frontier_dry" --dry_run --defences none mid --budgets --seeds 1 \
     --gpus_per_cell 0.5 > "$out/frontier_dry.log" 2>&1; then
  echo "$out/frontier_dry: $((SECONDS - t0)) s (Ray, 2 cells, half a GPU each)"
else
  echo "$out/frontier_dry: FAILED after $((SECONDS - t0)) s; the end of $out/frontier_dry.log:"; tail -n 20 "$out/frontier_dry.log"
  failed=1
fi
[ "${SKIP_FULL:-0}" = 1 ] || check full_default
exit $failed
