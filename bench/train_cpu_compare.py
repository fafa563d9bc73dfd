#!/usr/bin/env python3
"""moetune's CPU training speed against PyTorch eager and against this machine's sgemm peak.

Each round measures, in turn: the sgemm peak (bench/sgemm_peak) on every thread count; then for
every model and every thread count, moetune (bench/train_cpu) and PyTorch eager
(bench/train_cpu_torch.py: transformers' MixtralForCausalLM, AdamW and clipping included) taking the
same training step on the same threads. Rounds alternate the order (moetune first, then eager
first; fewer threads first, then more) so that a noisy machine does not favour one side, and every
run records the 1-minute load average when it ends (/proc/loadavg). The table gives medians over
rounds of each run's median step:

  tokens/s        moetune and eager
  GFLOP/s         moetune's tokens/s x the model's training FLOPs per token: core's
                  flops_per_token (causal attention; forward + backward = 3x forward), the count
                  the planner's MFU uses, printed by train_cpu
  % peak          that over the median sgemm peak measured in the same run on the same threads
  x eager         moetune tokens/s over eager tokens/s
  x 1 thread      tokens/s on T threads over tokens/s on the fewest threads

Usage: bench/train_cpu_compare.py [--python VENV/bin/python] [--rounds 3]
       [--models small,bench/models/wide.json] [--seq 256] [--batch 8] [--steps 4]
       [--eager-steps 3] [--threads 1,2] [--no-eager] [--json OUT]
The python must have torch and transformers (pip install torch transformers).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_json(cmd, threads):
    # Every library's threads set alike: moetune's kernels, OpenBLAS, torch's OpenMP pool.
    env = dict(os.environ, MOETUNE_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["load1_after"] = load1()
    return result


def model_file(model):
    if os.path.sep in model or model.endswith(".json"):
        return os.path.abspath(model)
    return os.path.join(ROOT, "profiles", "models", model + ".json")


def model_name(model):
    return os.path.splitext(os.path.basename(model))[0]


def med(values):
    return statistics.median(values) if values else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=sys.executable, help="a python with torch + transformers")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="small," + os.path.join("bench", "models", "wide.json"))
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="measured moetune steps per run")
    ap.add_argument("--eager-steps", type=int, default=3, help="measured eager steps per run")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--no-eager", action="store_true", help="skip PyTorch eager")
    ap.add_argument("--json", help="also write every run's result to this file")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    threads = sorted(int(t) for t in args.threads.split(","))
    train_cpu = os.path.join(args.build, "bench", "train_cpu")
    sgemm_peak = os.path.join(args.build, "bench", "sgemm_peak")
    shape = ["--seq", str(args.seq), "--batch", str(args.batch)]

    runs = []  # every run: {"round", "what", "model", "threads", ...result}

    def record(round_, what, model, t, result):
        result.update({"round": round_, "what": what, "model": model, "threads": t})
        runs.append(result)
        rate = result.get("peak_gflops") or result.get("tokens_per_s_median")
        print(f"round {round_}  {what:8s} {model:8s} {t} thr  {rate:9.1f}  "
              f"load {result['load1_after']:.2f}", file=sys.stderr, flush=True)

    for r in range(1, args.rounds + 1):
        order = threads if r % 2 else list(reversed(threads))
        for t in order:
            record(r, "sgemm", "-", t, run_json([sgemm_peak, "--threads", str(t), "--reps", "3"], t))
        for model in models:
            for t in order:
                ours = lambda: record(r, "moetune", model_name(model), t, run_json(
                    [train_cpu, "--model", model_file(model), "--steps", str(args.steps)] + shape,
                    t))
                eager = lambda: record(r, "eager", model_name(model), t, run_json(
                    [args.python, os.path.join(HERE, "train_cpu_torch.py"), "--model",
                     model_file(model), "--threads", str(t), "--steps", str(args.eager_steps)]
                    + shape, t))
                sides = [ours] if args.no_eager else ([ours, eager] if r % 2 else [eager, ours])
                for side in sides:
                    side()

    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)

    def pick(what, model, t, key):
        return [x[key] for x in runs if x["what"] == what and x["model"] == model and
                x["threads"] == t]

    loads = [x["load1_after"] for x in runs]
    print(f"seq {args.seq}, batch {args.batch} ({args.seq * args.batch} tokens per step), fp32, "
          f"{args.rounds} alternating rounds; moetune {args.steps} and eager {args.eager_steps} "
          f"measured steps per run; medians over rounds of each run's median step")
    print(f"load average (1 min) at the end of each run: median {med(loads):.2f}, "
          f"min {min(loads):.2f}, max {max(loads):.2f}")
    for t in threads:
        peaks = pick("sgemm", "-", t, "peak_gflops")
        print(f"sgemm peak, {t} thread(s): {med(peaks):.1f} GFLOP/s   rounds "
              f"{[round(p, 1) for p in peaks]}")
    print()
    print(f"{'model':8s} {'thr':>3s} {'moetune tok/s':>13s} {'GFLOP/s':>8s} {'% peak':>6s} "
          f"{'eager tok/s':>11s} {'x eager':>7s} {'x 1 thread':>10s} {'eager x 1 thr':>13s}")
    for model in models:
        name = model_name(model)
        base_ours = med(pick("moetune", name, threads[0], "tokens_per_s_median"))
        base_eager = med(pick("eager", name, threads[0], "tokens_per_s_median"))
        for t in threads:
            ours = med(pick("moetune", name, t, "tokens_per_s_median"))
            gflops = med(pick("moetune", name, t, "gflops_median"))
            peak = med(pick("sgemm", "-", t, "peak_gflops"))
            eager = med(pick("eager", name, t, "tokens_per_s_median"))
            print(f"{name:8s} {t:3d} {ours:13.1f} {gflops:8.1f} {100 * gflops / peak:5.1f}% "
                  f"{eager:11.1f} {ours / eager:7.2f} {ours / base_ours:10.2f} "
                  f"{eager / base_eager:13.2f}")
    print()
    print("rounds (tokens/s; sgemm GFLOP/s), with the 1-minute load at the end of each run:")
    for x in runs:
        rate = x.get("peak_gflops") or x.get("tokens_per_s_median")
        print(f"  round {x['round']}  {x['what']:8s} {x['model']:8s} {x['threads']} thr "
              f"{rate:9.1f}  load {x['load1_after']:.2f}")


if __name__ == "__main__":
    main()
