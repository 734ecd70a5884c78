"""What the data-parallel training test launches under torchrun: ``recsys train`` once per argument list (JSON),
in one process group, keeping each rank's fitted parameters (``OUT/rank<r>-<i>.npz``) for the test to compare."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from recsys.cli import main
from recsys.distributed import process_group
from recsys.models.base import Model

if __name__ == "__main__":
    out, runs = Path(sys.argv[1]), json.loads(sys.argv[2])
    fitted: list[Model] = []
    fit = Model.fit

    def fit_and_keep(self, *args, **kwargs):
        fitted.append(fit(self, *args, **kwargs))
        return fitted[-1]

    Model.fit = fit_and_keep
    with process_group("the test"):
        for i, argv in enumerate(runs):
            if main(argv) != 0:
                sys.exit(2)
            state = {k: v.numpy() for k, v in fitted[i].net_.state_dict().items()}
            np.savez(out / f"rank{os.environ['RANK']}-{i}.npz", **state)
