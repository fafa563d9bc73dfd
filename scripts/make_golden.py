#!/usr/bin/env python3
"""Golden data for the executor's Mixtral model, from Hugging Face transformers' MixtralForCausalLM.

Writes tests/data/golden/tiny_mixtral/:
  config.json          the model as a published-style Mixtral config.json (rope_theta at top level)
  model.safetensors    the weights, F32, with the published Mixtral tensor names
                       (model.layers.L.block_sparse_moe.experts.E.w1.weight, ...). The float64 model is
                       built from exactly these float32 values, so an fp32 executor loads the very
                       weights the reference used.
  inputs.json          input_ids [2, 7]; labels = input_ids (transformers shifts them internally)
  outputs.safetensors  F64: logits [2, 7, 61], loss [] (= ce_loss + coef * aux_loss, transformers'
                       outputs.loss), ce_loss [], aux_loss [], and grad.<name> for every parameter
                       (gradient of loss)
  curve.json           a 10-step AdamW run from the same weights, with its batches and exact recipe

Only this script needs torch, transformers and safetensors; it makes its own venv at
/work/venv-golden (override with MOETUNE_GOLDEN_VENV) and re-runs itself there. CI never runs it.

Precision: transformers computes RMSNorm, RoPE, the router softmax, the attention softmax, the
load-balancing loss and the cross entropy in float32 even inside a float64 model. The reference
patches exactly those casts to stay in float64 (the math is unchanged) and records, in
outputs.safetensors' metadata ("golden"), how far the unpatched transformers result lies from it (about 1e-7
relative), so the golden numbers carry no float32 rounding of their own.

Usage: python3 scripts/make_golden.py [--out DIR]
"""
import json
import math
import os
import subprocess
import sys
import time

VENV = os.environ.get("MOETUNE_GOLDEN_VENV", "/work/venv-golden")
PACKAGES = ["torch", "transformers", "safetensors"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure_venv():
    """Re-runs this script inside the venv, creating it first when missing."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(python):
        print(f"creating {VENV} and installing {' '.join(PACKAGES)} (CPU use only)", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "--quiet", *PACKAGES])
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


# The model: odd sizes so that shape bugs show, GQA with fewer KV heads than heads, top-2 of 4.
CONFIG = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "vocab_size": 61,
    "hidden_size": 36,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "head_dim": 6,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 64,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05,
    "router_aux_loss_coef": 0.02,
    "router_jitter_noise": 0.0,
    "tie_word_embeddings": False,
    "sliding_window": None,
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "initializer_range": 0.1,
    "output_router_logits": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}
SEED = 0
BATCH, SEQ = 2, 7
CURVE = {
    "steps": 10,
    "lr": 1e-2,
    "min_lr": 1e-3,
    "warmup_steps": 2,
    "decay_steps": 10,
    "betas": [0.9, 0.95],
    "eps": 1e-8,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
}


def lr_at(step):
    """Warmup then cosine, step counted from 0 (the schedule DESIGN.md's TrainSpec describes)."""
    c = CURVE
    if step < c["warmup_steps"]:
        return c["lr"] * (step + 1) / c["warmup_steps"]
    progress = min(1.0, (step - c["warmup_steps"]) / (c["decay_steps"] - c["warmup_steps"]))
    return c["min_lr"] + 0.5 * (c["lr"] - c["min_lr"]) * (1.0 + math.cos(math.pi * progress))


def patch_float64(mm, torch):
    """Keeps transformers' float32 islands in the model's own dtype (float64); math unchanged."""
    F = torch.nn.functional

    def rms_forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))

    def router_forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)
        router_probs = F.softmax(router_logits, dim=-1)
        top_value, top_index = torch.topk(router_probs, self.top_k, dim=-1)
        top_value = top_value / top_value.sum(dim=-1, keepdim=True)
        return router_logits, top_value, top_index

    def rotary_forward(self, x, position_ids):
        dim = self.config.head_dim
        base = self.config.rope_parameters["rope_theta"]
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key_states = mm.repeat_kv(key, module.num_key_value_groups)
        value_states = mm.repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = F.softmax(scores, dim=-1)
        out = torch.matmul(weights, value_states).transpose(1, 2).contiguous()
        return out, weights

    def aux_loss(gate_logits, num_experts=None, top_k=2, attention_mask=None):
        # transformers' formula (Switch eq. 4-6 over all layers' tokens at once), in float64:
        # f_e = top-k assignments to e / (layers * tokens), P_e = mean router prob of e over the same
        # rows, aux = num_experts * sum_e f_e * P_e.
        assert attention_mask is None
        counts = torch.zeros(num_experts, dtype=torch.float64)
        prob_sum = torch.zeros(num_experts, dtype=torch.float64)
        rows = 0
        for layer_logits in gate_logits:
            probs = F.softmax(layer_logits, dim=-1)
            _, selected = torch.topk(probs, top_k, dim=-1)
            counts = counts + F.one_hot(selected.reshape(-1), num_experts).to(torch.float64).sum(0)
            prob_sum = prob_sum + probs.sum(0)
            rows += probs.shape[0]
        return torch.sum((counts / rows) * (prob_sum / rows)) * num_experts

    def causal_lm_loss(logits, labels, vocab_size, **kwargs):
        # transformers' ForCausalLMLoss without its float32 upcast: shift, then mean cross entropy.
        return F.cross_entropy(logits[:, :-1].reshape(-1, vocab_size), labels[:, 1:].reshape(-1))

    mm.MixtralForCausalLM.loss_function = property(lambda self: causal_lm_loss)
    mm.MixtralRMSNorm.forward = rms_forward
    mm.MixtralTopKRouter.forward = router_forward
    mm.MixtralRotaryEmbedding.forward = rotary_forward
    mm.eager_attention_forward = eager_attention
    mm.load_balancing_loss_func = aux_loss


def published_names(model, config, tensors_of):
    """Maps transformers-5 parameters (fused experts) to the published Mixtral tensor names."""
    out = {}
    inter = config["intermediate_size"]
    for name, p in model.named_parameters():
        t = tensors_of(name, p)
        if name.endswith(".mlp.experts.gate_up_proj"):  # [E, 2I, H]: gate (w1) rows, then up (w3)
            prefix = name[: -len("mlp.experts.gate_up_proj")] + "block_sparse_moe.experts."
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.w1.weight"] = t[e, :inter, :].contiguous()
                out[f"{prefix}{e}.w3.weight"] = t[e, inter:, :].contiguous()
        elif name.endswith(".mlp.experts.down_proj"):  # [E, H, I]
            prefix = name[: -len("mlp.experts.down_proj")] + "block_sparse_moe.experts."
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.w2.weight"] = t[e].contiguous()
        elif ".mlp.gate.weight" in name:
            out[name.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = t.contiguous()
        else:
            out[name] = t.contiguous()
    return dict(sorted(out.items()))


def main():
    started = time.time()
    ensure_venv()
    import torch
    import transformers
    import transformers.models.mixtral.modeling_mixtral as mm
    from safetensors.torch import save_file

    out_dir = os.path.join(REPO, "tests", "data", "golden", "tiny_mixtral")
    if "--out" in sys.argv:
        out_dir = sys.argv[sys.argv.index("--out") + 1]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    cfg_kwargs = {k: v for k, v in CONFIG.items() if k not in ("architectures", "model_type", "torch_dtype")}
    config = transformers.MixtralConfig(**cfg_kwargs)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    assert config.rope_parameters["rope_theta"] == CONFIG["rope_theta"]

    torch.manual_seed(SEED)
    model = transformers.MixtralForCausalLM(config).to(torch.float64)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # ones by default; random so a skipped weight shows
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            p.copy_(p.to(torch.float32).to(torch.float64))  # exactly representable in float32
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    gen = torch.Generator().manual_seed(SEED + 1)
    input_ids = torch.randint(0, CONFIG["vocab_size"], (BATCH, SEQ), generator=gen)
    batches = [torch.randint(0, CONFIG["vocab_size"], (BATCH, SEQ), generator=gen) for _ in range(CURVE["steps"])]

    # Unpatched transformers first, only to measure how far its float32 islands move the result.
    with torch.no_grad():
        plain = model(input_ids=input_ids, labels=input_ids)
    patch_float64(mm, torch)

    model.zero_grad()
    out = model(input_ids=input_ids, labels=input_ids)
    out.loss.backward()
    logits = out.logits.detach()
    aux = out.aux_loss.detach().to(torch.float64)
    ce = out.loss.detach() - CONFIG["router_aux_loss_coef"] * aux
    ce_check = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, CONFIG["vocab_size"]), input_ids[:, 1:].reshape(-1))
    assert abs(ce.item() - ce_check.item()) < 1e-12, (ce.item(), ce_check.item())

    # How close top-2 routing is to a tie: the smallest gap between the router probabilities of
    # the 2nd and 3rd expert over all tokens. Far above fp32 rounding means fp32 routes the same.
    def top2_margin(logit):
        probs = torch.softmax(logit, dim=-1).sort(dim=-1, descending=True).values
        return (probs[:, 1] - probs[:, 2]).min().item()

    with torch.no_grad():
        margins = [top2_margin(logit) for logit in out.router_logits]

    weights = published_names(model, CONFIG, lambda n, p: p.detach().to(torch.float32))
    grads = published_names(model, CONFIG, lambda n, p: p.grad.detach())
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

    # The published-name file must load back into transformers and give the same logits.
    reloaded = transformers.MixtralForCausalLM.from_pretrained(
        out_dir, dtype=torch.float64, attn_implementation="eager")
    reloaded.config._experts_implementation = "eager"
    with torch.no_grad():
        again = reloaded(input_ids=input_ids).logits
    assert torch.equal(again, logits), "model.safetensors does not reload into transformers"

    rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()
    outputs = {
        "logits": logits.contiguous(),
        "loss": out.loss.detach().reshape(()),
        "ce_loss": ce.reshape(()),
        "aux_loss": aux.reshape(()),
    }
    outputs.update({f"grad.{k}": v for k, v in grads.items()})
    meta = {
        "generator": "scripts/make_golden.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "float64 throughout (transformers' float32 casts patched out)",
        "unpatched_logits_max_rel_diff": f"{rel(plain.logits, logits):.3e}",
        "unpatched_loss_rel_diff": f"{abs(plain.loss.item() - out.loss.item()) / out.loss.item():.3e}",
        "min_router_top2_margin_per_layer": json.dumps(margins),
    }
    # One metadata key: the safetensors writer stores several in a random order, and the file
    # should come out byte-identical on every run.
    save_file(outputs, os.path.join(out_dir, "outputs.safetensors"),
              metadata={"golden": json.dumps(meta, sort_keys=True)})
    with open(os.path.join(out_dir, "inputs.json"), "w") as f:
        json.dump({"input_ids": input_ids.tolist(),
                   "labels": "same as input_ids; loss = mean over b, t < 6 of "
                             "cross_entropy(logits[b, t], input_ids[b, t + 1])"}, f)
        f.write("\n")

    # The 10-step curve, from the same initial weights.
    model.load_state_dict(initial)
    opt = torch.optim.AdamW(model.parameters(), lr=CURVE["lr"], betas=tuple(CURVE["betas"]),
                            eps=CURVE["eps"], weight_decay=CURVE["weight_decay"], foreach=False)
    steps = []
    for t, batch in enumerate(batches):
        lr = lr_at(t)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        o = model(input_ids=batch, labels=batch)
        o.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CURVE["grad_clip"])
        opt.step()
        aux_t = o.aux_loss.item()
        with torch.no_grad():
            margin = min(top2_margin(logit) for logit in o.router_logits)
        steps.append({"step": t, "lr": lr, "loss": o.loss.item(),
                      "ce_loss": o.loss.item() - CONFIG["router_aux_loss_coef"] * aux_t,
                      "aux_loss": aux_t, "grad_norm": norm.item(), "min_router_top2_margin": margin})
    final_norms = {k: v.norm().item() for k, v in published_names(
        model, CONFIG, lambda n, p: p.detach()).items()}
    recipe = dict(CURVE)
    recipe.update({
        "model": "config.json, weights model.safetensors (float64 copy of the F32 values)",
        "dtype": "float64, transformers' float32 casts patched out",
        "loss": "outputs.loss of MixtralForCausalLM(input_ids=b, labels=b): mean next-token cross "
                "entropy over BATCH*(SEQ-1) positions + router_aux_loss_coef * aux_loss",
        "aux_loss": "transformers' load_balancing_loss_func over all layers' tokens at once: "
                    "f_e = top-k assignments to e / (layers * tokens), P_e = mean softmax prob of e "
                    "over the same rows, aux = num_experts * sum_e f_e * P_e (not a per-layer sum)",
        "lr_schedule": "step t from 0: t < warmup_steps: lr * (t + 1) / warmup_steps; else "
                       "min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * min(1, (t - warmup_steps) / "
                       "(decay_steps - warmup_steps))))",
        "grad_clip_rule": "torch.nn.utils.clip_grad_norm_: total = sqrt(sum of all squared grads); "
                          "g *= min(1, grad_clip / (total + 1e-6))",
        "optimizer": "torch.optim.AdamW (foreach=False), weight decay on every parameter: "
                     "p *= 1 - lr * weight_decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; "
                     "p -= lr / (1 - b1^k) * m / (sqrt(v) / sqrt(1 - b2^k) + eps), k = t + 1",
        "record": "loss, ce_loss, aux_loss: before the update of step t, on batches[t]; grad_norm: "
                  "before clipping; lr: used at step t",
    })
    curve = {"recipe": recipe, "batches": [b.tolist() for b in batches], "steps": steps,
             "losses": [s["loss"] for s in steps], "final_weight_norms": final_norms}
    with open(os.path.join(out_dir, "curve.json"), "w") as f:
        json.dump(curve, f, indent=1)
        f.write("\n")

    for name in os.listdir(out_dir):  # safetensors writes private files; these get committed
        os.chmod(os.path.join(out_dir, name), 0o644)
    total = sum(os.path.getsize(os.path.join(out_dir, n)) for n in os.listdir(out_dir))
    print(f"wrote {out_dir}: {total / 1024:.0f} KiB in {time.time() - started:.1f} s; loss "
          f"{out.loss.item():.6f} (ce {ce.item():.6f}, aux {aux.item():.6f}); curve "
          f"{steps[0]['loss']:.4f} -> {steps[-1]['loss']:.4f}; unpatched logits rel diff "
          f"{meta['unpatched_logits_max_rel_diff']}; min top-2 margin {min(margins):.2e}")


if __name__ == "__main__":
    main()
