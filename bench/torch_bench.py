#!/usr/bin/python3
"""PyTorch baseline for bench/bench_engine.c: the same Llama forward in plain
eager torch (fp32, rotate-half RoPE, KV cache for decode) on the same
safetensors folder, timed the same way (warm-up, then repeats; prefill of P
tokens with the logits of every token, then N single-token decodes from an
empty cache), printed as the same JSON rows.

  /usr/bin/python3 bench/torch_bench.py [MODEL_DIR] [-t 2] [-p 512] [-n 32] [-r 3]
                                        [--check KFUSE_LOGITS.bin]

--check compares torch's prefill and decode logits of 8 tokens with the ones
bench_engine --dump-logits wrote (max |difference|, tolerance 1e-3) and exits.
Weights are read with numpy memmaps of the file (copy-on-write, no copy).
"""
import argparse
import json
import math
import os
import resource
import statistics
import struct
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

ST_DTYPES = {"F32": np.float32, "F16": np.float16}


def load_safetensors(path):
    """name -> torch tensor (fp32) viewing the file through np.memmap."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        if info["dtype"] not in ST_DTYPES:
            raise SystemExit(f"torch_bench: {path}: tensor {name} has dtype {info['dtype']} (F32/F16 only)")
        begin, end = info["data_offsets"]
        dt = ST_DTYPES[info["dtype"]]
        count = (end - begin) // np.dtype(dt).itemsize
        arr = np.memmap(path, dtype=dt, mode="c", offset=8 + n + begin, shape=(count,))
        t = torch.from_numpy(arr).reshape(info["shape"])
        out[name] = t.float() if dt != np.float32 else t
    return out


class Llama:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        self.C = cfg["hidden_size"]
        self.L = cfg["num_hidden_layers"]
        self.H = cfg["num_attention_heads"]
        self.Hkv = cfg.get("num_key_value_heads", self.H)
        self.Dh = cfg.get("head_dim", self.C // self.H)
        self.V = cfg["vocab_size"]
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        theta = cfg.get("rope_theta", 10000.0)
        n_pos = cfg.get("max_position_embeddings", 2048)
        w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.embd = w["model.embed_tokens.weight"]
        self.head = w.get("lm_head.weight", self.embd)
        self.norm = w["model.norm.weight"]
        self.layers = []
        for l in range(self.L):
            p = f"model.layers.{l}."
            self.layers.append({k: w[p + v] for k, v in {
                "attn_norm": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
                "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
                "wo": "self_attn.o_proj.weight", "ffn_norm": "post_attention_layernorm.weight",
                "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight", "down": "mlp.down_proj.weight"}.items()})
        # angle(p, i) = p * theta^(-2i/Dh), computed in double like kfuse
        inv = theta ** (-torch.arange(0, self.Dh // 2, dtype=torch.float64) * 2 / self.Dh)
        ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None, :]
        self.cos, self.sin = ang.cos().float(), ang.sin().float()  # (n_pos, Dh/2)
        self.k_cache = self.v_cache = None

    def alloc_cache(self, n):
        self.k_cache = torch.zeros(self.L, self.Hkv, n, self.Dh)
        self.v_cache = torch.zeros(self.L, self.Hkv, n, self.Dh)

    def rmsnorm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, pos0):
        # x (H, T, Dh): element i pairs with i + Dh/2
        T, h = x.shape[1], self.Dh // 2
        c, s = self.cos[pos0:pos0 + T], self.sin[pos0:pos0 + T]
        x1, x2 = x[..., :h], x[..., h:]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)

    def forward(self, tokens, pos0):
        """tokens (T) at positions pos0.. -> logits (T, V); fills the KV cache."""
        T = len(tokens)
        x = self.embd[tokens]  # (T, C)
        group = self.H // self.Hkv
        if T > 1:
            mask = torch.full((T, pos0 + T), float("-inf")).triu(pos0 + 1)
        for l, p in enumerate(self.layers):
            h = self.rmsnorm(x, p["attn_norm"])
            q = F.linear(h, p["wq"]).view(T, self.H, self.Dh).transpose(0, 1)    # (H, T, Dh)
            k = F.linear(h, p["wk"]).view(T, self.Hkv, self.Dh).transpose(0, 1)  # (Hkv, T, Dh)
            v = F.linear(h, p["wv"]).view(T, self.Hkv, self.Dh).transpose(0, 1)
            q, k = self.rope(q, pos0), self.rope(k, pos0)
            self.k_cache[l, :, pos0:pos0 + T] = k
            self.v_cache[l, :, pos0:pos0 + T] = v
            K, Vv = self.k_cache[l, :, :pos0 + T], self.v_cache[l, :, :pos0 + T]
            if group > 1:
                K, Vv = K.repeat_interleave(group, 0), Vv.repeat_interleave(group, 0)
            att = (q @ K.transpose(1, 2)) / math.sqrt(self.Dh)  # (H, T, pos0+T)
            if T > 1:
                att = att + mask
            o = (att.softmax(-1) @ Vv).transpose(0, 1).reshape(T, self.H * self.Dh)
            x = x + F.linear(o, p["wo"])
            h = self.rmsnorm(x, p["ffn_norm"])
            x = x + F.linear(F.silu(F.linear(h, p["gate"])) * F.linear(h, p["up"]), p["down"])
        return F.linear(self.rmsnorm(x, self.norm), self.head)


def cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def summarise(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def row(test, threads, repeats, st, unit):
    return json.dumps({"engine": "torch", "test": test, "threads": threads, "repeats": repeats,
                       "median": round(st["median"], 4), "min": round(st["min"], 4), "max": round(st["max"], 4),
                       "unit": unit})


def check(m, path, threads):
    with open(path, "rb") as f:
        T, V = struct.unpack("<ii", f.read(8))
        ids = np.frombuffer(f.read(4 * T), dtype=np.int32)
        kf_pre = np.frombuffer(f.read(4 * T * V), dtype=np.float32).reshape(T, V)
        kf_dec = np.frombuffer(f.read(4 * T * V), dtype=np.float32).reshape(T, V)
    if V != m.V:
        raise SystemExit(f"torch_bench: {path}: vocab {V} differs from the model's {m.V}")
    tokens = torch.from_numpy(ids.astype(np.int64))
    m.alloc_cache(T)
    pre = m.forward(tokens, 0).numpy()
    dec = np.stack([m.forward(tokens[i:i + 1], i)[0].numpy() for i in range(T)])
    d_pre, d_dec = float(np.abs(pre - kf_pre).max()), float(np.abs(dec - kf_dec).max())
    tol = 1e-3
    print(json.dumps({"engine": "torch", "test": "logits_check", "threads": threads, "tokens": T,
                      "max_abs_logit": round(float(np.abs(pre).max()), 4),
                      "max_abs_diff_prefill": d_pre, "max_abs_diff_decode": d_dec, "tolerance": tol,
                      "ok": d_pre <= tol and d_dec <= tol}))
    return d_pre <= tol and d_dec <= tol


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="/tmp/kfuse-bench/llama-2048x16")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-p", "--prompt", type=int, default=512)
    ap.add_argument("-n", "--gen", type=int, default=32)
    ap.add_argument("-r", "--repeats", type=int, default=3)
    ap.add_argument("--check", metavar="KFUSE_LOGITS")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message=".*non-writable.*")
    m = Llama(a.model)
    with torch.inference_mode():
        if a.check:
            raise SystemExit(0 if check(m, a.check, a.threads) else 1)
        n_ctx = max(a.prompt, a.gen)
        ids = torch.tensor([(i * 7919 + 13) % m.V for i in range(n_ctx)], dtype=torch.int64)
        m.alloc_cache(n_ctx)
        pp, tg = [], []
        w0, c0 = time.perf_counter(), cpu_seconds()
        for r in range(-1, a.repeats):  # r = -1 warms up
            t0 = time.perf_counter()
            m.forward(ids[:a.prompt], 0)
            t_pp = time.perf_counter() - t0
            t_tg = 0.0
            for pos in range(a.gen):
                t1 = time.perf_counter()
                m.forward(ids[pos:pos + 1], pos)
                t_tg += time.perf_counter() - t1
            if r >= 0:
                pp.append(a.prompt / t_pp)
                tg.append(a.gen / t_tg)
        share = (cpu_seconds() - c0) / ((time.perf_counter() - w0) * a.threads)
    print(json.dumps({"engine": "info", "test": "cpu_share", "threads": a.threads, "torch": round(share, 3)}))
    print(row(f"pp{a.prompt}", a.threads, a.repeats, summarise(pp), "tokens/s"))
    print(row(f"tg{a.gen}", a.threads, a.repeats, summarise(tg), "tokens/s"))


if __name__ == "__main__":
    main()
