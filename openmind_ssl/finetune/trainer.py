"""The fine-tuning loop: a downstream network from a pretrained checkpoint, trained by one of the
five schedules, then evaluated on the held-out cases.

``Finetuner(config).fit()``:

1. reads the task and holds out ``task.val_fraction`` of its cases (per class for
   classification), preprocesses every case once (``volumes.prepare``);
2. builds the downstream network and copies the checkpoint's encoder and stem into it
   (``adapt``), or leaves it at its initialisation to train from scratch;
3. per epoch, freezes what the schedule says, builds a fresh optimizer where the trainable set
   changes, and per step sets the schedule's learning rate; segmentation minimises Dice +
   cross-entropy (MONAI's ``DiceCELoss``: soft Dice over the foreground classes of the whole
   batch, as nnU-Net), classification cross-entropy;
4. writes ``OUT/latest.pt`` after every epoch (the same command resumes from it) and
   ``OUT/metrics.csv``;
5. evaluates: segmentation by sliding-window inference (MONAI, Gaussian-weighted windows of the
   training patch) on each held-out case in its preprocessed grid, Dice per class; classification
   by the centre crop, balanced accuracy and AUROC. ``OUT/evaluation.json`` holds the figures,
   ``OUT/final.pt`` the network.

One process, on the GPU when there is one (bf16 autocast); nnU-Net fine-tunes on one GPU too.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn import functional
from tqdm import tqdm

from openmind_data.errors import ConfigError
from openmind_ssl.finetune.adapt import load_pretrained, read_pretrained
from openmind_ssl.finetune.config import RESUMABLE_CHANGES, FinetuneConfig, finetune_config
from openmind_ssl.finetune.metrics import auroc, balanced_accuracy, dice_per_class, mean_dice
from openmind_ssl.finetune.networks import build_downstream, freeze, parameter_groups
from openmind_ssl.finetune.schedules import Schedule, make_schedule
from openmind_ssl.finetune.tasks import (
    read_classification_task,
    read_segmentation_task,
    split_cases,
)
from openmind_ssl.finetune.volumes import PatchSamples, Prepared, center_crop, prepare
from openmind_ssl.models import parameter_count
from openmind_ssl.train import checkpoint
from openmind_ssl.train.config import check_same_run, to_dict
from openmind_ssl.train.metrics import CsvLog
from openmind_ssl.train.optimizer import build_optimizer
from openmind_ssl.train.step import OptimizerStep

__all__ = ["FinetuneResult", "Finetuner"]

log = logging.getLogger(__name__)

METRICS = ("epoch", "loss", "lr_first", "lr_last", "trains", "seconds")


@dataclass
class FinetuneResult:
    out: Path
    evaluation: dict[str, Any]  # what OUT/evaluation.json holds
    losses: list[float]  # mean training loss of each epoch run in this call


class Finetuner:
    def __init__(self, config: FinetuneConfig, device: torch.device | None = None) -> None:
        self.config = config
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.out = Path(config.train.out)
        task = config.task
        seed = config.train.seed
        if task.kind == "segmentation":
            segmentation = read_segmentation_task(task.path)
            self.channels = len(segmentation.channels)
            self.classes = max(segmentation.labels) + 1
            self.class_names = [segmentation.labels.get(i, str(i)) for i in range(self.classes)]
            cases = segmentation.cases
        else:
            classification = read_classification_task(
                task.path, image_columns=task.image_columns, label_column=task.label_column
            )
            self.channels = len(classification.channels)
            self.classes = len(classification.classes)
            self.class_names = list(classification.classes)
            cases = classification.cases
        self.train_cases, self.val_cases = split_cases(cases, task.val_fraction, seed)
        architecture = config.model.architecture
        torch.manual_seed(seed)
        self.network = build_downstream(
            config.model,
            config.train.patch_size,
            kind=task.kind,
            input_channels=self.channels,
            num_classes=self.classes,
            deep_supervision=config.train.deep_supervision,
        )
        self.load_report = None
        if config.pretrained is not None:
            pretrained = read_pretrained(config.pretrained, architecture)
            self.load_report = load_pretrained(self.network, pretrained, architecture)
            log.info("%s: %s", config.pretrained, self.load_report.summary())
        self.network.to(self.device)
        self.groups = parameter_groups(self.network, architecture)
        sched = config.schedule
        self.schedule: Schedule = make_schedule(
            sched.name,
            epochs=sched.epochs,
            lr=config.optim.lr,
            decoder_epochs=sched.decoder_epochs,
            warmup_epochs=sched.warmup_epochs,
            decoder_lr_factor=sched.decoder_lr_factor,
        )
        self.optimizer: torch.optim.Optimizer | None = None
        self.epoch = 0
        self.stepper = OptimizerStep(self.device, config.train.amp)
        self.autocast_dtype = self.stepper.autocast_dtype
        self.loss = _loss(task.kind)

    # -- the loop ------------------------------------------------------------------------

    def fit(self) -> FinetuneResult:
        """Train to ``schedule.epochs`` (resuming from ``OUT/latest.pt``), then evaluate."""
        config, train = self.config, self.config.train
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(config)))
        self._resume()
        cache = Path(config.task.cache) if config.task.cache else self.out / "preprocessed"
        folder = cache / f"{config.task.spacing:g}mm"
        started = time.perf_counter()
        spacing = config.task.spacing
        prepared = [prepare(case, self.channels, spacing, folder) for case in self.train_cases]
        log.info(
            "%d training and %d held-out cases; preprocessed in %.1f s; %d parameters",
            len(self.train_cases),
            len(self.val_cases),
            time.perf_counter() - started,
            parameter_count(self.network),
        )
        samples = PatchSamples(
            prepared,
            train.patch_size,
            train.steps_per_epoch * train.batch_size,
            seed=train.seed,
            oversample=config.task.oversample,
            augment=train.augment,
        )
        losses = []
        # One row per epoch; rows from this epoch on, of a run that stopped, are written again.
        metrics = CsvLog(self.out / "metrics.csv", self.epoch - 1, METRICS, key="epoch")
        try:
            while self.epoch < self.schedule.epochs:
                row = self.train_epoch(samples)
                losses.append(row["loss"])
                metrics.write(row)
                self.epoch += 1
                self._save("latest.pt")
        finally:
            metrics.close()
        evaluation = self.evaluate(folder)
        (self.out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
        self._save("final.pt")
        return FinetuneResult(self.out, evaluation, losses)

    def train_epoch(self, samples: PatchSamples) -> dict[str, Any]:
        """One epoch of ``train.steps_per_epoch`` steps; its metrics row."""
        train = self.config.train
        epoch, started = self.epoch, time.perf_counter()
        trains = self.schedule.trainable(epoch)
        for group, parameters in self.groups.items():
            freeze(parameters, group not in trains)
        if self.optimizer is None or self.schedule.new_optimizer_at(epoch):
            self.optimizer = self._optimizer(trains)
        samples.epoch = epoch
        loader = torch.utils.data.DataLoader(
            samples,
            batch_size=train.batch_size,
            num_workers=train.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        self.network.train()
        total, rates = 0.0, []
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not train.progress, leave=False)
        for step, batch in enumerate(bar):
            lr = self.schedule.learning_rate(epoch, step, train.steps_per_epoch)
            rates.append(lr)
            loss = self._step(batch, lr)
            total += loss
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        return {
            "epoch": epoch,
            "loss": total / train.steps_per_epoch,
            "lr_first": rates[0],
            "lr_last": rates[-1],
            "trains": "+".join(sorted(trains)),
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _step(self, batch: dict[str, Tensor], lr: float) -> float:
        assert self.optimizer is not None
        image = batch["image"].to(self.device, torch.float32, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        self.stepper.begin(self.optimizer, lr)
        with self.stepper.autocast():
            logits = self.network(image)
        loss: Tensor
        if isinstance(logits, list):  # deep supervision: full resolution first
            loss = _deep_supervision(self.loss, [out.float() for out in logits], label)
        else:
            loss = self.loss(logits.float(), label)
        trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.stepper.finish(loss, self.optimizer, trainable, self.config.optim.grad_clip)
        return float(loss.detach())

    # -- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, folder: Path) -> dict[str, Any]:
        """The held-out figures (also written to ``OUT/evaluation.json`` by ``fit``)."""
        self.network.eval()
        config = self.config
        cases = [prepare(c, self.channels, config.task.spacing, folder) for c in self.val_cases]
        base = {
            "task": config.task.path,
            "kind": config.task.kind,
            "schedule": self.schedule.name,
            "epochs": self.schedule.epochs,
            "pretrained": config.pretrained,
            "held_out": [c.name for c in cases],
        }
        if config.task.kind == "segmentation":
            return base | self._evaluate_segmentation(cases)
        return base | self._evaluate_classification(cases)

    def _evaluate_segmentation(self, cases: list[Prepared]) -> dict[str, Any]:
        from monai.inferers import sliding_window_inference  # noqa: PLC0415

        ev = self.config.evaluation
        foreground = list(range(1, self.classes))
        per_case = []
        for case in cases:
            image = torch.from_numpy(np.array(case.image))[None].to(self.device)
            with self.stepper.autocast():
                logits = sliding_window_inference(
                    image,
                    roi_size=self.config.train.patch_size,
                    sw_batch_size=ev.sw_batch_size,
                    predictor=self._full_resolution,
                    overlap=ev.overlap,
                    mode=ev.mode,
                )
            prediction = torch.as_tensor(logits).float().argmax(1)[0].cpu().numpy()
            assert case.label is not None
            per_case.append(dice_per_class(prediction, np.asarray(case.label), foreground))
        classes = mean_dice(per_case)
        values = [v for v in classes.values() if not np.isnan(v)]
        return {
            "metric": "dice",
            "value": float(np.mean(values)) if values else float("nan"),
            "dice": {self.class_names[c]: v for c, v in classes.items()},
            "cases": [
                {"name": c.name, **{self.class_names[k]: v for k, v in d.items()}}
                for c, d in zip(cases, per_case, strict=True)
            ],
        }

    def _evaluate_classification(self, cases: list[Prepared]) -> dict[str, Any]:
        patch = self.config.train.patch_size
        probabilities, labels = [], []
        for case in cases:
            image = torch.from_numpy(center_crop(np.asarray(case.image), patch))[None]
            with self.stepper.autocast():
                logits = self.network(image.to(self.device))
            probabilities.append(torch.softmax(logits.float(), 1)[0].cpu().numpy())
            labels.append(case.target)
        scores = np.stack(probabilities)
        truth = np.asarray(labels)
        predictions = scores.argmax(1)
        return {
            "metric": "balanced_accuracy",
            "value": balanced_accuracy(truth, predictions),
            "auroc": auroc(truth, scores),
            "classes": self.class_names,
            "cases": [
                {"name": c.name, "label": int(t), "prediction": int(p)}
                for c, t, p in zip(cases, truth, predictions, strict=True)
            ],
        }

    def _full_resolution(self, x: Tensor) -> Tensor:
        """The network's full-resolution logits (the first of deep supervision's outputs)."""
        logits = self.network(x)
        full: Tensor = logits[0] if isinstance(logits, list) else logits
        return full

    # -- optimizer, checkpoints ----------------------------------------------------------

    def _optimizer(self, trains: frozenset[str]) -> torch.optim.Optimizer:
        parameters = [p for group in sorted(trains) for p in self.groups[group]]
        return build_optimizer(parameters, self.config.optim)

    def _save(self, name: str) -> Path:
        path = self.out / name
        scaler = self.stepper.scaler
        checkpoint.save(
            path,
            {
                "kind": "finetune",
                "model": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": self.epoch,
                "config": to_dict(self.config),
                "classes": self.class_names,
                "random": checkpoint.random_state(),
            },
        )
        return path

    def _resume(self) -> None:
        path = self.out / "latest.pt"
        if not path.is_file():
            return
        saved = checkpoint.load(path)
        if saved.get("kind") != "finetune":
            raise ConfigError(f"{path}: not a fine-tuning checkpoint")
        config = to_dict(finetune_config(saved["config"], str(path)))
        check_same_run(config, to_dict(self.config), path, RESUMABLE_CHANGES)
        self.network.load_state_dict(saved["model"])
        self.epoch = int(saved["epoch"])
        # The optimizer carries on unless the next epoch starts a new one (train_epoch freezes).
        resumes = self.epoch < self.schedule.epochs and saved["optimizer"] is not None
        if resumes and not self.schedule.new_optimizer_at(self.epoch):
            self.optimizer = self._optimizer(self.schedule.trainable(self.epoch))
            self.optimizer.load_state_dict(saved["optimizer"])
        if self.stepper.scaler is not None and saved["scaler"] is not None:
            self.stepper.scaler.load_state_dict(saved["scaler"])
        checkpoint.restore_random_state(saved["random"])
        log.info("resuming %s at epoch %d", self.out, self.epoch)


def _loss(kind: str) -> nn.Module:
    if kind == "classification":
        return nn.CrossEntropyLoss()
    from monai.losses import DiceCELoss  # noqa: PLC0415

    # nnU-Net's: soft Dice over the foreground classes, computed over the whole batch, plus
    # cross-entropy with equal weight.
    loss: nn.Module = DiceCELoss(  # labels (B, 1, X, Y, Z)
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )
    return loss


def _deep_supervision(loss: nn.Module, outputs: list[Tensor], label: Tensor) -> Tensor:
    """nnU-Net's deep supervision: the loss at each decoder stage against the labels resized
    (nearest) to its resolution, weighted 1, 1/2, 1/4, ... from full resolution down, the
    coarsest output left out, the weights normalised to sum to 1."""
    weights = [0.5**i for i in range(len(outputs))]
    if len(weights) > 1:
        weights[-1] = 0.0
    total = sum(weights)
    terms = []
    for weight, output in zip(weights, outputs, strict=True):
        if weight == 0:
            continue
        target = label
        if output.shape[2:] != label.shape[2:]:
            target = functional.interpolate(label.float(), output.shape[2:], mode="nearest")
        terms.append(weight / total * loss(output, target.long()))
    return torch.stack(terms).sum()
