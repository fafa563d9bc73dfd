#!/usr/bin/env python3
"""Checks that a model folder written by `moetune train --export-hf DIR` opens in Hugging Face
transformers: no missing or unexpected tensors, every weight bit-identical to the file, and a
forward pass that gives a finite loss. Needs torch + transformers (scripts/make_golden.py's venv);
never part of the test pass.

Usage: scripts/check_hf_export.py DIR
"""
import math
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_hf_export.py DIR")
    folder = sys.argv[1]
    import torch
    from safetensors.torch import load_file
    from transformers import MixtralForCausalLM

    model, info = MixtralForCausalLM.from_pretrained(folder, output_loading_info=True,
                                                     torch_dtype=torch.float32)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        sys.exit(f"transformers reports {problems}")
    ours = load_file(f"{folder}/model.safetensors")
    state = model.state_dict()
    compared = 0
    for name, tensor in ours.items():
        name = name if name in state else name.replace("block_sparse_moe.gate", "mlp.gate")
        if name in state:
            if not torch.equal(state[name], tensor):
                sys.exit(f"{name} differs after loading")
            compared += 1
    # transformers 5 keeps each layer's experts fused: gate_up_proj [E, 2I, H] = [w1; w3] per
    # expert, down_proj [E, H, I] = w2.
    layer = 0
    while f"model.layers.{layer}.mlp.experts.gate_up_proj" in state:
        prefix = f"model.layers.{layer}.block_sparse_moe.experts"
        experts = model.config.num_local_experts
        gate_up = torch.stack([torch.cat([ours[f"{prefix}.{e}.w1.weight"],
                                          ours[f"{prefix}.{e}.w3.weight"]]) for e in range(experts)])
        down = torch.stack([ours[f"{prefix}.{e}.w2.weight"] for e in range(experts)])
        if not torch.equal(state[f"model.layers.{layer}.mlp.experts.gate_up_proj"], gate_up) or \
                not torch.equal(state[f"model.layers.{layer}.mlp.experts.down_proj"], down):
            sys.exit(f"layer {layer}: experts differ after loading")
        compared += 3 * experts
        layer += 1
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    loss = model(input_ids=ids, labels=ids).loss.item()
    if not math.isfinite(loss):
        sys.exit(f"loss is {loss}")
    print(f"ok: {folder} loads in transformers {__import__('transformers').__version__}; "
          f"{compared} of {len(ours)} tensors compared bit for bit, loss {loss:.4f}")


if __name__ == "__main__":
    main()
