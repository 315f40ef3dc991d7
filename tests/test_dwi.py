"""The DWI stage: gradient checks, shell selection, maps against truth and against dipy, files."""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs
from dipy.reconst.dti import TensorModel
from dwi_phantoms import fa_md, ring_phantom, signals
from numpy.typing import NDArray

from openmind_data.crawl import CrawlResult
from openmind_data.dwi import (
    DwiOptions,
    check_orientation,
    derived_path,
    process_series,
    read_gradients,
    run_dwi,
    select_volumes,
    validate_gradients,
)
from openmind_data.dwi.gradients import count_directions, design_rank
from openmind_data.errors import ConfigError, InvalidInputError
from openmind_data.ids import image_id
from openmind_data.synth import Collection
from openmind_data.synth.diffusion import gradient_scheme

DIPY_FILES = files("dipy.data") / "files"


# -- helpers ------------------------------------------------------------------------------------


def write_series(
    root: Path,
    data: NDArray[Any],
    bvals: NDArray[Any],
    bvecs: NDArray[Any],
    *,
    name: str = "sub-01_dwi",
    dtype: str = "float32",
    affine: NDArray[Any] | None = None,
    slope: float | None = None,
) -> dict[str, Any]:
    """A one-series BIDS-like dataset under ``root``; returns its crawl-style row."""
    folder = root / "sub-01" / "dwi"
    folder.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(
        np.asarray(data).astype(dtype), np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    )
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    nib.save(image, folder / f"{name}.nii.gz")
    (folder / f"{name}.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    (folder / f"{name}.bvec").write_text(
        "\n".join(" ".join(f"{v:.8f}" for v in row) for row in np.asarray(bvecs).T) + "\n"
    )
    return row_for(root.name, f"sub-01/dwi/{name}.nii.gz")


def row_for(dataset: str, source: str) -> dict[str, Any]:
    stem = source.removesuffix(".nii.gz").removesuffix(".nii")
    return {
        "image_id": image_id(dataset, source),
        "dataset_id": dataset,
        "dataset_version": "1.0.0",
        "subject": "01",
        "source_path": source,
        "bval_path": f"{stem}.bval",
        "bvec_path": f"{stem}.bvec",
        "modality": "DWI",
        "provenance": [],
    }


def arrays_by_derivation(outcome: Any) -> dict[str, NDArray[np.float32]]:
    return {r["derivation"]: outcome.arrays[r["image_id"]] for r in outcome.images}


def reason_of(error: pytest.ExceptionInfo[InvalidInputError]) -> str:
    return error.value.reason


# -- gradient tables ----------------------------------------------------------------------------


def test_reads_fsl_rows_and_columns_alike(tmp_path: Path) -> None:
    bvals, bvecs = gradient_scheme("small_64D")
    (tmp_path / "a.bval").write_text(" ".join(map(str, bvals)))
    (tmp_path / "rows.bvec").write_text("\n".join(" ".join(map(str, r)) for r in bvecs.T))
    (tmp_path / "cols.bvec").write_text("\n".join(" ".join(map(str, r)) for r in bvecs))
    _, rows = read_gradients(tmp_path / "a.bval", tmp_path / "rows.bvec")
    b, cols = read_gradients(tmp_path / "a.bval", tmp_path / "cols.bvec")
    np.testing.assert_array_equal(rows, cols)
    np.testing.assert_array_equal(b, bvals)


def test_reads_dipys_own_files_with_a_nan_b0_vector() -> None:
    # small_64D.bvec, shipped with dipy, gives its b0 direction as "nan nan nan".
    bvals, bvecs = read_gradients(DIPY_FILES / "small_64D.bval", DIPY_FILES / "small_64D.bvec")
    checked = validate_gradients(bvals, bvecs, 65, where="small_64D.nii")
    assert checked.is_b0.sum() == 1
    assert np.isfinite(checked.bvecs).all()
    assert any("non-finite" in r for r in checked.repairs)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("0 1000 abc", "invalid_gradients"),
        ("", "invalid_gradients"),
        (b"0 1000\xff", "not_utf8"),
    ],
)
def test_unreadable_bvals(tmp_path: Path, content: str | bytes, reason: str) -> None:
    bval = tmp_path / "x.bval"
    bval.write_bytes(content.encode() if isinstance(content, str) else content)
    (tmp_path / "x.bvec").write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(InvalidInputError) as error:
        read_gradients(bval, tmp_path / "x.bvec")
    assert reason_of(error) == reason
    assert error.value.path == str(bval)


def _table(n: int = 31, b: float = 1000.0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    bvals, bvecs = gradient_scheme("small_64D")
    bvals = np.round(bvals[:n], -2)
    bvals[bvals > 0] = b
    return bvals, bvecs[:n].copy()


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        (lambda b, v: (b[:-1], v[:-1]), "gradient_mismatch", "30 b-values and 30 b-vectors for 31"),
        (lambda b, v: (np.where(np.arange(31) == 4, -5.0, b), v), "invalid_gradients", "negative"),
        (lambda b, v: (b / 1000, v), "invalid_gradients", "ms/um^2"),
        (lambda b, v: (b * 30, v), "invalid_gradients", "plausible"),
        (lambda b, v: (np.where(b == 0, 1000.0, b), v), "no_b0", "no volume with b <= 50"),
        (
            lambda b, v: (b, v * np.where(np.arange(31) == 7, 0.5, 1.0)[:, None]),
            "invalid_gradients",
            "volume 7",
        ),
        (
            lambda b, v: (b, np.where(np.arange(31)[:, None] == 3, np.nan, v)),
            "invalid_gradients",
            "volume 3",
        ),
    ],
)
def test_gradient_checks_refuse_with_a_reason(change: Any, reason: str, words: str) -> None:
    bvals, bvecs = change(*_table())
    with pytest.raises(InvalidInputError) as error:
        validate_gradients(bvals, bvecs, 31, where="sub-01_dwi.nii.gz")
    assert reason_of(error) == reason
    assert words in error.value.detail
    assert error.value.path == "sub-01_dwi.nii.gz"


def test_near_unit_vectors_are_renormalised_and_trace_volumes_left_out() -> None:
    bvals, bvecs = _table()
    bvecs[5] *= 1.04
    bvecs[9] = 0.0  # a DW volume without direction: a trace-weighted image
    checked = validate_gradients(bvals, bvecs, 31, where="x")
    assert np.allclose(np.linalg.norm(checked.bvecs[checked.is_dw], axis=1), 1.0)
    assert not checked.usable[9] and checked.is_dw.sum() == 29
    assert len(checked.repairs) == 2


def test_shell_selection() -> None:
    def select(scheme: str, top: float = 1500.0) -> Any:
        bvals, bvecs = gradient_scheme(scheme)
        return select_volumes(validate_gradients(bvals, bvecs, len(bvals), where=scheme), top)

    three = select("gtab_3shell")
    assert three.shells == (1000.0,) and not three.fallback
    bvals, _ = gradient_scheme("gtab_3shell")
    assert set(np.round(bvals[three.volumes], -2)) == {0.0, 1000.0}
    assert select("gtab_isbi2013_2shell").shells == (1500.0,)
    assert select("gtab_isbi2013_2shell", 2500.0).shells == (1500.0, 2500.0)
    single = select("small_25")  # b=2000 only: its lowest shell, said so
    assert single.shells == (2000.0,) and single.fallback and single.directions == 25


def test_direction_counting() -> None:
    axes = np.eye(3)
    same = np.vstack([axes, -axes, axes * 1.0])  # opposite and repeated directions are one
    assert count_directions(same) == 3
    angles = np.linspace(0, np.pi, 8, endpoint=False)
    flat = np.stack([np.cos(angles), np.sin(angles), np.zeros(8)], axis=1)
    assert count_directions(flat) == 8
    assert design_rank(flat) < 6  # eight directions in one plane do not determine a tensor
    _, bvecs = gradient_scheme("small_64D")
    assert design_rank(bvecs[1:7]) == 6


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="fit_method"):
        DwiOptions(fit_method="LS")
    with pytest.raises(ConfigError, match="denoise"):
        DwiOptions(denoise="nlmeans")
    with pytest.raises(ConfigError, match="b0_threshold"):
        DwiOptions(max_bval=40)


# -- the maps -----------------------------------------------------------------------------------


def test_known_tensors_are_recovered(tmp_path: Path) -> None:
    tensors = ring_phantom()
    data, bvals, bvecs = signals(tensors, "gtab_3shell", snr=None)
    row = write_series(tmp_path / "ds900001", data, bvals, bvecs)
    outcome = process_series(row, tmp_path / "ds900001", DwiOptions())
    assert not outcome.excluded
    maps = arrays_by_derivation(outcome)
    fa, md = fa_md(tensors)
    inside = maps["fa"] > 0
    assert inside.mean() > 0.9  # the whole box is tissue
    np.testing.assert_allclose(maps["fa"][inside], fa[inside], atol=2e-3)
    np.testing.assert_allclose(maps["md"][inside], md[inside], rtol=2e-3)
    np.testing.assert_allclose(maps["mean_b0"], 1000.0, rtol=1e-5)


def test_maps_hold_only_finite_values_in_range(tmp_path: Path) -> None:
    tensors = ring_phantom()
    data, bvals, bvecs = signals(tensors, snr=3.0, seed=1)  # noise wild enough to break fits
    data[4:8, 4:8, 2:4, 10:20] = 0.0  # dropped-out signal: log(0) in the fit
    row = write_series(tmp_path / "ds900002", data, bvals, bvecs)
    maps = arrays_by_derivation(process_series(row, tmp_path / "ds900002", DwiOptions()))
    for name, top in (("fa", 1.0), ("md", DwiOptions().md_max)):
        assert np.isfinite(maps[name]).all()
        assert maps[name].min() >= 0 and maps[name].max() <= top


@pytest.mark.parametrize("name", ["small_64D", "small_101D", "small_25"])
def test_dipys_real_series_agree_with_a_direct_dipy_fit(tmp_path: Path, name: str) -> None:
    """Real scanner data shipped with dipy: our stage against dipy's TensorModel used the
    documented way (read_bvals_bvecs, gradient_table, TensorModel(gtab).fit(data, mask))."""
    root = tmp_path / "ds900003"
    folder = root / "sub-01" / "dwi"
    folder.mkdir(parents=True)
    image_name = "small_64D.nii" if name == "small_64D" else f"{name}.nii.gz"
    ext = ".nii" if image_name.endswith(".nii") else ".nii.gz"
    shutil.copy(DIPY_FILES / image_name, folder / f"sub-01_dwi{ext}")
    shutil.copy(DIPY_FILES / f"{name}.bval", folder / "sub-01_dwi.bval")
    shutil.copy(DIPY_FILES / f"{name}.bvec", folder / "sub-01_dwi.bvec")
    row = row_for(root.name, f"sub-01/dwi/sub-01_dwi{ext}")
    options = DwiOptions()
    outcome = process_series(row, root, options)
    assert not outcome.excluded, outcome.excluded
    ours = arrays_by_derivation(outcome)

    bvals, bvecs = read_bvals_bvecs(
        str(DIPY_FILES / f"{name}.bval"), str(DIPY_FILES / f"{name}.bvec")
    )
    bvecs = np.nan_to_num(bvecs)
    data = nib.load(DIPY_FILES / image_name).get_fdata()
    fa_record = next(r for r in outcome.images if r["derivation"] == "fa")
    steps = {p["step"]: json.loads(p["parameters"]) for p in fa_record["provenance"]}
    keep = np.asarray(steps["dwi.tensor_fit"]["volumes"])  # b0s and the shells at most 1500
    assert bvals[keep].max() <= (2100 if name == "small_25" else options.max_bval + 100)
    gtab = gradient_table(bvals[keep], bvecs=bvecs[keep])
    mask = (ours["fa"] > 0) | (ours["md"] > 0)  # everything the stage fitted
    fit = TensorModel(gtab).fit(data[..., keep], mask=mask)
    np.testing.assert_allclose(ours["fa"][mask], np.clip(fit.fa[mask], 0, 1), atol=1e-4)
    np.testing.assert_allclose(
        ours["md"][mask], np.clip(fit.md[mask], 0, options.md_max), rtol=1e-4, atol=1e-9
    )
    b0 = data[..., bvals <= 50].mean(axis=-1)
    np.testing.assert_allclose(ours["mean_b0"], b0, rtol=1e-5)


def test_scaled_integers_give_the_maps_of_their_floats(tmp_path: Path) -> None:
    tensors = ring_phantom()
    data, bvals, bvecs = signals(tensors)
    stored = np.rint(data / 0.25)
    floats = write_series(tmp_path / "ds900004", stored * 0.25, bvals, bvecs)
    ints = write_series(tmp_path / "ds900005", stored, bvals, bvecs, dtype="int16", slope=0.25)
    a = arrays_by_derivation(process_series(floats, tmp_path / "ds900004", DwiOptions()))
    b = arrays_by_derivation(process_series(ints, tmp_path / "ds900005", DwiOptions()))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-9)


def test_slab_size_does_not_change_the_maps(tmp_path: Path) -> None:
    data, bvals, bvecs = signals(ring_phantom())
    row = write_series(tmp_path / "ds900006", data, bvals, bvecs)
    whole = arrays_by_derivation(process_series(row, tmp_path / "ds900006", DwiOptions()))
    slabs = arrays_by_derivation(
        process_series(row, tmp_path / "ds900006", DwiOptions(chunk_values=1000))
    )
    for key in whole:
        np.testing.assert_array_equal(whole[key], slabs[key])


def test_b0_only_and_too_few_directions_still_give_the_mean_b0(tmp_path: Path) -> None:
    data, bvals, bvecs = signals(ring_phantom())
    cases = {
        "b0only": (data[..., :1].repeat(3, axis=-1), np.zeros(3), np.zeros((3, 3))),
        "four": (data[..., :5], bvals[:5], bvecs[:5]),
    }
    for name, (d, b, v) in cases.items():
        root = tmp_path / f"ds9001{len(name):02d}"
        row = write_series(root, d, b, v)
        outcome = process_series(row, root, DwiOptions())
        assert [r["derivation"] for r in outcome.images] == ["mean_b0"], name
        assert outcome.images[0]["modality"] == "T2w"
        reasons = {(e["image_id"], e["reason"]) for e in outcome.excluded}
        assert reasons == {
            (image_id(root.name, row["source_path"], d_), "too_few_directions")
            for d_ in ("fa", "md")
        }


def test_broken_series_become_exclusions(tmp_path: Path) -> None:
    data, bvals, bvecs = signals(ring_phantom())
    root = tmp_path / "ds900007"
    row = write_series(root, data, bvals, bvecs)
    series = root / row["source_path"]
    series.write_bytes(series.read_bytes()[: series.stat().st_size // 2])
    outcome = process_series(row, root, DwiOptions())
    assert not outcome.images
    assert [(e["reason"], e["stage"], e["image_id"]) for e in outcome.excluded] == [
        ("truncated", "dwi", row["image_id"])
    ]

    root = tmp_path / "ds900008"
    row = write_series(root, data, np.where(bvals == 0, 1000.0, bvals), bvecs)
    excluded = process_series(row, root, DwiOptions()).excluded
    assert [e["reason"] for e in excluded] == ["no_b0"]
    assert "no volume with b <= 50" in excluded[0]["detail"]


def test_orientation_check_finds_a_flipped_or_swapped_table(tmp_path: Path) -> None:
    data, bvals, bvecs = signals(ring_phantom())
    flips = {
        "as given": np.eye(3),
        "flip x": np.diag([-1.0, 1.0, 1.0]),
        "axes yxz": np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]),
    }
    for expected, matrix in flips.items():
        gtab = gradient_table(bvals, bvecs=bvecs @ matrix.T)
        fit = TensorModel(gtab).fit(data)
        check = check_orientation(fit.evecs[..., 0], fit.fa, (2.0, 2.0, 2.0))
        assert check.best_frame == expected
        assert check.verdict == ("consistent" if expected == "as given" else "suspect")
    # The stage records the verdict, and refuses the series only when asked to.
    root = tmp_path / "ds900009"
    row = write_series(root, data, bvals, bvecs @ flips["flip x"].T)
    kept = process_series(row, root, DwiOptions())
    steps = {p["step"]: json.loads(p["parameters"]) for p in kept.images[1]["provenance"]}
    assert steps["dwi.bvec_orientation"]["verdict"] == "suspect"
    refused = process_series(row, root, DwiOptions(orientation="exclude"))
    assert [e["reason"] for e in refused.excluded] == ["suspect_orientation"]


# -- the synthetic collection ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dwi_out(
    collection: Collection, crawled: CrawlResult, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("dwi")
    return out, run_dwi(crawled.candidates, collection.root, out, workers=2)


def test_collection_series_give_three_images_each(
    collection: Collection, dwi_out: tuple[Path, Any]
) -> None:
    out, result = dwi_out
    series = [f for f in collection.files("image") if f["modality"] == "DWI"]
    assert result.images.num_rows == 3 * len(series)
    assert result.excluded.num_rows == 0
    rows = result.images.to_pylist()
    for record in rows:
        image = nib.load(out / record["image_path"])
        assert image.shape == tuple(record["shape"]) and len(image.shape) == 3
        assert record["dtype"] == "float32" == str(image.get_data_dtype())
        source = nib.load(collection.root / record["derived_from"])
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
        assert record["derived_from"] == f"{record['dataset_id']}/{record['source_path']}"
        assert record["image_path"] == derived_path(
            record["dataset_id"], record["source_path"], record["derivation"]
        )
        steps = [p["step"] for p in record["provenance"]]
        assert steps[0] == "crawl" and "dwi.gradients" in steps
        if record["derivation"] != "mean_b0":
            fit = next(p for p in record["provenance"] if p["step"] == "dwi.tensor_fit")
            assert "dipy " in fit["software"]
            parameters = json.loads(fit["parameters"])
            assert parameters["fit_method"] == "WLS" and parameters["max_bval"] == 1500
    assert {r["modality"] for r in rows} == {"MD", "FA", "T2w"}


def test_collection_maps_match_the_truth(collection: Collection, dwi_out: tuple[Path, Any]) -> None:
    """FA and MD against the tensors the series were simulated from (b0 SNR 30, white matter),
    in brain parenchyma (truth MD <= 1.2e-3 mm^2/s: CSF's signal is gone at b=1000)."""
    out, result = dwi_out
    for record in result.images.to_pylist():
        if record["derivation"] == "mean_b0":
            continue
        truth = next(f for f in collection.files() if f["path"] == record["derived_from"])
        masks = truth["truth_masks"]
        fa_true = nib.load(collection.root / masks["fa"]).get_fdata()
        md_true = nib.load(collection.root / masks["md"]).get_fdata()
        brain = nib.load(collection.root / masks["brain"]).get_fdata() > 0
        region = brain & (md_true > 0) & (md_true <= 1.2e-3)
        ours = nib.load(out / record["image_path"]).get_fdata()
        if record["derivation"] == "fa":
            error = np.median(np.abs(ours[region] - fa_true[region]))
            assert error < 0.02, (record["image_path"], error)
        else:
            relative = (ours[region] - md_true[region]) / md_true[region]
            assert abs(np.median(relative)) < 0.01, record["image_path"]
            assert np.median(np.abs(relative)) < 0.03, record["image_path"]


def test_run_is_deterministic_and_independent_of_workers(
    collection: Collection, crawled: CrawlResult, dwi_out: tuple[Path, Any], tmp_path: Path
) -> None:
    out, result = dwi_out
    again = run_dwi(crawled.candidates, collection.root, tmp_path, workers=1)
    assert again.images.equals(result.images)

    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.nii.gz"))
        }

    assert digest(tmp_path) == digest(out)


@pytest.mark.parametrize(
    ("options", "step", "method"),
    [
        (DwiOptions(gibbs=True), "dwi.gibbs", "dipy.denoise.gibbs.gibbs_removal"),
        (DwiOptions(denoise="patch2self"), "dwi.denoise", "dipy.denoise.patch2self.patch2self"),
        (DwiOptions(denoise="mppca"), "dwi.denoise", "dipy.denoise.localpca.mppca"),
    ],
)
def test_optional_steps_run_and_are_recorded(
    tmp_path: Path, options: DwiOptions, step: str, method: str
) -> None:
    tensors = ring_phantom((24, 24, 8))
    data, bvals, bvecs = signals(tensors, snr=20.0)
    row = write_series(tmp_path / "ds900010", data, bvals, bvecs)
    outcome = process_series(row, tmp_path / "ds900010", options)
    assert not outcome.excluded
    fa_record = next(r for r in outcome.images if r["derivation"] == "fa")
    methods = {p["step"]: p["method"] for p in fa_record["provenance"]}
    assert methods[step] == method
    maps = arrays_by_derivation(outcome)
    fa, _ = fa_md(tensors)
    inside = maps["fa"] > 0
    assert np.isfinite(maps["fa"]).all() and np.isfinite(maps["md"]).all()
    assert np.median(np.abs(maps["fa"][inside] - fa[inside])) < 0.1
