"""The dataset card: ``README.md`` of a dataset folder (YAML header for the Hub and ``datasets``,
then a card for people) and its figures, rendered from the metadata tables through the Jinja2
template in ``dataset_card/``; and the summary ``openmind info`` prints."""

from openmind_data.card.render import CardResult, read_summary, render_card, write_card
from openmind_data.card.summary import Summary, summarize, summary_table
from openmind_data.card.validate import CardProblem, validate_card

__all__ = [
    "CardProblem",
    "CardResult",
    "Summary",
    "read_summary",
    "render_card",
    "summarize",
    "summary_table",
    "validate_card",
    "write_card",
]
