#!/usr/bin/python3
"""PyTorch baseline for bench/bench_train.c: one optimiser step of the same
Llama (weights from the same safetensors folder, fp32) on a batch of B
windows of T tokens: forward (causal attention as softmax(q k^T / sqrt(Dh) +
mask) v; Debian's torch predates scaled_dot_product_attention), next-token cross-entropy, backward
(autograd), torch.optim.AdamW, timed the same way (one warm-up step, then
repeats) and printed as the same JSON rows, with each phase's share.

  /usr/bin/python3 bench/torch_train_bench.py [MODEL_DIR] [-t 1] [-b 8] [-c 256] [-r 5]

Tokens: the ids (i * 7919 + 13) mod V of bench_train.c.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bench import Llama  # noqa: E402  (weights, RoPE tables, RMSNorm)


def params_of(m):
    """Every weight as a leaf tensor that trains (the tied head shares the embedding)."""
    tied = m.head is m.embd
    m.embd = m.embd.clone().requires_grad_()
    m.head = m.embd if tied else m.head.clone().requires_grad_()
    m.norm = m.norm.clone().requires_grad_()
    ps = [m.embd, m.norm] + ([] if tied else [m.head])
    for p in m.layers:
        for k in p:
            p[k] = p[k].clone().requires_grad_()
            ps.append(p[k])
    return ps


def forward(m, tokens):
    """tokens (B, T) at positions 0..T-1 -> logits (B, T, V)."""
    B, T = tokens.shape
    x = m.embd[tokens]  # (B, T, C)
    group = m.H // m.Hkv
    c, s = m.cos[:T], m.sin[:T]
    h2 = m.Dh // 2
    mask = torch.full((T, T), float("-inf")).triu(1)

    def rope(x):  # x (B, H, T, Dh), element i pairs with i + Dh/2
        x1, x2 = x[..., :h2], x[..., h2:]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)

    for p in m.layers:
        h = m.rmsnorm(x, p["attn_norm"])
        q = rope(F.linear(h, p["wq"]).view(B, T, m.H, m.Dh).transpose(1, 2))  # (B, H, T, Dh)
        k = rope(F.linear(h, p["wk"]).view(B, T, m.Hkv, m.Dh).transpose(1, 2))
        v = F.linear(h, p["wv"]).view(B, T, m.Hkv, m.Dh).transpose(1, 2)
        if group > 1:
            k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(m.Dh) + mask  # (B, H, T, T)
        o = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, m.H * m.Dh)
        x = x + F.linear(o, p["wo"])
        h = m.rmsnorm(x, p["ffn_norm"])
        x = x + F.linear(F.silu(F.linear(h, p["gate"])) * F.linear(h, p["up"]), p["down"])
    return F.linear(m.rmsnorm(x, m.norm), m.head)


def summarise(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def row(test, threads, repeats, st, unit):
    return json.dumps({"engine": "torch", "test": test, "threads": threads, "repeats": repeats,
                       "median": round(st["median"], 4), "min": round(st["min"], 4), "max": round(st["max"], 4),
                       "unit": unit})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="models/llama-gutenberg-6.5m")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-b", "--batch", type=int, default=8)
    ap.add_argument("-c", "--ctx", type=int, default=256)
    ap.add_argument("-r", "--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message=".*non-writable.*")
    m = Llama(a.model)
    ps = params_of(m)
    opt = torch.optim.AdamW(ps, lr=1e-5, weight_decay=0.0)
    B, T = a.batch, a.ctx
    ids = torch.tensor([(i * 7919 + 13) % m.V for i in range(B * T)], dtype=torch.int64).view(B, T)
    targets = torch.cat((ids[:, 1:], torch.full((B, 1), -100, dtype=torch.int64)), dim=1)
    first_loss = None
    tps, shares = [], {k: [] for k in ("forward", "loss", "backward", "update")}
    for r in range(-1, a.repeats):  # r = -1 warms up
        t0 = time.perf_counter()
        logits = forward(m, ids)
        t1 = time.perf_counter()
        loss = F.cross_entropy(logits.view(B * T, m.V), targets.view(-1), ignore_index=-100)
        t2 = time.perf_counter()
        first_loss = loss.item() if first_loss is None else first_loss
        opt.zero_grad(set_to_none=False)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if r >= 0:
            total = t4 - t0
            tps.append(B * T / total)
            for k, d in zip(shares, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                shares[k].append(d / total)
    print(json.dumps({"engine": "info", "test": "model", "model": a.model, "torch": torch.__version__,
                      "params": sum(p.numel() for p in ps), "threads": a.threads}))
    print(json.dumps({"engine": "torch", "test": "train_ce_first_loss", "threads": a.threads,
                      "value": round(first_loss, 6)}))
    print(row(f"train_ce_b{B}x{T}", a.threads, a.repeats, summarise(tps), "tokens/s"))
    for k, v in shares.items():
        print(row(f"train_ce_share_{k}", a.threads, a.repeats, summarise(v), "fraction"))


if __name__ == "__main__":
    main()
