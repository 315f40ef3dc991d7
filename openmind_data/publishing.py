"""``openmind publish DIR --repo-id ORG/NAME`` and ``openmind_data.publish``: the dataset
folder onto the Hub, through ``huggingface_hub`` alone.

The remote tree is compared with the folder first (a file whose content the repo already holds
is skipped: LFS files by SHA-256, small files by their git blob id), then what differs goes up
in several commits, shards first and the card last, so a half-published repo never advertises
configs whose files are missing. Each commit lands whole or not at all; running the same command
again after an interruption uploads only what had not landed (and the Hub skips LFS objects it
already received). Shards the folder no longer has are deleted in the last commit.

Hidden paths (the build's journal, the hash cache, partial files) are never uploaded. The
token comes from where ``huggingface_hub`` looks (``HF_TOKEN``, the stored login); this module
never reads, prints or logs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmind_data.dataset_folder import (
    CARD,
    DATA,
    HASH_CACHE,
    UPLOAD_ORDER,
    parse_repo,
    table_path,
)
from openmind_data.durable import write_with
from openmind_data.errors import ConfigError

__all__ = ["LocalFile", "PublishPlan", "PublishResult", "plan_publish", "publish"]

log = logging.getLogger(__name__)

COMMIT_BYTES = 8 * 1024**3  # per commit: an interruption costs at most this much again
COMMIT_FILES = 100
_CHUNK = 8 * 1024**2


@dataclass(frozen=True)
class LocalFile:
    path: str  # in the repo, POSIX
    source: Path
    size: int
    sha256: str
    git_oid: str  # sha1 of the git blob: how the Hub names a small file's content


@dataclass
class PublishPlan:
    repo_id: str
    revision: str | None
    upload: list[LocalFile] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    repo_exists: bool = True

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.upload)

    def describe(self) -> str:
        lines = [f"{'upload':8} {f.size:>14,d}  {f.path}" for f in self.upload]
        lines += [f"{'delete':8} {'':>14}  {path}" for path in self.delete]
        lines.append(
            f"{len(self.upload)} files to upload ({_human(self.upload_bytes)}), "
            f"{len(self.unchanged)} already there, {len(self.delete)} to delete"
            + ("" if self.repo_exists else f"; {self.repo_id} will be created")
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class PublishResult:
    plan: PublishPlan
    commits: list[str]  # commit ids, in order
    url: str


def plan_publish(
    folder: str | Path, repo_id: str, *, revision: str | None = None, api: Any = None
) -> PublishPlan:
    """What publishing ``folder`` to ``repo_id`` (``ORG/NAME``, or ``hf://datasets/ORG/NAME
    [@REVISION]``) would upload, skip and delete."""
    from huggingface_hub import HfApi  # noqa: PLC0415

    repo_id, revision = parse_repo(repo_id, revision)
    api = api or HfApi()
    local = list(_local_files(Path(folder)))
    remote, exists = _remote_files(api, repo_id, revision)
    plan = PublishPlan(repo_id, revision, repo_exists=exists)
    for entry in local:
        if _same(entry, remote.get(entry.path)):
            plan.unchanged.append(entry.path)
        else:
            plan.upload.append(entry)
    paths = {entry.path for entry in local}
    plan.delete = sorted(p for p in remote if p.startswith(f"{DATA}/") and p not in paths)
    plan.upload.sort(key=_upload_order)
    return plan


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    commit_bytes: int = COMMIT_BYTES,
    commit_files: int = COMMIT_FILES,
    api: Any = None,
    render_card: bool = True,
    progress: Callable[[str], None] | None = None,
) -> PublishResult:
    """Publish ``folder`` to the dataset repo ``repo_id`` (created when missing; ``private``
    applies then). ``revision`` is a branch, made from the default branch when missing.
    ``render_card`` renders the card for ``repo_id`` first, so its examples load this repo.
    ``dry_run`` only plans: nothing is uploaded, committed or rendered."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi  # noqa: PLC0415

    folder = Path(folder)
    repo_id, revision = parse_repo(repo_id, revision)
    images = table_path("images")
    if not (folder / images).is_file():
        raise ConfigError(f"{folder}: no {images}; publish a built dataset folder")
    api = api or HfApi()
    say = progress or log.info
    if render_card and not dry_run:
        from openmind_data.card import validate_card, write_card  # noqa: PLC0415

        write_card(folder, repo_id=repo_id)
        problems = validate_card(folder)
        if problems:
            raise ConfigError(f"{folder / CARD} is not valid: " + "; ".join(map(str, problems)))
    plan = plan_publish(folder, repo_id, revision=revision, api=api)
    url = f"{api.endpoint}/datasets/{repo_id}"
    if dry_run:
        return PublishResult(plan, [], url)
    if not plan.repo_exists:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        say(f"created {'private ' if private else ''}dataset repo {repo_id}")
    if revision is not None:
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    batches = list(_batches(plan.upload, commit_bytes, commit_files))
    if plan.delete and not batches:
        batches = [[]]
    commits = []
    for number, batch in enumerate(batches, start=1):
        operations: list[Any] = [
            CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.source)) for f in batch
        ]
        if number == len(batches):
            operations += [CommitOperationDelete(path_in_repo=p) for p in plan.delete]
        size = sum(f.size for f in batch)
        message = (
            f"openmind publish: {len(batch)} files ({_human(size)}), part {number}/{len(batches)}"
        )
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=message,
            repo_type="dataset",
            revision=revision,
        )
        commits.append(info.oid)
        say(f"commit {number}/{len(batches)}: {len(batch)} files, {_human(size)} ({info.oid[:10]})")
    return PublishResult(plan, commits, url)


def _local_files(folder: Path) -> Iterator[LocalFile]:
    """Every file the repo should hold: all of ``folder`` but hidden paths, sorted. Hashes come
    from ``HASH_CACHE`` while a file's size, modification time and inode are unchanged (as
    git's index does): a resumed publish of terabytes does not read them all again."""
    cache_path = folder / HASH_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    fresh: dict[str, list[Any]] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        name = relative.as_posix()
        stat = path.stat()
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        known = cache.get(name)
        if known and known[:3] == key:
            entry = LocalFile(name, path, stat.st_size, known[3], known[4])
        else:
            entry = _hashed(name, path)
        fresh[name] = [*key, entry.sha256, entry.git_oid]
        yield entry
    if fresh != cache:
        write_with(cache_path, lambda partial: partial.write_text(json.dumps(fresh)))


def _hashed(name: str, path: Path) -> LocalFile:
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode())  # git's object id
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha256.update(chunk)
            blob.update(chunk)
    return LocalFile(name, path, size, sha256.hexdigest(), blob.hexdigest())


def _remote_files(api: Any, repo_id: str, revision: str | None) -> tuple[dict[str, Any], bool]:
    """Path -> RepoFile of the repo at ``revision``; empty (and whether the repo exists) when
    the repo or the branch is not there yet."""
    from huggingface_hub.errors import (  # noqa: PLC0415
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        entries = api.list_repo_tree(
            repo_id, repo_type="dataset", revision=revision, recursive=True
        )
        return {e.path: e for e in entries if hasattr(e, "blob_id")}, True
    except RevisionNotFoundError:
        return {}, True
    except RepositoryNotFoundError:
        return {}, False


def _same(local: LocalFile, remote: Any) -> bool:
    if remote is None or remote.size != local.size:
        return False
    if remote.lfs is not None:
        return bool(remote.lfs.sha256 == local.sha256)
    return bool(remote.blob_id == local.git_oid)


def _upload_order(entry: LocalFile) -> tuple[int, str]:
    if entry.path == CARD:
        return len(UPLOAD_ORDER) + 1, entry.path
    ranks = (i for i, prefix in enumerate(UPLOAD_ORDER) if entry.path.startswith(prefix))
    rank = next(ranks, len(UPLOAD_ORDER))
    return rank, entry.path


def _batches(files: list[LocalFile], max_bytes: int, max_files: int) -> Iterator[list[LocalFile]]:
    """Consecutive groups of at most ``max_files`` files and about ``max_bytes`` (a file larger
    than that goes alone); the card alone in the last group."""
    batch: list[LocalFile] = []
    size = 0
    for entry in files:
        full = batch and (size + entry.size > max_bytes or len(batch) >= max_files)
        if full or (batch and entry.path == CARD):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.size
    if batch:
        yield batch


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"
