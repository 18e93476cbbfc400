"""Sweeps of main.py runs on Ray: each cell a task, finished cells skipped, a failed cell reported, not fatal.

    python -m attacklab.sweep frontier --out results/frontier                  # the full frontier (docs/defences.md)
    python -m attacklab.sweep frontier --out runs/frontier_dry --dry_run --defences none mid=0.1 --seeds 1 --budgets
    python -m attacklab.sweep seeds --run_dir runs/heldout/odd --seeds 41 42 43 --main_args --protocol disjoint ...

Ray starts a local cluster on this machine (--cpus, default all cores) unless --address names a running one.
Each cell runs `python main.py ...` into its own run folder; its output goes to <cell>.log beside it.
Killing the sweep and rerunning the same command finishes only the missing cells (an interrupted cell
resumes from its last checkpoint). The table, frontier.md/.json and frontier.png are written at the end
from every finished cell.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from attacklab import frontier
from attacklab.flagtypes import OneLineParser

REPO = Path(__file__).resolve().parents[1]


def run_cell(argv, folder, threads, gpus):
    """One main.py run (resumed if its folder holds an interrupted run): {'rc', 'seconds', 'log'}."""
    folder = Path(folder)
    log = folder.parent / f"{folder.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if (folder / "config.json").is_file():  # an interrupted cell: continue it with its own config
        argv = ["--resume", str(folder)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.time()
    with open(log, "a") as out:
        rc = subprocess.run([sys.executable, str(REPO / "main.py"), *argv], stdout=out, stderr=subprocess.STDOUT,
                            env=env, cwd=REPO).returncode
    return {"rc": rc, "seconds": time.time() - t0, "log": str(log)}


def headline(folder):
    """A finished cell's numbers for its progress line."""
    r = json.loads((Path(folder) / "results.json").read_text())
    attack = r["attack"]
    judge = f", attack {attack['judge']['accuracy']:.3f} by the held-out judge" if "judge" in attack else ""
    eps = r["target"].get("defence", {}).get("epsilon")
    return f"test accuracy {r['target']['test_accuracy']:.4f}{f', ε {eps:.2f}' if eps else ''}{judge}"


def warm_caches(argv, log=print):
    """Prepare MNIST and train the cached evaluator and held-out judge that every cell of main.py argv reads, once,
    before cells run side by side (each would train its own copy otherwise). A dry cell's are its own: nothing."""
    sys.path.insert(0, str(REPO))
    import main as main_py
    from attacklab import evaluation
    from attacklab.data import load_data
    from attacklab.protocols import protocol_for
    from attacklab.runtime import select_device
    flags = main_py.run_flags(main_py.build_parser().parse_args(argv))
    if flags["dry_run"] or flags["attack"] != "inversion":
        return
    t0, data = time.time(), load_data(Path(flags["data_dir"]))
    device, classes = select_device(flags["ngpu"], flags["devicen"]), protocol_for(flags).private_classes
    evaluation.evaluator_stage(flags, data, device, classes)
    evaluation.judge_stage(flags, data, device, classes)
    log(f"data, evaluator and held-out judge ready in {Path(flags['data_dir'])} ({time.time() - t0:.0f} s)")


def run_on_ray(cells, out, argv_of, address=None, cpus=None, cpus_per_cell=1, gpus_per_cell=0.0, log=print):
    """Run every unfinished cell as a Ray task; print a line per finished cell. Returns the failed cells."""
    import ray
    todo = [c for c in cells if not (c.folder(out) / "results.json").is_file()]
    log(f"{len(cells)} cells, {len(cells) - len(todo)} finished earlier, {len(todo)} to run")
    if not todo:
        return []
    if address is None:  # a running cluster's machines need not share this one's disk
        warm_caches(argv_of(todo[0]), log)
    ray.init(address=address, num_cpus=None if address else (cpus or os.cpu_count()), include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=0)(run_cell)
        pending = {task.remote(argv_of(c), str(c.folder(out)), max(1, int(cpus_per_cell)), gpus_per_cell): c
                   for c in todo}
        failed, n = [], 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell, n = pending.pop(ready[0]), n + 1
            try:
                outcome = ray.get(ready[0])
            except Exception as exc:  # the task itself died (a worker lost): the cell failed, the others go on
                outcome = {"rc": f"lost ({type(exc).__name__})", "seconds": 0.0, "log": "(none)"}
            where = f"[{n}/{len(todo)}] {cell_name(cell)}"
            if outcome["rc"] == 0 and (cell.folder(out) / "results.json").is_file():
                log(f"{where}: {headline(cell.folder(out))} ({outcome['seconds']:.0f} s)")
            else:
                failed.append(cell)
                log(f"{where}: FAILED (exit {outcome['rc']}); see {outcome['log']}")
        return failed
    finally:
        ray.shutdown()


def cell_name(cell):
    """How logs name a cell: "mid_0.1 seed 2", or "seed 2" for a --seeds folder's."""
    return f"{cell.point} seed {cell.seed}".lstrip()


class SeedCell:
    """One seed of a --seeds folder: RUN_DIR/seed_<S>, main.py's flags plus --seed S."""

    def __init__(self, seed, flags):
        self.seed, self.flags, self.point = seed, list(flags), ""  # no defence point: named by its seed alone

    def folder(self, out):
        return Path(out) / f"seed_{self.seed}"

    def argv(self, out):
        return [*self.flags, "--seed", str(self.seed), "--run_dir", str(self.folder(out))]


def check_seed_folders(cells, out, flags):
    """A seed folder made with other flags is refused, as main.py --seeds refuses it (its error, one sentence)."""
    sys.path.insert(0, str(REPO))
    import main as main_py
    from attacklab.runfolder import load_run_config
    args = main_py.build_parser().parse_args(flags)
    main_py.validate_args(args)
    for cell in cells:
        if (cell.folder(out) / "config.json").is_file():
            run_args = argparse.Namespace(**dict(vars(args), seed=cell.seed, run_dir=str(cell.folder(out)), seeds=None))
            main_py.check_same_flags(load_run_config(cell.folder(out), "sweep seeds"), run_args, cell.folder(out))


def run_seeds(args):
    """python -m attacklab.sweep seeds: main.py --seeds with each seed a Ray task, then the same summary."""
    from attacklab.evaluation import summarise
    from attacklab.runtime import UserError
    out = Path(args.run_dir).resolve()
    cells = [SeedCell(s, args.main_args) for s in args.seeds]
    try:
        check_seed_folders(cells, out, args.main_args)
    except UserError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    failed = run_on_ray(cells, out, lambda c: c.argv(out), args.address, args.cpus, args.cpus_per_cell,
                        args.gpus_per_cell)
    done = {c.seed: json.loads((c.folder(out) / "results.json").read_text()) for c in cells if c not in failed}
    if done:
        summarise(done, out / "seeds_summary.json")
    if failed:
        print(f"sweep: seeds {' '.join(str(c.seed) for c in failed)} failed; rerun the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


def add_ray_arguments(p):
    """Where the cells run: --address, --cpus, --cpus_per_cell, --gpus_per_cell."""
    p.add_argument("--address", default=None, help="a running Ray cluster (e.g. auto, or ray://host:10001)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the local cluster (default: all of this machine's)")
    p.add_argument("--cpus_per_cell", type=float, default=1, help="CPUs Ray reserves for each cell (its torch threads)")
    p.add_argument("--gpus_per_cell", type=float, default=0.0, help="GPU share of each cell, e.g. 0.25 (0: CPU only)")


def build_parser():
    p = OneLineParser(description="Sweeps of main.py on Ray.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="sweep", required=True)
    f = sub.add_parser("frontier", help="defences x strengths x seeds: the privacy-utility frontier",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    f.add_argument("--out", default=str(REPO / "runs" / "frontier"), help="the sweep's folder (one folder per cell)")
    f.add_argument("--protocol", default="disjoint", choices=("disjoint", "same", "letters"))
    f.add_argument("--defences", nargs="+", default=list(frontier.DEFAULT_DEFENCES), metavar="NAME[=S,S]",
                   help="defences and their strengths (none, label_smoothing_neg=-0.05,-0.1, dp_sgd=8,1, mid=0.01, ...)")
    f.add_argument("--budgets", type=int, nargs="*", default=list(frontier.DEFAULT_BUDGETS), metavar="N",
                   help="query budgets of the undefended target (the API's own lever); none with a bare --budgets")
    f.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    f.add_argument("--dry_run", action="store_true", help="main.py --dry_run cells (a smoke test of the sweep)")
    add_ray_arguments(f)
    f.add_argument("--main_args", nargs=argparse.REMAINDER, default=[],
                   help="everything after it goes to every cell's main.py (e.g. --main_args --data_dir D)")
    s = sub.add_parser("seeds", help="main.py --seeds with each seed a Ray task",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--run_dir", required=True, help="the --seeds folder (one RUN_DIR/seed_<S> per seed)")
    s.add_argument("--seeds", type=int, nargs="+", required=True)
    add_ray_arguments(s)
    s.add_argument("--main_args", nargs=argparse.REMAINDER, default=[],
                   help="everything after it goes to every seed's main.py (e.g. --main_args --protocol disjoint)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.sweep == "seeds":
        return run_seeds(args)
    try:
        cells = frontier.frontier_cells(args.defences, args.seeds, args.budgets)
    except ValueError as exc:
        print(f"sweep: error: --defences {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    failed = run_on_ray(cells, out, lambda c: c.argv(out, args.protocol, args.dry_run, args.main_args),
                        args.address, args.cpus, args.cpus_per_cell, args.gpus_per_cell)
    summary = frontier.write_frontier(out, cells)
    print(frontier.table_markdown(summary))
    print(f"frontier.md, frontier.json and frontier.png in {out}")
    if failed:
        print(f"sweep: {len(failed)} cell(s) failed: {', '.join(cell_name(c) for c in failed)}; "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
