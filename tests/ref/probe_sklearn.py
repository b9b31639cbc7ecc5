#!/usr/bin/python3
"""scikit-learn reference for kfuse probe's per-block probes.

Reads DIR/probe.json and the features kfuse wrote (DIR/features/*.npy),
standardises each block with the training rows' mean and standard deviation
(as src/probe/dalvi.c does), fits LogisticRegression(penalty='elasticnet',
solver='saga') with kfuse's penalty mapped to scikit-learn's scaling
(l1_ratio = l1/(l1+2 l2), C = 1/(N (l1+2 l2)), probe/logreg.h), and prints
per block: kfuse's test accuracy, scikit-learn's, and the gap in points.
Exits 1 when a gap exceeds MAX_GAP points.

Usage: /usr/bin/python3 tests/ref/probe_sklearn.py DIR BLOCKS(comma list) MAX_GAP [MAX_ITER]
"""
import json
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression


def main():
    d, blocks, max_gap = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], float(sys.argv[3])
    max_iter = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    p = json.load(open(f"{d}/probe.json"))
    assert p["options"]["features"] == "residual"
    C = p["model"]["n_embd"]
    l1, l2 = p["options"]["l1"], p["options"]["l2"]
    X = {s: np.load(f"{d}/features/{s}.npy", mmap_mode="r") for s in ("train", "test")}
    y = {s: np.load(f"{d}/features/{s}_labels.npy") for s in ("train", "test")}
    N = len(y["train"])
    a = l1 + 2 * l2
    worst = 0.0
    for b in blocks:
        xtr = np.asarray(X["train"][:, b * C:(b + 1) * C], dtype=np.float64)
        xte = np.asarray(X["test"][:, b * C:(b + 1) * C], dtype=np.float64)
        mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
        sd[sd == 0] = 1
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        clf = LogisticRegression(penalty="elasticnet", solver="saga", l1_ratio=l1 / a, C=1.0 / (N * a),
                                 class_weight="balanced" if p["options"]["balanced"] else None,
                                 tol=1e-4, max_iter=max_iter)
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xtr, y["train"])
        acc = (clf.predict(xte) == y["test"]).mean()
        k = p["result"]["blocks"]["test"][b]
        gap = 100 * abs(acc - k)
        worst = max(worst, gap)
        print(f"block {b}: kfuse {k:.4f} sklearn {acc:.4f} gap {gap:.2f} points "
              f"(saga {clf.n_iter_[0]} epochs, {time.time() - t0:.1f} s)")
    if worst > max_gap:
        print(f"FAIL: gap {worst:.2f} points > {max_gap}")
        sys.exit(1)


main()
