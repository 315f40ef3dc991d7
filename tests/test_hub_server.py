"""The test Hub server, driven through the real huggingface_hub client (no network).

Why: publishing tests trust this server to behave like the Hub; these tests pin the
client-visible behaviour they rely on: uploads (regular and LFS), listings, downloads with
ranges, authentication, atomic commits and LFS de-duplication across a failed commit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_server import HubServer, git_blob_oid, patch_endpoint
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    RepoFile,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = "org/scans"

# huggingface_hub's LFS upload PUTs a file object with `data=`, which httpx2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running server that the default client (no explicit endpoint) talks to."""
    with HubServer(tmp_path / "hub") as server:
        patch_endpoint(monkeypatch, server.endpoint)
        yield server
        assert server.errors == [], server.errors[0] if server.errors else ""


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=hub.token)


def _files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by relative path, leaving out the client's own bookkeeping."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".cache" not in path.relative_to(root).parts
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _lfs_puts(hub: HubServer) -> list[str]:
    return [
        path for method, path in hub.requests if method == "PUT" and path.startswith("/lfs-upload/")
    ]


def test_upload_folder_then_snapshot_download_is_byte_identical(
    hub: HubServer, api: HfApi, tmp_path: Path
) -> None:
    private = api.create_repo(REPO, repo_type="dataset", private=True)
    assert (private.repo_id, private.repo_type) == (REPO, "dataset")
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True).repo_id == REPO
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(REPO, repo_type="dataset")
    assert conflict.value.response.status_code == 409
    api.create_repo("org/public", repo_type="dataset")
    assert api.repo_info(REPO, repo_type="dataset").private is True
    assert api.repo_info("org/public", repo_type="dataset").private is False

    folder = tmp_path / "folder"
    (folder / "data").mkdir(parents=True)
    (folder / "images").mkdir()
    (folder / "notes.txt").write_text("subjects: 2\nsessions: 3\n")
    (folder / "data" / "train-00000.parquet").write_bytes(os.urandom(1_000_000))
    (folder / "data" / "train-00001.parquet").write_bytes(os.urandom(300_000))
    (folder / "images" / "slice.png").write_bytes(os.urandom(20_000))
    local = _files(folder)

    api.upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset", commit_message="first")
    assert hub.commits == [
        {
            "repo_id": REPO,
            "revision": "main",
            "summary": "first",
            "paths": sorted(local),
            "deleted": [],
        }
    ]
    lfs_paths = [p for p in local if p.endswith((".parquet", ".png"))]
    assert hub.lfs_bytes_received == sum(len(local[p]) for p in lfs_paths)
    assert len(_lfs_puts(hub)) == len(lfs_paths)

    out = Path(
        snapshot_download(
            REPO,
            repo_type="dataset",
            local_dir=tmp_path / "download",
            cache_dir=tmp_path / "cache",
            token=hub.token,
        )
    )
    downloaded = _files(out)
    assert downloaded.pop(".gitattributes").startswith(
        b"*.parquet filter=lfs"
    )  # the Hub's initial commit
    assert downloaded == local

    tree = {
        item.path: item for item in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)
    }
    assert {"data", "images"} <= tree.keys()
    for path, data in local.items():
        item = tree[path]
        assert isinstance(item, RepoFile)
        assert item.size == len(data)
        if path in lfs_paths:
            assert item.lfs is not None
            assert (item.lfs.sha256, item.lfs.size) == (_sha256(data), len(data))
        else:
            assert item.lfs is None
    assert sorted(api.list_repo_files(REPO, repo_type="dataset")) == sorted(
        [*local, ".gitattributes"]
    )
    info = api.dataset_info(REPO, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    assert all(sizes[p] == len(data) for p, data in local.items())


def test_second_commit_changes_sha_and_hffs_reads_ranges(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    blob = os.urandom(200_000)
    first = api.create_commit(
        REPO,
        repo_type="dataset",
        commit_message="add",
        operations=[
            CommitOperationAdd("shard.bin", blob),
            CommitOperationAdd("old/a.txt", b"a"),
            CommitOperationAdd("old/b.txt", b"b"),
            CommitOperationAdd("gone.txt", b"bye"),
        ],
    )
    assert api.repo_info(REPO, repo_type="dataset").sha == first.oid

    second = api.create_commit(
        REPO,
        repo_type="dataset",
        commit_message="change",
        parent_commit=first.oid,
        operations=[
            CommitOperationAdd("new/c.txt", b"c" * 10),
            CommitOperationDelete("gone.txt"),
            CommitOperationDelete("old/"),
        ],
    )
    assert second.oid != first.oid
    assert api.repo_info(REPO, repo_type="dataset").sha == second.oid == hub.head(REPO)
    assert hub.commits[-1]["paths"] == ["new/c.txt"]
    assert sorted(hub.commits[-1]["deleted"]) == ["gone.txt", "old/a.txt", "old/b.txt"]
    assert sorted(api.list_repo_files(REPO, repo_type="dataset")) == [
        ".gitattributes",
        "new/c.txt",
        "shard.bin",
    ]
    with pytest.raises(HfHubHTTPError) as stale:  # the branch moved on since `first`
        api.create_commit(
            REPO,
            repo_type="dataset",
            commit_message="late",
            parent_commit=first.oid,
            operations=[CommitOperationAdd("late.txt", b"late")],
        )
    assert stale.value.response.status_code == 412

    fs = HfFileSystem(endpoint=hub.endpoint, token=hub.token)
    root = f"datasets/{REPO}"
    assert sorted(str(name) for name in fs.ls(root, detail=False)) == [
        f"{root}/.gitattributes",
        f"{root}/new",
        f"{root}/shard.bin",
    ]
    assert fs.info(f"{root}/shard.bin")["size"] == len(blob)
    with fs.open(f"{root}/shard.bin", "rb", block_size=4096) as file:
        file.seek(150_000)
        assert file.read(1000) == blob[150_000:151_000]
    assert fs.cat_file(f"{root}/shard.bin", start=10, end=20) == blob[10:20]
    # Old revisions stay readable, as in git.
    assert fs.cat(f"{root}@{first.oid}/gone.txt") == b"bye"
    paths = api.get_paths_info(REPO, ["new", "shard.bin", "missing"], repo_type="dataset")
    assert [p.path for p in paths] == ["new", "shard.bin"]


def test_tokens_are_checked_and_private_repos_hidden(
    hub: HubServer, api: HfApi, tmp_path: Path
) -> None:
    api.create_repo(REPO, repo_type="dataset", private=True)
    api.upload_file(
        path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=REPO, repo_type="dataset"
    )

    wrong = HfApi(endpoint=hub.endpoint, token="hf_wrong")
    for call in (
        lambda: wrong.create_repo("org/other", repo_type="dataset"),
        lambda: wrong.upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO, repo_type="dataset"
        ),
        lambda: wrong.repo_info(REPO, repo_type="dataset"),
    ):
        with pytest.raises(HfHubHTTPError) as refused:
            call()
        assert refused.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as anonymous:
        HfApi(endpoint=hub.endpoint, token=False).create_repo("org/other", repo_type="dataset")
    assert anonymous.value.response.status_code == 401

    anonymous_api = HfApi(endpoint=hub.endpoint, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous_api.repo_info(REPO, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(REPO, repo_type="dataset", cache_dir=tmp_path / "cache", token=False)
    with pytest.raises(FileNotFoundError):
        HfFileSystem(endpoint=hub.endpoint, token=False).ls(f"datasets/{REPO}")
    assert [c["repo_id"] for c in hub.commits] == [REPO]  # the refused upload landed nothing

    api.create_repo("org/open", repo_type="dataset")
    assert anonymous_api.list_repo_files("org/open", repo_type="dataset") == [".gitattributes"]
    with pytest.raises(RepositoryNotFoundError):
        anonymous_api.repo_info("org/never-created", repo_type="dataset")


def test_failed_commit_lands_nothing_and_uploaded_lfs_is_not_sent_again(
    hub: HubServer, api: HfApi
) -> None:
    api.create_repo(REPO, repo_type="dataset")
    before = hub.head(REPO)
    shard = os.urandom(300_000)

    def operations() -> list[CommitOperationAdd]:
        return [
            CommitOperationAdd("data/shard.parquet", shard),
            CommitOperationAdd("README.txt", b"hello"),
        ]

    seen: list[int] = []

    def fail_first(index: int) -> bool:
        seen.append(index)
        return index == 0

    hub.fail_commit = fail_first
    with pytest.raises(HfHubHTTPError) as failed:
        api.create_commit(
            REPO, operations=operations(), commit_message="publish", repo_type="dataset"
        )
    assert failed.value.response.status_code == 500
    assert hub.head(REPO) == before
    assert list(hub.snapshot(REPO)) == [".gitattributes"]
    assert hub.commits == []
    assert hub.lfs_bytes_received == len(shard)

    api.create_commit(REPO, operations=operations(), commit_message="publish", repo_type="dataset")
    assert seen == [0, 1]
    assert hub.lfs_bytes_received == len(shard)  # the batch answered "already there"
    assert _lfs_puts(hub) == [f"/lfs-upload/{_sha256(shard)}"]
    assert hub.snapshot(REPO)["data/shard.parquet"] == shard
    assert [c["summary"] for c in hub.commits] == ["publish"]


def _upload_parquet(api: HfApi, table: pa.Table, path: str, *, row_group_size: int) -> bytes:
    """``table`` as Parquet in row groups of ``row_group_size`` rows, uploaded to ``path`` of
    the test repo; its bytes."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    api.upload_file(
        path_or_fileobj=buffer.getvalue(), path_in_repo=path, repo_id=REPO, repo_type="dataset"
    )
    return buffer.getvalue()


def test_parquet_row_groups_read_through_hffs(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    table = pa.table({"subject": [f"sub-{i:03d}" for i in range(400)], "value": list(range(400))})
    payload = _upload_parquet(api, table, "file.parquet", row_group_size=200)
    assert hub.snapshot(REPO)["file.parquet"] == payload

    fs = HfFileSystem(endpoint=hub.endpoint, token=hub.token)
    with fs.open(f"datasets/{REPO}/file.parquet", "rb", block_size=2048) as file:
        parquet = pq.ParquetFile(file)
        assert parquet.metadata.num_row_groups == 2
        assert parquet.read_row_group(1).equals(table.slice(200, 200))
        assert parquet.read().equals(table)


def test_listing_pages_errors_and_branches(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    api.create_repo(REPO, repo_type="dataset")
    operations = [
        CommitOperationAdd(f"d{i}/f{j}.txt", f"{i}{j}".encode()) for i in range(3) for j in range(3)
    ]
    api.create_commit(REPO, operations=operations, commit_message="many", repo_type="dataset")
    hub.tree_page_size = 2
    listed = [item.path for item in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)]
    assert sorted(listed) == sorted(
        [".gitattributes", "d0", "d1", "d2", *(op.path_in_repo for op in operations)]
    )
    assert sum(1 for m, p in hub.requests if m == "GET" and "/tree/" in p) >= 7
    hub.tree_page_size = 1000

    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(REPO, repo_type="dataset", revision="nope")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(
            REPO, "missing.txt", repo_type="dataset", cache_dir=tmp_path / "cache", token=hub.token
        )
    response = httpx2.get(f"{hub.endpoint}/api/spaces/{REPO}")
    assert response.status_code == 404
    assert f"does not implement GET /api/spaces/{REPO}" in response.json()["error"]

    api.create_branch(REPO, repo_type="dataset", branch="dev")
    api.upload_file(
        path_or_fileobj=b"dev",
        path_in_repo="dev.txt",
        repo_id=REPO,
        repo_type="dataset",
        revision="dev",
    )
    assert "dev.txt" in api.list_repo_files(REPO, repo_type="dataset", revision="dev")
    assert "dev.txt" not in api.list_repo_files(REPO, repo_type="dataset")
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert {b.name for b in refs.branches} == {"main", "dev"}
    path = hf_hub_download(
        REPO, "dev.txt", repo_type="dataset", revision="dev", cache_dir=tmp_path / "cache"
    )
    assert Path(path).read_bytes() == b"dev"


def test_load_dataset_with_the_patched_endpoint(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    import datasets

    api.create_repo(REPO, repo_type="dataset", private=True)
    table = pa.table({"x": list(range(30))})
    _upload_parquet(api, table, "data/train.parquet", row_group_size=10)
    streamed = datasets.load_dataset(REPO, split="train", streaming=True, token=hub.token)
    assert [row["x"] for row in streamed] == list(range(30))
    loaded = datasets.load_dataset(
        REPO, split="train", token=hub.token, cache_dir=str(tmp_path / "datasets")
    )
    assert loaded["x"] == list(range(30))


def test_lfs_objects_are_verified_before_they_can_be_committed(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    data = os.urandom(1000)
    oid = _sha256(data)
    auth = {"Authorization": f"Bearer {hub.token}"}
    batch = httpx2.post(
        f"{hub.endpoint}/datasets/{REPO}.git/info/lfs/objects/batch",
        headers=auth,
        json={
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": [{"oid": oid, "size": 1000}],
        },
    ).json()
    assert batch["transfer"] == "basic"
    upload = batch["objects"][0]["actions"]["upload"]
    assert "chunk_size" not in upload.get("header", {})  # a single PUT, never multipart

    assert httpx2.put(upload["href"], content=data[:-1] + b"!").status_code == 400
    lines = [
        {"key": "header", "value": {"summary": "too early"}},
        {"key": "lfsFile", "value": {"path": "a.bin", "algo": "sha256", "oid": oid, "size": 1000}},
    ]
    ndjson = "".join(json.dumps(line) + "\n" for line in lines)
    commit_url = f"{hub.endpoint}/api/datasets/{REPO}/commit/main"
    assert httpx2.post(commit_url, headers=auth, content=ndjson).status_code == 400
    assert list(hub.snapshot(REPO)) == [".gitattributes"]

    chunked = httpx2.put(
        upload["href"], content=iter([data[:300], data[300:]])
    )  # no Content-Length
    assert chunked.status_code == 200
    assert httpx2.post(commit_url, headers=auth, content=ndjson).status_code == 200
    assert hub.snapshot(REPO)["a.bin"] == data
    assert hub.lfs_bytes_received == 2 * len(data)


def test_resolve_headers_and_ranges(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    blob, text = os.urandom(1000), b"plain text\n"
    api.create_commit(
        REPO,
        repo_type="dataset",
        commit_message="files",
        operations=[CommitOperationAdd("blob.parquet", blob), CommitOperationAdd("t.txt", text)],
    )
    lfs = get_hf_file_metadata(hf_hub_url(REPO, "blob.parquet", repo_type="dataset"))
    assert (lfs.etag, lfs.size, lfs.commit_hash) == (_sha256(blob), len(blob), hub.head(REPO))
    regular = get_hf_file_metadata(hf_hub_url(REPO, "t.txt", repo_type="dataset"))
    assert (regular.etag, regular.size) == (git_blob_oid(text), len(text))

    url = hf_hub_url(REPO, "blob.parquet", repo_type="dataset")
    for asked, status, body in [
        ("bytes=10-19", 206, blob[10:20]),
        ("bytes=-10", 206, blob[-10:]),
        ("bytes=990-5000", 206, blob[990:]),
        ("bytes=1000-", 416, None),
    ]:
        response = httpx2.get(url, headers={"Range": asked})
        assert response.status_code == status, asked
        if body is not None:
            assert response.content == body
            assert response.headers["Content-Range"].endswith(f"/{len(blob)}")


def test_model_repos_are_served_too(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    weights = b"\0weights"  # a NUL byte: binary, so LFS whatever the name
    api.create_repo("org/model")
    api.upload_file(path_or_fileobj=weights, path_in_repo="model.dat", repo_id="org/model")
    assert sorted(api.list_repo_files("org/model")) == [".gitattributes", "model.dat"]
    path = hf_hub_download("org/model", "model.dat", cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == weights
    assert HfFileSystem(endpoint=hub.endpoint).cat("org/model/model.dat") == weights
    assert _lfs_puts(hub) == [f"/lfs-upload/{_sha256(weights)}"]
