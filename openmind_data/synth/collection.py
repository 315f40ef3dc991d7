"""Generate a whole synthetic collection: datasets, images, and the ground truth of every file."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmind_data.errors import SynthError
from openmind_data.executors import map_ordered
from openmind_data.synth.builder import DatasetBuilder, ImageTask, run_image_task
from openmind_data.synth.config import SynthConfig
from openmind_data.synth.recipes import RECIPES

__all__ = ["TRUTH_FILE", "Collection", "load_truth", "synthesize"]

log = logging.getLogger(__name__)

#: Where the ground truth lives, relative to the collection root (outside every dataset).
TRUTH_FILE = "truth/ground_truth.json"
TRUTH_VERSION = "1"
# Written first, so a collection whose generation was interrupted can still be replaced.
_MARKER = "truth/.made-by-openmind-synth"


@dataclass(frozen=True)
class Collection:
    """A generated collection: its root and its ground truth."""

    root: Path
    truth: dict[str, Any]

    @property
    def dataset_ids(self) -> list[str]:
        return [d["dataset_id"] for d in self.truth["datasets"]]

    def files(self, role: str | None = None) -> list[dict[str, Any]]:
        """Truth records, all or of one role ('image', 'excluded', 'ignored', 'metadata')."""
        return [f for f in self.truth["files"] if role is None or f["role"] == role]

    def quality_ratings(self) -> list[dict[str, Any]]:
        """What a rater who knew the truth would say: ``image_path`` (the released layout) and
        ``rating``, 1 for every clean 3D image and ``1 + 4 * severity / 3`` for the quality
        ladder's degraded ones (3, the most severe, rated 5)."""
        return [
            {
                "image_path": f["path"] if f["path"].endswith(".gz") else f"{f['path']}.gz",
                "rating": 1.0 + 4.0 * f["severity"] / 3.0 if f.get("degradation") else 1.0,
            }
            for f in self.files("image")
            if f["modality"] != "DWI"
        ]


def load_truth(root: str | Path) -> Collection:
    path = Path(root) / TRUTH_FILE
    if not path.is_file():
        raise SynthError(
            f"{path}: no ground truth here; is {root} a collection made by 'openmind synth'?"
        )
    return Collection(Path(root), json.loads(path.read_text()))


def synthesize(
    out: str | Path,
    config: SynthConfig | None = None,
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> Collection:
    """Write a synthetic OpenNeuro-like collection into ``out``.

    ``out`` must be empty or absent; with ``overwrite`` a collection this function made earlier
    (recognised by its ground-truth file) is replaced. Output bytes depend only on ``config``,
    not on ``workers``.
    """
    config = config or SynthConfig()
    root = Path(out)
    _prepare(root, overwrite)

    builders = []
    for copy in range(config.copies):
        for index, (name, recipe) in enumerate(RECIPES):
            dataset_id = f"ds{copy * len(RECIPES) + index + 1:06d}"
            builder = DatasetBuilder(root, dataset_id, config.seed)
            recipe(builder, config)
            builder.truth[0]["recipe"] = name  # the dataset_description.json record
            builders.append(builder)
    tasks = [task for b in builders for task in b.tasks]
    results = _run(root, tasks, workers, progress)
    for path, of in (copy for b in builders for copy in b.copies):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / of, root / path)
        results[path] = results[of]  # same voxels, same truth (shape, masks, ...)

    files = [record for b in builders for record in b.truth]
    for record in files:
        record.update(results.get(record["path"], {}))
    files.sort(key=lambda r: r["path"])
    datasets = [
        {
            "dataset_id": b.dataset_id,
            **{k: v for k, v in b.truth[0].items() if k not in ("path", "role", "dataset_id")},
        }
        for b in builders
    ]
    truth = {
        "truth_version": TRUTH_VERSION,
        "generator": "openmind_data.synth",
        "config": config.to_dict(),
        "datasets": datasets,
        "files": files,
    }
    (root / TRUTH_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / TRUTH_FILE).write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    log.info(
        "wrote %d files (%d images) in %d datasets to %s",
        len(files),
        sum(f["role"] == "image" for f in files),
        len(builders),
        root,
    )
    return Collection(root, truth)


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise SynthError(
                f"{root} exists and is not empty; choose another folder or "
                "pass overwrite=True (--overwrite) to replace a collection made "
                "by openmind synth"
            )
        if not (root / _MARKER).is_file():
            raise SynthError(
                f"{root} was not made by openmind synth (no {_MARKER}); refusing to delete it"
            )
        shutil.rmtree(root)
    (root / _MARKER).parent.mkdir(parents=True, exist_ok=True)
    (root / _MARKER).write_text("openmind synth wrote this folder; --overwrite may replace it\n")


def _run(
    root: Path, tasks: list[ImageTask], workers: int, progress: bool
) -> dict[str, dict[str, Any]]:
    jobs = [(root, task) for task in tasks]
    done = map_ordered(_task, jobs, workers=workers, desc="synth", unit="img", progress=progress)
    return {task.path: result for task, result in zip(tasks, done, strict=True)}


def _task(job: tuple[Path, ImageTask]) -> dict[str, Any]:
    return run_image_task(*job)
