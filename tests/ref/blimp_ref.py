#!/usr/bin/python3
"""PyTorch reference for kfuse's BLiMP scoring (`kfuse eval --task blimp=PATH`):
each sentence is tokenized by the Python sentencepiece package (the model's
tokenizer.model), BOS prepended, run through tests/ref/model_ref.py's float64
forward pass (written from the architectures' definitions), and scored as
the sum of log p(token | prefix) over every token after BOS. A pair is
correct when the good sentence scores strictly higher.

  /usr/bin/python3 tests/ref/blimp_ref.py MODEL_DIR BLIMP_PATH --out REF.json

BLIMP_PATH is a .jsonl file or a folder of them (read in name order). REF.json
holds the per-pair log-probabilities and the accuracies per paradigm, per
field and overall. The fixture tests/fixtures/blimp/ref_*.json was made by

  /usr/bin/python3 tests/ref/blimp_ref.py models/llama-gutenberg-1.4m tests/fixtures/blimp --out tests/fixtures/blimp/ref_llama-gutenberg-1.4m.json
  /usr/bin/python3 tests/ref/blimp_ref.py ../shared/models/gpt2-gutenberg-5.9m tests/fixtures/blimp --out tests/fixtures/blimp/ref_gpt2-gutenberg-5.9m.json
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_ref  # noqa: E402


def read_pairs(path):
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".jsonl")]
    pairs = []
    for fp in files:
        with open(fp, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    pairs.append((d["UID"], d["field"], d["sentence_good"], d["sentence_bad"]))
    return pairs


def sentence_logprob(cfg, w, ids):
    """Sum over t >= 1 of log softmax(logits[t-1])[ids[t]], float64, one sequence unpadded."""
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        lp = torch.log_softmax(model_ref.forward(cfg, w, x)[0], dim=-1)
    return float(sum(lp[t - 1, ids[t]] for t in range(1, len(ids))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("blimp")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import sentencepiece as spm

    cfg, w = model_ref.load(a.model_dir)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model_dir, "tokenizer.model"))
    bos = cfg.get("bos_token_id", sp.bos_id())
    rows, acc = [], {}
    for uid, field, good, bad in read_pairs(a.blimp):
        g = sentence_logprob(cfg, w, [bos] + sp.encode(good))
        b = sentence_logprob(cfg, w, [bos] + sp.encode(bad))
        rows.append({"uid": uid, "field": field, "good": g, "bad": b})
        for key in ("overall", "field " + field, "paradigm " + uid):
            n, c = acc.get(key, (0, 0))
            acc[key] = (n + 1, c + (g > b))
    res = {
        "model": a.model_dir,
        "blimp": a.blimp,
        "tokenizer": "python sentencepiece, tokenizer.model beside the model, BOS prepended",
        "precision": "float64 forward and log-softmax",
        "pairs": rows,
        "accuracy": {k: {"n_pairs": n, "correct": c} for k, (n, c) in acc.items()},
    }
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(f"wrote {a.out}: {len(rows)} pairs, accuracy {acc['overall'][1] / acc['overall'][0]:.4f}")


if __name__ == "__main__":
    main()
