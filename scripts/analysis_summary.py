#!/usr/bin/env python3
"""Markdown tables of the headline numbers of a `kfuse analyze` run.

usage: scripts/analysis_summary.py DIR [N_CLUSTERS]

Reads DIR/analysis.json (schema: docs/analysis-json.md) and prints: layer
similarity (Block Influence, CKA of each block's input and output), the share
of redundant FFN neurons and residual dims at t = 0.3 and 0.5, the dynamic
thresholds, k-means cluster quality, the N_CLUSTERS (default 4) clusters with
the highest mean |rho| and their top contexts, and the timings. Standard
library only: docs/FINDINGS.md quotes its output.
"""
import json
import sys


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    a = json.load(open(sys.argv[1] + "/analysis.json"))
    n_top = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    m, cal, lay, red = a["model"], a["calibration"], a["layers"], a["redundancy"]
    L, labels = m["n_layer"], lay["labels"]
    print(f"### {m['path']}: {L} layers, width {m['n_embd']}, FFN {m['n_ff'][0]}, {m['n_params']} parameters\n")
    print(f"calibration: {cal['n_tokens']} tokens ({cal['n_sequences']} x {cal['ctx']}), "
          f"{a['options']['resid_tokens']} of them in the joint residual accumulator; CKA {lay['cka_method']}\n")

    bi, cka = lay["block_influence"], lay["cka"]
    print("| block | input -> output | Block Influence | CKA(input, output) |")
    print("|---|---|---:|---:|")
    for l in range(L):
        print(f"| {l} | {labels[l]} -> {labels[l + 1]} | {bi[l]:.4f} | {cka[l][l + 1]:.4f} |")
    order = sorted(range(L), key=lambda l: bi[l])
    print(f"\nmost redundant block (lowest BI): {order[0]}; least redundant: {order[-1]}")
    pairs = [(cka[i][j], labels[i], labels[j]) for i in range(L + 1) for j in range(i + 1, L + 1)]
    hi, lo = max(pairs), min(pairs)
    print(f"highest CKA between two representations: {hi[1]}/{hi[2]} {hi[0]:.3f}; lowest: {lo[1]}/{lo[2]} {lo[0]:.3f}\n")

    t = red["t"]
    i3, i5 = t.index(0.3), t.index(0.5)
    print("| layer | FFN redundant t=0.3 | FFN redundant t=0.5 | residual (block output) t=0.3 | t=0.5 | FFN clustering ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for l in range(L):
        f, r = red["ffn"][l], red["resid"][l + 1]
        print(f"| {l} | {pct(f[i3])} | {pct(f[i5])} | {pct(r[i3])} | {pct(r[i5])} | {1000 * red['ffn_seconds'][l]:.1f} |")
    r0 = red["resid"][0]
    print(f"| emb | | | {pct(r0[i3])} | {pct(r0[i5])} | |")
    ra = red["resid_all"]
    if ra is not None:
        print(f"\nwhole residual stream across layers ({red['resid_all_n']} dims): {pct(ra[i3])} redundant at t=0.3, "
              f"{pct(ra[i5])} at t=0.5; clustering {1000 * red['resid_all_seconds']:.1f} ms\n")

    th = a["thresholds"]
    print(f"| layer | dynamic t (eps = {th['epsilon']}) | implied width | of | kept | rel. error at t |")
    print("|---|---:|---:|---:|---:|---:|")
    for e in th["layers"]:
        tt = "none" if e["t"] is None else f"{e['t']:.2f}"
        print(f"| {e['layer']} | {tt} | {e['width']} | {e['n_ff']} | {100 * e['width'] / e['n_ff']:.1f}% | {e['rel_err']:.4f} |")
    w = sum(e["width"] for e in th["layers"]), sum(e["n_ff"] for e in th["layers"])
    print(f"\nall layers: {w[0]} of {w[1]} FFN neurons ({100 * w[0] / w[1]:.1f}%)\n")

    cl = a["clusters"]["layers"]
    print("| layer | k act. | silhouette act. | k weight | silhouette weight | max mean abs rho (act.) |")
    print("|---|---:|---:|---:|---:|---:|")
    tops = []
    for c in cl:
        ac, wc = c["activation"], c["weight"]
        mac = [x for x in ac["mean_abs_corr"] if x is not None]
        print(f"| {c['layer']} | {ac['k']} | {ac['silhouette']:.4f} | {wc['k']} | {wc['silhouette']:.4f} | {max(mac):.3f} |")
        for kind in ("activation", "weight"):
            for i, x in enumerate(c[kind]["mean_abs_corr"]):
                if x is not None:
                    tops.append((x, c["layer"], kind, i))
    tops.sort(reverse=True)
    print(f"\nclusters with the highest mean |rho| (top contexts: score, left [token] right):\n")
    for x, l, kind, i in tops[:n_top]:
        c = cl[l][kind]
        print(f"- layer {l} {kind} cluster {i} ({c['sizes'][i]} neurons, mean |rho| {x:.3f}):")
        for ctx in c["contexts"][i][:3]:
            s = f"{ctx['left']}[{ctx['token']}]{ctx['right']}".replace("\n", "\u21b5").replace("`", "'")
            print(f"  `{s}` ({ctx['score']:.2f})")
    tm = a["timing"]
    print(f"\ntiming (s): record {tm['record_seconds']:.2f} ({cal['tokens_per_s']:.0f} tokens/s), analysis "
          f"{tm['analysis_seconds']:.2f} (thresholds {tm['thresholds_seconds']:.2f}, k-means {tm['kmeans_seconds']:.2f}), "
          f"contexts {tm['contexts_seconds']:.2f}")


if __name__ == "__main__":
    main()
