"""Crawl BIDS collections into the candidate table, with exclusions, ignores and sources."""

from openmind_data.crawl.api import CrawlResult, companion_paths, crawl, find_datasets, read_index
from openmind_data.crawl.dataset import crawl_dataset

__all__ = [
    "CrawlResult",
    "companion_paths",
    "crawl",
    "crawl_dataset",
    "find_datasets",
    "read_index",
]
