"""A mock of OpenMind's release, made from a built tree, with the release's quirks on purpose.

The layout is the release's (``openneuro_metadata.csv`` at the root, the images under
``OpenMind/``, each image's masks in ``<stem>__Data/{fb_mask,deface_mask}.nii.gz``, a card with
a ``license``). Its released IQS is one score per (dataset, modality) group, as the release's:
:data:`GOOD` datasets score 1.5, the others 3.0.

Quirks, each on its own T1w image of a good dataset (:attr:`MockRelease.quirks` names them):

- ``nii``: the image stored as ``.nii`` (not gzipped), the CSV saying so;
- ``no_anat_cell``, ``no_mask_cells``: empty anatomy cell; both mask cells empty;
- ``regridded``: the anatomy mask on another grid (three slices cropped, origin moved);
- ``truncated``: the image cut in half; ``missing``: the image not in the release;
- ``swapped``: the CSV's two mask columns exchanged;
- ``no_anon_file``: the CSV names a deface mask the release does not hold;
- ``anon_on_signal``: a deface mask over voxels that still hold signal (the anatomy's own);
- ``unscored``: no released score (so no score filter passes it);
- metadata cells: ``nan``, empty, ``n/a``, ``NaN`` and an age of ``adult``;
- rows of modalities outside the vocabulary (``sbref``, ``PET``), one ``UNIT1_denoised`` (a
  T1w image's copy), and two rows whose ``image_path`` is unusable (empty, ``..``).
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from openmind_data.curate import BuildResult
from openmind_data.release.layout import IMAGES_FOLDER, METADATA_CSV, tree_file
from openmind_data.release.table import write_release_csv

GOOD = ("ds000001", "ds000002", "ds000003")
QUIRKS = (
    "nii", "no_anat_cell", "no_mask_cells", "regridded", "truncated", "missing", "swapped",
    "no_anon_file", "anon_on_signal", "unscored",
)  # fmt: skip
CARD = "---\nlicense: cc-by-4.0\npretty_name: A mock OpenMind\n---\n\n# A mock of the release\n"


@dataclass
class MockRelease:
    root: Path
    rows: list[dict[str, str]]  # the CSV's rows, as written
    quirks: dict[str, dict[str, str]] = field(default_factory=dict)  # quirk -> its CSV row
    regridded: Any = None  # the anatomy mask of the 'regridded' image before it was cropped

    def files(self, row: dict[str, str]) -> list[str]:
        """Release paths of the files a CSV row names that the release holds."""
        named = [row[c] for c in ("image_path", "anat_mask_path", "anon_mask_path") if row[c]]
        return [f"{IMAGES_FOLDER}/{p}" for p in named if (self.root / IMAGES_FOLDER / p).is_file()]


def make_mock_release(built: tuple[BuildResult, Path], root: Path) -> MockRelease:
    result, tree = built
    images = [r for r in result.images.to_pylist() if r["modality"] != "DWI"]
    (root / IMAGES_FOLDER).mkdir(parents=True)
    for row in images:
        for column in ("image_path", "anat_mask_path", "anon_mask_path"):
            target = tree_file(root, row[column])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tree_file(tree, row[column]), target)
    text = write_release_csv(
        [
            {
                **row,
                "unique_id": f"{row['dataset_id']}_{index:06d}",
                "image_quality_score": 1.5 if row["dataset_id"] in GOOD else 3.0,
            }
            for index, row in enumerate(images)
        ]
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    mock = MockRelease(root, rows)
    t1w = [r for r in rows if r["modality"] == "T1w" and r["unique_id"][:8] in GOOD]
    assert len(t1w) >= len(QUIRKS) + 1, "the mock needs more good T1w images"
    mock.regridded = np.asanyarray(nib.load(tree_file(root, t1w[3]["anat_mask_path"])).dataobj)
    for quirk, row in zip(QUIRKS, t1w, strict=False):
        mock.quirks[quirk] = row
        _QUIRKS[quirk](root, row)
    mock.quirks["clean"] = t1w[len(QUIRKS)]
    first = rows[0]
    first.update(age="nan", sex="", weight="n/a", bmi="NaN")
    rows[1]["age"] = "adult"
    source = mock.quirks["clean"]
    extra = [
        _copy_row(root, source, "sbref", "_sbref"),
        _copy_row(root, source, "PET", "_pet"),
        _copy_row(root, source, "UNIT1_denoised", "_desc-denoised_UNIT1"),
        {**source, "unique_id": "ds000001_bad1", "image_path": ""},
        {**source, "unique_id": "ds000001_bad2", "image_path": "ds000001/../../etc/x.nii.gz"},
    ]
    mock.quirks["unit1_denoised"] = extra[2]
    rows.extend(extra)
    with (root / METADATA_CSV).open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (root / "README.md").write_text(CARD)
    return mock


def _copy_row(root: Path, row: dict[str, str], modality: str, suffix: str) -> dict[str, str]:
    """A row for a copy of ``row``'s image under another name (``..._T1w`` -> ``...suffix``)."""
    image = row["image_path"].replace("_T1w.nii.gz", f"{suffix}.nii.gz")
    original = nib.load(tree_file(root, row["image_path"]))
    data = np.asanyarray(original.dataobj).copy()
    data.flat[0] += 1  # not a byte copy: the build would drop it as a duplicate
    nib.save(nib.Nifti1Image(data, original.affine, original.header), tree_file(root, image))
    return {
        **row,
        "unique_id": row["unique_id"] + modality,
        "image_path": image,
        "modality": modality,
    }


def _nii(root: Path, row: dict[str, str]) -> None:
    gz = tree_file(root, row["image_path"])
    plain = gz.with_name(gz.name.removesuffix(".gz"))
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    row["image_path"] = row["image_path"].removesuffix(".gz")


def _regridded(root: Path, row: dict[str, str]) -> None:
    path = tree_file(root, row["anat_mask_path"])
    mask = nib.load(path)
    data = np.asarray(mask.dataobj)[3:]
    affine = mask.affine.copy()
    affine[:3, 3] += affine[:3, 0] * 3  # the first kept voxel is where voxel 3 was
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), path)


def _truncated(root: Path, row: dict[str, str]) -> None:
    path = tree_file(root, row["image_path"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _swapped(root: Path, row: dict[str, str]) -> None:
    row["anat_mask_path"], row["anon_mask_path"] = row["anon_mask_path"], row["anat_mask_path"]


def _anon_on_signal(root: Path, row: dict[str, str]) -> None:
    shutil.copyfile(tree_file(root, row["anat_mask_path"]), tree_file(root, row["anon_mask_path"]))


_QUIRKS: dict[str, Any] = {
    "nii": _nii,
    "no_anat_cell": lambda root, row: row.update(anat_mask_path=""),
    "no_mask_cells": lambda root, row: row.update(anat_mask_path="", anon_mask_path=""),
    "regridded": _regridded,
    "truncated": _truncated,
    "missing": lambda root, row: tree_file(root, row["image_path"]).unlink(),
    "swapped": _swapped,
    "no_anon_file": lambda root, row: tree_file(root, row["anon_mask_path"]).unlink(),
    "anon_on_signal": _anon_on_signal,
    "unscored": lambda root, row: row.update(image_quality_score=""),
}
