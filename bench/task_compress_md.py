#!/usr/bin/env python3
"""Markdown tables of bench/task_compress_table.sh runs (issue 13 item 5).

usage: task_compress_md.py ROOT
ROOT holds one folder per run, named MODEL-TASK (trained: parts A and B) and
MODEL-ri-TASK (RANDOM_INIT: part A only), MODEL in {llama, gpt2}, TASK in
{upos, xpos, deprel, sst2}; MODEL-common holds the fold models. Missing runs
are left out. Prints table A (truncated model + classifier), table B
(task-aware vs fold at equal width) and the CPU seconds of every run
(times.tsv).
"""
import json
import os
import sys

import numpy as np

MODELS = [("llama", "llama-gutenberg-6.5m"), ("gpt2", "gpt2-gutenberg-5.9m")]
TASKS = [("upos", "UPOS"), ("xpos", "XPOS"), ("deprel", "DEPREL"), ("sst2", "SST-2")]


def load(path):
    with open(path) as f:
        return json.load(f)


def blocks_test(probe_dir):
    b = load(f"{probe_dir}/probe.json")["result"]["blocks"]
    return b["test"] if isinstance(b, dict) else [x["test"] for x in b]


def cpu_seconds(run_dir):
    p = f"{run_dir}/times.tsv"
    if not os.path.exists(p):
        return None
    tot = 0.0
    for line in open(p):
        f = line.split("\t")
        try:
            tot += float(f[0]) + float(f[1])
        except (ValueError, IndexError):
            pass
    return tot


def table_a(root):
    rows = []
    for key, mname in MODELS:
        for ri in ("", "-ri"):
            for tkey, tname in TASKS:
                d = f"{root}/{key}{ri}-{tkey}"
                if not os.path.exists(f"{d}/classify.json"):
                    continue
                c = load(f"{d}/classify.json")
                r = load(f"{d}/probe_resid/probe.json")["result"]
                b = c["compare"]
                ls = r["layer_selector"]
                per = r["final"]["per_block"]
                top = max(i for i, n in enumerate(per) if n > 0)
                name = mname + (f", random init (seed {b['full_random_init']})" if b.get("full_random_init") is not None else "")
                exact = "yes" if c["accuracy"] == c["probe_test_accuracy"] else f"no ({c['probe_test_accuracy']:.4f})"
                rows.append(
                    f"| {name} | {tname} | {r['oracle']['test']:.4f} | 0-{ls['blocks_kept'] - 1} ({ls['test']:.4f}) "
                    f"| {c['n_layer_kept']} of {c['n_layer_full']} | {c['neurons']} of {r['n_neurons']} "
                    f"({100 * c['neurons'] / r['n_neurons']:.1f}%) | {top} | {c['accuracy']:.4f} | {exact} "
                    f"| {b['same_predictions']} / {c['items']} | {c['tokens']} "
                    f"| {b['truncated_seconds_median']:.2f} s, {b['truncated_tokens_per_s']:.0f} tok/s "
                    f"| {b['full_seconds_median']:.2f} s, {b['full_tokens_per_s']:.0f} tok/s | {b['speedup']:.2f}x |")
    print("| model | task | oracle test | LayerSelector blocks (test) | layers exported | classifier neurons (of all) "
          "| highest block with a selected neuron | classify test acc | = probe final | same predictions, full model "
          "| test tokens | extraction, truncated | extraction, full | speedup |")
    print("|" + " --- |" * 14)
    print("\n".join(rows))


def mass_top(probe_ffn, frac):
    """Mean over layers of the share of |W| mass in the top frac of each layer's FFN neurons."""
    w = np.abs(np.load(f"{probe_ffn}/block_weights.npy")).sum(axis=0)
    lay = load(f"{probe_ffn}/probe.json")["result"]["runs"]
    shares, off = [], 0
    for run in lay:
        if not run["name"].startswith("block"):
            continue
        n = run["features"]
        s = np.sort(w[off:off + n])[::-1]
        shares.append(s[:round(frac * n)].sum() / s.sum())
        off += n
    return float(np.mean(shares))


def top_iou(probe_ffn, probe_abl, frac):
    """Mean over layers of the IoU of the top frac of FFN neurons by probe weight and by the ablation estimate."""
    w = np.abs(np.load(f"{probe_ffn}/block_weights.npy")).sum(axis=0)
    a = np.load(f"{probe_abl}/ablation_scores.npy")[0]
    runs = [r for r in load(f"{probe_ffn}/probe.json")["result"]["runs"] if r["name"].startswith("block")]
    ious, off = [], 0
    for run in runs:
        n = run["features"]
        k = round(frac * n)
        tw = set(np.argsort(-w[off:off + n], kind="stable")[:k]); ta = set(np.argsort(-a[off:off + n], kind="stable")[:k])
        ious.append(len(tw & ta) / len(tw | ta))
        off += n
    return float(np.mean(ious))


def rel_err(path):
    return float(np.mean([l["rel_err"] for l in load(path)["layers"]]))


def table_b(root):
    print("| model | task | FFN width | method | WikiText-2 ppl | task best block (test) | task last block "
          "| rel err (mean of layers) | top-25% share of probe weight | IoU of the two task rankings' top 25% |")
    print("|" + " --- |" * 10)
    for key, mname in MODELS:
        com = f"{root}/{key}-common"
        for tkey, tname in TASKS:
            d = f"{root}/{key}-{tkey}"
            if not os.path.exists(f"{d}/summary.tsv"):
                continue
            lines = [l.rstrip("\n").split("\t") for l in open(f"{d}/summary.tsv")][1:]
            share = mass_top(f"{d}/probe_ffn", 0.25)
            for name, w, ppl, bb, bt, lt in lines:
                if name == "orig":
                    meth, err = "original", ""
                elif name.startswith("fold"):
                    meth, err = "fold (ls, refit)", f"{rel_err(f'{com}/{name}.compress.json'):.3f}"
                elif name.startswith("task"):
                    meth, err = "**task-aware, probe weight** (`--task`, refit)", f"{rel_err(f'{d}/{name}.compress.json'):.3f}"
                else:
                    meth = "**task-aware, ablation estimate** (`--task-score ablation`, refit)"
                    err = f"{rel_err(f'{d}/{name}.compress.json'):.3f}"
                sh = f"{share:.2f}" if name.startswith("task") else ""
                iou = f"{top_iou(f'{d}/probe_ffn', f'{d}/probe_abl', 0.25):.2f}" if name.startswith("abl") else ""
                print(f"| {mname} | {tname} | {w} | {meth} | {float(ppl):.1f} | {bt} (block {bb}) | {lt} | {err} | {sh} | {iou} |")


def cpu(root):
    print("| run | CPU s (user + sys) |")
    print("| --- | --- |")
    tot = 0.0
    for name in sorted(os.listdir(root)):
        s = cpu_seconds(f"{root}/{name}")
        if s is not None:
            tot += s
            print(f"| {name} | {s:.0f} |")
    print(f"| all | {tot:.0f} |")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: task_compress_md.py ROOT")
    root = sys.argv[1]
    print("#### A. Truncated model + classifier\n")
    table_a(root)
    print("\n#### B. Task-aware vs task-agnostic FFN compression at equal width\n")
    table_b(root)
    print("\n#### CPU per run\n")
    cpu(root)


if __name__ == "__main__":
    main()
