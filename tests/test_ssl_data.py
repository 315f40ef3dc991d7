"""openmind_ssl.data: preprocessing, crops, sharding and the stream over a built folder."""

from __future__ import annotations

import gzip
import itertools
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from openmind_data.curate import BuildResult  # noqa: E402
from openmind_ssl.data import (  # noqa: E402
    Augmentation,
    OpenMindStream,
    Preprocessing,
    StreamOptions,
    TooManyFailuresError,
    Unit,
    assign,
    augment,
    candidate_centres,
    crop,
    preprocess,
)
from openmind_ssl.data import stream as stream_module  # noqa: E402
from openmind_ssl.data.cache import VolumeCache  # noqa: E402
from openmind_ssl.data.crops import CENTRE_SAMPLE  # noqa: E402


def _lps_volume() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """An LPS image of 2 x 1 x 3 mm voxels whose value is its first voxel index, and a box
    anatomy mask."""
    shape = (40, 60, 20)
    affine = np.diag([-2.0, -1.0, 3.0, 1.0])
    data = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None], shape).copy()
    mask = np.zeros(shape, dtype=np.uint8)
    mask[10:30, 15:45, 5:15] = 1
    return nib.Nifti1Image(data, affine), nib.Nifti1Image(mask, affine)


@pytest.mark.parametrize("order", ["linear", "cubic"])
def test_preprocessing_reorients_resamples_and_normalises(order: str) -> None:
    image, anatomy = _lps_volume()
    volume = preprocess(image, anatomy, None, Preprocessing(spacing=1.0, order=order))
    assert volume.image.shape == (80, 60, 60)
    assert volume.spacing == pytest.approx((1.0, 1.0, 1.0))
    # LPS: the first index grows to the left; RAS: to the right. The values now fall.
    profile = volume.image[:, 30, 30]
    assert profile[0] > profile[-1] and np.all(np.diff(profile[5:-5]) < 0)
    inside = volume.anatomy > 0
    assert volume.image[inside].mean() == pytest.approx(0.0, abs=1e-4)
    assert volume.image[inside].std() == pytest.approx(1.0, abs=1e-3)
    # The mask keeps its size in mm^3 (20 x 30 x 10 voxels of 6 mm^3) and stays binary.
    assert set(np.unique(volume.anatomy)) == {0, 1}
    assert inside.sum() == pytest.approx(20 * 30 * 10 * 6, rel=0.02)
    assert not volume.anonymization.any()


def test_preprocessing_leaves_the_callers_image_alone() -> None:
    data = np.random.default_rng(0).normal(5, 2, (20, 20, 20)).astype(np.float32)
    image = nib.Nifti1Image(data, np.eye(4))  # RAS already: nibabel hands back this buffer
    anatomy = nib.Nifti1Image(np.ones(data.shape, np.uint8), np.eye(4))
    before = data.copy()
    volume = preprocess(image, anatomy, None, Preprocessing(spacing=1.0))
    np.testing.assert_array_equal(data, before)
    assert abs(float(volume.image.mean())) < 1e-4


def test_preprocessing_refuses_masks_of_another_grid() -> None:
    image, anatomy = _lps_volume()
    moved = nib.Nifti1Image(np.asarray(anatomy.dataobj), np.diag([2.0, 1.0, 3.0, 1.0]))
    with pytest.raises(ValueError, match="affine differs"):
        preprocess(image, moved, None, Preprocessing())


def test_crops_are_centred_inside_the_anatomy_and_padded_beyond_the_volume() -> None:
    image, anatomy = _lps_volume()
    volume = preprocess(image, anatomy, None, Preprocessing(spacing=2.0))
    centres = [tuple(c) for c in candidate_centres(volume.anatomy, "img").tolist()]
    assert all(volume.anatomy[c] for c in centres)
    assert len(set(centres)) == min(CENTRE_SAMPLE, int(volume.anatomy.sum()))
    again = candidate_centres(volume.anatomy, "img")
    assert np.array_equal(again, candidate_centres(volume.anatomy, "img"))  # the id seeds them
    assert not np.array_equal(again, candidate_centres(volume.anatomy, "another"))
    patch = crop(volume, centres[0], (16, 16, 16))
    assert patch.image.shape == patch.anatomy.shape == (16, 16, 16)
    assert patch.image[8, 8, 8] == volume.image[centres[0]]
    corner = crop(volume, (0, 0, 0), (16, 16, 16))
    assert not corner.image[:8].any() and corner.image[8:, 8:, 8:].any()


def test_every_row_group_goes_to_exactly_one_reader() -> None:
    units = [Unit(f"s{i % 3}", i, 5) for i in range(29)]
    taken: list[Unit] = []
    for rank in range(2):
        for worker in range(3):
            taken += assign(
                units, epoch=4, seed=1, rank=rank, world_size=2, worker=worker, workers=3
            )
    assert sorted(taken, key=str) == sorted(units, key=str)
    one = assign(units, epoch=4, seed=1, world_size=2, workers=3)
    assert one != assign(units, epoch=5, seed=1, world_size=2, workers=3)
    assert assign(units, epoch=4, seed=1, world_size=2, workers=3, position=2) == one[2:]


def _options(**changes: object) -> StreamOptions:
    settings: dict[str, object] = {
        "modalities": ["T1w"],
        "crop_size": (24, 24, 24),
        "crops_per_volume": 2,
        "shuffle_buffer": 5,
        "preprocessing": Preprocessing(spacing=3.0),
    }
    settings.update(changes)
    return StreamOptions(**settings)  # type: ignore[arg-type]


def test_the_stream_gives_every_selected_image_once_per_epoch_across_workers(
    built: tuple[BuildResult, Path],
) -> None:
    result, _ = built
    rows = result.images.to_pylist()
    t1w = {r["image_id"] for r in rows if r["modality"] == "T1w" and r["split"] == "train"}
    stream = OpenMindStream(result.out, _options())
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    seen = Counter(sample["image_id"] for sample in loader)
    assert set(seen) == t1w and set(seen.values()) == {2}
    sample = next(iter(OpenMindStream(result.out, _options(shuffle_buffer=0))))
    assert sample["image"].shape == (1, 24, 24, 24) and sample["image"].dtype == torch.float32
    assert sample["anat_mask"][0, 12, 12, 12] == 1  # the centre is inside the anatomy
    assert sample["spacing"].tolist() == pytest.approx([3.0, 3.0, 3.0], rel=0.1)
    worst = {r["image_id"] for r in rows if r["image_id"] in t1w and r["image_quality_score"] > 2}
    good = OpenMindStream(result.out, _options(max_iqs=2.0))
    assert {s["image_id"] for s in good} == t1w - worst
    cc0 = {r["image_id"] for r in rows if r["image_id"] in t1w and r["license"] == "CC0-1.0"}
    under = OpenMindStream(result.out, _options(licenses=["cc0"], crops_per_volume=1))
    assert {s["image_id"] for s in under} == cc0 and cc0


def test_a_broken_sample_is_counted_and_too_many_stop_the_run(
    built: tuple[BuildResult, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "openmind"
    (shard,) = sorted((built[0].out / "data" / "T2w").glob("train-*.parquet"))
    target = folder / "data" / "T2w" / shard.name
    target.parent.mkdir(parents=True)
    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    broken_id = table.column("image_id")[1].as_py()
    images[1] = {"bytes": gzip.compress(b"not a nifti"), "path": images[1]["path"]}
    table = table.set_column(
        table.schema.get_field_index("image"),
        "image",
        pa.array(images, table.schema.field("image").type),
    )
    pq.write_table(table, target)
    options = _options(modalities=["T2w"], max_failures=0, shuffle_buffer=0)
    with pytest.raises(TooManyFailuresError, match=broken_id):
        list(OpenMindStream(folder, options))
    tolerant = OpenMindStream(folder, _options(modalities=["T2w"], max_failures=3))
    ids = {sample["image_id"] for sample in tolerant}
    assert broken_id not in ids and len(ids) == table.num_rows - 1
    assert tolerant.failures == 1 and broken_id in caplog.text
    shutil.rmtree(folder)


def test_a_cached_volume_crops_as_the_volume_does(tmp_path: Path) -> None:
    image, anatomy = _lps_volume()
    anon = np.zeros(anatomy.shape, dtype=np.uint8)
    anon[:, :10, :] = 1
    options = Preprocessing(spacing=1.5)
    volume = preprocess(image, anatomy, nib.Nifti1Image(anon, image.affine), options)
    cache = VolumeCache(tmp_path, options)
    assert cache.open("img", "abc") is None
    entry = cache.put("img", "abc", volume)
    assert entry.shape == volume.image.shape
    assert all(volume.anatomy[tuple(c)] for c in entry.centres)
    for centre in [(0, 0, 0), (20, 25, 10), tuple(n - 1 for n in volume.image.shape)]:
        expected, got = crop(volume, centre, (24, 24, 24)), entry.crop(centre, (24, 24, 24))
        np.testing.assert_array_equal(got.image, expected.image)
        np.testing.assert_array_equal(got.anatomy, expected.anatomy)
        np.testing.assert_array_equal(got.anonymization, expected.anonymization)
    assert cache.open("img", "another source") is None  # the source changed: a miss
    image_file = cache.folder / "img.image.b2nd"
    intact = image_file.read_bytes()
    image_file.write_bytes(intact[: len(intact) // 3])  # a damaged entry is a miss
    assert cache.open("img", "abc") is None
    cache.put("img", "abc", volume)
    assert cache.open("img", "abc") is not None
    assert VolumeCache(tmp_path, Preprocessing(spacing=2.0)).open("img", "abc") is None
    assert not list(tmp_path.rglob(".*partial"))


def test_a_second_epoch_reads_the_cache_and_decodes_nothing(
    built: tuple[BuildResult, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = built
    stream = OpenMindStream(result.out, _options(modalities=["T2w"], cache=tmp_path / "cache"))
    first = Counter(sample["image_id"] for sample in stream)
    folder = tmp_path / "cache" / Preprocessing(spacing=3.0).key
    assert {p.name.split(".")[0] for p in folder.glob("*.masks.b2nd")} == set(first)

    def refuse(payload: bytes) -> None:
        raise AssertionError("decoded although the cache holds the volume")

    monkeypatch.setattr(stream_module, "decode_nifti", refuse)
    stream.set_epoch(1)
    second = list(stream)
    assert Counter(s["image_id"] for s in second) == first
    assert all(s["anat_mask"][0, 12, 12, 12] == 1 for s in second)  # centres in the anatomy


def test_the_cache_command_preprocesses_each_selected_volume_once(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from openmind_ssl.cli import app

    result, _ = built
    args = ["cache", str(result.out), "--out", str(tmp_path), "--modality", "T2w"]
    args += ["--spacing", "3", "--workers", "0"]
    t2w = [r for r in result.images.to_pylist() if r["modality"] == "T2w" and r["split"] == "train"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"{len(t2w)} volumes selected, {len(t2w)} added" in first.output
    again = CliRunner().invoke(app, args)
    assert f"{len(t2w)} volumes selected, 0 added, {len(t2w)} cached" in again.output


def _crop_sample() -> dict[str, torch.Tensor]:
    image, anatomy = _lps_volume()
    volume = preprocess(image, anatomy, None, Preprocessing(spacing=2.0))
    patch = crop(volume, (20, 30, 15), (24, 24, 24))
    return {
        "image": torch.from_numpy(patch.image)[None],
        "anat_mask": torch.from_numpy(patch.anatomy)[None],
        "anon_mask": torch.from_numpy(patch.anonymization)[None],
    }


def test_augmentations_replay_from_their_seed_and_keep_masks_binary() -> None:
    sample = _crop_sample()
    options = Augmentation(spatial_prob=1.0, mirror_prob=0.5, intensity_prob=1.0)
    first = augment(sample, options, seed=11)
    again = augment(sample, options, seed=11)
    other = augment(sample, options, seed=12)
    assert first["augment_seed"] == 11
    for key in ("image", "anat_mask", "anon_mask"):
        assert torch.equal(first[key], again[key])
        assert first[key].shape == sample[key].shape and type(first[key]) is torch.Tensor
    assert not torch.equal(first["image"], other["image"])
    assert set(first["anat_mask"].unique().tolist()) <= {0, 1}
    assert first["anat_mask"].dtype == torch.uint8
    assert not torch.equal(first["anat_mask"], sample["anat_mask"])  # it moved with the image
    still = augment(sample, Augmentation(spatial_prob=0, mirror_prob=0, intensity_prob=0), 5)
    assert torch.equal(still["image"], sample["image"])


def test_the_stream_records_each_samples_augmentation_seed(
    built: tuple[BuildResult, Path],
) -> None:
    options = _options(modalities=["T2w"], augmentation=Augmentation(), shuffle_buffer=0)
    samples = list(OpenMindStream(built[0].out, options))
    seeds = [s["augment_seed"] for s in samples]
    assert len(set(seeds)) == len(seeds)
    plain = list(OpenMindStream(built[0].out, _options(modalities=["T2w"], shuffle_buffer=0)))
    replayed = augment(plain[0], Augmentation(), seeds[0])
    assert torch.equal(replayed["image"], samples[0]["image"])


def _regrouped(built: tuple[BuildResult, Path], tmp_path: Path) -> Path:
    """The T1w train shard rewritten with ~10 row groups, for resume tests."""
    (shard,) = sorted((built[0].out / "data" / "T1w").glob("train-*.parquet"))
    target = tmp_path / "openmind" / "data" / "T1w" / shard.name
    target.parent.mkdir(parents=True)
    pq.write_table(pq.read_table(shard), target, row_group_size=3)
    return tmp_path / "openmind"


def _key(sample: dict[str, Any]) -> tuple[object, ...]:
    return sample["reader"], sample["position"], sample["image_id"], sample["centre"].tolist()


def test_a_stream_resumes_exactly_where_a_trainer_stopped_it(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    """Two workers, endless epochs: stop after 23 samples (mid row group, mid epoch for one
    reader), resume in a new loader from the last position of each reader and the loader's
    turn, and the samples go on exactly as in the run that never stopped."""
    folder = _regrouped(built, tmp_path)
    options = _options(crops_per_volume=2, shuffle_buffer=3, repeat=True)
    stream = OpenMindStream(folder, options)
    assert len(stream.units) >= 8
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    stream.set_epoch(3)
    whole = list(itertools.islice(loader, 80))
    assert {s["position"].epoch for s in whole} >= {3, 4}  # the epochs follow each other
    consumed = whole[:23]
    resume = {s["reader"]: s["position"].next for s in consumed}
    stream.set_epoch(3, resume, rotation=len(consumed) % 2)
    rest = list(itertools.islice(loader, 80 - 23))
    assert [_key(s) for s in rest] == [_key(s) for s in whole[23:]]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(rest, whole[23:], strict=True))


def test_cached_and_decoded_volumes_give_the_same_samples(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    options = _options(modalities=["T2w"], cache=tmp_path / "cache")
    first = list(OpenMindStream(built[0].out, options))  # decodes and fills the cache
    second = list(OpenMindStream(built[0].out, options))  # reads the cache only
    plain = list(OpenMindStream(built[0].out, _options(modalities=["T2w"])))
    assert [_key(s) for s in first] == [_key(s) for s in second] == [_key(s) for s in plain]
    for a, b in zip(second, plain, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["anon_mask"], b["anon_mask"])


def _rank_reads(rank: int, world: int, init: str, folder: str, out: str) -> None:
    """One DDP rank (gloo, CPU): the image ids its stream yields, into ``out``/<rank>."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        options = _options(crops_per_volume=1, shuffle_buffer=4)
        ids = [s["image_id"] for s in OpenMindStream(folder, options)]
        Path(out, str(rank)).write_text("\n".join(ids))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_read_disjoint_shares_that_cover_the_epoch(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    (shard,) = sorted((built[0].out / "data" / "T1w").glob("train-*.parquet"))
    folder = tmp_path / "openmind"
    target = folder / "data" / "T1w" / shard.name
    target.parent.mkdir(parents=True)
    table = pq.read_table(shard)
    pq.write_table(table, target, row_group_size=2)
    out = tmp_path / "ids"
    out.mkdir()
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(
        _rank_reads, args=(2, init, str(folder), str(out)), nprocs=2, join=True
    )
    shares = [set((out / str(rank)).read_text().split()) for rank in range(2)]
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(table.column("image_id").to_pylist())
