"""driver_profile "standard" against "large", side by side from one run (issue 24): the scale simulation at 64, 256
and 1,024 GPUs, and real Ray with 32 fake GPUs, for both profiles, in one table.

    python -m benchmarks.tools.profile_comparison --out benchmarks/results/profiles           # the comparison
    python -m benchmarks.tools.profile_comparison --gpus 16 --trials-per-gpu 2 --real-ray-gpus 4 \\
        --real-ray-max-epochs 6 --out /tmp/profiles                                         # end to end, small

Each run is a process of its own, one after the other (the machine's cores go to one run at a time): first real
Ray (standard, then large), then the simulation per GPU count (standard, then large). A run that fails or runs
past --timeout-s is recorded with its error and the others go on.

Real Ray (benchmarks/tools/scale_real_ray.py): spaces/full.py under each profile with the search's own
TuneConfig, RunConfig and trial reporter; trials sleep 0.07x the simulated epoch and report 8 MB checkpoints
(`--checkpoint-kb`) at the space's cadence. It measures the fake GPUs' utilisation, the trial's wait per report
and the driver's loop per phase of a trial's life.

The simulation (benchmarks/tools/scale_simulation.py), per GPU count and profile: spaces/full.py, 4 trials per GPU,
seed 0, the space's checkpoint cadence (every 3rd epoch and the last), each checkpoint holding its trial
`--checkpoint-s` while it persists (1 s: 0.3-1.5 GB at ~1 GB/s; 0 leaves uploads out, as issue 24's command did),
Tune's experiment snapshots at their measured cost (1.13 ms per trial changed, 0.10 ms per trial), and the driver
costing per trial start / end / result / checkpoint:
  standard  Tune's own trial start: 23.7 / 3.0 / 6.8 / 1.85 ms (the figures issue 24's command uses; measured with
            reused actors: a standard search starts a new actor per trial, which costs the loop more);
            a report every epoch, no suggestion pool, TPE over every trial, synchronous reports;
  large     the registry cache's start: 12.0 / 2.7 / 7.85 / 1.9 ms; everything the profile turns on
            (search/space_file.py LARGE_SETTINGS, LARGE_TRIAL): report_epochs "decisions", the suggestion pool
            with its helpers (the simulation then runs in real time until the last trial starts), the TPE
            history window, reports in the background, checkpoint_after_decision.
  BENCHMARKS.md ("The driver's loop, by phase") gives the runs those costs come from. `--sim-costs measured`
  uses this run's real-Ray phases instead (start + dispatch, end, result + dispatch, checkpoint; per profile).

Writes OUT/profile_comparison.md (the tables, the command, machine, date and load) and beside it its record
(benchmarks/record.py: every run's figures and the exact command that made it); each run's own record, log and
JSON lines go to OUT/runs/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.record import machine, provenance, write_record

REPO = Path(__file__).resolve().parents[2]
PROFILES = ("standard", "large")
# ms of the driver's loop per trial start, trial end, result, checkpoint (BENCHMARKS.md, "The driver's loop, by phase")
DOCUMENTED_COSTS = {"standard": {"start": 23.7, "end": 3.0, "result": 6.8, "checkpoint": 1.85},
                    "large": {"start": 12.0, "end": 2.7, "result": 7.85, "checkpoint": 1.9}}
SNAPSHOT_COSTS = ["--snapshot-ms-per-changed", "1.13", "--snapshot-ms-per-trial", "0.10"]


def profile_flags(profile: str) -> list[str]:
    """The simulation's flags for a profile, from the settings the profile itself turns on."""
    from search.space_file import LARGE_SETTINGS, LARGE_TRIAL

    if profile == "standard":
        return ["--report-epochs", "every", "--suggestion-pool", "0", "--tpe-history-window", "0"]
    flags = ["--report-epochs", LARGE_SETTINGS["report_epochs"],
             "--suggestion-pool", str(LARGE_SETTINGS["suggestion_pool"]),
             "--suggestion-pool-workers", str(LARGE_SETTINGS["suggestion_pool_workers"]),
             "--tpe-history-window", str(LARGE_SETTINGS["tpe_history_window"])]
    flags += ["--report-in-background"] if LARGE_TRIAL["report_in_background"] else []
    flags += ["--checkpoint-after-decision"] if LARGE_TRIAL["checkpoint_after_decision"] else []
    return flags


def cost_flags(costs: dict) -> list[str]:
    return ["--start-cost-ms", str(costs["start"]), "--end-cost-ms", str(costs["end"]),
            "--result-cost-ms", str(costs["result"]), "--checkpoint-cost-ms", str(costs["checkpoint"])]


def measured_costs(row: dict) -> dict:
    """The simulation's four driver costs from a real-Ray run's phases (wall ms; a dispatched event is charged to the
    start and the result it delivers, as BENCHMARKS.md does)."""
    d = row["driver_phases"]
    dispatch = d["dispatch_per_event"]["wall_ms"]
    return {"start": round(d["per_trial_start"]["wall_ms"] + dispatch, 2), "end": d["per_trial_end"]["wall_ms"],
            "result": round(d["per_result"]["wall_ms"] + dispatch, 2), "checkpoint": d["per_checkpoint"]["wall_ms"]}


def checkpoint_cadence(space_path: str) -> int:
    from search.space_file import load_space

    return int(load_space(space_path).trial_config({}).get("resume_state_every") or 1)


def run(kind: str, profile: str, gpus: int, cmd: list[str], out: Path, timeout_s: float | None) -> dict:
    """One run in its own process; its JSON line (the last it appended to its --out file), or the error."""
    runs = out / "runs"
    tag = f"{kind}-{gpus}-{profile}"
    lines_file = runs / f"{tag}.jsonl"
    lines_file.unlink(missing_ok=True)
    cmd = [*cmd, "--out", str(lines_file)]
    env = {**os.environ, "BENCHMARK_RECORDS": str(runs),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    shown = " ".join(["python", *cmd[1:]])
    print(f"== {tag}: {shown}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    error = None
    with open(runs / f"{tag}.log", "w") as log:
        try:
            done = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
            if done.returncode != 0:
                error = f"exited with {done.returncode}"
        except subprocess.TimeoutExpired:
            error = f"ran past {timeout_s} s"
    seconds = round(time.perf_counter() - started, 1)
    lines = lines_file.read_text().splitlines() if lines_file.exists() else []
    if error is None and not lines:
        error = "wrote no result"
    if error:
        tail = (runs / f"{tag}.log").read_text()[-400:].strip()
        print(f"   {tag} failed: {error}", file=sys.stderr, flush=True)
        return {"kind": kind, "profile": profile, "gpus": gpus, "command": shown, "seconds": seconds,
                "error": f"{error}; {runs / (tag + '.log')}: {tail}"}
    return {"kind": kind, "profile": profile, "gpus": gpus, "command": shown, "seconds": seconds,
            "result": json.loads(lines[-1])}


def table_row(r: dict, standard: dict | None) -> str:
    name = f"| {'simulation' if r['kind'] == 'sim' else 'real Ray, fake GPUs'} | {r['gpus']:,} | {r['profile']} |"
    if "error" in r:
        return f"{name} error: {r['error'][:160]} |" + " |" * 9  # the row's other 9 cells empty
    x = r["result"]
    if r["kind"] == "sim":
        util = x["gpu_utilisation_until_last_suggest"]
        waiting = f"{x['gpu_s_waiting_for_driver'] / x['gpu_s_busy']:.1%}"
        report_wait = "–"
        busy = f"{x['driver_busy_fraction']:.0%}"
        results, checkpoints = x["results_reported"], x["checkpoints_persisted"]
        best = f"{x['best_val_acc']:.4f}"
        trials = x["trials"]
    else:
        util = x["fake_gpu_util_held_until_last_start"]
        waiting = "–"
        report_wait = f"{x['report_gap_minus_sleep_ms_median']} / {x['report_gap_minus_sleep_ms_p90']}"
        busy = f"{x['driver_main_thread_cpu_s'] / x['wall_s']:.0%}"
        results, checkpoints = x["epochs"], x["driver_phases"]["calls"].get("_on_saving_result", 0)
        best = "–"
        trials = x["trials_reported"]
    delta = ""
    if standard is not None and "result" in standard:
        base = (standard["result"]["gpu_utilisation_until_last_suggest"] if r["kind"] == "sim"
                else standard["result"]["fake_gpu_util_held_until_last_start"])
        delta = f"{util - base:+.3f}"
    return (f"{name} {trials:,} | **{util:.3f}** | {delta} | {waiting} | {report_wait} | {busy} | {results:,} | "
            f"{checkpoints:,} | {best} | {r['seconds']:.0f} |")


def markdown(runs: list[dict], info: dict) -> str:
    m = info["machine"]
    lines = [
        f"Profiles compared {info['date']}, {m['cpu']} ({m['cores']} cores, {m['memory_gb']} GB), Python {m['python']}, "
        f"ray {m['packages']['ray']}, optuna {m['packages']['optuna']}; load average {info['load_before'][0]:.1f} at "
        f"the start, {info['load_after'][0]:.1f} at the end; {info['seconds'] / 60:.0f} min in all, one run at a time.",
        f"Command: `{info['command']}` (commit {info['commit'][:10]}{', local changes' if info['tree_dirty'] else ''}).",
        "Simulation: util = GPU utilisation until the last trial starts; real Ray: the fake GPUs' (time inside a "
        "trial's function, until the last trial starts). Driver busy: the simulated driver's share of the run; real "
        "Ray: the loop thread's CPU over the wall time. Each large row's delta is against the standard row above it.",
        "",
        "| layer | GPUs | driver_profile | trials | util until last start | large − standard | GPU time waiting for "
        "the driver (of busy) | trial's wait per report, ms median / p90 | driver busy | results through the driver | "
        "checkpoints persisted | best val_acc | wall s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        standard = next((s for s in runs if s["kind"] == r["kind"] and s["gpus"] == r["gpus"]
                         and s["profile"] == "standard"), None) if r["profile"] == "large" else None
        lines.append(table_row(r, standard))
    lines += ["", "The driver's loop per phase, wall ms (real Ray: measured in this run; simulation: what it charged):",
              "", "| driver_profile | costs | per trial start | per trial end | per result | per checkpoint |",
              "|---|---|---:|---:|---:|---:|"]
    for r in runs:
        if r["kind"] == "real" and "result" in r:
            c = measured_costs(r["result"])
            lines.append(f"| {r['profile']} | real Ray, {r['gpus']} fake GPUs (dispatch included) | {c['start']} | "
                         f"{c['end']} | {c['result']} | {c['checkpoint']} |")
    for profile in PROFILES:
        c = info["sim_costs"].get(profile)
        if c:
            lines.append(f"| {profile} | simulation ({info['sim_costs_source']}) | {c['start']} | {c['end']} | "
                         f"{c['result']} | {c['checkpoint']} |")
    lines += ["", "Each run's command:", ""] + [f"- {r['kind']} {r['gpus']} {r['profile']}: `{r['command']}`"
                                                 for r in runs]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="spaces/full.py")
    p.add_argument("--gpus", type=int, nargs="+", default=[64, 256, 1024], help="simulated GPUs, one run per profile each")
    p.add_argument("--trials-per-gpu", type=float, default=4.0)
    p.add_argument("--checkpoint-s", type=float, default=1.0, help="simulated seconds a checkpoint holds its trial")
    p.add_argument("--sim-costs", choices=["documented", "measured"], default="documented",
                   help="the driver costs the simulation charges: BENCHMARKS.md's, or this run's real-Ray phases")
    p.add_argument("--real-ray-gpus", type=int, default=32, help="fake GPUs (0 = no real-Ray runs)")
    p.add_argument("--real-ray-trials-per-slot", type=float, default=2.0)
    p.add_argument("--real-ray-max-epochs", type=int, default=0, help="shorter trials for a quick check (0 = the space's)")
    p.add_argument("--checkpoint-kb", type=float, default=8192.0, help="real Ray: bytes of each checkpoint, in KB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=None, help="stop a run that takes longer (it is recorded as such)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "profiles")
    args = p.parse_args(argv)
    if args.sim_costs == "measured" and not args.real_ray_gpus:
        p.error("--sim-costs measured needs the real-Ray runs (--real-ray-gpus > 0)")
    out = args.out.resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    started, load_before = time.perf_counter(), os.getloadavg()
    python = [sys.executable, "-m"]
    runs: list[dict] = []
    if args.real_ray_gpus:
        for profile in PROFILES:
            cmd = [*python, "benchmarks.tools.scale_real_ray", "--space", args.space, "--driver-profile", profile,
                   "--concurrency", str(args.real_ray_gpus), "--trials-per-slot", str(args.real_ray_trials_per_slot),
                   "--checkpoint-kb", str(args.checkpoint_kb), "--seed", str(args.seed)]
            cmd += ["--max-epochs", str(args.real_ray_max_epochs)] if args.real_ray_max_epochs else []
            runs.append(run("real", profile, args.real_ray_gpus, cmd, out, args.timeout_s))
    costs = dict(DOCUMENTED_COSTS)
    if args.sim_costs == "measured":
        measured = {r["profile"]: measured_costs(r["result"]) for r in runs if r["kind"] == "real" and "result" in r}
        costs = {profile: measured.get(profile) for profile in PROFILES}
    every = checkpoint_cadence(args.space)
    for gpus in sorted(args.gpus):
        for profile in PROFILES:
            if costs.get(profile) is None:
                runs.append({"kind": "sim", "profile": profile, "gpus": gpus, "command": "", "seconds": 0,
                             "error": "no measured costs: this profile's real-Ray run failed"})
                continue
            cmd = [*python, "benchmarks.tools.scale_simulation", "--space", args.space, "--gpus", str(gpus),
                   "--trials-per-gpu", str(args.trials_per_gpu), "--seed", str(args.seed),
                   "--checkpoint-every", str(every), "--checkpoint-s", str(args.checkpoint_s),
                   *cost_flags(costs[profile]), *SNAPSHOT_COSTS, *profile_flags(profile)]
            runs.append(run("sim", profile, gpus, cmd, out, args.timeout_s))
    info = {**provenance(), "machine": machine(), "load_before": load_before, "load_after": os.getloadavg(),
            "seconds": time.perf_counter() - started, "sim_costs": costs, "sim_costs_source": args.sim_costs}
    table = markdown(runs, info)
    (out / "profile_comparison.md").write_text(table)
    write_record("profile_comparison", {"runs": runs, "sim_costs": costs, "sim_costs_source": args.sim_costs,
                                        "seconds": info["seconds"], "load_before": load_before,
                                        "load_after": info["load_after"]}, out_dir=out)
    print(table)
    failed = [r for r in runs if "error" in r]
    print(f"{len(runs)} runs, {len(failed)} failed; {out / 'profile_comparison.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
