"""Where a dataset is: a local folder or a Hub dataset repo, and its metadata files from either.
A Hub repo's metadata files come through ``huggingface_hub``'s download cache, so a second look
costs nothing."""

from __future__ import annotations

from pathlib import Path

from openmind_data.errors import ConfigError

__all__ = ["is_local", "metadata_file"]


def is_local(path_or_repo: str | Path) -> bool:
    """A folder that exists here is local; anything else is taken for a Hub repo id."""
    return Path(path_or_repo).is_dir()


def metadata_file(path_or_repo: str | Path, name: str, *, revision: str | None = None) -> Path:
    """``metadata/<name>`` of the dataset, downloaded first when it is a Hub repo."""
    if is_local(path_or_repo):
        path = Path(path_or_repo) / "metadata" / name
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: is {path_or_repo} an OpenMind folder?")
        return path
    from huggingface_hub import hf_hub_download  # noqa: PLC0415
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError  # noqa: PLC0415

    repo_id = str(path_or_repo)
    try:
        return Path(
            hf_hub_download(repo_id, f"metadata/{name}", repo_type="dataset", revision=revision)
        )
    except RepositoryNotFoundError as error:
        raise ConfigError(
            f"{repo_id!r} is neither a folder here nor a dataset repo on the Hub "
            "(or it is private and no token was found)"
        ) from error
    except EntryNotFoundError as error:
        raise ConfigError(f"{repo_id}: no metadata/{name}; is it an OpenMind dataset?") from error
