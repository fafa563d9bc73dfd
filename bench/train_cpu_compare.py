#!/usr/bin/env python3
"""Runs bench/train_cpu (moetune) and bench/train_cpu_torch.py (PyTorch eager, transformers'
MixtralForCausalLM) alternately on the same model, batch and threads, and prints both medians and
their ratio. Alternating rounds keep a noisy machine from favouring one side.

Usage: bench/train_cpu_compare.py [--python /work/venv-golden/bin/python] [--rounds 3]
       [--model small] [--seq 256] [--batch 8] [--steps 4]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable, help="a python with torch + transformers")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bench", "train_cpu"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="small")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    common = ["--seq", str(args.seq), "--batch", str(args.batch), "--steps", str(args.steps)]
    ours, theirs = [], []
    # Both sides get the same threads: moetune's kernels and OpenBLAS, torch's intra-op pool.
    env = dict(os.environ, MOETUNE_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    for _ in range(args.rounds):
        ours.append(run([args.binary, "--model", args.model] + common, env)["tokens_per_s_median"])
        theirs.append(run([args.python, os.path.join(HERE, "train_cpu_torch.py"), "--model",
                           os.path.join(ROOT, "profiles", "models", args.model + ".json"),
                           "--threads", str(args.threads)] + common, env)["tokens_per_s_median"])
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"model {args.model}, seq {args.seq}, batch {args.batch}, {args.threads} threads, "
          f"{args.rounds} alternating rounds of {args.steps} steps (median of step medians)")
    print(f"moetune cpu     {m_ours:10.1f} tokens/s   rounds {[round(x) for x in ours]}")
    print(f"pytorch eager   {m_theirs:10.1f} tokens/s   rounds {[round(x) for x in theirs]}")
    print(f"ratio moetune / pytorch eager: {m_ours / m_theirs:.2f}")


if __name__ == "__main__":
    main()
