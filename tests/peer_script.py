"""Run the peer (weightwatcher 0.7.7) on a test model and write its details as CSV.

Run only in a subprocess: importing the peer reconfigures logging and warnings process-wide.
Usage: python peer_script.py MODEL SEED POOL OUT.csv
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import models


def main() -> None:
    name, seed, pool, out = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    import weightwatcher as ww

    model = models.build(name, seed)
    with contextlib.redirect_stdout(io.StringIO()):  # the peer prints from its fitter
        details = ww.WeightWatcher(model=model).analyze(pool=pool)
    details.to_csv(out, index=False)


if __name__ == "__main__":
    main()
