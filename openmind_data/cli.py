"""The ``openmind`` command.

Heavy modules are imported inside commands, so ``openmind --help`` is instant.
"""

from __future__ import annotations

import logging
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from openmind_data.commandline import OneLineErrors, Verbosity

if TYPE_CHECKING:
    from openmind_data.executors import Executor
    from openmind_data.stages import Running

app = typer.Typer(
    name="openmind",
    help="Build, inspect and publish OpenMind-style 3D MRI pretraining datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)


class _State:
    progress = True


@app.callback()
def main(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="More log output (-vv: debug, and tracebacks)."
        ),
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Configure logging (the library itself never attaches handlers)."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    Verbosity.traceback = verbose > 1
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _State.progress = progress and not quiet


Resolution = Annotated[str, typer.Option(help="Voxel sizes: tiny | small | realistic.")]
# The masks stage's options, shared by `masks` and `build`.
Brain = Annotated[
    str,
    typer.Option(
        help="auto | template | deepbet | hd-bet | none (auto: HD-BET on CUDA, else deepbet, "
        "where installed; else the template)."
    ),
]
HdbetParams = Annotated[
    str | None, typer.Option(help="HD-BET parameter folder (default: HD-BET's own).")
]
Device = Annotated[str, typer.Option(help="Device for the learned brain maskers: cpu | cuda.")]
Deface = Annotated[str, typer.Option(help="Images that show a face: deface | exclude | off.")]
BrainCut = Annotated[
    str,
    typer.Option(help="Images whose defacing would cut the brain (> 0.5%): exclude | flag."),
]


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the collection into.")],
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    copies: Annotated[int, typer.Option(help="Repeat the five dataset recipes N times.")] = 1,
    subjects: Annotated[
        int, typer.Option(help="Subjects per dataset (recipes keep a minimum).")
    ] = 3,
    resolution: Resolution = "small",
    broken: Annotated[bool, typer.Option(help="Include broken files.")] = True,
    diffusion: Annotated[bool, typer.Option(help="Include DWI series.")] = True,
    quality: Annotated[bool, typer.Option(help="Include the degradation ladder.")] = True,
    workers: Annotated[int, typer.Option(help="Processes rendering images.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace a collection made earlier.")] = False,
    montage: Annotated[
        Path | None, typer.Option(help="Also write a PNG of middle slices here.")
    ] = None,
) -> None:
    """Write a synthetic OpenNeuro-like collection with ground truth (OUT/truth/)."""
    from openmind_data.synth import SynthConfig, synthesize, write_montage  # noqa: PLC0415

    config = SynthConfig(
        seed=seed,
        copies=copies,
        subjects=subjects,
        resolution=resolution,  # type: ignore[arg-type]  # validated
        broken=broken,
        diffusion=diffusion,
        quality=quality,
    )
    collection = synthesize(
        out, config, workers=workers, overwrite=overwrite, progress=_State.progress
    )
    _summarise(collection.files())
    if montage is not None:
        typer.echo(f"montage: {write_montage(collection, montage)}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the dataset folder goes.")] = Path("openmind"),
    sources: Annotated[Path, typer.Option(help="Where the synthetic BIDS collection goes.")] = Path(
        "openmind-sources"
    ),
    nifti_tree: Annotated[
        Path, typer.Option(help="Where the released OpenMind layout goes.")
    ] = Path("openmind-nifti"),
    workers: Annotated[int, typer.Option(help="Processes.")] = 2,
) -> None:
    """The main job on the embedded default: synthesize a collection and build it.

    Synthesizes the collection into SOURCES, builds the dataset folder OUT from it (data
    shards, metadata tables, the dataset card and its figures), writes the released layout
    into NIFTI_TREE, and draws the collection's montage, the masks over middle slices and the
    quality contact sheet into OUT/assets.
    """
    from openmind_data.curate import BuildOptions, make_executor  # noqa: PLC0415
    from openmind_data.curate import build as run_build  # noqa: PLC0415
    from openmind_data.dataset_folder import ASSETS, CARD  # noqa: PLC0415
    from openmind_data.masks import write_mask_figure  # noqa: PLC0415
    from openmind_data.quality import write_quality_sheet  # noqa: PLC0415
    from openmind_data.release import tree_file  # noqa: PLC0415
    from openmind_data.synth import SynthConfig, synthesize, write_montage  # noqa: PLC0415

    collection = synthesize(
        sources, SynthConfig(), workers=workers, overwrite=True, progress=_State.progress
    )
    _summarise(collection.files())
    with closing(make_executor(workers=workers)) as executor:
        result = run_build(
            sources,
            out,
            BuildOptions(),
            executor=executor,
            nifti_tree=nifti_tree,
            progress=_State.progress,
        )
    _print_counts(result.summary())
    images = result.images
    located = {
        row["image_id"]: tree_file(nifti_tree, row["image_path"]) for row in images.to_pylist()
    }
    assets = out / ASSETS
    picture = write_montage(collection, assets / "synthetic_sources.png")
    overlays = write_mask_figure(images, located, tree_file(nifti_tree, ""), assets / "masks.png")
    sheet = write_quality_sheet(images, located, assets / "quality_sheet.png", per_modality=3)
    typer.echo(
        f"sources: {sources}/  truth: {sources}/truth/  dataset: {out}/  card: {out / CARD}  "
        f"released layout: {nifti_tree}/  montage: {picture}  mask overlays: {overlays}  "
        f"quality sheet: {sheet}"
    )


Dask = Annotated[str | None, typer.Option(help="A Dask scheduler address (tcp://host:8786).")]
Fresh = Annotated[
    bool, typer.Option(help="Discard the journal of an earlier run in OUT instead of resuming it.")
]
Jobqueue = Annotated[
    Path | None, typer.Option(help="A dask-jobqueue cluster config (TOML), e.g. SLURM.")
]


def _running(executor: Executor, fresh: bool) -> Running:
    """How the stage commands run: on ``executor``, journaled in their ``--out``."""
    return {"executor": executor, "progress": _State.progress, "journal": True, "fresh": fresh}


@app.command()
def build(
    roots: Annotated[list[Path], typer.Argument(help="BIDS datasets, or folders of them.")],
    out: Annotated[Path, typer.Option(help="The dataset folder to write.")] = Path("openmind"),
    workers: Annotated[int, typer.Option(help="Local processes (1: this process).")] = 1,
    dask: Dask = None,
    jobqueue: Jobqueue = None,
    fresh: Annotated[
        bool, typer.Option(help="Discard an earlier build's journal instead of resuming it.")
    ] = False,
    nifti_tree: Annotated[
        Path | None, typer.Option(help="Also write the released OpenMind layout here.")
    ] = None,
    validation: Annotated[float, typer.Option(help="Share of subjects in validation.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the subject split.")] = 0,
    license: Annotated[
        list[str] | None, typer.Option(help="Only datasets under these SPDX licences (repeatable).")
    ] = None,
    brain: Brain = "auto",
    hdbet_params: HdbetParams = None,
    device: Device = "cpu",
    deface: Deface = "deface",
    brain_cut: BrainCut = "exclude",
    iqs_model: Annotated[
        Path | None, typer.Option(help="An IQS model file (default: the shipped one).")
    ] = None,
    row_group_mb: Annotated[int, typer.Option(help="Row group size, MiB of voxels.")] = 100,
    shard_mb: Annotated[int, typer.Option(help="Shard size, MiB of voxels.")] = 500,
) -> None:
    """Build the OpenMind dataset folder OUT from BIDS datasets: crawl, DWI maps, masks and
    defacing, quality, duplicates, the split, data shards and metadata tables.

    Killed, the same command resumes: finished images are not processed again, and the result
    is the same bytes as an uninterrupted build.
    """
    from openmind_data.curate import (  # noqa: PLC0415
        BuildOptions,
        ShardOptions,
        UnitOptions,
        make_executor,
    )
    from openmind_data.curate import build as run_build  # noqa: PLC0415
    from openmind_data.masks import MaskOptions  # noqa: PLC0415

    options = BuildOptions(
        unit=UnitOptions(
            masks=MaskOptions(
                brain=brain,
                hdbet_params=hdbet_params,
                device=device,
                deface=deface,
                brain_cut=brain_cut,
            ),
        ),
        iqs_model=str(iqs_model) if iqs_model else None,
        shards=ShardOptions(row_group_bytes=row_group_mb << 20, shard_bytes=shard_mb << 20),
        validation=validation,
        seed=seed,
        licenses=tuple(license) if license else None,
    )
    with closing(make_executor(workers=workers, dask=dask, jobqueue=jobqueue)) as executor:
        result = run_build(
            roots,
            out,
            options,
            executor=executor,
            fresh=fresh,
            nifti_tree=nifti_tree,
            progress=_State.progress,
        )
    _report_folder(result)


@app.command("import-release")
def import_release(
    source: Annotated[
        str, typer.Argument(help="A local copy of the release, or a Hub repo ORG/NAME[@REVISION].")
    ],
    out: Annotated[Path, typer.Option(help="The dataset folder to write.")] = Path("openmind"),
    modality: Annotated[
        list[str] | None, typer.Option(help="Only this modality (repeatable).")
    ] = None,
    max_iqs: Annotated[
        float | None, typer.Option(help="Only images whose released IQS is at most this.")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="Only this OpenNeuro dataset, dsNNNNNN (repeatable).")
    ] = None,
    recompute: Annotated[
        str, typer.Option(help="Stages made again from the voxels: masks, quality (comma list).")
    ] = "",
    workers: Annotated[int, typer.Option(help="Local processes (1: this process).")] = 1,
    downloads: Annotated[int, typer.Option(help="Files downloaded at once from the Hub.")] = 8,
    fresh: Annotated[
        bool, typer.Option(help="Discard an earlier import's journal instead of resuming it.")
    ] = False,
    nifti_tree: Annotated[
        Path | None, typer.Option(help="Also write the released OpenMind layout here.")
    ] = None,
    brain: Brain = "auto",
    device: Device = "cpu",
    iqs_model: Annotated[
        Path | None, typer.Option(help="The IQS model of --recompute quality (default: shipped).")
    ] = None,
) -> None:
    """Import OpenMind's release into the dataset folder OUT: one row per image with its masks
    and metadata as columns. Only the rows the filters keep are downloaded (from the Hub, in
    parallel, checked against their checksums); the release's masks and scores are kept unless
    --recompute says otherwise. Killed, the same command resumes without downloading twice.
    """
    from openmind_data.curate import BuildOptions, make_executor  # noqa: PLC0415
    from openmind_data.masks import MaskOptions  # noqa: PLC0415
    from openmind_data.release.importer import import_release as run_import  # noqa: PLC0415
    from openmind_data.release.unit import ImportOptions  # noqa: PLC0415

    options = ImportOptions(
        recompute=tuple(part.strip() for part in recompute.split(",") if part.strip()),
        masks=MaskOptions(brain=brain, device=device),
    )
    with closing(make_executor(workers=workers)) as executor:
        result = run_import(
            source,
            out,
            modalities=modality,
            max_iqs=max_iqs,
            datasets=dataset,
            options=options,
            build=BuildOptions(iqs_model=str(iqs_model) if iqs_model else None),
            executor=executor,
            fresh=fresh,
            nifti_tree=nifti_tree,
            download_workers=downloads,
            progress=_State.progress,
        )
    _report_folder(result)


@app.command("export-nnssl")
def export_nnssl(
    folder: Annotated[Path, typer.Argument(help="A dataset folder (build or import-release).")],
    out: Annotated[Path, typer.Option(help="nnssl's raw dataset folder to write.")],
    tree: Annotated[
        Path | None,
        typer.Option(help="An existing released-layout tree to point at instead of writing one."),
    ] = None,
    name: Annotated[str, typer.Option(help="nnssl's collection name.")] = "Dataset745_OpenMind",
) -> None:
    """Write nnssl's pretrain_data.json into OUT for the images of FOLDER, pointing at a
    released-layout tree (OUT/, written from the shards, unless --tree names one)."""
    from openmind_data.release.nnssl import export_nnssl as run_export  # noqa: PLC0415

    written = run_export(folder, out, tree=tree, collection_name=name)
    typer.echo(f"wrote {written.json} ({written.images} images in {written.datasets} datasets)")


@app.command()
def crawl(
    roots: Annotated[list[Path], typer.Argument(help="BIDS datasets, or folders of them.")],
    out: Annotated[
        Path, typer.Option(help="The candidate table; companions are written beside it.")
    ] = Path("index.parquet"),
    workers: Annotated[int, typer.Option(help="Processes (one dataset each).")] = 1,
    license: Annotated[
        list[str] | None, typer.Option(help="Only datasets under these SPDX licences (repeatable).")
    ] = None,
) -> None:
    """Crawl BIDS datasets into the candidate table, header-only; the datasets are not touched.

    OUT gets one row per candidate image; OUT's stem plus .excluded, .ignored and .sources
    give the other tables.
    """
    from openmind_data.crawl import crawl as run_crawl  # noqa: PLC0415

    result = run_crawl(roots, workers=workers, licenses=license, progress=_State.progress)
    _write_and_report(result, out)


@app.command()
def dwi(
    index: Annotated[Path, typer.Argument(help="The crawl's candidate table (index.parquet).")],
    root: Annotated[list[Path], typer.Option(help="The folders the crawl was given (repeatable).")],
    out: Annotated[Path, typer.Option(help="Folder for the maps and their tables.")] = Path("dwi"),
    workers: Annotated[int, typer.Option(help="Processes (one series each).")] = 1,
    dask: Dask = None,
    jobqueue: Jobqueue = None,
    max_bval: Annotated[
        float, typer.Option(help="Shells up to this b-value (s/mm^2) enter the tensor fit.")
    ] = 1500.0,
    fit_method: Annotated[str, typer.Option(help="WLS | OLS | NLLS | RT.")] = "WLS",
    denoise: Annotated[
        str | None, typer.Option(help="mppca | patch2self (slow; off by default).")
    ] = None,
    gibbs: Annotated[bool, typer.Option(help="Remove Gibbs ringing before the fit.")] = False,
    orientation: Annotated[
        str, typer.Option(help="b-vector frame check: record | exclude | off.")
    ] = "record",
    fresh: Fresh = False,
) -> None:
    """Turn every DWI series of a crawl index into MD, FA and mean-b0 images (dipy).

    OUT gets the images in the released layout, OUT/dwi.parquet (their rows, image schema) and
    OUT/dwi.excluded.parquet (series or maps that could not be made, and why). Killed, the same
    command resumes from its journal (OUT/.build): finished series are not run again.
    """
    from openmind_data.crawl import read_index  # noqa: PLC0415
    from openmind_data.dwi import DwiOptions, run_dwi  # noqa: PLC0415
    from openmind_data.executors import make_executor  # noqa: PLC0415

    options = DwiOptions(
        max_bval=max_bval,
        fit_method=fit_method,
        denoise=denoise,
        gibbs=gibbs,
        orientation=orientation,
    )
    with closing(make_executor(workers=workers, dask=dask, jobqueue=jobqueue)) as executor:
        result = run_dwi(
            read_index(index).candidates,
            root,
            out,
            options,
            **_running(executor, fresh),
        )
    _write_and_report(result, out)


@app.command()
def masks(
    index: Annotated[Path, typer.Argument(help="The crawl's candidate table (index.parquet).")],
    root: Annotated[list[Path], typer.Option(help="The folders the crawl was given (repeatable).")],
    out: Annotated[Path, typer.Option(help="Folder for the masks and their table.")] = Path(
        "masks"
    ),
    dwi: Annotated[
        Path | None, typer.Option(help="Also mask the DWI stage's maps (its --out folder).")
    ] = None,
    brain: Brain = "auto",
    hdbet_params: HdbetParams = None,
    device: Device = "cpu",
    deface: Deface = "deface",
    brain_cut: BrainCut = "exclude",
    workers: Annotated[int, typer.Option(help="Processes (one image each).")] = 1,
    dask: Dask = None,
    jobqueue: Jobqueue = None,
    fresh: Fresh = False,
) -> None:
    """Anatomy, anonymization and brain masks for every image; deface what is not defaced.

    OUT gets the masks (uint8 0/1, beside each image's place in the released layout), the
    images the toolkit defaced, OUT/masks.parquet and OUT/masks.excluded.parquet. Killed, the
    same command resumes from its journal (OUT/.build).
    """
    import pyarrow.parquet as pq  # noqa: PLC0415

    from openmind_data.crawl import read_index  # noqa: PLC0415
    from openmind_data.executors import make_executor  # noqa: PLC0415
    from openmind_data.masks import MaskOptions, run_masks  # noqa: PLC0415

    options = MaskOptions(
        brain=brain, hdbet_params=hdbet_params, device=device, deface=deface, brain_cut=brain_cut
    )
    with closing(make_executor(workers=workers, dask=dask, jobqueue=jobqueue)) as executor:
        result = run_masks(
            read_index(index).candidates,
            root,
            out,
            options,
            derived=pq.read_table(dwi / "dwi.parquet") if dwi is not None else None,
            derived_root=dwi,
            **_running(executor, fresh),
        )
    _write_and_report(result, out)


quality_app = typer.Typer(
    help="Image quality: metrics and IQS, calibration to ratings, a contact sheet to check.",
    no_args_is_help=True,
)
app.add_typer(quality_app, name="quality")

Roots = Annotated[list[Path], typer.Option(help="The folders the crawl was given (repeatable).")]
MasksDir = Annotated[Path, typer.Option(help="The masks stage's folder (its --out).")]
DwiDir = Annotated[
    Path | None, typer.Option(help="The DWI stage's folder, where the table has its maps.")
]
ModelFile = Annotated[
    Path | None, typer.Option(help="IQS model file (default: the one shipped with openmind).")
]
MriqcModality = Annotated[
    str, typer.Option(help="The modality of an MRIQC table's scans (without a modality column).")
]
Released = Annotated[
    Path | None,
    typer.Option(help="Released scores (e.g. OpenMind's openneuro_metadata.csv) to import."),
]


@quality_app.command("score")
def quality_score(
    table: Annotated[Path, typer.Argument(help="The masks stage's table (masks.parquet).")],
    root: Roots,
    masks: MasksDir,
    dwi: DwiDir = None,
    out: Annotated[Path, typer.Option(help="Folder for quality.parquet.")] = Path("quality"),
    model: ModelFile = None,
    released: Released = None,
    workers: Annotated[int, typer.Option(help="Processes (one image each).")] = 1,
    dask: Dask = None,
    jobqueue: Jobqueue = None,
    fresh: Fresh = False,
) -> None:
    """Measure every image over its masks and score it: OUT/quality.parquet (the image table
    with the iqm_* columns and image_quality_score) and OUT/quality.excluded.parquet. Killed,
    the same command resumes from its journal of measured images (OUT/.build)."""
    from openmind_data.executors import make_executor  # noqa: PLC0415
    from openmind_data.masks import voxel_paths  # noqa: PLC0415
    from openmind_data.quality import load_model, read_ratings, run_quality  # noqa: PLC0415
    from openmind_data.schema import IMAGE_SCHEMA, read_table  # noqa: PLC0415

    images = read_table(table, IMAGE_SCHEMA)
    with closing(make_executor(workers=workers, dask=dask, jobqueue=jobqueue)) as executor:
        result = run_quality(
            images,
            voxel_paths(images, root, masks, derived_root=dwi),
            masks,
            load_model(model),
            released=read_ratings(released) if released else None,
            out=out,
            **_running(executor, fresh),
        )
    _write_and_report(result, out)


@quality_app.command("rescore")
def quality_rescore(
    table: Annotated[
        Path, typer.Argument(help="A table with the iqm_* columns, or an MRIQC group table.")
    ],
    out: Annotated[
        Path, typer.Option(help="The re-scored table (Parquet; an MRIQC table's: .tsv/.csv too).")
    ],
    model: ModelFile = None,
    released: Released = None,
    modality: MriqcModality = "T1w",
) -> None:
    """Score a measured table again with another model (no voxel is read). An MRIQC group
    table (group_T1w.tsv: MRIQC's metric columns) keeps its rows and columns and gains
    image_quality_score, each scan measured against its site."""
    from openmind_data.quality import (  # noqa: PLC0415
        is_mriqc_table,
        load_model,
        read_mriqc_table,
        read_ratings,
        score_mriqc,
        score_table,
    )
    from openmind_data.quality.mriqc import write_rows  # noqa: PLC0415
    from openmind_data.schema import IMAGE_SCHEMA, read_table, write_table  # noqa: PLC0415

    if is_mriqc_table(table):
        scored = score_mriqc(read_mriqc_table(table, modality), load_model(model))
        write_rows(scored, out)
    else:
        scored = score_table(
            read_table(table, IMAGE_SCHEMA),
            load_model(model),
            released=read_ratings(released) if released else None,
        )
        write_table(scored, out)
    typer.echo(f"rescored {scored.num_rows} images; wrote {out}")


@quality_app.command("calibrate")
def quality_calibrate(
    table: Annotated[
        Path,
        typer.Argument(
            help="A table with the iqm_* columns (with --ratings), or an MRIQC group table "
            "with rater_* columns (-1 exclude, 0 doubtful, 1 accept)."
        ),
    ],
    ratings: Annotated[
        Path | None,
        typer.Option(
            help="CSV/TSV/Parquet: a score column (rating, score or image_quality_score) and "
            "image_id, image_path, or dataset_id and modality."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="The new model file (JSON).")] = Path("iqs.json"),
    name: Annotated[str, typer.Option(help="The model's name.")] = "iqs-calibrated",
    version: Annotated[str, typer.Option(help="The model's version.")] = "1",
    prior: Annotated[
        Path | None,
        typer.Option(help="Model whose references modalities without enough images keep."),
    ] = None,
    min_images: Annotated[
        int, typer.Option(help="Fewest images a modality needs for its own references.")
    ] = 5,
    modality: MriqcModality = "T1w",
) -> None:
    """Fit the IQS model to ratings (a rater's 1-5 scores, OpenMind's released group scores, or
    an MRIQC table's raters) and write its parameter file; use it with --model."""
    from openmind_data.errors import ConfigError  # noqa: PLC0415
    from openmind_data.quality import (  # noqa: PLC0415
        FitSettings,
        calibrate,
        calibrate_mriqc,
        is_mriqc_table,
        load_model,
        read_mriqc_table,
        read_ratings,
    )
    from openmind_data.schema import IMAGE_SCHEMA, read_table  # noqa: PLC0415

    settings = FitSettings(min_images=min_images)
    base = load_model(prior)
    if is_mriqc_table(table):
        fit = calibrate_mriqc(
            read_mriqc_table(table, modality),
            name=name,
            version=version,
            prior=base,
            settings=settings,
        )
    elif ratings is None:
        raise ConfigError(f"{table}: not an MRIQC table, so --ratings is needed")
    else:
        fit = calibrate(
            read_table(table, IMAGE_SCHEMA),
            read_ratings(ratings),
            name=name,
            version=version,
            prior=base,
            settings=settings,
        )
    _print_counts(fit.counts())
    typer.echo(f"wrote {fit.model.save(out)}")


@quality_app.command("sheet")
def quality_sheet(
    table: Annotated[Path, typer.Argument(help="A scored table (quality.parquet).")],
    root: Roots,
    masks: MasksDir,
    dwi: DwiDir = None,
    out: Annotated[Path, typer.Option(help="The sheet: .png or .html.")] = Path(
        "quality-sheet.png"
    ),
    per_modality: Annotated[
        int, typer.Option(help="Best and worst images shown per modality.")
    ] = 4,
) -> None:
    """Middle slices of the best- and worst-scoring images of each modality, to check by eye."""
    from openmind_data.masks import voxel_paths  # noqa: PLC0415
    from openmind_data.quality import write_quality_sheet  # noqa: PLC0415
    from openmind_data.schema import IMAGE_SCHEMA, read_table  # noqa: PLC0415

    images = read_table(table, IMAGE_SCHEMA)
    voxels = voxel_paths(images, root, masks, derived_root=dwi)
    typer.echo(f"wrote {write_quality_sheet(images, voxels, out, per_modality=per_modality)}")


def _write_and_report(result: Any, out: Path) -> None:
    """Write a stage's tables (``result.write``), print its counts and the files written."""
    paths = result.write(out)
    _print_counts(result.counts())
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def _report_folder(result: Any) -> None:
    """The counts of a build or an import, and the tables it wrote."""
    _print_counts(result.summary())
    tables = ", ".join(str(p) for p in result.folder.tables.values())
    typer.echo(f"wrote {result.out}/ ({tables})")


def _print_counts(counts: dict[str, object]) -> None:
    for key, value in counts.items():
        if isinstance(value, dict):
            typer.echo(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            typer.echo(f"{key}: {value}")


@app.command()
def card(
    folder: Annotated[Path, typer.Argument(help="A dataset folder `openmind build` wrote.")],
    repo_id: Annotated[
        str | None, typer.Option(help="The repo the card's examples load (default: the folder).")
    ] = None,
    check: Annotated[bool, typer.Option(help="Only validate the card that is there.")] = False,
) -> None:
    """Render the dataset card (FOLDER/README.md and FOLDER/assets/*.png) from the metadata
    tables, then validate it offline against the Hub's metadata rules."""
    from openmind_data.card import validate_card, write_card  # noqa: PLC0415

    if not check:
        result = write_card(folder, repo_id=repo_id)
        figures = ", ".join(map(str, result.figures.values()))
        typer.echo(f"card: {result.readme}  figures: {figures}")
    problems = validate_card(folder)
    for problem in problems:
        typer.echo(f"invalid: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{folder / 'README.md'}: valid")


@app.command()
def info(
    dataset: Annotated[str, typer.Argument(help="A dataset folder, or a Hub repo id.")],
    revision: Annotated[str | None, typer.Option(help="Hub branch, tag or commit.")] = None,
) -> None:
    """Print what a dataset holds (images per modality, subjects, splits, IQS, licences), from
    its metadata tables alone: no voxel is read."""
    from openmind_data.card.render import read_summary  # noqa: PLC0415
    from openmind_data.card.summary import listing, summary_table  # noqa: PLC0415

    summary = read_summary(dataset, revision=revision)
    typer.echo(summary_table(summary))
    typer.echo(f"licences: {listing(summary.licences)}")
    typer.echo(f"IQS model: {', '.join(summary.iqs_models) or 'none'}")
    typer.echo(f"excluded: {summary.excluded} ({listing(summary.exclusions)})")


@app.command()
def view(
    dataset: Annotated[str, typer.Argument(help="A dataset folder, or a Hub repo id.")],
    port: Annotated[int, typer.Option(help="The port to serve on.")] = 8765,
    host: Annotated[str, typer.Option(help="The address to serve on.")] = "127.0.0.1",
    ratings: Annotated[
        Path, typer.Option(help="The ratings file (CSV) to read and add to.")
    ] = Path("ratings.csv"),
    rater: Annotated[str, typer.Option(help="Your name, recorded with each rating.")] = "",
    model: Annotated[
        Path | None, typer.Option(help="The IQS model file that explains the scores.")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Hub branch, tag or commit.")] = None,
) -> None:
    """Browse a dataset in your web browser: filter and sort its images, look at each one with
    its masks, its metrics and their share of the IQS, and rate it from the keyboard (a accept,
    d doubtful, x exclude, 1-5, n next unrated). Calibrate on the ratings with `openmind
    quality calibrate DATASET/metadata/images.parquet --ratings ratings.csv`."""
    import uvicorn  # noqa: PLC0415

    from openmind_data.view import open_viewer  # noqa: PLC0415

    application = open_viewer(dataset, ratings, model=model, rater=rater, revision=revision)
    typer.echo(f"{dataset} at http://{host}:{port}/ ; ratings go to {ratings.resolve()}")
    uvicorn.run(application, host=host, port=port, log_level="warning")


@app.command()
def publish(
    folder: Annotated[Path, typer.Argument(help="A dataset folder `openmind build` wrote.")],
    repo_id: Annotated[
        str, typer.Option(help="The dataset repo: ORG/NAME or hf://datasets/ORG/NAME.")
    ],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[
        str | None, typer.Option(help="Branch to commit to (made when missing).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="List what would be uploaded and deleted; change nothing.")
    ] = False,
    card: Annotated[
        bool, typer.Option(help="Render the card for REPO_ID before uploading.")
    ] = True,
    commit_gb: Annotated[float, typer.Option(help="About this many GB per commit.")] = 8.0,
) -> None:
    """Upload FOLDER to a Hub dataset repo, in several commits, skipping files the repo already
    holds; run it again to resume. The token comes from HF_TOKEN or `hf auth login`."""
    from openmind_data.publishing import publish as run_publish  # noqa: PLC0415

    result = run_publish(
        folder,
        repo_id,
        private=private,
        revision=revision,
        dry_run=dry_run,
        render_card=card,
        commit_bytes=int(commit_gb * 1024**3),
        progress=typer.echo,
    )
    if dry_run:
        typer.echo(result.plan.describe())
        return
    plan = result.plan
    typer.echo(
        f"{result.url}: {len(plan.upload)} files uploaded in {len(result.commits)} commits, "
        f"{len(plan.unchanged)} already there, {len(plan.delete)} deleted"
    )


@app.command()
def schema(
    table: Annotated[
        str, typer.Argument(help="images | shard | excluded | ignored | sources")
    ] = "images",
) -> None:
    """Print a table's columns, types and descriptions."""
    from openmind_data import schema as s  # noqa: PLC0415

    schemas = {
        "images": s.IMAGE_SCHEMA,
        "shard": s.SHARD_SCHEMA,
        "excluded": s.EXCLUDED_SCHEMA,
        "ignored": s.IGNORED_SCHEMA,
        "sources": s.SOURCES_SCHEMA,
    }
    if table not in schemas:
        raise typer.BadParameter(f"unknown table {table!r}; choose from {sorted(schemas)}")
    typer.echo(f"# {table} (schema {s.SCHEMA_VERSION}, BIDS {s.BIDS_VERSION})")
    for name, type_, description in s.describe(schemas[table]):
        typer.echo(f"{name:<26} {type_:<34} {description}")


@app.command()
def modalities() -> None:
    """Print the modality vocabulary and the BIDS rules that map files to it."""
    from openmind_data.modalities import MODALITIES, RULES  # noqa: PLC0415

    for m in MODALITIES:
        rules = [
            f"{r.datatype}/{r.suffix}" + "".join(f" {k}~{v}" for k, v in r.labels.items())
            for r in RULES
            if r.modality == m.name
        ]
        flag = "" if m.published else " (candidate only)"
        typer.echo(f"{m.name:<10} {m.kind:<13} {m.description}{flag}")
        typer.echo(f"{'':<10} from: {', '.join(rules) or 'computed'}")


def _summarise(files: list[dict[str, object]]) -> None:
    roles: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for record in files:
        roles[str(record["role"])] = roles.get(str(record["role"]), 0) + 1
        if record["role"] == "excluded":
            reasons[str(record["reason"])] = reasons.get(str(record["reason"]), 0) + 1
    typer.echo("files: " + ", ".join(f"{n} {role}" for role, n in sorted(roles.items())))
    typer.echo("broken on purpose: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))


if __name__ == "__main__":
    app()
