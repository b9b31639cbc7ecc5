#!/usr/bin/python3
"""PyTorch reference for kfuse's forward pass (Llama and GPT-2), written from
the architectures' definitions: no `transformers`, no `safetensors` package.

Regenerate every fixture under tests/fixtures/models/ (from the repo root):

  /usr/bin/python3 tests/ref/model_ref.py regen

which runs, in order:

  /usr/bin/python3 tests/ref/model_ref.py make-fixtures
  /usr/bin/python3 tests/ref/model_ref.py logits models/llama-gutenberg-1.4m --ids 1,450,31,2047,7,99,3000,12,5,4095,256,17 --out tests/fixtures/models/llama-gutenberg-1.4m.logits.bin
  /usr/bin/python3 tests/ref/model_ref.py logits tests/fixtures/models/gpt2-tiny --ids 1,200,3,77,128,255,0,42,9,9,180,64,33,101,250,7 --out tests/fixtures/models/gpt2-tiny.logits.bin
  /usr/bin/python3 tests/ref/model_ref.py logits tests/fixtures/models/llama-gqa-bf16 --ids 1,200,3,77,128,255,0,42,9,9,180,64,33,101,250,7 --out tests/fixtures/models/llama-gqa-bf16.logits.bin
  /usr/bin/python3 tests/ref/model_ref.py ppl models/llama-gutenberg-6.5m data/wikitext-2-raw/wiki.test.raw --ctx 256 --json tests/fixtures/models/ppl_ref.json

Modes:
  make-fixtures   tiny random-init HF folders gpt2-tiny/ and llama-gqa-bf16/
  logits DIR      float32 logits (T, V), computed in float64, raw little-endian;
                  the ids go to FILE with .logits.bin replaced by .ids.txt
  ppl DIR FILE    perplexity with llama.cpp's llama-perplexity protocol
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "models")
DT = torch.float64

# ---- safetensors ------------------------------------------------------------------


def bf16_bits_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(f32):
    """Round to nearest even, as torch and kfuse do."""
    u = np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def read_safetensors(path):
    """{name: float64 tensor} from a .safetensors file (F32, F16, BF16)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = blob[base + a : base + b]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            arr = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
        else:
            raise SystemExit(f"{path}: dtype {dt} of {name} not handled")
        out[name] = torch.from_numpy(arr.astype(np.float64).reshape(info["shape"]))
    return out


def write_safetensors(path, tensors, dtype):
    """tensors: {name: float32 numpy array}; dtype 'F32' or 'BF16'."""
    header, chunks, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        raw = a.astype("<f4").tobytes() if dtype == "F32" else f32_to_bf16_bits(a).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {}
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            w.update(read_safetensors(os.path.join(model_dir, name)))
    return cfg, w


# ---- forward passes ------------------------------------------------------------------


def causal_attention(q, k, v):
    """q (B, H, T, Dh), k/v (B, H, T, Dh) -> (B, T, H*Dh), scale 1/sqrt(Dh)."""
    B, H, T, Dh = q.shape
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.transpose(1, 2).reshape(B, T, H * Dh)


def llama_forward(cfg, w, ids, act_hook=None, hidden=False):
    """ids (B, T) long -> logits (B, T, V) float64. act_hook(l, h, act, w_down)
    (optional) replaces layer l's FFN activations act (B, T, F) before the down
    projection w_down (C, F); h is the FFN input. hidden: the last block's
    output (B, T, C) instead, before the final norm."""
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads", H)
    Dh = cfg.get("head_dim", C // H)
    eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
    B, T = ids.shape

    def rmsnorm(x, g):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * g

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    # rotate-half RoPE: pair (i, i + Dh/2) rotated by pos * theta^(-2i/Dh)
    inv_freq = theta ** (-torch.arange(0, Dh, 2, dtype=DT) / Dh)
    ang = torch.arange(T, dtype=DT)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(x):  # (B, heads, T, Dh)
        x1, x2 = x[..., : Dh // 2], x[..., Dh // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = w["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").view(B, T, H, Dh).transpose(1, 2)
        k = lin(h, p + "self_attn.k_proj").view(B, T, Hkv, Dh).transpose(1, 2)
        v = lin(h, p + "self_attn.v_proj").view(B, T, Hkv, Dh).transpose(1, 2)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        x = x + lin(causal_attention(q, k, v), p + "self_attn.o_proj")
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"])
        act = torch.nn.functional.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj")
        if act_hook:
            act = act_hook(l, h, act, w[p + "mlp.down_proj.weight"])
        x = x + lin(act, p + "mlp.down_proj")
    if hidden:
        return x
    x = rmsnorm(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def gpt2_forward(cfg, w, ids, act_hook=None, hidden=False):
    """ids (B, T) long -> logits (B, T, V) float64; Conv1D weights are (in, out).
    act_hook as llama_forward's."""
    C, H = cfg["n_embd"], cfg["n_head"]
    Dh, eps = C // H, cfg.get("layer_norm_epsilon", 1e-5)
    pre = "transformer." if "transformer.wte.weight" in w else ""
    B, T = ids.shape

    def ln(x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    def conv1d(x, name):
        return x @ w[name + ".weight"] + w[name + ".bias"]

    def gelu_tanh(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    x = w[pre + "wte.weight"][ids] + w[pre + "wpe.weight"][torch.arange(T)]
    for l in range(cfg["n_layer"]):
        p = f"{pre}h.{l}."
        qkv = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn")
        q, k, v = (t.reshape(B, T, H, Dh).transpose(1, 2) for t in qkv.split(C, dim=-1))
        x = x + conv1d(causal_attention(q, k, v), p + "attn.c_proj")
        h = ln(x, p + "ln_2")
        act = gelu_tanh(conv1d(h, p + "mlp.c_fc"))
        if act_hook:
            act = act_hook(l, h, act, w[p + "mlp.c_proj.weight"].T)
        x = x + conv1d(act, p + "mlp.c_proj")
    if hidden:
        return x
    x = ln(x, pre + "ln_f")
    head = w.get("lm_head.weight", w[pre + "wte.weight"])
    return x @ head.T


def forward(cfg, w, ids, act_hook=None, hidden=False):
    if cfg["model_type"] == "llama":
        return llama_forward(cfg, w, ids, act_hook, hidden)
    if cfg["model_type"] == "gpt2":
        return gpt2_forward(cfg, w, ids, act_hook, hidden)
    raise SystemExit(f"model_type {cfg['model_type']} not handled")


# ---- fixtures --------------------------------------------------------------------------


def make_fixtures():
    """Random-init tiny models in real HF layout. Weights are scaled so that
    activations and logits are O(1): a parity check then means something."""
    rng = np.random.default_rng(20240601)

    def randn(*shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    # GPT-2: C=32, 2 layers, 4 heads, vocab 256, 64 positions, n_ff = 4C
    C, L, V, P = 32, 2, 256, 64
    d = os.path.join(FIXTURES, "gpt2-tiny")
    os.makedirs(d, exist_ok=True)
    t = {"transformer.wte.weight": randn(V, C, std=0.5), "transformer.wpe.weight": randn(P, C, std=0.3)}
    for l in range(L):
        p = f"transformer.h.{l}."
        for ln in ("ln_1", "ln_2"):
            t[p + ln + ".weight"] = 1.0 + randn(C, std=0.1)
            t[p + ln + ".bias"] = randn(C, std=0.1)
        t[p + "attn.c_attn.weight"] = randn(C, 3 * C, std=C**-0.5)  # Conv1D: (in, out)
        t[p + "attn.c_attn.bias"] = randn(3 * C, std=0.1)
        t[p + "attn.c_proj.weight"] = randn(C, C, std=C**-0.5)
        t[p + "attn.c_proj.bias"] = randn(C, std=0.1)
        t[p + "mlp.c_fc.weight"] = randn(C, 4 * C, std=C**-0.5)
        t[p + "mlp.c_fc.bias"] = randn(4 * C, std=0.1)
        t[p + "mlp.c_proj.weight"] = randn(4 * C, C, std=(4 * C) ** -0.5)
        t[p + "mlp.c_proj.bias"] = randn(C, std=0.1)
    t["transformer.ln_f.weight"] = 1.0 + randn(C, std=0.1)
    t["transformer.ln_f.bias"] = randn(C, std=0.1)
    write_safetensors(os.path.join(d, "model.safetensors"), t, "F32")
    cfg = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": V, "n_positions": P,
        "n_embd": C, "n_layer": L, "n_head": 4, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    # Llama with GQA: C=64, 2 layers, 4 heads / 2 kv heads (Dh 16), FFN 96,
    # vocab 256, untied head, BF16 on disk, rope_theta 5e5
    C, L, V, H, Hkv, F = 64, 2, 256, 4, 2, 96
    Dh = C // H
    d = os.path.join(FIXTURES, "llama-gqa-bf16")
    os.makedirs(d, exist_ok=True)
    t = {"model.embed_tokens.weight": randn(V, C, std=1.0), "lm_head.weight": randn(V, C, std=0.3)}
    for l in range(L):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = 1.0 + randn(C, std=0.1)
        t[p + "post_attention_layernorm.weight"] = 1.0 + randn(C, std=0.1)
        t[p + "self_attn.q_proj.weight"] = randn(H * Dh, C, std=2.0 * C**-0.5)
        t[p + "self_attn.k_proj.weight"] = randn(Hkv * Dh, C, std=2.0 * C**-0.5)
        t[p + "self_attn.v_proj.weight"] = randn(Hkv * Dh, C, std=C**-0.5)
        t[p + "self_attn.o_proj.weight"] = randn(C, H * Dh, std=(H * Dh) ** -0.5)
        t[p + "mlp.gate_proj.weight"] = randn(F, C, std=C**-0.5)
        t[p + "mlp.up_proj.weight"] = randn(F, C, std=C**-0.5)
        t[p + "mlp.down_proj.weight"] = randn(C, F, std=F**-0.5)
    t["model.norm.weight"] = 1.0 + randn(C, std=0.1)
    write_safetensors(os.path.join(d, "model.safetensors"), t, "BF16")
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C, "intermediate_size": F,
        "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": Hkv, "hidden_act": "silu",
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "vocab_size": V,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
        "attention_bias": False, "mlp_bias": False,
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"wrote {FIXTURES}/gpt2-tiny and {FIXTURES}/llama-gqa-bf16")


def dump_logits(model_dir, ids, out):
    cfg, w = load(model_dir)
    with torch.no_grad():
        logits = forward(cfg, w, torch.tensor([ids], dtype=torch.long))[0]
    logits.to(torch.float32).numpy().astype("<f4").tofile(out)
    ids_path = out[: -len(".logits.bin")] + ".ids.txt" if out.endswith(".logits.bin") else out + ".ids.txt"
    with open(ids_path, "w") as f:
        f.write(",".join(str(i) for i in ids) + "\n")
    print(f"wrote {out} ({logits.shape[0]} x {logits.shape[1]}) and {ids_path}")


# ---- perplexity ------------------------------------------------------------------------


def perplexity(model_dir, text_path, ctx, batch, json_out, argv):
    """llama.cpp llama-perplexity: tokenize the whole text with BOS, split into
    n_tokens // ctx windows, put BOS first in each window, and score the
    second half: positions j in [ctx/2, ctx-1) predict token j+1."""
    import sentencepiece as spm

    cfg, w = load(model_dir)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    bos = cfg.get("bos_token_id", sp.bos_id())
    tokens = [bos] + sp.encode(text)
    n_chunk = len(tokens) // ctx
    first = ctx // 2
    nll = nll2 = 0.0
    count = 0
    with torch.no_grad():
        for c0 in range(0, n_chunk, batch):
            nb = min(batch, n_chunk - c0)
            win = torch.tensor([tokens[i * ctx : (i + 1) * ctx] for i in range(c0, c0 + nb)], dtype=torch.long)
            targets = win[:, first + 1 :].clone()
            win[:, 0] = bos
            logits = forward(cfg, w, win)[:, first : ctx - 1]  # (nb, ctx-1-first, V)
            lp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
            v = -lp
            nll += v.sum().item()
            nll2 += (v * v).sum().item()
            count += v.numel()
            print(f"\r[{c0 + nb}/{n_chunk}] ppl {math.exp(nll / count):.4f}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    mean, mean2 = nll / count, nll2 / count
    ppl = math.exp(mean)
    unc = ppl * math.sqrt((mean2 - mean * mean) / (count - 1))
    print(f"Final estimate: PPL = {ppl:.4f} +/- {unc:.5f}")
    if json_out:
        res = {
            "model": os.path.relpath(os.path.abspath(model_dir), ROOT),
            "text": os.path.relpath(os.path.abspath(text_path), ROOT),
            "ctx": ctx,
            "ppl": ppl,
            "ppl_stderr": unc,
            "mean_nll": mean,
            "n_tokens": len(tokens),
            "n_chunks": n_chunk,
            "n_scored": count,
            "tokenizer": "python sentencepiece, tokenizer.model beside the model, BOS prepended",
            "precision": "float64 forward and log-softmax",
            "command": "/usr/bin/python3 tests/ref/model_ref.py " + " ".join(argv),
        }
        with open(json_out, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
        print(f"wrote {json_out}")


# ---- command line ----------------------------------------------------------------------

FIXTURE_IDS_1P4M = "1,450,31,2047,7,99,3000,12,5,4095,256,17"
FIXTURE_IDS_TINY = "1,200,3,77,128,255,0,42,9,9,180,64,33,101,250,7"


def regen():
    me = [sys.executable, os.path.abspath(__file__)]
    runs = [
        ["make-fixtures"],
        ["logits", "models/llama-gutenberg-1.4m", "--ids", FIXTURE_IDS_1P4M, "--out",
         "tests/fixtures/models/llama-gutenberg-1.4m.logits.bin"],
        ["logits", "tests/fixtures/models/gpt2-tiny", "--ids", FIXTURE_IDS_TINY, "--out",
         "tests/fixtures/models/gpt2-tiny.logits.bin"],
        ["logits", "tests/fixtures/models/llama-gqa-bf16", "--ids", FIXTURE_IDS_TINY, "--out",
         "tests/fixtures/models/llama-gqa-bf16.logits.bin"],
        ["ppl", "models/llama-gutenberg-6.5m", "data/wikitext-2-raw/wiki.test.raw", "--ctx", "256", "--json",
         "tests/fixtures/models/ppl_ref.json"],
    ]
    import subprocess

    for r in runs:
        print("+", " ".join(r), flush=True)
        subprocess.run(me + r, cwd=ROOT, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    sub.add_parser("make-fixtures")
    sub.add_parser("regen")
    a = sub.add_parser("logits")
    a.add_argument("model_dir")
    a.add_argument("--ids", required=True, help="comma-separated token ids")
    a.add_argument("--out", required=True)
    b = sub.add_parser("ppl")
    b.add_argument("model_dir")
    b.add_argument("text")
    b.add_argument("--ctx", type=int, default=256)
    b.add_argument("--batch", type=int, default=8, help="windows per forward call")
    b.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    if args.mode == "make-fixtures":
        make_fixtures()
    elif args.mode == "regen":
        regen()
    elif args.mode == "logits":
        dump_logits(args.model_dir, [int(s) for s in args.ids.split(",")], args.out)
    else:
        perplexity(args.model_dir, args.text, args.ctx, args.batch, args.json, sys.argv[1:])


if __name__ == "__main__":
    main()
