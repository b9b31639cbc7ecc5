#!/usr/bin/python3
"""torch.optim.AdamW reference for kfuse's optimiser (src/train/adamw.c).

  /usr/bin/python3 tests/ref/adamw_ref.py WORK_DIR

WORK_DIR/adamw.json {"n", "steps", "lr": [per step], "beta1", "beta2", "eps", "weight_decay"},
WORK_DIR/w0.bin float32 (n) initial weights, WORK_DIR/grads.bin float32 (steps, n)
gradients; writes WORK_DIR/w_ref.bin float32 (n), the weights after the steps
(torch in float64, each step's learning rate set on the param group).
"""
import json
import os
import sys

import numpy as np
import torch

work = sys.argv[1]
with open(os.path.join(work, "adamw.json")) as f:
    c = json.load(f)
w = torch.tensor(np.fromfile(os.path.join(work, "w0.bin"), dtype="<f4").astype(np.float64), requires_grad=True)
g = np.fromfile(os.path.join(work, "grads.bin"), dtype="<f4").astype(np.float64).reshape(c["steps"], c["n"])
opt = torch.optim.AdamW([w], lr=c["lr"][0], betas=(c["beta1"], c["beta2"]), eps=c["eps"],
                        weight_decay=c["weight_decay"])
for s in range(c["steps"]):
    for group in opt.param_groups:
        group["lr"] = c["lr"][s]
    w.grad = torch.from_numpy(g[s].copy())
    opt.step()
w.detach().numpy().astype("<f4").tofile(os.path.join(work, "w_ref.bin"))
