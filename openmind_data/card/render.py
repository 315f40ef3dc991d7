"""``openmind card DIR``: the dataset card (``README.md``) and its figures, from the folder's
metadata tables and shards, through the Jinja2 template in ``dataset_card/``.

The same folder renders the same bytes (no dates, no version strings in the PNGs), so a
rebuilt or resumed folder publishes no change it does not have.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pyarrow as pa
from huggingface_hub import DatasetCard

from openmind_data import __version__
from openmind_data.card.figures import FIGURES, examples, write_figures
from openmind_data.card.header import card_data
from openmind_data.card.summary import Summary, listing, summarize, summary_table
from openmind_data.dataset_folder import CARD, DatasetFolder
from openmind_data.durable import write_with
from openmind_data.errors import ConfigError
from openmind_data.schema import SCHEMA_VERSION, SHARD_SCHEMA

__all__ = ["DEFAULT_NAME", "TEMPLATE", "CardResult", "read_summary", "render_card", "write_card"]

DEFAULT_NAME = "openmind"

#: The card template: beside the packages in a source checkout, under <prefix>/share once
#: installed from a wheel.
TEMPLATE = next(
    (
        path
        for path in (
            Path(__file__).resolve().parents[2] / "dataset_card" / "README.md.jinja",
            Path(sys.prefix) / "share" / "openmind-toolkit" / "dataset_card" / "README.md.jinja",
        )
        if path.is_file()
    ),
    Path(__file__).resolve().parents[2] / "dataset_card" / "README.md.jinja",
)


@dataclass(frozen=True)
class CardResult:
    readme: Path
    figures: dict[str, Path]
    summary: Summary


def read_summary(
    path_or_repo: str | Path | DatasetFolder, *, revision: str | None = None
) -> Summary:
    """The summary of a dataset folder or Hub repo, from its metadata tables alone."""
    dataset = DatasetFolder.at(path_or_repo, revision=revision)
    return summarize(dataset.table("images"), dataset.table("sources"), dataset.table("excluded"))


def write_card(
    folder: str | Path,
    *,
    repo_id: str | None = None,
    pretty_name: str = "OpenMind-style 3D MRI",
    template: str | Path = TEMPLATE,
) -> CardResult:
    """Render the card of ``folder`` and its figures. ``repo_id`` is the name the
    card's code examples load: a Hub repo once published (``publish`` renders the card for
    its repo), else ``openmind``, the name a folder called so loads by from its parent. Not
    the folder's own name: the card, like everything else in the folder, must not depend on
    where the folder was written."""
    folder = Path(folder)
    summary = read_summary(folder)
    if not summary.images:
        raise ConfigError(f"{folder}: the image table is empty; there is nothing to describe")
    figures = write_figures(folder, summary)
    text = render_card(folder, summary, repo_id=repo_id, pretty_name=pretty_name, template=template)
    readme = folder / CARD
    write_with(readme, lambda path: path.write_text(text, encoding="utf-8"))
    return CardResult(readme, figures, summary)


def render_card(
    folder: Path,
    summary: Summary,
    *,
    repo_id: str | None,
    pretty_name: str,
    template: str | Path,
) -> str:
    """The card's text (figures are referenced, not drawn)."""
    ranked = sorted(summary.modalities, key=lambda row: (-row.images, row.modality))
    by_size = [row.modality for row in ranked]
    example = "T1w" if "T1w" in by_size else by_size[0]
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(template).parent),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML
    )
    environment.filters["counts"] = listing
    text = environment.get_template(Path(template).name).render(
        card_data=card_data(folder, summary, pretty_name=pretty_name).to_yaml(),
        pretty_name=pretty_name,
        summary=summary,
        table=summary_table(summary),
        figures={name: {"path": path, "alt": alt} for name, (path, alt) in FIGURES.items()},
        examples=examples(folder),
        repo=repo_id or DEFAULT_NAME,
        example_modality=example,
        stream_modalities=repr(by_size[:2]),
        columns=[(f.name, _type_name(f.type), _cell(_description(f))) for f in SHARD_SCHEMA],
        version=__version__,
        schema_version=SCHEMA_VERSION,
    )
    return str(DatasetCard(text).content)  # parsed as the Hub parses it: a broken header raises


def _type_name(kind: pa.DataType) -> str:
    """A column's type as a reader of the card thinks of it: what ``datasets`` gives back."""
    if pa.types.is_dictionary(kind):
        return _type_name(kind.value_type)
    if pa.types.is_fixed_size_list(kind):
        return f"{_type_name(kind.value_type)}[{kind.list_size}]"
    if pa.types.is_list(kind):
        return f"list<{_type_name(kind.value_type)}>"
    if pa.types.is_struct(kind):
        names = [kind.field(i).name for i in range(kind.num_fields)]
        if names == ["bytes", "path"]:
            return "nifti"
        return "struct<" + ", ".join(names) + ">"
    return {"float": "float32", "double": "float64"}.get(str(kind), str(kind))


def _description(field: pa.Field) -> str:
    description: bytes = (field.metadata or {}).get(b"description", b"")
    return description.decode()


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
