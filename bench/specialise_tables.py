#!/usr/bin/python3
"""Markdown tables for docs/FINDINGS.md "Specialisation" and bench/RESULTS.md
"specialise cost" from the outputs of bench/specialise_findings.sh.

  /usr/bin/python3 bench/specialise_tables.py OUT_DIR

Reads OUT_DIR/<model>/specialise.json (schema docs/specialise-json.md),
OUT_DIR/<name>.cmd (the command) and OUT_DIR/<name>.time (/usr/bin/time -v).
"""
import json
import os
import re
import sys

MODELS = ["llama-gutenberg-6.5m", "gpt2-gutenberg-5.9m"]
PAIRS = [("austen", "doyle"), ("austen", "shakespeare"), ("austen", "wikitext"), ("shakespeare", "wikitext"),
         ("wikitext", "upos")]


def f(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


def cmd(out, name):
    with open(os.path.join(out, name + ".cmd")) as fh:
        return fh.read().strip().removeprefix(f"== {name}: ")


def frac_index(a, frac):
    return [round(x, 6) for x in a["options"]["fracs"]].index(frac)


def overlap_table(a, frac):
    names = [d["name"] for d in a["datasets"]]
    fi = frac_index(a, frac)
    runs = {r["model"]: r for r in a["runs"]}
    head = "| layer | " + " | ".join(f"{x}–{y}" for x, y in PAIRS) + " | null mean / q95 | random init: " + \
        " | ".join(f"{x}–{y}" for x, y in PAIRS[:2]) + " |"
    rows = [head, "|" + " --- |" * (len(PAIRS) + 4)]
    for l, lay in enumerate(runs["trained"]["overlap"][fi]["layers"]):
        cells = []
        for x, y in PAIRS:
            i, j = names.index(x), names.index(y)
            cells.append(f"{f(lay['iou'][i][j], 2)} [{f(lay['iou_lo'][i][j], 2)}, {f(lay['iou_hi'][i][j], 2)}]")
        i, j = names.index("austen"), names.index("doyle")
        cells.append(f"{f(lay['null_mean'][i][j], 3)} / {f(lay['null_q95'][i][j], 3)}")
        rl = runs["random_init"]["overlap"][fi]["layers"][l]
        for x, y in PAIRS[:2]:
            i, j = names.index(x), names.index(y)
            cells.append(f"{f(rl['iou'][i][j], 2)} [{f(rl['iou_lo'][i][j], 2)}, {f(rl['iou_hi'][i][j], 2)}]")
        rows.append(f"| {l} (k={lay['set_size']}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def pruning_table(a, run):
    names = [d["name"] for d in a["datasets"]]
    r = [x for x in a["runs"] if x["model"] == run][0]
    rows = ["| focus → retain | f | removed | Δ focus | Δ retain | Δ focus (random) | Δ retain (random) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    sel_pairs = [("austen", "doyle"), ("doyle", "austen"), ("shakespeare", "wikitext"), ("wikitext", "shakespeare"),
                 ("upos", "wikitext"), ("wikitext", "upos")]
    for x, y in sel_pairs:
        for p in r["pruning"]:
            s = [s for s in p["selective"] if s["focus"] == x and s["retain"] == y][0]
            rows.append(f"| {x} → {y} | {100 * p['frac']:g}% | {p['n_removed']} | {f(s['d_focus'], 4)} | "
                        f"{f(s['d_retain'], 4)} | {f(s['d_random_focus'], 4)} | {f(s['d_random_retain'], 4)} |")
    return "\n".join(rows)


def pruning_summary(a):
    """Per run and fraction: over all ordered pairs, the share with d_focus > d_retain, and the mean of
    (d_focus - d_random_focus) - (d_retain - d_random_retain) over text pairs (nats)."""
    rows = ["| model | f | pairs with Δ focus > Δ retain | mean differential damage, text pairs (nats) | "
            "mean Δ focus / mean Δ random, text focus |", "| --- | --- | --- | --- | --- |"]
    kind = {d["name"]: d["kind"] for d in a["datasets"]}
    for r in a["runs"]:
        for p in r["pruning"]:
            s = p["selective"]
            win = sum(1 for x in s if x["d_focus"] > x["d_retain"])
            tp = [x for x in s if kind[x["focus"]] == "text" and kind[x["retain"]] == "text"]
            diff = sum((x["d_focus"] - x["d_random_focus"]) - (x["d_retain"] - x["d_random_retain"]) for x in tp)
            df = sum(x["d_focus"] for x in tp) / len(tp)
            dr = sum(x["d_random_focus"] for x in tp) / len(tp)
            rows.append(f"| {r['model']} | {100 * p['frac']:g}% | {win}/{len(s)} | {f(diff / len(tp), 4)} | "
                        f"{f(df, 4)} / {f(dr, 4)} |")
    return "\n".join(rows)


def base_table(out):
    rows = ["| model | run | " + " | ".join(["austen", "doyle", "shakespeare", "wikitext", "upos (probe error)"]) + " |",
            "| --- | --- |" + " --- |" * 5]
    for m in MODELS:
        a = json.load(open(os.path.join(out, m, "specialise.json")))
        for r in a["runs"]:
            rows.append(f"| {m} | {r['model']} | " + " | ".join(f(v, 3) for v in r["base_loss"]) + " |")
    return "\n".join(rows)


def conc_table(a, frac):
    names = [d["name"] for d in a["datasets"]]
    rows = ["| layer | split | share in best k (mean over datasets) | random share | entropy | random entropy | "
            "datasets with p_share < 0.05 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    L = a["model"]["n_layer"]
    for l in range(L):
        for e in a["experts"]:
            split = "kmeans" if "kmeans" in e["path"] else "coact" if "coact" in e["path"] else e["path"]
            cells = [c for c in e["concentration"] if round(c["frac"], 6) == frac]
            sh = sum(c["share"][l] for c in cells) / len(cells)
            rs = sum(c["random_share"][l] for c in cells) / len(cells)
            en = sum(c["entropy"][l] for c in cells) / len(cells)
            re_ = sum(c["random_entropy"][l] for c in cells) / len(cells)
            sig = [c["dataset"] for c in cells if c["p_share"][l] < 0.05]
            rows.append(f"| {l} | {split} (k={e['k'][l]} of {e['n_expert'][l]}) | {f(sh)} | {f(rs)} | {f(en)} | "
                        f"{f(re_)} | {len(sig)}/{len(names)} |")
    return "\n".join(rows)


def fo_table(out):
    rows = ["| model | run | " + " | ".join(["austen", "doyle", "shakespeare", "wikitext"]) +
            " | mean ρ(estimate, importance) over layers and texts |", "| --- | --- |" + " --- |" * 5]
    for m in MODELS:
        a = json.load(open(os.path.join(out, m, "specialise.json")))
        for r in a["runs"]:
            ab = [x for x in r["ablation"] if "rank_corr" in x]
            ri = [l["rank_corr_importance"] for x in ab for l in x["layers"] if l["rank_corr_importance"] is not None]
            rows.append(f"| {m} | {r['model']} | " + " | ".join(f(x["rank_corr"], 2) for x in ab) +
                        f" | {f(sum(ri) / len(ri), 3)} |")
    return "\n".join(rows)


def time_row(out, name):
    t = open(os.path.join(out, name + ".time")).read()

    def grab(key):
        return re.search(re.escape(key) + r":\s*(.+)", t).group(1).strip()

    wall = grab("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    parts = [float(x) for x in wall.split(":")]
    secs = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
    cpu = float(grab("User time (seconds)")) + float(grab("System time (seconds)"))
    rss = int(grab("Maximum resident set size (kbytes)")) / 1024
    return secs, cpu, rss


def cost_table(out):
    rows = ["| run | datasets | wall (s) | CPU (s) | CPU / wall | peak RSS (MiB) | wall per dataset (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, nd in [("cost-text", 2), ("cost-task", 2)] + [(m, 5) for m in MODELS]:
        p = os.path.join(out, name + ".time")
        if not os.path.exists(p) or "Elapsed" not in open(p).read():
            continue
        w, c, r = time_row(out, name)
        rows.append(f"| {name} | {nd} | {w:.1f} | {c:.1f} | {c / w:.2f} | {r:.0f} | {w / nd:.1f} |")
    return "\n".join(rows)


def main():
    out = sys.argv[1]
    print("### Base losses (nats/token; upos: probe error rate)\n")
    print(base_table(out))
    for m in MODELS:
        a = json.load(open(os.path.join(out, m, "specialise.json")))
        print(f"\n## {m}\n\n`{cmd(out, m)}`\n")
        for frac in (0.01, 0.05):
            print(f"### Overlap (IoU [95% bootstrap]) of the top {100 * frac:g}% per layer\n")
            print(overlap_table(a, frac) + "\n")
        print("### Selective pruning, trained\n")
        print(pruning_table(a, "trained") + "\n")
        print("### Selective pruning, random init\n")
        print(pruning_table(a, "random_init") + "\n")
        print("### Selective pruning summary\n")
        print(pruning_summary(a) + "\n")
        print("### Expert concentration of the top 2% (16 experts)\n")
        print(conc_table(a, 0.02) + "\n")
    print("\n### First-order estimate vs measured ablation (Spearman ρ over the ablate_top most important neurons × 6 layers of each text)\n")
    print(fo_table(out))
    print("\n### Cost\n")
    print(cost_table(out))


if __name__ == "__main__":
    main()
