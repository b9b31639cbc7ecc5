#!/usr/bin/python3
"""Reference values for tests/test_stats.c and tests/test_analyze.c.

Regenerate the fixtures (numpy + scipy, i.e. the system python):
    /usr/bin/python3 tests/ref/analyze_ref.py tests/fixtures/analyze

Each fixture is a text file of named arrays:
    name rows cols
    v v v ...            (rows*cols values, row-major)
float32 inputs are written exactly (the shortest repr of their double value).
"""
import os
import sys

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage


def put(f, name, a):
    a = np.asarray(a)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    elif a.ndim == 1:
        a = a.reshape(1, -1)
    assert a.ndim == 2
    f.write(f"{name} {a.shape[0]} {a.shape[1]}\n")
    if np.issubdtype(a.dtype, np.integer):
        vals = [str(int(v)) for v in a.ravel()]
    else:
        vals = [repr(float(v)) for v in a.ravel()]
    for i in range(0, len(vals), 8):
        f.write(" ".join(vals[i:i + 8]) + "\n")


# ---------------------------------------------------------------- moments
def moments(f):
    rng = np.random.default_rng(1)
    n, d = 300, 8
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d)
    X[:, 0] += 1000.0                      # large mean: cancellation check
    X[:, 1] = np.maximum(X[:, 1], 0)       # ReLU-like, exact zeros
    X[:, 2] = X[:, 3] * 0.8 + 0.2 * X[:, 2]  # correlated pair
    X[:150, 4] += 5.0                      # shift between halves: merge re-centring
    X = X.astype(np.float32)
    Xd = X.astype(np.float64)
    eps, topk = 0.5, 3
    coact = np.zeros((d, d), np.int64)
    for r in range(n):
        top = np.argsort(-X[r], kind="stable")[:topk]
        for a in top:
            for b in top:
                coact[a, b] += 1
    put(f, "X", X)
    put(f, "params", np.array([eps, topk, 137]))  # eps, topk, split row for merge tests
    put(f, "mean", Xd.mean(0))
    put(f, "cov", np.cov(Xd, rowvar=False))
    put(f, "corr", np.corrcoef(Xd, rowvar=False))
    put(f, "n_pos", (X > 0).sum(0).astype(np.int64))
    put(f, "n_nz", (np.abs(X) > np.float32(eps)).sum(0).astype(np.int64))
    put(f, "sum_abs", np.abs(Xd).sum(0))
    put(f, "max", X.max(0))
    put(f, "min", X.min(0))
    put(f, "coact", coact)


# ---------------------------------------------------------------- CKA, BI
def cka_feature(X, Y):
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return np.linalg.norm(X.T @ Y) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def hsic1(K, L):
    n = K.shape[0]
    K = K.copy()
    L = L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    o = np.ones(n)
    return (np.sum(K * L) + (o @ K @ o) * (o @ L @ o) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (o @ K @ L @ o)) / (n * (n - 3))


def cka(f):
    rng = np.random.default_rng(2)
    # feature-space branch (n large vs widths)
    X1 = rng.normal(size=(100, 12))
    Y1 = X1 @ rng.normal(size=(12, 20)) + 0.5 * rng.normal(size=(100, 20)) + 3.0
    X1, Y1 = X1.astype(np.float32), Y1.astype(np.float32)
    # Gram-space branch (n small vs widths)
    X2 = rng.normal(size=(16, 40)).astype(np.float32)
    Y2 = (np.tanh(X2.astype(np.float64) @ rng.normal(size=(40, 30)))).astype(np.float32)
    put(f, "X1", X1)
    put(f, "Y1", Y1)
    put(f, "cka1", cka_feature(X1, Y1))
    put(f, "X2", X2)
    put(f, "Y2", Y2)
    put(f, "cka2", cka_feature(X2, Y2))
    # minibatch CKA over 3 layers, 4 batches of 16 rows
    Z0 = rng.normal(size=(64, 10))
    Z1 = np.maximum(Z0 @ rng.normal(size=(10, 14)), 0) + 0.3 * rng.normal(size=(64, 14))
    Z2 = rng.normal(size=(64, 10)) + 0.1 * Z0
    Zs = [z.astype(np.float32) for z in (Z0, Z1, Z2)]
    H = np.zeros((3, 3))
    for b in range(4):
        Ks = [z[b * 16:(b + 1) * 16].astype(np.float64) for z in Zs]
        Ks = [z @ z.T for z in Ks]
        for i in range(3):
            for j in range(3):
                H[i, j] += hsic1(Ks[i], Ks[j])
    for i, z in enumerate(Zs):
        put(f, f"Z{i}", z)
    put(f, "cka_mb", H / np.sqrt(np.outer(np.diag(H), np.diag(H))))
    # block influence
    xin = rng.normal(size=(50, 16))
    xout = xin + 0.7 * rng.normal(size=(50, 16))
    xin[7] = 0.0  # zero vector: cosine 0
    xin, xout = xin.astype(np.float32), xout.astype(np.float32)
    a, b = xin.astype(np.float64), xout.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.where((na > 0) & (nb > 0), (a * b).sum(1) / np.where(na * nb > 0, na * nb, 1), 0)
    put(f, "bi_in", xin)
    put(f, "bi_out", xout)
    put(f, "bi", 1 - cos.mean())


# ---------------------------------------------------------------- clustering
THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.1), 2)


def corrclust_case(f, tag, seed, n, n_factors, n_samples):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n_samples, n_factors))
    W = rng.normal(size=(n_factors, n)) * (rng.uniform(size=(n_factors, n)) < 0.4)
    X = F @ W + rng.normal(size=(n_samples, n)) * rng.uniform(0.2, 2.0, size=n)
    corr = np.corrcoef(X, rowvar=False)
    iu = np.triu_indices(n, 1)
    dist = (1.0 - np.abs(corr[iu])).astype(np.float32).astype(np.float64)
    Z = linkage(dist, method="average")
    # thresholds must not sit on a merge height, where float rounding decides
    margin = np.min(np.abs(Z[:, 2][:, None] - THRESHOLDS[None, :]))
    assert margin > 1e-4, (tag, margin)
    labels = np.stack([fcluster(Z, t, criterion="distance") for t in THRESHOLDS])
    put(f, f"{tag}_corr", corr)
    put(f, f"{tag}_Z", Z)
    put(f, f"{tag}_labels", labels.astype(np.int64))


def corrclust(f):
    put(f, "thresholds", THRESHOLDS)
    corrclust_case(f, "A", 3, 40, 5, 200)
    corrclust_case(f, "B", 4, 150, 12, 300)


# ---------------------------------------------------------------- k-means
def lloyd(X, C, max_iter):
    """Mirror of kf_kmeans_lloyd: centres are stored as float32."""
    X = X.astype(np.float64)
    C = C.astype(np.float64).copy()
    n, k = len(X), len(C)
    it, prev = 0, None
    while True:
        D = ((X[:, None, :] - C[None]) ** 2).sum(-1)
        lab = D.argmin(1)
        mind = D[np.arange(n), lab]
        if it > 0 and np.array_equal(lab, prev):
            break
        if it == max_iter:
            break
        cnt = np.bincount(lab, minlength=k)
        for j in range(k):
            if cnt[j] == 0:
                cand = [i for i in range(n) if mind[i] >= 0 and cnt[lab[i]] > 1]
                far = max(cand, key=lambda i: (mind[i], -i))
                cnt[lab[far]] -= 1
                cnt[j] += 1
                lab[far] = j
                mind[far] = -1
        C = np.array([X[lab == j].mean(0) for j in range(k)]).astype(np.float32).astype(np.float64)
        prev = lab.copy()
        it += 1
    return ((X - C[lab]) ** 2).sum(), lab, it


def silhouette_values(X, lab, k):
    X = X.astype(np.float64)
    D = np.sqrt(((X[:, None, :] - X[None]) ** 2).sum(-1))
    cnt = np.bincount(lab, minlength=k)
    s = np.zeros(len(X))
    for i in range(len(X)):
        li = lab[i]
        if cnt[li] <= 1:
            continue
        a = D[i, lab == li].sum() / (cnt[li] - 1)
        b = min(D[i, lab == c].mean() for c in range(k) if c != li and cnt[c] > 0)
        s[i] = (b - a) / max(a, b)
    return s


def kmeans(f):
    rng = np.random.default_rng(5)
    k, per, d = 4, 60, 6
    centres = rng.normal(size=(k, d)) * 3.0
    truth = np.repeat(np.arange(k), per)
    X = (centres[truth] + rng.normal(size=(k * per, d))).astype(np.float32)
    init_idx = np.array([0, 1, 2, 61])  # three starts in blob 0: several iterations
    init = X[init_idx]
    obj, lab, it = lloyd(X, init, 100)
    assert it >= 3, it
    obj2, lab2, it2 = lloyd(X, init, 1)
    put(f, "X", X)
    put(f, "truth", truth.astype(np.int64))
    put(f, "init", init)
    put(f, "lloyd", np.array([obj, it]))
    put(f, "lloyd_labels", lab.astype(np.int64))
    put(f, "lloyd1", np.array([obj2, it2]))
    put(f, "lloyd1_labels", lab2.astype(np.int64))
    put(f, "sil_values", silhouette_values(X, truth, k))
    lab5 = truth.copy()
    lab5[0] = 4  # singleton cluster
    put(f, "sil5_values", silhouette_values(X, lab5, 5))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/analyze"
    os.makedirs(out, exist_ok=True)
    for name, fn in (("moments", moments), ("cka", cka), ("corrclust", corrclust), ("kmeans", kmeans)):
        with open(os.path.join(out, name + ".txt"), "w") as f:
            fn(f)


if __name__ == "__main__":
    main()
