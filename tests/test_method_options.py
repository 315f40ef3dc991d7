"""Method settings live in each method's ``Options``: ``method.options`` holds them, the names
come from the registries, and configs that kept the masked-image settings directly under
``method`` load the same way."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("torch")

from openmind_data.errors import ConfigError
from openmind_ssl.finetune.config import finetune_config
from openmind_ssl.finetune.schedules import SCHEDULES
from openmind_ssl.methods import METHODS, make_method
from openmind_ssl.train.config import load_config


def test_the_old_place_of_mask_ratio_and_block_size_reads_into_the_options() -> None:
    old = load_config(None, ["method.mask_ratio=0.6", "method.block_size=32"])
    new = load_config(None, ["method.options={mask_ratio: 0.6, block_size: 32}"])
    assert old == new and old.method.options == {"mask_ratio": 0.6, "block_size": 32}
    assert (make_method(old).options.mask_ratio, make_method(old).options.block_size) == (0.6, 32)
    both = load_config(None, ["method.mask_ratio=0.6", "method.options={mask_ratio: 0.5}"])
    assert both.method.options == {"mask_ratio": 0.5}


def test_a_method_without_masks_ignores_the_old_keys_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        config = load_config(None, ["method.name=simclr", "method.mask_ratio=0.75"])
    assert config.method.options == {} and "has no mask_ratio" in caplog.text


def test_masked_settings_are_checked_by_the_method() -> None:
    with pytest.raises(ConfigError, match=r"method\.options\.mask_ratio must be in"):
        make_method(load_config(None, ["method.options={mask_ratio: 1.5}"]))
    with pytest.raises(ConfigError, match="needs multiples of 48"):
        make_method(load_config(None, ["method.options={block_size: 48}"]))


def test_method_and_schedule_names_come_from_the_registries() -> None:
    with pytest.raises(ConfigError, match="method.name must be one of " + ", ".join(METHODS)):
        load_config(None, ["method.name=byol"])
    with pytest.raises(ConfigError, match="schedule.name must be one of " + ", ".join(SCHEDULES)):
        finetune_config({"task": {"path": "unused"}, "schedule": {"name": "cosine"}})
