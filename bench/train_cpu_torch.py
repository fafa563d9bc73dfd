#!/usr/bin/env python3
"""The PyTorch-eager side of bench/train_cpu: the same Mixtral training step in Hugging Face
transformers on the CPU, on the same threads, so the two can be compared side by side.

Usage: bench/train_cpu_torch.py --model profiles/models/small.json --seq 256 --batch 8 --steps 6
       [--threads 2]
Prints one JSON line: {"tokens_per_s_median": ..., "step_s": [...], ...}. Needs torch and
transformers (scripts/make_golden.py's venv has them); never part of the test pass.
"""
import argparse
import json
import statistics
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="moetune model preset JSON")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = json.load(open(args.model))
    config = MixtralConfig(
        vocab_size=spec["vocab_size"], hidden_size=spec["hidden_size"],
        intermediate_size=spec["moe_intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"], head_dim=spec["head_dim"],
        num_local_experts=spec["num_local_experts"],
        num_experts_per_tok=spec["num_experts_per_tok"],
        max_position_embeddings=spec["max_position_embeddings"], rope_theta=spec["rope_theta"],
        rms_norm_eps=spec["rms_norm_eps"], sliding_window=None, tie_word_embeddings=False,
        router_aux_loss_coef=spec["router_aux_loss_coef"], output_router_logits=True,
        attn_implementation="eager", torch_dtype=torch.float32)
    model = MixtralForCausalLM(config).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.randint(0, spec["vocab_size"], (args.batch, args.seq + 1))
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        out = model(input_ids=ids[:, :-1], labels=ids[:, :-1])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            times.append(elapsed)
    tokens = args.batch * args.seq
    print(json.dumps({
        "backend": "pytorch-eager", "torch": torch.__version__, "threads": args.threads,
        "tokens_per_step": tokens, "step_s": times,
        "tokens_per_s_median": tokens / statistics.median(times)}))


if __name__ == "__main__":
    main()
