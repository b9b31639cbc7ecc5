#!/usr/bin/python3
"""scikit-learn reference for kfuse probe's per-block probes.

Reads DIR/probe.json and the features kfuse wrote (DIR/features/*.npy),
standardises each block with the training rows' mean and standard deviation
(as src/probe/dalvi.c does), fits LogisticRegression(penalty='elasticnet',
solver='saga', random_state=0) with kfuse's penalty mapped to scikit-learn's
scaling (l1_ratio = l1/(l1+2 l2), C = 1/(N (l1+2 l2)), probe/logreg.h), and
prints per block: kfuse's test accuracy and scikit-learn's, the gap in points,
and kfuse's objective F (probe.json) beside F at scikit-learn's solution
(F = mean weighted log-loss + l1 |W|_1 + l2 |W|_2^2, kfuse's scaling).
Exits 1 when a gap exceeds MAX_GAP points, or when kfuse's F is more than
MAX_EXCESS (relative) above scikit-learn's: kfuse must reach at least the
reference's objective.

Usage: /usr/bin/python3 tests/ref/probe_sklearn.py DIR BLOCKS(comma list) MAX_GAP [MAX_ITER [MAX_EXCESS]]
"""
import json
import sys
import time
import warnings

import numpy as np
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression


def objective(W, b, X, y, sw, l1, l2):
    z = X @ W.T + b
    loss = logsumexp(z, axis=1) - z[np.arange(len(y)), y]
    return (sw * loss).mean() + l1 * np.abs(W).sum() + l2 * (W * W).sum()


def main():
    d, blocks, max_gap = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], float(sys.argv[3])
    max_iter = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    max_excess = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-4
    p = json.load(open(f"{d}/probe.json"))
    assert p["options"]["features"] == "residual"
    C = p["model"]["n_embd"]
    l1, l2 = p["options"]["l1"], p["options"]["l2"]
    balanced = p["options"]["balanced"]
    runs = {r["name"]: r for r in p["result"]["runs"]}
    X = {s: np.load(f"{d}/features/{s}.npy", mmap_mode="r") for s in ("train", "test")}
    y = {s: np.load(f"{d}/features/{s}_labels.npy") for s in ("train", "test")}
    N = len(y["train"])
    classes, counts = np.unique(y["train"], return_counts=True)
    yi = np.searchsorted(classes, y["train"])
    sw = N / (len(classes) * counts[yi]) if balanced else np.ones(N)
    a = l1 + 2 * l2
    fails = []
    for b in blocks:
        xtr = np.asarray(X["train"][:, b * C:(b + 1) * C], dtype=np.float64)
        xte = np.asarray(X["test"][:, b * C:(b + 1) * C], dtype=np.float64)
        mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
        sd[sd == 0] = 1
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        clf = LogisticRegression(penalty="elasticnet", solver="saga", l1_ratio=l1 / a, C=1.0 / (N * a),
                                 class_weight="balanced" if balanced else None,
                                 tol=1e-4, max_iter=max_iter, random_state=0)
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xtr, y["train"])
        acc = (clf.predict(xte) == y["test"]).mean()
        f_sk = objective(clf.coef_, clf.intercept_, xtr, yi, sw, l1, l2)
        run = runs[f"block {b}"]
        k, f_kf = p["result"]["blocks"]["test"][b], run["objective"]
        gap, excess = 100 * abs(acc - k), (f_kf - f_sk) / f_sk
        print(f"block {b}: test accuracy kfuse {k:.4f} sklearn {acc:.4f} gap {gap:.2f} points; "
              f"F kfuse {f_kf:.6f} ({run['iterations']} iterations) sklearn {f_sk:.6f} "
              f"({clf.n_iter_[0]} saga epochs, {time.time() - t0:.1f} s), kfuse - sklearn {excess:+.1e} relative; "
              f"zero weights sklearn {np.mean(clf.coef_ == 0):.2f}")
        if gap > max_gap:
            fails.append(f"block {b}: accuracy gap {gap:.2f} points > {max_gap}")
        if excess > max_excess:
            fails.append(f"block {b}: kfuse's objective {excess:.1e} relative above scikit-learn's (> {max_excess})")
    for f in fails:
        print("FAIL:", f)
    sys.exit(1 if fails else 0)


main()
