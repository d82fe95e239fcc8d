"""Run the peer's README examples (weightwatcher 0.7.7) on two seeded test MLPs; write JSON.

Run only in a subprocess: importing the peer reconfigures logging and warnings process-wide.
Usage: python peer_readme_script.py OUT.json
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import models


def main() -> None:
    import weightwatcher as ww

    model, other = models.build("MLP", 0), models.build("MLP", 1)
    out: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        watcher = ww.WeightWatcher(model=model)
        details = watcher.analyze()
        out["summary"] = watcher.get_summary(details)
        out["describe"] = watcher.describe()[["layer_id", "name"]].to_dict("list")
        layer = int(details["layer_id"][0])
        out["esd_layer"] = layer
        out["esd"] = [float(x) for x in watcher.get_ESD(layer=layer)]
        avg_w, avg_b, frame = watcher.distances(model, other, method="euclidean")
        out["distances"] = {"avg_dW": avg_w, "avg_db": avg_b, "delta_W": list(frame["delta_W"])}
        delta = ww.WeightWatcher(model=other, base_model=model).analyze()
        out["delta"] = delta[["name", "lambda_max", "alpha"]].to_dict("list")
    Path(sys.argv[1]).write_text(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
