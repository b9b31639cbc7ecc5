"""numpy / PyTorch references for kfuse specialise (tests/test_specialise.c).

usage: specialise_ref.py importance DIR
DIR holds x0.npy, x1.npy (T, F_l activations of two layers), chunk.npy (T, 1
chunk of each token), w.npy (C, 1 bootstrap weights of the chunks) and
imp.npy (6, F0 + F1): kfuse's mean |a|, share a > 0, mean a^2 unweighted,
then the same with the chunk weights. Exits 1 on a mismatch.

usage: specialise_ref.py first-order MODEL_DIR DIR CTX BOS
DIR holds ids.npy (n, 1) int32 and fo.npy (1, n_neuron) float64: kfuse's
first-order estimate of each FFN neuron's ablation cost on the windows of ids
(window w = ids[w*CTX:(w+1)*CTX], first token replaced by BOS when BOS >= 0;
loss = mean over windows and positions t < CTX-1 of -log p(ids[t+1])). Here:
the forward of tests/ref/model_ref.py in float64, dL/da by autograd at every
layer's FFN activations a (B, T, F), estimate_j = -sum_{b,t} a_btj dL/da_btj.
Exits 1 when max |kfuse - torch| > 1e-5 max |torch| (observed: 4e-7 GPT-2, 1.7e-6 Llama).

usage: specialise_ref.py task-first-order MODEL_DIR DIR S0
DIR holds a task's sentences (tokens.npy (n_tok, 1); off.npy (n_sent + 1, 2):
token and item offsets; span.npy (n_items, 2): each item's [start, end)
positions; y.npy labels), a probe (w.npy (K, C), b.npy (K, 1), mean.npy and
inv_sd.npy (C, 1)) and kfuse's fo.npy (1, n_neuron), loss.npy (1, 1) for the
sentences S0 ..: L = mean over their items of the probe's cross-entropy on
z = (x - mean) inv_sd, x the last block's output (before the final norm) at
the item's last sub-word, each sentence run on its own (no padding);
estimate_j = -sum a_j dL/da_j by autograd. Exits 1 when max |kfuse - torch| >
1e-5 max |torch| or the losses differ by more than 1e-5 relative.
"""
import os
import sys

import numpy as np


def importance(d):
    x = np.concatenate([np.load(f"{d}/x0.npy"), np.load(f"{d}/x1.npy")], axis=1).astype(np.float64)
    chunk = np.load(f"{d}/chunk.npy")[:, 0]
    w = np.load(f"{d}/w.npy")[:, 0]
    got = np.load(f"{d}/imp.npy")
    stats = [np.abs(x), (x > 0).astype(np.float64), x * x]
    tw = w[chunk]  # each token weighs as much as its chunk was drawn
    want = [s.mean(axis=0) for s in stats] + [(s * tw[:, None]).sum(axis=0) / tw.sum() for s in stats]
    err = np.max(np.abs(np.array(want) - got) / (np.abs(np.array(want)) + 1e-12))
    print(f"importance: max relative difference {err:.2e}")
    return err < 1e-12


def first_order(model_dir, d, ctx, bos):
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import model_ref

    cfg, w = model_ref.load(model_dir)
    ids = np.load(f"{d}/ids.npy")[:, 0].astype(np.int64)
    n_win = len(ids) // ctx
    tok = torch.tensor(ids[: n_win * ctx].reshape(n_win, ctx))
    if bos >= 0:
        tok[:, 0] = bos
    acts = []

    def hook(l, h, act, w_down):
        # no weight requires a gradient: layer 0's activations become the leaf
        # every later activation depends on
        if act.requires_grad:
            act.retain_grad()
        else:
            act = act.detach().requires_grad_()
        acts.append(act)
        return act

    logits = model_ref.forward(cfg, w, tok, act_hook=hook)
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, tok[:, 1:, None]).sum() / (n_win * (ctx - 1))
    nll.backward()
    want = torch.cat([-(a * a.grad).sum(dim=(0, 1)) for a in acts]).detach().numpy()
    got = np.load(f"{d}/fo.npy")[0]
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    print(f"first-order ({os.path.basename(model_dir)}): {len(want)} neurons, loss {nll.item():.5f}, "
          f"max |estimate| {np.max(np.abs(want)):.3e}, max difference / max |estimate| {err:.2e}")
    return err < 1e-5


def task_first_order(model_dir, d, s0):
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import model_ref

    cfg, w = model_ref.load(model_dir)
    tokens = np.load(f"{d}/tokens.npy")[:, 0].astype(np.int64)
    off = np.load(f"{d}/off.npy")
    span = np.load(f"{d}/span.npy")
    y = np.load(f"{d}/y.npy")[:, 0]
    W = torch.tensor(np.load(f"{d}/w.npy"), dtype=torch.float64)
    b = torch.tensor(np.load(f"{d}/b.npy")[:, 0], dtype=torch.float64)
    mean = torch.tensor(np.load(f"{d}/mean.npy")[:, 0], dtype=torch.float64)
    inv_sd = torch.tensor(np.load(f"{d}/inv_sd.npy")[:, 0], dtype=torch.float64)
    n_sent = len(off) - 1
    n_items = int(off[n_sent, 1] - off[s0, 1])
    acts, terms = [], []

    def hook(l, h, act, w_down):
        if act.requires_grad:
            act.retain_grad()
        else:
            act = act.detach().requires_grad_()
        acts.append(act)
        return act

    for s in range(s0, n_sent):
        tok = torch.tensor(tokens[off[s, 0]:off[s + 1, 0]])[None, :]
        x = model_ref.forward(cfg, w, tok, act_hook=hook, hidden=True)[0]
        items = range(off[s, 1], off[s + 1, 1])
        pos = torch.tensor([span[i, 1] - 1 for i in items])
        z = (x[pos] - mean) * inv_sd
        logp = torch.log_softmax(z @ W.T + b, dim=-1)
        terms.append(-logp[torch.arange(len(pos)), torch.tensor(y[list(items)], dtype=torch.long)].sum())
    loss = torch.stack(terms).sum() / n_items
    loss.backward()
    n_layer = cfg.get("num_hidden_layers") or cfg["n_layer"]
    want = np.concatenate([sum(-(a * a.grad).sum(dim=(0, 1)) for a in acts[l::n_layer]).detach().numpy()
                           for l in range(n_layer)])
    got = np.load(f"{d}/fo.npy")[0]
    got_loss = np.load(f"{d}/loss.npy")[0, 0]
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    lerr = abs(got_loss - loss.item()) / abs(loss.item())
    print(f"task first-order ({os.path.basename(model_dir)}): {n_sent - s0} sentences, {n_items} items, {len(want)} neurons, "
          f"loss {loss.item():.5f} (kfuse {got_loss:.5f}), max |estimate| {np.max(np.abs(want)):.3e}, "
          f"max difference / max |estimate| {err:.2e}")
    return err < 1e-5 and lerr < 1e-5


def main():
    if sys.argv[1] == "importance":
        ok = importance(sys.argv[2])
    elif sys.argv[1] == "task-first-order":
        ok = task_first_order(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        ok = first_order(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
