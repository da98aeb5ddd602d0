"""`python -m tests.ddp_sgd ARGS`: `python -m daug ARGS` with plain SGD as the training optimizer.

The two-process test compares trajectories of one and two processes. Adam divides each update by the
gradient's running size, so where a gradient is ~0 the last-bit rounding of the two-process sum
(which differs between CPUs: Intel Xeon vs AMD EPYC) moves the update by up to lr, not by rounding
size. Under SGD the update is linear in the gradient: equal summed gradients give equal weights up
to float rounding on every CPU, which is the invariant distributed training must keep.
"""
from __future__ import annotations

import sys

import torch

from daug.training import loop


def sgd(params, cfg):
    return torch.optim.SGD(params, lr=cfg.learning_rate)


if __name__ == "__main__":
    from daug.cli import main

    loop.make_optimizer = sgd
    sys.exit(main(sys.argv[1:]))
