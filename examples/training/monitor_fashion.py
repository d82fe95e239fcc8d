"""The training monitor on a real run: MiniAlexNet-like on Fashion-MNIST, spectra every 50 steps.

    python examples/training/monitor_fashion.py --run runs/fashion --html docs/training/run.html

Trains the model of ``phases_batch_size.py`` (5000 images, batch size 8, SGD with momentum,
MSE on one-hot labels) with a :class:`weightspectra.training.Monitor` in the loop, logging the
loss and the test accuracy beside the spectra, then prints the run's summary (the text of
``weightspectra runs show``) and writes its HTML page.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _fashion import MiniAlexNet, accuracy, fashion_mnist, train

from weightspectra.training import Monitor, read_run
from weightspectra.training.html import write_run_html
from weightspectra.training.render import run_summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/fashion"))
    p.add_argument("--html", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--every", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(1)
    x, y, xt, yt = fashion_mnist(5000, 2000, seed=0)
    torch.manual_seed(0)
    model = MiniAlexNet((16, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
    steps_per_epoch = -(-x.shape[0] // args.batch_size)
    monitor = Monitor(
        args.run, every=args.every, resume="overwrite", total_steps=args.epochs * steps_per_epoch
    )
    state = {"step": 0}

    def on_step(step: int) -> None:
        state["step"] = step
        monitor.step(model, step=step)

    def on_epoch(epoch: int, loss: float) -> None:
        monitor.log(state["step"], epoch=epoch, loss=loss, test_accuracy=accuracy(model, xt, yt))

    start = time.perf_counter()
    train(model, x, y, batch_size=args.batch_size, seed=0, max_epochs=args.epochs,
          optimizer=opt, scheduler=sched, patience=args.epochs + 1, on_step=on_step,
          on_epoch=on_epoch)  # fmt: skip
    monitor.close()
    wall = time.perf_counter() - start
    run = read_run(args.run)
    print(run_summary(run))
    print(f"training {wall:.0f} s, of which the monitor {monitor.seconds_blocking:.1f} s")
    if args.html is not None:
        print(f"wrote {write_run_html(run, args.html)}")


if __name__ == "__main__":
    main()
