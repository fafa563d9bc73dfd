#!/usr/bin/env python3
"""bench/train_mpi: tokens/s of the distributed CPU executor for W = 1 and 2 ranks on this machine,
and the time spent in each collective, from the runs' run.jsonl files.

Each world size trains the same model, batch and steps through `moetune launch` (mpirun for
W > 1); the per-step medians are compared side by side, and the collective time is summed over
the measured steps on rank 0.

Usage: bench/train_mpi.py [--model small] [--seq 128] [--batch 8] [--steps 6] [--layout ep]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOETUNE = os.path.join(ROOT, "build", "cli", "moetune")


def plan(tmp, model, seq, batch, world, layout):
    out = os.path.join(tmp, f"plan{world}.json")
    degrees = {"ep": ["--ep", str(world), "--hs", "1"], "hs": ["--ep", "1", "--hs", str(world)],
               "tp": ["--tp", str(world), "--ep", "1", "--hs", "1"]}[layout] if world > 1 else []
    subprocess.run([MOETUNE, "plan", "--model", model, "--cluster", "cpu-local", "--nodes", "1",
                    "--devices-per-node", str(world), "--seq", str(seq), "--global-batch",
                    str(batch), "--micro-batch", str(batch // world), "--out", out] + degrees,
                   check=True, capture_output=True)
    return out


def run(tmp, plan_file, steps, world):
    metrics = os.path.join(tmp, f"run{world}.jsonl")
    subprocess.run([MOETUNE, "launch", "--plan", plan_file, "--", "--steps", str(steps),
                    "--quiet", "--metrics", metrics], check=True, capture_output=True)
    steps_ = [json.loads(l) for l in open(metrics).read().splitlines()[1:]]
    return steps_[1:]  # the first step warms caches and pages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--layout", default="ep", choices=["ep", "hs", "tp"])
    args = ap.parse_args()
    if not os.path.exists(MOETUNE):
        sys.exit("build moetune first (scripts/build)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for world in (1, 2):
            steps = run(tmp, plan(tmp, args.model, args.seq, args.batch, world, args.layout),
                        args.steps, world)
            rows[world] = steps
        print(f"model {args.model}, seq {args.seq}, global batch {args.batch}, "
              f"{args.steps - 1} measured steps, layout for W=2: {args.layout}=2")
        base = statistics.median(s["tokens_per_s"] for s in rows[1])
        for world, steps in rows.items():
            tps = statistics.median(s["tokens_per_s"] for s in steps)
            step = statistics.median(s["step_time_s"] for s in steps)
            print(f"W={world}: {tps:10.0f} tokens/s (median), step {step:.3f} s, "
                  f"{tps / base:.2f}x of W=1")
            coll = {}
            for s in steps:
                for kind, c in s["collectives"].items():
                    acc = coll.setdefault(kind, [0, 0.0, 0.0])
                    acc[0] += c["calls"]
                    acc[1] += c["bytes"]
                    acc[2] += c["seconds"]
            for kind, (calls, nbytes, secs) in sorted(coll.items()):
                print(f"    {kind:28s} {calls:6d} calls {nbytes / 1e6:10.2f} MB {secs:8.3f} s "
                      f"({100 * secs / sum(s['step_time_s'] for s in steps):.1f}% of step time)")


if __name__ == "__main__":
    main()
