#!/usr/bin/python3
"""PyTorch autograd reference (float64) for kfuse's training backward
(src/train/): the gradient of the distillation objective with respect to
every weight of a Hugging Face folder, or of every LoRA matrix of a PEFT
adapter folder. The forward pass is tests/ref/model_ref.py's, written from
the architectures' definitions.

  /usr/bin/python3 tests/ref/grad_ref.py MODEL_DIR WORK_DIR [--lora ADAPTER_DIR]

WORK_DIR holds what the C test wrote:
  batch.json    {"B", "T", "kl_weight", "ce_weight", "n_div"}
  ids.bin       int32 (B, T) token ids
  targets.bin   int32 (B*T) next-token targets, -1 where none
  teacher.bin   float32 (B*T, V) teacher logits
and receives
  grads/config.json + grads/model.safetensors   the gradient of each weight under
                                                the weight's own name and layout
                                                (+ grads/moe_router.safetensors: the
                                                routers' of a MoEfied model)
  lora_grads.safetensors                        with --lora: the gradient of each
                                                lora_A / lora_B under its PEFT key
  loss.txt                                      the loss

loss = (kl_weight * sum_r KL(softmax(teacher_r) || softmax(logits_r))
        + ce_weight * sum_{r: target >= 0} -log softmax(logits_r)[target_r]) / n_div

A MoEfied model (config.json "kfuse_moe", routers in moe_router.safetensors,
docs/formats.md) runs its MoE layers as docs/moe-training.md defines them,
written here from that definition: router scores s (linear, or MLP with relu),
or the norms of every expert's output for the oracle; the selection (top-k
best, ties to the lower index, or the fewest experts by decreasing score whose
max(s, 0) sum reaches coverage of the total); the straight-through gate
m = mask + softmax(s) - stopgrad(softmax(s)) (the oracle: m = mask) scaling
each expert's activations before the down projection.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_ref  # noqa: E402


def select(s, top_k, coverage):
    """mask (N, E) of the experts chosen from scores s (N, E) (no gradient)."""
    s = s.detach().numpy()
    N, E = s.shape
    mask = np.zeros((N, E))
    for r in range(N):
        order = sorted(range(E), key=lambda e: (-s[r, e], e))
        k = top_k
        if k <= 0:
            total, acc, k = sum(max(v, 0.0) for v in s[r]), 0.0, 0
            while k < E:
                acc += max(s[r, order[k]], 0.0)
                k += 1
                if acc >= coverage * total:
                    break
        mask[r, order[:k]] = 1.0
    return torch.from_numpy(mask)


def moe_hook(moe, w):
    """The act_hook of model_ref's forward for the MoE layers of config "kfuse_moe"."""

    def hook(l, h, act, w_down):
        E = moe["n_expert"][l]
        if E == 0:
            return act
        shape, F = act.shape, act.shape[-1]
        S = F // E
        a, hx = act.reshape(-1, F), h.reshape(-1, h.shape[-1])
        kind, p = moe["router"][l], f"layers.{l}."
        if kind == "oracle":
            with torch.no_grad():
                s = torch.stack([(a[:, e * S : (e + 1) * S] @ w_down[:, e * S : (e + 1) * S].T).norm(dim=-1)
                                 for e in range(E)], -1)
        else:
            z = hx @ w[p + "router.weight"].T
            if p + "router.bias" in w:
                z = z + w[p + "router.bias"]
            if kind == "mlp":
                z = torch.relu(z) @ w[p + "router2.weight"].T
                if p + "router2.bias" in w:
                    z = z + w[p + "router2.bias"]
            s = z
        mask = select(s, moe["top_k"][l], moe["coverage"][l])
        if kind != "oracle":
            g = torch.softmax(s, -1)
            mask = mask + g - g.detach()
        return (a * mask.repeat_interleave(S, dim=-1)).reshape(shape)

    return hook


def main():
    model_dir, work = sys.argv[1], sys.argv[2]
    lora_dir = sys.argv[sys.argv.index("--lora") + 1] if "--lora" in sys.argv else None
    with open(os.path.join(work, "batch.json")) as f:
        b = json.load(f)
    B, T = b["B"], b["T"]
    cfg, w = model_ref.load(model_dir)
    if cfg["model_type"] == "qwen2":  # kfuse writes a Llama with Q/K/V biases as Qwen2: the same forward
        cfg = dict(cfg, model_type="llama")
    ids = torch.from_numpy(np.fromfile(os.path.join(work, "ids.bin"), dtype="<i4").astype(np.int64)).view(B, T)
    targets = torch.from_numpy(np.fromfile(os.path.join(work, "targets.bin"), dtype="<i4").astype(np.int64))
    V = cfg["vocab_size"]
    teacher = torch.from_numpy(np.fromfile(os.path.join(work, "teacher.bin"), dtype="<f4").astype(np.float64))
    teacher = teacher.view(B * T, V)

    lora = {}
    if lora_dir:
        with open(os.path.join(lora_dir, "adapter_config.json")) as f:
            acfg = json.load(f)
        scale = acfg["lora_alpha"] / acfg["r"]
        lora = model_ref.read_safetensors(os.path.join(lora_dir, "adapter_model.safetensors"))
        for t in lora.values():
            t.requires_grad_(True)
        weights = dict(w)
        prefix = "base_model.model."
        for key in lora:
            if not key.endswith(".lora_A.weight"):
                continue
            module = key[len(prefix) : -len(".lora_A.weight")]
            A, Bm = lora[key], lora[key.replace("lora_A", "lora_B")]
            delta = scale * (Bm @ A)  # (out, in)
            if acfg.get("fan_in_fan_out"):
                delta = delta.T  # Conv1D weights are (in, out)
            weights[module + ".weight"] = w[module + ".weight"] + delta
    else:
        for t in w.values():
            t.requires_grad_(True)
        weights = w

    hook = moe_hook(cfg["kfuse_moe"], weights) if "kfuse_moe" in cfg else None
    logits = model_ref.forward(cfg, weights, ids, hook).reshape(B * T, V)
    logp = torch.log_softmax(logits, -1)
    logpt = torch.log_softmax(teacher, -1)
    kl = (logpt.exp() * (logpt - logp)).sum()
    has = targets >= 0
    ce = -logp[has.nonzero().squeeze(1), targets[has]].sum()
    loss = (b["kl_weight"] * kl + b["ce_weight"] * ce) / b["n_div"]
    loss.backward()

    if lora_dir:
        out = {k: t.grad.numpy().astype(np.float32) for k, t in lora.items()}
        model_ref.write_safetensors(os.path.join(work, "lora_grads.safetensors"), out, "F32")
    else:
        gdir = os.path.join(work, "grads")
        os.makedirs(gdir, exist_ok=True)
        shutil.copy(os.path.join(model_dir, "config.json"), os.path.join(gdir, "config.json"))
        out = {k: t.grad.numpy().astype(np.float32) for k, t in w.items()}
        routers = {k: v for k, v in out.items() if k.startswith("layers.")}  # moe_router.safetensors' names
        model_ref.write_safetensors(os.path.join(gdir, "model.safetensors"),
                                    {k: v for k, v in out.items() if k not in routers}, "F32")
        if routers:
            model_ref.write_safetensors(os.path.join(gdir, "moe_router.safetensors"), routers, "F32")
    with open(os.path.join(work, "loss.txt"), "w") as f:
        f.write(f"{loss.item():.17g}\n")


if __name__ == "__main__":
    main()
