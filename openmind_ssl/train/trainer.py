"""The pretraining loop: one config, one process per GPU under torchrun, exact resume.

``Pretrainer(config).fit()`` streams crops (``openmind_ssl.data.OpenMindStream``, endless
epochs, each rank and DataLoader worker its own row groups), and per step: asks the method for
its loss, normalises it by the weight summed over every rank, steps the optimizer under bf16
autocast on CUDA with gradient clipping and the warm-up + polynomial learning rate, and logs a
metrics row. ``OUT/latest.pt`` is written every ``checkpoint_every`` epochs and when SIGTERM or
SIGUSR1 arrives (the run then stops after the step in progress); ``OUT/final.pt`` at the end.
Started again with the same config, a run resumes from ``latest.pt`` and continues as if it had
never stopped: same batches, same masks, same random states, same weights.
"""

from __future__ import annotations

import logging
import resource
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from openmind_data.errors import ConfigError
from openmind_ssl.data import Augmentation, OpenMindStream, Position, Preprocessing, StreamOptions
from openmind_ssl.methods import Batch, Method, make_method
from openmind_ssl.models import adaptation_keys, parameter_count
from openmind_ssl.train import checkpoint
from openmind_ssl.train.config import PretrainConfig, check_same_run, from_dict, to_dict
from openmind_ssl.train.distributed import Distributed, setup
from openmind_ssl.train.metrics import open_metrics
from openmind_ssl.train.optimizer import build_optimizer
from openmind_ssl.train.schedule import learning_rate
from openmind_ssl.train.step import OptimizerStep

__all__ = ["PretrainResult", "Pretrainer"]

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: Keys that may change between a run and its resume without changing what it computes.
RESUMABLE_CHANGES = {("train", "progress"), ("train", "metrics"), ("train", "out")}


@dataclass
class PretrainResult:
    step: int  # optimizer steps done
    stopped: bool  # by a signal, before the last step
    checkpoint: Path
    losses: list[float] = field(default_factory=list)  # of the steps run in this call


class Pretrainer:
    def __init__(self, config: PretrainConfig, distributed: Distributed | None = None) -> None:
        self.config = config
        self.dist = distributed or setup()
        self.out = Path(config.train.out)
        train = config.train
        if train.batch_size % self.dist.world_size:
            raise ConfigError(
                f"train.batch_size {train.batch_size} does not split evenly across"
                f" {self.dist.world_size} ranks"
            )
        self.local_batch = train.batch_size // self.dist.world_size
        self.method: Method = make_method(config)
        torch.manual_seed(train.seed)  # the same initial weights on every rank
        self.network = self.method.build().to(self.dist.device)
        self.model: nn.Module = self.network
        if self.dist.active:
            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.network, device_ids=ids)
        if train.compile:
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        self.optimizer = build_optimizer(self.network.parameters(), config.optim)
        self.stepper = OptimizerStep(self.dist.device, train.amp)
        self.step = 0
        self.resume_at: dict[int, Position] = {}
        self.rotation = 0  # the DataLoader's turn among its workers
        self.workers = max(1, config.data.workers)
        self._stop = False

    # -- the loop ------------------------------------------------------------------------

    def fit(self) -> PretrainResult:
        """Train to ``train.epochs`` (or until a stop signal), resuming from ``latest.pt``."""
        train = self.config.train
        self.out.mkdir(parents=True, exist_ok=True)
        states = self._resume()
        if self.dist.is_main:
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(self.config)))
            log.info(
                "%s on %s: %d parameters, %d ranks, batch %d, from step %d",
                self.method.name,
                self.config.model.architecture,
                parameter_count(self.network),
                self.dist.world_size,
                train.batch_size,
                self.step,
            )
        samples = self.samples()
        if states is not None:  # after the loader drew its seeds, so nothing else moves them
            checkpoint.restore_random_state(states[self.dist.rank])
        else:
            torch.manual_seed(train.seed + self.dist.rank)
        metrics = open_metrics(train.metrics, self.out, self.step) if self.dist.is_main else None
        losses: list[float] = []
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        bar = tqdm(
            total=train.total_steps,
            initial=self.step,
            disable=not (train.progress and self.dist.is_main),
            unit="step",
        )
        stopped = False
        try:
            while self.step < train.total_steps:
                row = self.train_step(samples)
                losses.append(row["loss"])
                self.step += 1
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", refresh=False)
                bar.update()
                if metrics is not None:
                    metrics.write(row)
                end_of_epoch = self.step % train.steps_per_epoch == 0
                epochs_done = self.step // train.steps_per_epoch
                if self._stop_agreed():
                    stopped = self.step < train.total_steps
                    break
                if end_of_epoch and epochs_done % train.checkpoint_every == 0:
                    self._save("latest.pt")
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if metrics is not None:
                metrics.close()
            del samples  # shuts the DataLoader's workers down
        path = self._save("latest.pt")
        if not stopped:
            path = self._save("final.pt")
        elif self.dist.is_main:
            log.warning("stopped at step %d; the same command resumes from %s", self.step, path)
        return PretrainResult(self.step, stopped, path, losses)

    def train_step(self, samples: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """One optimizer step on the next batch of ``samples``; its metrics row. ``fit`` counts
        the steps; a caller stepping by hand (a benchmark) advances ``self.step`` itself."""
        train, optim = self.config.train, self.config.optim
        started = time.perf_counter()
        batch = self._batch(samples)
        waited = time.perf_counter() - started
        lr = learning_rate(
            self.step,
            peak=optim.lr,
            warmup_steps=optim.warmup_epochs * train.steps_per_epoch,
            total_steps=train.total_steps,
            exponent=optim.poly_exponent,
        )
        self.stepper.begin(self.optimizer, lr)
        with self.stepper.autocast():
            terms = self.method.loss(self.model, batch, train.seed)
        weight = self.dist.sum(terms.weight).clamp_min(1e-12)
        # DDP averages gradients over ranks: scale so that the average is the global mean.
        loss = terms.total * self.dist.world_size / weight
        parameters = self.network.parameters()
        grad_norm = self.stepper.finish(loss, self.optimizer, parameters, optim.grad_clip)
        self.method.after_step(self.network)
        total = self.dist.sum(terms.total.detach()) / weight
        elapsed = time.perf_counter() - started
        return {
            "step": self.step + 1,
            "epoch": self.step // train.steps_per_epoch,
            "loss": float(total),
            "lr": lr,
            "grad_norm": float(grad_norm),
            "samples_per_s": train.batch_size / elapsed,
            "data_wait": waited / elapsed,
            "peak_memory_gb": _peak_memory_gb(self.dist.device),
            **terms.logs,
        }

    # -- data ----------------------------------------------------------------------------

    def samples(self) -> Iterator[dict[str, Any]]:
        """The run's crops, endless: its stream from the resume points, through a DataLoader."""
        data, train = self.config.data, self.config.train
        options = StreamOptions(
            modalities=data.modalities,
            split=data.split,
            max_iqs=data.max_iqs,
            licenses=data.licenses,
            dataset_ids=data.dataset_ids,
            crop_size=train.patch_size,
            crops_per_volume=data.crops_per_volume,
            shuffle_buffer=data.shuffle_buffer,
            preprocessing=Preprocessing(spacing=data.spacing),
            seed=train.seed,
            max_failures=data.max_failures,
            cache=data.cache,
            augmentation=Augmentation() if data.augment else None,
            repeat=True,
        )
        stream = OpenMindStream(data.source, options)
        readers = self.dist.world_size * self.workers
        if len(stream.units) < readers:
            raise ConfigError(
                f"{data.source}: {len(stream.units)} row groups selected for {readers} readers"
                f" ({self.dist.world_size} ranks x {self.workers} workers); every reader needs"
                " one: use fewer data.workers, or build with smaller row groups (--row-group-mb)"
            )
        stream.set_epoch(0, self.resume_at, self.rotation)
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=data.workers,
            pin_memory=self.dist.device.type == "cuda",
            generator=torch.Generator().manual_seed(train.seed),  # leaves the global RNG alone
            prefetch_factor=4 if data.workers else None,
        )
        return iter(loader)

    def _batch(self, samples: Iterator[dict[str, Any]]) -> Batch:
        try:
            taken = [next(samples) for _ in range(self.local_batch)]
        except StopIteration:
            raise RuntimeError(
                f"{self.config.data.source}: the stream of rank {self.dist.rank} ran dry: its"
                " row groups hold no selected rows (see the warnings); loosen the data filters"
                " or use fewer workers"
            ) from None
        for sample in taken:
            self.resume_at[sample["reader"]] = sample["position"].next
        self.rotation = (self.rotation + len(taken)) % self.workers
        device = self.dist.device
        first = (self.step * self.dist.world_size + self.dist.rank) * self.local_batch

        def stack(key: str) -> torch.Tensor:
            tensors = [s[key] for s in taken]
            return torch.stack(tensors).to(device, torch.float32, non_blocking=True)

        return Batch(
            image=stack("image"),
            anat_mask=stack("anat_mask"),
            anon_mask=stack("anon_mask"),
            keys=list(range(first, first + self.local_batch)),
        )

    # -- checkpoints and signals ---------------------------------------------------------

    def _save(self, name: str) -> Path:
        """Write ``OUT/name`` from rank 0 with every rank's data positions and random
        states; every rank must call it."""
        positions = self.dist.gather(self.resume_at)
        states = self.dist.gather(checkpoint.random_state())
        path = self.out / name
        if self.dist.is_main:
            merged = {reader: at for part in positions for reader, at in part.items()}
            scaler = self.stepper.scaler
            checkpoint.save(
                path,
                {
                    "model": self.network.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "step": self.step,
                    "epoch": self.step // self.config.train.steps_per_epoch,
                    "data": {
                        "resume": {r: [p.epoch, p.unit, p.sample] for r, p in merged.items()},
                        "rotation": self.rotation,
                    },
                    "random": states,
                    "config": to_dict(self.config),
                    "architecture": {
                        "name": self.config.model.architecture,
                        "method": self.method.name,
                        "parameters": parameter_count(self.network),
                        "trainable_parameters": sum(
                            p.numel() for p in self.network.parameters() if p.requires_grad
                        ),
                        "patch_size": list(self.method.network_input_size),
                        "input_channels": 1,
                        **adaptation_keys(self.network),
                    },
                    "versions": {"torch": torch.__version__},
                },
            )
        self.dist.barrier()
        return path

    def _resume(self) -> list[dict[str, Any]] | None:
        """Load ``OUT/latest.pt`` if there is one; the random states of every rank."""
        path = self.out / "latest.pt"
        if not path.is_file():
            return None
        saved = checkpoint.load(path)
        config = to_dict(from_dict(saved["config"], str(path)))
        check_same_run(config, to_dict(self.config), path, RESUMABLE_CHANGES)
        self.network.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.stepper.scaler is not None and saved["scaler"] is not None:
            self.stepper.scaler.load_state_dict(saved["scaler"])
        self.step = int(saved["step"])
        data = saved["data"]
        self.resume_at = {int(r): Position(*at) for r, at in data["resume"].items()}
        self.rotation = int(data["rotation"])
        states: list[dict[str, Any]] = saved["random"]
        if len(states) != self.dist.world_size:
            raise ConfigError(
                f"{path} was written by {len(states)} ranks; resume it on as many"
                f" (this run has {self.dist.world_size})"
            )
        if self.dist.is_main:
            log.info("resuming from %s at step %d", path, self.step)
        return states

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d: stopping after this step", signum)
        self._stop = True

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop (every rank stops at the same step)."""
        if not self.dist.active:
            return self._stop
        flag = torch.tensor(float(self._stop), device=self.dist.device)
        return bool(self.dist.sum(flag) > 0)


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
