"""numpy reference for kfuse specialise's neuron statistics (tests/test_specialise.c).

usage: specialise_ref.py importance DIR
DIR holds x0.npy, x1.npy (T, F_l activations of two layers), chunk.npy (T, 1
chunk of each token), w.npy (C, 1 bootstrap weights of the chunks) and
imp.npy (6, F0 + F1): kfuse's mean |a|, share a > 0, mean a^2 unweighted,
then the same with the chunk weights. Exits 1 on a mismatch.
"""
import sys

import numpy as np


def main():
    d = sys.argv[2]
    x = np.concatenate([np.load(f"{d}/x0.npy"), np.load(f"{d}/x1.npy")], axis=1).astype(np.float64)
    chunk = np.load(f"{d}/chunk.npy")[:, 0]
    w = np.load(f"{d}/w.npy")[:, 0]
    got = np.load(f"{d}/imp.npy")
    stats = [np.abs(x), (x > 0).astype(np.float64), x * x]
    tw = w[chunk]  # each token weighs as much as its chunk was drawn
    want = [s.mean(axis=0) for s in stats] + [(s * tw[:, None]).sum(axis=0) / tw.sum() for s in stats]
    err = np.max(np.abs(np.array(want) - got) / (np.abs(np.array(want)) + 1e-12))
    print(f"importance: max relative difference {err:.2e}")
    sys.exit(0 if err < 1e-12 else 1)


if __name__ == "__main__":
    main()
