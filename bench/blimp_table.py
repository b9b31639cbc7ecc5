#!/usr/bin/python3
"""Markdown tables of BLiMP accuracy from `kfuse eval --task blimp=PATH --json` outputs.

  bench/blimp_table.py [--paradigms] [--side model|ref] LABEL=OUT.json[+OUT2.json...] ...

Each OUT.json is what `kfuse eval ... --json` printed (one object, or an
array of them: the k-th model of the run is chosen with LABEL=OUT.json#k,
0-based). Several files joined by + are one model scored over disjoint sets
of paradigms (e.g. BLiMP's folder split in two and run concurrently): their
per-paradigm counts are pooled and the per-field and overall accuracies are
recomputed from them. Prints one row per model (overall and per field, with
the pair counts in the header), and with --paradigms one row per paradigm
with a column per model.
"""
import argparse
import json
import sys


def load(spec, side):
    counts = {}  # uid -> (field, n, correct)
    for part in spec.split("+"):
        path, _, idx = part.partition("#")
        d = json.load(open(path))
        o = d[int(idx or 0)] if isinstance(d, list) else d
        for p in o[side]["blimp"]["paradigms"]:
            if p["uid"] in counts:
                sys.exit(f"{part}: paradigm {p['uid']} appears twice")
            counts[p["uid"]] = (p["field"], p["n_pairs"], p["correct"])
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="LABEL=OUT.json[#k][+OUT2.json[#k]...]")
    ap.add_argument("--paradigms", action="store_true")
    ap.add_argument("--side", default="model", choices=["model", "ref"])
    a = ap.parse_args()
    runs = []
    for m in a.models:
        label, _, spec = m.partition("=")
        runs.append((label, load(spec, a.side)))
    uids = list(runs[0][1])
    for label, c in runs:
        if set(c) != set(uids) or any(c[u][:2] != runs[0][1][u][:2] for u in uids):
            sys.exit(f"{label}: not the same paradigms and pair counts as {runs[0][0]}")
    fields = []
    for u in uids:
        if runs[0][1][u][0] not in fields:
            fields.append(runs[0][1][u][0])
    n_field = {f: sum(runs[0][1][u][1] for u in uids if runs[0][1][u][0] == f) for f in fields}
    n_all = sum(n_field.values())
    print("| model | overall (" + f"{n_all})" + "".join(f" | {f} ({n_field[f]})" for f in fields) + " |")
    print("|---" * (2 + len(fields)) + "|")
    for label, c in runs:
        cor = {f: sum(c[u][2] for u in uids if c[u][0] == f) for f in fields}
        row = f"| {label} | {sum(cor.values()) / n_all:.4f}"
        row += "".join(f" | {cor[f] / n_field[f]:.4f}" for f in fields)
        print(row + " |")
    if a.paradigms:
        print("\n| paradigm | field | pairs" + "".join(f" | {label}" for label, _ in runs) + " |")
        print("|---" * (3 + len(runs)) + "|")
        for u in uids:
            f, n, _ = runs[0][1][u]
            print(f"| {u} | {f} | {n}" + "".join(f" | {c[u][2] / n:.3f}" for _, c in runs) + " |")


if __name__ == "__main__":
    main()
