#!/usr/bin/python3
"""Reference for the elastic-net logistic regression (src/probe/logreg.c).

Writes a fixture: sizes, l1, l2, balanced, X (N,D) float32, y (N), then the
objective of scikit-learn's solution, computed in float64 in kfuse's scaling
F = (1/N) sum_i s_i CE_i + l1 |W|_1 + l2 |W|_2^2 (probe/logreg.h), and its
training accuracy. scikit-learn: LogisticRegression(penalty='elasticnet',
solver='saga', l1_ratio = l1/(l1+2 l2), C = 1/(N (l1+2 l2))), which
minimises N C F: its solution is scored here by F itself.

Usage: /usr/bin/python3 tests/ref/probe_ref.py OUT.txt SEED L1 L2 BALANCED
"""
import sys
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression


def objective(X, y, W, b, l1, l2, sw):
    z = X @ W.T + b
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    ce = lse - z[np.arange(len(y)), y]
    return (sw * ce).sum() / len(y) + l1 * np.abs(W).sum() + l2 * (W * W).sum()


def main():
    out, seed, l1, l2, balanced = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
    rng = np.random.default_rng(seed)
    N, D, K = 400, 12, 4
    X = rng.standard_normal((N, D)).astype(np.float32)
    Wt = np.zeros((K, D))
    Wt[:, :5] = 1.5 * rng.standard_normal((K, 5))  # 7 features carry nothing
    z = X.astype(np.float64) @ Wt.T + np.array([1.0, 0.0, -0.5, -1.0]) + 1.0 * rng.standard_normal((N, K))
    y = z.argmax(axis=1).astype(np.int32)
    a = l1 + 2 * l2
    clf = LogisticRegression(penalty="elasticnet", solver="saga", l1_ratio=l1 / a, C=1.0 / (N * a),
                             class_weight="balanced" if balanced else None, tol=1e-12, max_iter=200000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X.astype(np.float64), y)
    counts = np.bincount(y, minlength=K)
    sw = N / (K * counts[y]) if balanced else np.ones(N)
    F = objective(X.astype(np.float64), y, clf.coef_, clf.intercept_, l1, l2, sw)
    acc = (clf.predict(X.astype(np.float64)) == y).mean()
    with open(out, "w") as f:
        f.write(f"{N} {D} {K} {l1!r} {l2!r} {int(balanced)}\n")
        f.write(" ".join(repr(float(v)) for v in X.ravel()) + "\n")
        f.write(" ".join(str(int(v)) for v in y) + "\n")
        f.write(f"{F!r} {acc!r} {int((clf.coef_ == 0).sum())}\n")
    print(f"{out}: F={F:.10g} acc={acc:.4f} zeros={(clf.coef_ == 0).sum()} iters={clf.n_iter_}")


main()
