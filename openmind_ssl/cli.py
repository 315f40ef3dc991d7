"""The ``openmind-ssl`` command. Heavy modules are imported inside commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from openmind_data.commandline import OneLineErrors, Verbosity

app = typer.Typer(
    name="openmind-ssl",
    help="Stream OpenMind datasets into self-supervised pretraining.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)

#: ``--set section.key=value``, repeatable: any key of a run's YAML file, the value read as YAML.
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a key: section.key=value (YAML value). Repeatable."),
]


@app.callback()
def main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-vv: tracebacks of errors.")
    ] = 0,
) -> None:
    """Configure logging (the library itself never attaches handlers)."""
    Verbosity.traceback = verbose > 1
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def cache(
    source: Annotated[
        str, typer.Argument(help="A dataset folder, ORG/NAME or hf://datasets/ORG/NAME[@REVISION].")
    ],
    out: Annotated[Path, typer.Option(help="The cache's root folder.")] = Path("openmind-cache"),
    modality: Annotated[
        list[str] | None, typer.Option(help="Only these modalities (repeatable).")
    ] = None,
    split: Annotated[str, typer.Option(help="train | validation.")] = "train",
    max_iqs: Annotated[float | None, typer.Option(help="Only images scored at most this.")] = None,
    spacing: Annotated[float, typer.Option(help="Voxel size in mm (0: each image's own).")] = 1.0,
    order: Annotated[str, typer.Option(help="The image's interpolation: linear | cubic.")] = (
        "linear"
    ),
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 2,
) -> None:
    """Preprocess the selected volumes once into OUT/<preprocessing>/, for training to crop
    from; volumes already there (from the same source image) are kept."""
    import torch  # noqa: PLC0415

    from openmind_ssl.data import OpenMindStream, Preprocessing, StreamOptions  # noqa: PLC0415

    preprocessing = Preprocessing(spacing=spacing, order=order)
    folder = out / preprocessing.key
    before = len(list(folder.glob("*.masks.b2nd")))
    options = StreamOptions(
        modalities=modality,
        split=split,
        max_iqs=max_iqs,
        crop_size=(1, 1, 1),
        crops_per_volume=1,
        shuffle_buffer=0,
        preprocessing=preprocessing,
        cache=out,
    )
    stream = OpenMindStream(source, options)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    volumes = sum(1 for _ in loader)
    after = len(list(folder.glob("*.masks.b2nd")))
    typer.echo(f"{folder}: {volumes} volumes selected, {after - before} added, {after} cached")


@app.command()
def pretrain(
    config: Annotated[Path, typer.Option(help="The run's YAML file (see scripts/).")],
    set_: Overrides = None,
    out: Annotated[Path | None, typer.Option(help="Override train.out.")] = None,
) -> None:
    """Pretrain as CONFIG says, on this process or under torchrun (one process per GPU).
    A run whose folder holds latest.pt resumes from it; SIGTERM or SIGUSR1 stops it after the
    current step with a checkpoint."""
    from openmind_ssl.train.config import load_config  # noqa: PLC0415
    from openmind_ssl.train.trainer import Pretrainer  # noqa: PLC0415

    overrides = list(set_ or [])
    if out is not None:
        overrides.append(f"train.out={out}")
    import torch.distributed as dist  # noqa: PLC0415

    try:
        result = Pretrainer(load_config(config, overrides)).fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    state = "stopped" if result.stopped else "done"
    typer.echo(f"{state} at step {result.step}: {result.checkpoint}")


@app.command()
def finetune(
    config: Annotated[Path, typer.Option(help="The run's YAML file (see scripts/finetune_*).")],
    set_: Overrides = None,
    out: Annotated[Path | None, typer.Option(help="Override train.out.")] = None,
) -> None:
    """Fine-tune a pretrained checkpoint (or a network from scratch) on a downstream
    segmentation or classification task, then evaluate it on the held-out cases. A run whose
    folder holds latest.pt resumes from it."""
    from openmind_ssl.finetune.config import load_finetune_config  # noqa: PLC0415
    from openmind_ssl.finetune.trainer import Finetuner  # noqa: PLC0415

    overrides = list(set_ or [])
    if out is not None:
        overrides.append(f"train.out={out}")
    result = Finetuner(load_finetune_config(config, overrides)).fit()
    evaluation = result.evaluation
    typer.echo(
        f"{evaluation['metric']} {evaluation['value']:.4f} on {len(evaluation['held_out'])}"
        f" held-out cases: {result.out / 'evaluation.json'}"
    )


@app.command()
def benchmark(
    suite: Annotated[Path, typer.Option(help="The suite's YAML file (see scripts/).")],
    set_: Overrides = None,
    out: Annotated[Path | None, typer.Option(help="Override the suite's out.")] = None,
) -> None:
    """Fine-tune every checkpoint x schedule x dataset of SUITE and write the paper-style
    table (OUT/benchmark.csv, .md, .png). Finished runs are kept: the same command continues."""
    from openmind_ssl.finetune.benchmark import run_benchmark  # noqa: PLC0415

    result = run_benchmark(suite, list(set_ or []), out)
    typer.echo(result.files["md"].read_text())
    for kind, path in result.files.items():
        typer.echo(f"{kind}: {path}")


@app.command("synthetic-tasks")
def synthetic_tasks(
    out: Annotated[Path, typer.Option(help="Folder for the two tasks.")] = Path("downstream"),
    cases: Annotated[int, typer.Option(help="Cases per task.")] = 24,
    voxel_mm: Annotated[float, typer.Option(help="Voxel size of the images.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
) -> None:
    """Write the synthetic downstream tasks: OUT/lesions (segmentation of lesions and their
    rims in synthetic heads, nnU-Net raw layout, T1w + FLAIR) and OUT/presence (lesions or
    healthy: a classification table)."""
    from openmind_ssl.finetune.synthetic import (  # noqa: PLC0415
        write_classification_task,
        write_segmentation_task,
    )

    segmentation = write_segmentation_task(
        out / "lesions", cases=cases, seed=seed, voxel_mm=voxel_mm
    )
    table = write_classification_task(out / "presence", cases=cases, seed=seed, voxel_mm=voxel_mm)
    typer.echo(f"segmentation: {segmentation}\nclassification: {table}")


if __name__ == "__main__":
    app()
