"""The downstream benchmark: every (pretrained checkpoint x schedule x dataset) fine-tuned and
evaluated, then the paper-style table.

::

    out: runs/benchmark
    base:                       # what every run shares (any fine-tuning section but task)
      schedule: {epochs: 150}
      train: {patch_size: [160, 160, 160]}
    checkpoints:                # name -> checkpoint; null trains from scratch
      scratch: null
      mae: runs/mae/final.pt
    schedules: [default, warmup, valley, sawtooth, frozen]
    scratch_schedules: [default]   # a random encoder has nothing to protect: one schedule
    datasets:                   # name -> a task section, its domain, and its own settings
      lesions: {kind: segmentation, path: data/Dataset101_Lesions, domain: ID}
      presence:
        kind: classification
        path: data/presence/labels.csv
        domain: OOD
        train: {patch_size: [192, 192, 160]}   # over base's, for this dataset only

Each run lives in ``OUT/<checkpoint>/<schedule>/<dataset>/``. A run whose ``evaluation.json``
exists is read, not repeated, and an interrupted one resumes from its ``latest.pt``: the same
command continues a benchmark. The datasets are preprocessed once, in
``OUT/preprocessed/<dataset>``. ``OUT/results.csv`` lists every run's figures;
``OUT/benchmark.{csv,md,png}`` are the table (``report.write_table``).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from openmind_data.errors import ConfigError
from openmind_ssl.finetune.config import RESUMABLE_CHANGES, checkpoint_model, finetune_config
from openmind_ssl.finetune.report import build_table, write_table
from openmind_ssl.finetune.schedules import SCHEDULES
from openmind_ssl.finetune.trainer import Finetuner
from openmind_ssl.train.config import check_same_run, read_yaml, to_dict

__all__ = ["BenchmarkResult", "run_benchmark"]

log = logging.getLogger(__name__)

SUITE_KEYS = {"out", "base", "checkpoints", "schedules", "scratch_schedules", "datasets"}
#: Sections a dataset may set for its own runs (as nnU-Net plans a patch size per dataset).
RUN_SECTIONS = ("model", "schedule", "optim", "train", "evaluation")


@dataclass
class BenchmarkResult:
    results: list[dict[str, Any]]  # one per run
    files: dict[str, Path]  # results.csv, and the table's csv, md and png


def run_benchmark(
    suite: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None
) -> BenchmarkResult:
    """Run (or continue) the suite at ``suite``; ``overrides`` are ``key.path=value``."""
    where = str(suite)
    raw = read_yaml(suite, overrides)
    unknown = sorted(set(raw) - SUITE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]} (known: {sorted(SUITE_KEYS)})")
    root = Path(out if out is not None else raw.get("out", "runs/benchmark"))
    base = raw.get("base") or {}
    checkpoints = raw.get("checkpoints") or {}
    datasets = raw.get("datasets") or {}
    schedules = list(raw.get("schedules") or ["default"])
    scratch_schedules = list(raw.get("scratch_schedules") or ["default"])
    _check_suite(where, base, checkpoints, datasets, [*schedules, *scratch_schedules])
    scratch_model = _scratch_model(base, checkpoints, where)
    results = []
    for name, path in checkpoints.items():
        for schedule in schedules if path is not None else scratch_schedules:
            for dataset, entry in datasets.items():
                run_out = root / name / schedule / dataset
                evaluation = _run(
                    base, path, schedule, entry, run_out, root / "preprocessed" / dataset,
                    scratch_model, f"{where}: {name}/{schedule}/{dataset}",
                )  # fmt: skip
                results.append(
                    {
                        "checkpoint": name,
                        "schedule": schedule,
                        "dataset": dataset,
                        "domain": entry["domain"],
                        "metric": evaluation["metric"],
                        "value": evaluation["value"],
                        "auroc": evaluation.get("auroc"),
                        "run": str(run_out),
                    }
                )
    root.mkdir(parents=True, exist_ok=True)
    files = {"results": _write_results(results, root / "results.csv")}
    scored = [r for r in results if not math.isnan(r["value"])]
    for result in results:
        if math.isnan(result["value"]):
            log.warning("%s: no value (no foreground in the held-out cases?)", result["run"])
    files.update(write_table(build_table(scored), root))
    return BenchmarkResult(results, files)


def _run(
    base: dict[str, Any],
    pretrained: str | None,
    schedule: str,
    entry: dict[str, Any],
    out: Path,
    cache: Path,
    scratch_model: dict[str, Any],
    where: str,
) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    raw["pretrained"] = pretrained
    task = {k: v for k, v in entry.items() if k not in (*RUN_SECTIONS, "domain")}
    raw["task"] = task | {"cache": str(cache)}
    for section in RUN_SECTIONS:
        if isinstance(entry.get(section), dict):
            raw.setdefault(section, {}).update(entry[section])
    raw.setdefault("schedule", {})["name"] = schedule
    raw.setdefault("train", {})["out"] = str(out)
    if pretrained is None:
        raw["model"] = scratch_model | raw.get("model", {})
    config = finetune_config(raw, where)
    done = out / "evaluation.json"
    if done.is_file():  # finished before: read back, if it is this suite's run
        saved = finetune_config(yaml.safe_load((out / "config.yaml").read_text()), str(out))
        check_same_run(to_dict(saved), to_dict(config), out, RESUMABLE_CHANGES)
        evaluation: dict[str, Any] = json.loads(done.read_text())
        return evaluation
    log.info("%s: fine-tuning into %s", where, out)
    return Finetuner(config).fit().evaluation


def _check_suite(
    where: str,
    base: Any,
    checkpoints: Any,
    datasets: Any,
    schedules: list[str],
) -> None:
    if not isinstance(base, dict) or "task" in base or "pretrained" in base:
        raise ConfigError(f"{where}: base must be a mapping without task or pretrained")
    if not isinstance(checkpoints, dict) or not checkpoints:
        raise ConfigError(f"{where}: checkpoints must map names to checkpoint paths (or null)")
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError(f"{where}: datasets must map names to task sections")
    for name, entry in datasets.items():
        if not isinstance(entry, dict) or entry.get("domain") not in ("ID", "OOD"):
            raise ConfigError(f"{where}: datasets.{name} needs a domain: ID or OOD")
    for schedule in schedules:
        if schedule not in SCHEDULES:
            raise ConfigError(f"{where}: unknown schedule {schedule!r} (known: {SCHEDULES})")
    for name, path in checkpoints.items():
        if path is not None and not Path(str(path)).is_file():
            raise ConfigError(f"{where}: checkpoints.{name}: {path} does not exist")


def _scratch_model(base: dict[str, Any], checkpoints: dict[str, Any], where: str) -> dict[str, Any]:
    """The network a from-scratch run trains: the base's model, else the first checkpoint's
    (so that scratch and pretrained runs compare one architecture)."""
    if base.get("model"):
        return dict(base["model"])
    for path in checkpoints.values():
        if path is not None:
            return checkpoint_model(Path(str(path)), where)
    return {}


def _write_results(results: list[dict[str, Any]], path: Path) -> Path:
    columns = ["checkpoint", "schedule", "dataset", "domain", "metric", "value", "auroc", "run"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(results)
    return path
