"""A contact sheet of the best- and worst-scoring images of each modality, so a person can check
the image quality ranking by eye."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from openmind_data.errors import ConfigError, SchemaError
from openmind_data.slices import middle_sagittal, save_figure, scaled

__all__ = ["write_quality_sheet"]

REQUIRED = ("image_id", "dataset_id", "modality", "image_quality_score")
SHOWN_IQMS = ("snr", "efc")  # the image quality metrics a caption shows, where present
SUFFIXES = (".png", ".html")
TILE_INCHES = (2.0, 2.4)  # width, height of one tile with its caption


def _present(value: Any) -> bool:
    """Whether a cell holds a number (not null, not NaN)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _select(rows: list[dict[str, Any]], per_modality: int) -> dict[str, list[tuple[str, int]]]:
    """Modality -> (rank label, row index) of its ``per_modality`` best (ascending score) then
    its ``per_modality`` worst (descending score), each image at most once; ties by image_id."""
    by_modality: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_modality.setdefault(str(row["modality"]), []).append(index)
    chosen: dict[str, list[tuple[str, int]]] = {}
    for modality in sorted(by_modality):
        ranked = sorted(
            by_modality[modality],
            key=lambda i: (float(rows[i]["image_quality_score"]), str(rows[i]["image_id"])),
        )
        best = ranked[:per_modality]
        worst = ranked[len(best) :][::-1][:per_modality]
        chosen[modality] = [(f"best {n}", i) for n, i in enumerate(best, 1)] + [
            (f"worst {n}", i) for n, i in enumerate(worst, 1)
        ]
    return chosen


def _driver(row: dict[str, Any]) -> str | None:
    """The metric that added most to the score, from the row's quality provenance step."""
    for step in reversed(row.get("provenance") or []):
        if step["step"] == "quality" and step.get("parameters"):
            parts = json.loads(step["parameters"]).get("contributions") or {}
            if parts:
                return str(max(parts, key=parts.__getitem__)).removeprefix("iqm_")
    return None


def _caption(row: dict[str, Any]) -> list[str]:
    """Caption lines: dataset and modality, the score (and the metric that drove it), and the
    shown metrics that are present."""
    driver = _driver(row)
    lines = [
        f"{row['dataset_id']} {row['modality']}",
        f"IQS {float(row['image_quality_score']):.2f}" + (f" ({driver})" if driver else ""),
    ]
    metrics = [
        f"{name} {float(row[f'iqm_{name}']):.3g}"
        for name in SHOWN_IQMS
        if _present(row.get(f"iqm_{name}"))
    ]
    if metrics:
        lines.append(" ".join(metrics))
    return lines


def _draw(ax: Any, path: Path, title: list[str] | None = None) -> None:
    """One tile: the middle slice of ``path`` in grey, with ``title`` above it if given."""
    picture, aspect = middle_sagittal(path)
    ax.imshow(scaled(picture), cmap="gray", origin="lower", aspect=aspect)
    if title:
        ax.set_title("\n".join(title), fontsize=7)


def _html(
    rows: list[dict[str, Any]],
    chosen: dict[str, list[tuple[str, int]]],
    voxels: Mapping[str, Path],
    dpi: int,
    plt: Any,
) -> str:
    """A self-contained page: a heading per modality, a best and a worst section, and one
    captioned tile per image with its picture embedded as a base64 PNG."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><title>Image quality contact sheet</title>',
        (
            "<style>body{font-family:sans-serif}figure{display:inline-block;margin:4px;"
            "text-align:center}figcaption{font-size:12px;white-space:pre-line}</style>"
        ),
        "</head>",
        "<body>",
        "<h1>Image quality contact sheet</h1>",
        "<p>IQS: image quality score, 1 = best .. 5 = worst.</p>",
    ]
    for modality, tiles in chosen.items():
        parts.append(f"<h2>{html.escape(modality)}</h2>")
        for group in ("best", "worst"):
            members = [(rank, i) for rank, i in tiles if rank.split()[0] == group]
            if not members:
                continue
            parts.append(f"<h3>{group}</h3>")
            parts.append("<div>")
            for rank, index in members:
                row = rows[index]
                figure, ax = plt.subplots(figsize=(TILE_INCHES[0], TILE_INCHES[0]))
                ax.axis("off")
                _draw(ax, Path(voxels[str(row["image_id"])]))
                figure.tight_layout(pad=0.1)
                buffer = io.BytesIO()
                figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
                plt.close(figure)
                encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
                caption = html.escape("\n".join([rank, *_caption(row)]))
                alt = html.escape(f"{rank} {row['image_id']}", quote=True)
                parts.append(
                    f'<figure><img src="data:image/png;base64,{encoded}" alt="{alt}">'
                    f"<figcaption>{caption}</figcaption></figure>"
                )
            parts.append("</div>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_quality_sheet(
    images: pa.Table,
    voxels: Mapping[str, Path],
    out: str | Path,
    *,
    per_modality: int = 4,
    dpi: int = 80,
) -> Path:
    """Write the middle sagittal slices of the ``per_modality`` best and ``per_modality`` worst
    images of each modality by ``image_quality_score`` (fewer where a modality has fewer; rows
    without a score are left out), each captioned with dataset, modality, score and, where
    present, ``iqm_snr`` and ``iqm_efc``. ``images`` holds image-table rows, ``voxels`` maps
    their image_id to the NIfTI file. ``out`` ending in ``.png`` gets one PNG, a row per
    modality; ending in ``.html`` a self-contained page with the tiles embedded."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: the quality sheet is written as .png or .html, not {suffix!r}")
    if per_modality < 1:
        raise ConfigError(f"per_modality must be at least 1, not {per_modality}")
    missing = [name for name in REQUIRED if name not in images.column_names]
    if missing:
        raise SchemaError(f"the images table has no column {', '.join(map(repr, missing))}")
    rows = [r for r in images.to_pylist() if _present(r["image_quality_score"])]
    if not rows:
        raise ConfigError(
            "no image has an image_quality_score: nothing to show; score the images first"
        )
    chosen = _select(rows, per_modality)
    unknown = sorted(
        str(rows[i]["image_id"])
        for tiles in chosen.values()
        for _, i in tiles
        if str(rows[i]["image_id"]) not in voxels
    )
    if unknown:
        raise ConfigError(f"no NIfTI file given for image_id {', '.join(unknown)}")

    import matplotlib  # noqa: PLC0415 (keep matplotlib off the import path of the package)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".html":
        path.write_text(_html(rows, chosen, voxels, dpi, plt), encoding="utf-8")
        return path
    columns = max(len(tiles) for tiles in chosen.values())
    figure, axes = plt.subplots(
        len(chosen),
        columns,
        figsize=(TILE_INCHES[0] * columns, TILE_INCHES[1] * len(chosen)),
        squeeze=False,
    )
    for ax in axes.ravel():
        ax.axis("off")
    for line, tiles in zip(axes, chosen.values(), strict=True):
        for ax, (rank, index) in zip(line, tiles, strict=False):
            row = rows[index]
            _draw(ax, Path(voxels[str(row["image_id"])]), [rank, *_caption(row)])
    return save_figure(figure, path, dpi=dpi, metadata={"Software": None})
