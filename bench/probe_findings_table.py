#!/usr/bin/python3
"""Markdown tables of Dalvi et al.'s pipeline from bench/probe_findings.sh runs.

  /usr/bin/python3 bench/probe_findings_table.py OUT_DIR

Reads OUT_DIR/<model>-<init>-<task>/probe.json (init: trained | random) and
prints, per task, one row per model and init: oracle accuracy (and its
control-task accuracy), per-block test accuracy (block 0 = embeddings),
blocks kept by LayerSelector, neurons kept (count and share of the whole
network), final accuracy, final / oracle, selectivity (final accuracy -
control accuracy on the same neurons), and the smallest feature-selection
grid point (trained on the top neurons of the LS+CC probe) that reaches 97%
of the oracle: Dalvi et al.'s "97% of the performance with at most 10% of
the neurons" test.
"""
import glob
import json
import os
import sys

TASKS = [("upos", "UPOS (UD EWT)"), ("xpos", "XPOS (UD EWT)"), ("deprel", "DEPREL (UD EWT)"), ("sst2", "SST-2")]


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def row(name, d):
    r = d["result"]
    n = r["n_neurons"]
    o, f, ls = r["oracle"], r["final"], r["layer_selector"]
    blocks = " / ".join(f"{100 * a:.1f}" for a in r["blocks"]["test"])
    ctrl = "" if o["control"] is None else f" ({pct(o['control'])})"
    g97 = "none"
    for k, (gn, gt) in enumerate(zip(r["feature_selection"]["grid_neurons"], r["feature_selection"]["grid_test"])):
        if gt is not None and gt >= 0.97 * o["test"]:
            g97 = f"{gn} ({100 * gn / n:.1f}%)"
            break
    sel = "-" if f["selectivity"] is None else f"{100 * f['selectivity']:.1f}"
    return (f"| {name} | {pct(o['test'])}{ctrl} | {blocks} | {ls['blocks_kept']} of {len(r['blocks']['test'])} | "
            f"{f['neurons']} of {n} ({100 * f['neurons_share']:.1f}%) | {pct(f['test'])} | "
            f"{100 * f['of_oracle']:.1f} | {sel} | {g97} |")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    runs = {}
    for p in sorted(glob.glob(os.path.join(out, "*", "probe.json"))):
        model, init, task = os.path.basename(os.path.dirname(p)).rsplit("-", 2)
        runs.setdefault(task, []).append((model, init, json.load(open(p))))
    for task, title in TASKS:
        if task not in runs:
            continue
        d0 = runs[task][0][2]
        sp = d0["task"]["splits"]
        print(f"#### {title}\n")
        print(f"{len(d0['task']['labels'])} labels; train {sp['train']['items']} items, dev {sp['dev']['items']}, "
              f"test {sp['test']['items']}; accuracies on test, in %.\n")
        print("| model | oracle (control) | per-block accuracy, block 0 = embeddings | blocks kept | neurons kept | "
              "final | % of oracle | selectivity | fewest neurons ≥ 97% of oracle |")
        print("|---|---|---|---|---|---|---|---|---|")
        order = {"trained": 0, "random": 1}
        for model, init, d in sorted(runs[task], key=lambda x: (x[0].startswith("gpt2"), order[x[1]])):
            assert (d["model"]["random_init"] is None) == (init == "trained"), f"{model}-{init}-{task}: random_init"
            print(row(model + (f", random init (seed {d['model']['random_init']})" if init == "random" else ""), d))
        print()


if __name__ == "__main__":
    main()
