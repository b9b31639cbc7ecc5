#!/usr/bin/python3
"""Reference for the least-squares refit (src/transform/refit.c).

Writes tests/fixtures/transform/refit.txt: sizes, lambda_rel, A (n,F),
A_kept (n,k), W (C,F) as float32 values, then W' = W X^T (G + lambda I)^-1
computed by numpy in float64 with G = A_kept^T A_kept, X = A_kept^T A,
lambda = lambda_rel * mean(diag G).

Usage: /usr/bin/python3 tests/ref/refit_ref.py tests/fixtures/transform/refit.txt
"""
import sys

import numpy as np

rng = np.random.default_rng(7)
n, F, k, C, lam_rel = 300, 12, 7, 5, 1e-3
A = np.maximum(rng.standard_normal((n, F)), -0.2).astype(np.float32)
A_kept = (A[:, :k] + 0.1 * rng.standard_normal((n, k))).astype(np.float32)
W = rng.standard_normal((C, F)).astype(np.float32)

a, ak, w = A.astype(np.float64), A_kept.astype(np.float64), W.astype(np.float64)
G = ak.T @ ak
X = ak.T @ a
lam = lam_rel * np.trace(G) / k
W_new = np.linalg.solve(G + lam * np.eye(k), X @ w.T).T  # (C,k)

with open(sys.argv[1], "w") as f:
    f.write(f"{n} {F} {k} {C} {lam_rel!r}\n")
    for M in (A, A_kept, W):
        f.write(" ".join(repr(float(v)) for v in M.ravel()) + "\n")
    f.write(" ".join(repr(float(v)) for v in W_new.ravel()) + "\n")
