#!/usr/bin/env python3
"""The Hugging Face side of bench/train_gpu: the same Mixtral training step (same model shape,
sequence length, micro-batch and gradient accumulation, AdamW with grad-norm clipping at 1.0) in
transformers on the same GPU, in PyTorch eager mode or under torch.compile.

Usage: bench/train_gpu_hf.py --model-json MODEL.json --seq 2048 --micro-batch 2 --accum 4
                             [--steps 3] [--warmup 2] [--mode eager|compile]
MODEL.json is what `train_gpu --model-json` writes. Recipe: fp32 parameters, gradients and AdamW
state with bf16 autocast (the usual mixed-precision recipe, the numerics class of moetune's);
if that does not fit, bf16 parameters and AdamW state (lighter: no fp32 copies), then smaller
micro-batches with more accumulation (the same tokens per step). The recipe used is printed.
Prints one JSON line; never part of the test pass.
"""
import argparse
import json
import statistics
import time


def build(spec, torch, dtype):
    from transformers import MixtralConfig, MixtralForCausalLM

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
        router_aux_loss_coef=spec["router_aux_loss_coef"], output_router_logits=True)
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cuda"):
            model = MixtralForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    return model.train()


def run(args, spec, torch, recipe, micro, accum):
    dtype = torch.float32 if recipe == "amp" else torch.bfloat16
    model = build(spec, torch, dtype)
    info = {"attn_implementation": getattr(model.config, "_attn_implementation", None),
            "experts_implementation": getattr(model.config, "_experts_implementation", None)}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    step_fn = model
    if args.mode == "compile":
        step_fn = torch.compile(model)
    gen = torch.Generator(device="cuda").manual_seed(0)
    times = []
    for step in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(accum):
            ids = torch.randint(0, spec["vocab_size"], (micro, args.seq), device="cuda",
                                generator=gen)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=recipe == "amp"):
                out = step_fn(input_ids=ids, labels=ids)
            (out.loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated()
    return times, peak, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-json", required=True)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    args = ap.parse_args()

    import torch
    import transformers

    spec = json.load(open(args.model_json))
    tokens = args.micro_batch * args.accum * args.seq
    attempts = []
    micro, accum = args.micro_batch, args.accum
    tries = [("amp", micro, accum), ("bf16", micro, accum)]
    while micro > 1:
        micro, accum = micro // 2, accum * 2
        tries.append(("bf16", micro, accum))
    result = None
    for recipe, m, a in tries:
        try:
            times, peak, info = run(args, spec, torch, recipe, m, a)
            result = {"recipe": recipe, "micro_batch": m, "grad_accum": a, "step_s": times,
                      "step_s_median": statistics.median(times),
                      "tokens_per_s": tokens / statistics.median(times),
                      "peak_memory_bytes": peak, **info}
            break
        except torch.cuda.OutOfMemoryError:
            attempts.append({"recipe": recipe, "micro_batch": m, "result": "out of memory"})
        finally:
            torch._dynamo.reset() if hasattr(torch, "_dynamo") else None
            import gc
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print(json.dumps({"backend": f"transformers-{args.mode}", "torch": torch.__version__,
                      "transformers": transformers.__version__,
                      "gpu": torch.cuda.get_device_name(0), "tokens_per_step": tokens,
                      "result": result, "failed_attempts": attempts}))


if __name__ == "__main__":
    main()
