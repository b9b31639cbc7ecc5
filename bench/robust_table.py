#!/usr/bin/python3
"""Markdown table of robustness to typos from `kfuse eval --perturb typo:R --json` outputs.

  bench/robust_table.py OUT1.json [OUT2.json ...]

Each OUT.json is the output of one eval of several models against their
original with --perturb (an array). One row for the original (the reference,
the same in every object) and one per model, per file: perplexity on the clean
and on the perturbed text, the robustness gap (perturbed / clean - 1), and
for the models the mean KL(original || model) on both texts.
"""
import json
import os
import sys

print("| typo rate | model | ppl clean | ppl typo | gap | KL clean | KL typo | top-1 clean | top-1 typo |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    res = json.load(open(path))
    res = res if isinstance(res, list) else [res]
    p0 = res[0]["perturbed"]
    rate = p0["perturb"].split(":")[1].split(",")[0]
    print(f"| {rate} | original | {res[0]['ref']['ppl']:.2f} | {p0['ref']['ppl']:.2f} | {p0['gap']['ref']:+.3f} | - | - | - | - |")
    for o in res:
        p = o["perturbed"]
        name = os.path.basename(o["model"]["path"].rstrip("/"))
        print(f"| {rate} | {name} | {o['model']['ppl']:.2f} | {p['model']['ppl']:.2f} | {p['gap']['model']:+.3f} | "
              f"{o['kl_mean']:.4f} | {p['kl_mean']:.4f} | {o['top1_agreement']:.3f} | {p['top1_agreement']:.3f} |")
