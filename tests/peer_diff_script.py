"""Run the peer (weightwatcher 0.7.7) on the differential suite's architectures.

Run only in a subprocess: importing the peer reconfigures logging and warnings process-wide.
Usage: python peer_diff_script.py OUT_DIR NAME [NAME ...]
Writes OUT_DIR/NAME--CONFIG.csv for the defaults and each option set of
peer_diff_models.CONFIGS, OUT_DIR/NAME.checksum, and OUT_DIR/methods.txt (the peer's public
methods).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import peer_diff_models


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    import weightwatcher as ww

    methods = sorted(m for m in dir(ww.WeightWatcher) if not m.startswith("_"))
    (out / "methods.txt").write_text("\n".join(methods) + "\n")
    for name in sys.argv[2:]:
        model = peer_diff_models.build(name)
        (out / f"{name}.checksum").write_text(repr(peer_diff_models.checksum(model)))
        for config in ("default", *peer_diff_models.CONFIGS[name]):
            kwargs = peer_diff_models.options(name, config)
            with contextlib.redirect_stdout(io.StringIO()):  # the peer prints from its fitter
                details = ww.WeightWatcher(model=model).analyze(**kwargs)
            details.to_csv(out / f"{name}--{config}.csv", index=False)


if __name__ == "__main__":
    main()
