"""Pretraining throughput: samples/s, peak memory and the share of step time spent waiting for
data, per architecture, through the trainer's own step (``Pretrainer``).

For each method (``--methods``, default MAE) and architecture, from the bundled config
``scripts/pretrain_<architecture>_<method>.yaml`` (its crop shape unless ``--patch`` is given,
and not for SimCLR/VoCo, whose views need their own crop shapes), in the same run:
- ``stream``: crops streamed from a dataset folder (``--source``; default ``./openmind``, which
  ``make demo`` builds) by ``--workers`` DataLoader workers, as a real run reads them;
- ``in memory``: the same step fed from crops held in memory (the data never waits): the
  reference the stream is compared with;
- with ``--compile both``, each again under ``torch.compile``;
- Primus-M: the true MAE (the encoder sees the 25% visible tokens) against the same network
  fed every token, forward and backward (what MAE saves).

On a CUDA GPU: ``python benchmarks/pretrain.py --patch 160 --compile both`` (bf16 autocast).
On a CPU the defaults are small (64^3, a few steps) so that it finishes in minutes; ``--tiny``
shrinks the networks too.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from openmind_ssl.data import Position
from openmind_ssl.models import parameter_count
from openmind_ssl.train.config import load_config
from openmind_ssl.train.trainer import Pretrainer

TINY = {
    "resenc_l": ["model.features_per_stage=[8,16,32,64,64]", "model.blocks_per_stage=[1,1,1,1,1]"],
    "primus_m": ["model.embed_dim=96", "model.depth=2", "model.num_heads=4"],
}


SCRIPTS = Path(__file__).parents[1] / "scripts"
OWN_CROPS = {"simclr", "voco"}  # their views are cut from crops of their own shape


def trainer(
    args: argparse.Namespace, method: str, architecture: str, compiled: bool, out: Path
) -> Pretrainer:
    overrides = [
        f"data.source={args.source}",
        f"data.workers={args.workers}",
        f"data.spacing={args.spacing}",
        f"data.cache={args.cache}" if args.cache else "data.cache=null",
        f"train.batch_size={args.batch}",
        f"train.compile={str(compiled).lower()}",
        "train.progress=false",
        f"train.out={out}",
    ]
    if args.patch and method not in OWN_CROPS:
        overrides.append(f"train.patch_size=[{args.patch},{args.patch},{args.patch}]")
    if args.tiny:
        overrides += TINY[architecture]
    return Pretrainer(load_config(SCRIPTS / f"pretrain_{architecture}_{method}.yaml", overrides))


def in_memory(samples: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``samples`` again and again, with positions as the trainer expects them."""
    for count, sample in enumerate(itertools.cycle(samples)):
        yield {**sample, "reader": 0, "position": Position(0, 0, count)}


def measure(
    run: Pretrainer, samples: Iterator[dict[str, Any]], steps: int, warmup: int
) -> dict[str, float]:
    rows = []
    for _ in range(warmup + steps):
        rows.append(run.train_step(samples))
        run.step += 1
    timed = rows[warmup:]
    return {
        "samples_per_s": statistics.median(r["samples_per_s"] for r in timed),
        "data_wait": statistics.median(r["data_wait"] for r in timed),
        "peak_memory_gb": max(r["peak_memory_gb"] for r in timed),
    }


def mae_against_full(run: Pretrainer, steps: int) -> float:
    """Primus: forward + backward time with every token over the true MAE's (25% visible)."""
    network, patch = run.network, run.config.train.patch_size
    device = run.dist.device
    image = torch.randn(run.config.train.batch_size, 1, *patch, device=device)
    tokens = network.num_tokens  # type: ignore[union-attr]
    keep = torch.stack([torch.randperm(tokens)[: tokens // 4] for _ in range(image.shape[0])])
    keep = keep.sort().values.to(device)

    def timed(keep_tokens: torch.Tensor | None) -> float:
        durations = []
        for _ in range(steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
                network(image, keep_tokens).float().square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            durations.append(time.perf_counter() - started)
        return statistics.median(durations[1:])

    return timed(None) / timed(keep)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="openmind")
    parser.add_argument("--cache", default=None, help="a VolumeCache root for the stream")
    parser.add_argument("--methods", nargs="+", default=["mae"])
    parser.add_argument("--architectures", nargs="+", default=["resenc_l", "primus_m"])
    parser.add_argument(
        "--patch",
        type=int,
        default=None if torch.cuda.is_available() else 64,
        help="cubic crops of this edge (default: each config's own; 64 on a CPU)",
    )
    parser.add_argument("--spacing", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20 if torch.cuda.is_available() else 3)
    parser.add_argument("--warmup", type=int, default=5 if torch.cuda.is_available() else 1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--compile", choices=["off", "on", "both"], default="off")
    parser.add_argument("--tiny", action="store_true", help="shrunken networks (CPU smoke runs)")
    args = parser.parse_args()
    device = "cuda " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    crops = f"{args.patch}^3 crops" if args.patch else "each config's crops"
    print(f"device {device}, {crops}, batch {args.batch}, {args.steps} timed steps")
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    print(
        f"{'method':<15}{'model':<10} {'compile':<8} {'data':<10} {'samples/s':>10}"
        f" {'data wait':>10} {'peak GB':>8}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        runs = itertools.product(args.methods, args.architectures, compiles)
        for method, architecture, compiled in runs:
            run = trainer(args, method, architecture, compiled, Path(scratch) / architecture)
            stream = run.samples()
            held = [next(stream) for _ in range(args.batch * 2)]
            results = {
                "stream": measure(run, stream, args.steps, args.warmup),
                "in memory": measure(run, in_memory(held), args.steps, args.warmup),
            }
            del stream
            for data, figures in results.items():
                print(
                    f"{method:<15}{architecture:<10} {compiled!s:<8} {data:<10}"
                    f" {figures['samples_per_s']:>10.2f} {figures['data_wait']:>9.1%}"
                    f" {figures['peak_memory_gb']:>8.2f}"
                )
            ratio = results["stream"]["samples_per_s"] / results["in memory"]["samples_per_s"]
            print(
                f"  {architecture}: {parameter_count(run.network):,} parameters;"
                f" stream / in memory: {ratio:.2f}x"
            )
            if method == "mae" and architecture == "primus_m" and not compiled:
                speedup = mae_against_full(run, args.steps)
                print(f"  primus_m: every token / true MAE (25% visible), fwd+bwd: {speedup:.2f}x")


if __name__ == "__main__":
    main()
