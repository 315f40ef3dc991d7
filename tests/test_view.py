"""The QC browser (``openmind view``) on the session's built folder: its list and ratings file,
its reads over a Hub repo (the loopback Hub server: an image costs its row group, never its
shard), and the page itself in a real headless chromium driven by selenium (filters, slices,
window, ratings from the keyboard) with a calibration on the ratings it made.

The browser tests need Debian's chromium and chromedriver (``make browser`` installs them);
without them they skip and say so."""

from __future__ import annotations

import csv
import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from openmind_data.cli import app
from openmind_data.curate import BuildResult
from openmind_data.curate.shards import ShardOptions, write_shards
from openmind_data.errors import ConfigError
from openmind_data.quality import load_model, read_ratings
from openmind_data.view import Catalog, RatingsFile, Store, open_viewer
from tests.hub_server import HubServer, patch_endpoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (make browser)",
)
#: Where the README's screenshot is written when this is set (a maintainer refreshes it).
SCREENSHOT = os.environ.get("OPENMIND_SCREENSHOT")


def _catalog(folder: Path, ratings: Path) -> Catalog:
    store = Store(folder)
    return Catalog(
        store.table("images"), store.table("sources"), RatingsFile(ratings), load_model()
    )


def test_the_list_filters_sorts_and_queues_the_worst_first(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    catalog = _catalog(built[0].out, tmp_path / "ratings.csv")
    rows = catalog.rows
    t1w = catalog.select({"modality": "T1w"})
    assert t1w and {r["modality"] for r in t1w} == {"T1w"}
    assert len(t1w) == sum(r["modality"] == "T1w" for r in rows)
    scores = [r["image_quality_score"] for r in t1w if r["image_quality_score"] is not None]
    assert scores == sorted(scores)
    kept = catalog.select({"min_iqs": "2", "max_iqs": "3.5", "sort": "dataset_id"})
    assert all(2 <= r["image_quality_score"] <= 3.5 for r in kept)
    assert [r["dataset_id"] for r in kept] == sorted(r["dataset_id"] for r in kept)
    worst = max(
        (r for r in rows if r["image_quality_score"] is not None),
        key=lambda r: r["image_quality_score"],
    )
    assert catalog.next_unrated({}) == worst["image_id"]
    catalog.ratings.rate(worst["image_id"], verdict="exclude")
    assert catalog.next_unrated({}) != worst["image_id"]
    assert worst not in catalog.select({"rated": "no"})
    with pytest.raises(ConfigError, match="cannot sort by"):
        catalog.select({"sort": "voxels"})


def test_an_image_is_explained_by_the_model_that_scored_it(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    catalog = _catalog(built[0].out, tmp_path / "ratings.csv")
    scored = next(r for r in catalog.rows if r["image_quality_score"] is not None)
    details = catalog.details(scored["image_id"])
    quality = details["quality"]
    assert quality["explained_by"] == scored["iqs_model"]
    # The contributions re-add to the score the build gave (the same peers, the same model).
    assert quality["recomputed"] == pytest.approx(scored["image_quality_score"], abs=1e-4)
    assert details["source"]["dataset_id"] == scored["dataset_id"]
    assert details["provenance"] and details["fields"]["license"] == scored["license"]


def test_the_ratings_file_is_what_calibration_reads(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    ratings = RatingsFile(path, rater="me")
    ratings.rate("om-a", verdict="accept")
    ratings.rate("om-b", rating=4)
    ratings.rate("om-a", verdict="exclude")  # a second look replaces the first
    assert read_ratings(path).scores == {"om-a": 5.0, "om-b": 4.0}
    assert RatingsFile(path).ratings["om-b"].rater == "me"
    for bad in ({"rating": 6}, {"verdict": "fine"}, {"rating": 2.5}, {}):
        with pytest.raises(ConfigError):
            ratings.rate("om-c", **bad)


def _small_groups(folder: Path, out: Path) -> Path:
    """A copy of ``folder`` whose T1w shards hold one image per row group."""
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns(".build"))
    for split_file in sorted((out / "data" / "T1w").glob("*.parquet")):
        split = split_file.name.split("-", 1)[0]
        rows = [
            r
            for p in sorted(split_file.parent.glob(f"{split}-*"))
            for r in pq.read_table(p).to_pylist()
        ]
        if rows:
            write_shards(
                rows,
                split_file.parent,
                ShardOptions(row_group_bytes=1, shard_bytes=1 << 40),
                split=split,
            )
    return out


def test_opening_an_image_over_the_hub_reads_its_row_group_alone(
    built: tuple[BuildResult, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _small_groups(built[0].out, tmp_path / "openmind")
    shard = next((folder / "data" / "T1w").glob("train-*.parquet"))
    metadata = pq.ParquetFile(shard).metadata
    assert metadata.num_row_groups > 2
    from huggingface_hub import HfApi

    with HubServer(tmp_path / "hub") as server:
        patch_endpoint(monkeypatch, server.endpoint)
        api = HfApi(endpoint=server.endpoint, token=server.token)
        api.create_repo("lab/openmind", repo_type="dataset", private=False)
        api.upload_folder(
            folder_path=folder,
            repo_id="lab/openmind",
            repo_type="dataset",
            allow_patterns=["metadata/*", "data/T1w/*"],  # what this image needs
        )
        server.bytes_served.clear()
        store = Store("lab/openmind")
        images = store.table("images")
        rows = [r for r in images.to_pylist() if r["modality"] == "T1w" and r["split"] == "train"]
        row = rows[len(rows) // 2]
        where = store.locate(row)
        cells = store.cells(where, ["image", "anat_mask"])
        assert cells["image"]["bytes"][:2] == b"\x1f\x8b"
    served = server.bytes_served[f"data/T1w/{shard.name}"]

    def chunks(index: int, columns: set[str]) -> int:
        found = metadata.row_group(index)
        return sum(
            found.column(i).total_compressed_size
            for i in range(found.num_columns)
            if found.column(i).path_in_schema.split(".")[0] in columns
        )

    wanted = chunks(where.group, {"image", "anat_mask"})
    # Besides those two columns of its row group: the footer, once (pyarrow reads the last
    # 64 KiB, then what of the footer they missed), and the image ids of the row groups whose
    # IQS statistics admit the row.
    ids = sum(chunks(i, {"image_id"}) for i in range(metadata.num_row_groups))
    assert wanted <= served <= wanted + metadata.serialized_size + (1 << 16) + ids
    assert served < shard.stat().st_size / 2


# -- the page, in a real browser ---------------------------------------------------------------
@pytest.fixture
def page(built: tuple[BuildResult, Path], tmp_path: Path) -> Iterator[tuple[Any, str, Path]]:
    """(a selenium driver on the page, the server's address, the ratings file)."""
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make browser)")
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ratings = tmp_path / "ratings.csv"
    server = uvicorn.Server(
        uvicorn.Config(
            open_viewer(built[0].out, ratings), host="127.0.0.1", port=0, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, "the server to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver, f"http://127.0.0.1:{port}", ratings
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)


def _wait(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _loaded(driver: Any, element_id: str) -> str:
    """The ``src`` of an image once the browser has decoded it."""
    script = (
        f"const i = document.getElementById('{element_id}');"
        "return i && i.complete && i.naturalWidth > 0 ? i.src : null;"
    )
    return str(_wait(lambda: driver.execute_script(script), f"{element_id} to load"))


def _rows(driver: Any) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [
        [cell.text for cell in line.find_elements(By.TAG_NAME, "td")]
        for line in driver.find_elements(By.CSS_SELECTOR, "#images tbody tr")
    ]


def _ratings(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {row["image_id"]: row for row in csv.DictReader(handle)}


@needs_browser
def test_the_page_filters_slices_and_records_ratings_that_calibrate(
    page: tuple[Any, str, Path], built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver, address, ratings = page
    images = built[0].images.to_pylist()
    driver.get(address)
    _wait(lambda: driver.execute_script("return document.body.dataset.ready"), "the page")
    assert not driver.execute_script("return document.body.dataset.error")
    assert len(_rows(driver)) == len(images)

    # A filter changes the list.
    Select(driver.find_element(By.NAME, "modality")).select_by_value("T1w")
    t1w = sum(r["modality"] == "T1w" for r in images)
    _wait(lambda: len(_rows(driver)) == t1w, "the T1w rows")
    assert {row[1] for row in _rows(driver)} == {"T1w"}

    # An image opens with its three planes; the slider changes the slice.
    driver.find_element(By.CSS_SELECTOR, "#images tbody tr").click()
    before = _loaded(driver, "plane-axial")
    slider = driver.find_element(By.ID, "slider-axial")
    slider.click()
    for _ in range(4):
        slider.send_keys(Keys.ARROW_RIGHT)
    after = _wait(lambda: (s := _loaded(driver, "plane-axial")) != before and s, "a new slice")
    assert "/planes/axial/" in after and after.split("/")[-1] != before.split("/")[-1]
    with urllib.request.urlopen(before) as one, urllib.request.urlopen(after) as other:
        assert one.read() != other.read()
    # Masks toggle: the brain's outline off changes the picture's request.
    driver.find_element(By.ID, "mask-brain").click()
    _wait(lambda: "brain" not in _loaded(driver, "plane-axial"), "the plane without the brain")

    # Ratings from the keyboard land in the file; n opens the next unrated, worst IQS first.
    body = driver.find_element(By.TAG_NAME, "body")
    first = driver.execute_script("return state.current.image_id")
    body.send_keys("x")
    _wait(lambda: _ratings(ratings).get(first), "the first rating")
    assert _ratings(ratings)[first]["verdict"] == "exclude"
    assert _ratings(ratings)[first]["rating"] == "5"
    Select(driver.find_element(By.NAME, "modality")).select_by_value("")
    _wait(lambda: len(_rows(driver)) == len(images), "every row again")
    keys = ["a", "1", "d", "4", "a", "2", "x", "a"]
    for key in keys:
        body.send_keys("n")
        _wait(
            lambda: driver.execute_script("return state.current.rating === null"),
            "the next unrated image",
        )
        current = driver.execute_script("return state.current.image_id")
        body.send_keys(key)
        _wait(lambda current=current: _ratings(ratings).get(current), f"the rating {key}")
    rated = _ratings(ratings)
    assert len(rated) == len(keys) + 1
    # The queue served the worst unrated image each time (the first rating was of a T1w).
    queued = [i for i in rated if i != first]
    scored = sorted(
        (r for r in images if r["image_id"] != first and r["image_quality_score"] is not None),
        key=lambda r: -r["image_quality_score"],
    )
    assert set(queued) == {r["image_id"] for r in scored[: len(keys)]}
    if SCREENSHOT:
        driver.execute_script("document.getElementById('list').scrollLeft = 0")
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(SCREENSHOT)
    assert driver.get_screenshot_as_png()[:4] == b"\x89PNG"

    # The ratings calibrate a model as they are.
    model = tmp_path / "model.json"
    result = CliRunner().invoke(
        app,
        [
            "quality",
            "calibrate",
            str(built[0].out / "metadata" / "images.parquet"),
            "--ratings",
            str(ratings),
            "--out",
            str(model),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        f"'rated images': {len(rated)}" in result.output
        or f"rated images: {len(rated)}" in result.output
    )
    fitted = json.loads(model.read_text())
    assert fitted["fitted_on"]["rated_images"] == len(rated)
    assert load_model(model).label == "iqs-calibrated/1"
