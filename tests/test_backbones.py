"""The conformance suite of the backbone adapters: every registered architecture, shrunken,
runs the same contract (``openmind_ssl.backbones.base.Backbone``).

Per adapter: the registry finds it by its name, its aliases and its network; the network it
builds takes inputs of its multiple and refuses others; the encoder's pooled features, its
deepest features and the decoded output have the shapes the adapter says; the adaptation keys
name tensors of the network's state dict, and the encoder parts hold exactly the parameters
under the encoder and stem keys; the mask cell and the position grid fit the inputs; the
paper's defaults load as configs.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from method_cases import TINY_MODEL  # noqa: E402

from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.backbones import (  # noqa: E402
    BACKBONES,
    DEFAULT_ARCHITECTURE,
    backbone_of,
    get_backbone,
    known_as,
)
from openmind_ssl.finetune.config import finetune_config  # noqa: E402
from openmind_ssl.models import adaptation_keys, find_backbone  # noqa: E402
from openmind_ssl.train.config import ModelConfig, load_config  # noqa: E402

NAMES = sorted(BACKBONES)


def _model(name: str) -> ModelConfig:
    sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY_MODEL[name].items()}
    return ModelConfig(architecture=name, **sizes)


def _size(name: str) -> tuple[int, int, int]:
    step = get_backbone(name).multiple(_model(name))
    return 2 * step, 2 * step, 2 * step


def test_the_registry_names_the_default_and_refuses_others_listing_them() -> None:
    assert DEFAULT_ARCHITECTURE in BACKBONES
    assert ModelConfig().architecture == DEFAULT_ARCHITECTURE
    with pytest.raises(ConfigError, match="must be one of " + ", ".join(BACKBONES)):
        get_backbone("unet")
    with pytest.raises(ConfigError, match=r"model\.architecture must be one of"):
        ModelConfig(architecture="unet")
    assert known_as("unet") is None and known_as(None) is None


@pytest.mark.parametrize("name", NAMES)
def test_the_registry_finds_the_adapter_by_name_alias_and_network(name: str) -> None:
    backbone = get_backbone(name)
    assert backbone.name == name and backbone.label
    assert known_as(name) == name
    assert all(known_as(alias) == name for alias in backbone.aliases)
    torch.manual_seed(0)
    network = backbone.build(_model(name), _size(name))
    assert isinstance(network, backbone.network_class)
    assert backbone_of(network) is backbone
    assert find_backbone(torch.nn.ModuleDict({"backbone": network})) == ("backbone", network)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_must_be_multiples_of_the_backbone_s_step(name: str) -> None:
    backbone, model = get_backbone(name), _model(name)
    size = _size(name)
    backbone.check_size(model, size, "the crop")
    backbone.check_pooled_size(model, size, "the views")
    step = backbone.multiple(model)
    odd = (size[0] + step // 2, size[1], size[2])
    with pytest.raises(ConfigError, match=rf"the crop \({odd[0]}, .*needs multiples of {step}"):
        backbone.check_size(model, odd, "the crop")
    with pytest.raises(ConfigError, match="needs multiples"):
        backbone.check_pooled_size(model, odd, "the views")
    with pytest.raises(ConfigError, match="needs multiples"):
        load_config(
            None,
            [f"model.architecture={name}", f"train.patch_size={list(odd)}"]
            + [f"model.{k}={v}" for k, v in TINY_MODEL[name].items()],
        )


@pytest.mark.parametrize("name", NAMES)
def test_encoder_features_pool_and_decode_to_the_shapes_the_adapter_says(name: str) -> None:
    backbone, size = get_backbone(name), _size(name)
    torch.manual_seed(0)
    network = backbone.build(_model(name), size, num_classes=3).eval()  # no drop path
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        encoded = backbone.encode(network, x)
        for stages in ("deepest", "all"):
            pooled = backbone.pool(encoded, stages)
            assert pooled.shape == (2, backbone.feature_dim(network, stages))
            assert torch.equal(pooled, backbone.pooled_features(network, x, stages))
        decoded = backbone.decode(network, encoded)
        assert decoded.shape == (2, 3, *size)
        assert torch.allclose(decoded, network(x), atol=1e-5)
        deepest = backbone.deepest_features(network, x)
    assert deepest.shape[:2] == (2, backbone.feature_dim(network))
    assert torch.allclose(deepest.mean(dim=2), backbone.pool(encoded), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_adaptation_keys_name_the_encoder_parts(name: str) -> None:
    backbone, size = get_backbone(name), _size(name)
    network = backbone.build(_model(name), size)
    keys = backbone.adaptation_keys()
    assert set(keys) == {"key_to_encoder", "key_to_stem", "keys_to_in_proj", "key_to_lpe"}
    assert adaptation_keys(network) == keys
    state = network.state_dict()
    prefixes = tuple(f"{k}." for k in (keys["key_to_encoder"], keys["key_to_stem"]) if k)
    under_keys = {id(state[k]) for k in state if k.startswith(prefixes)}
    in_parts = {
        id(state[f"{part}.{k}"])
        for part, module in zip(
            backbone.encoder_parts, backbone.encoder_modules(network), strict=True
        )
        for k in module.state_dict()
    }
    assert under_keys and under_keys == in_parts
    assert all(f"{key}.weight" in state for key in keys["keys_to_in_proj"])
    grid = backbone.position_grid(size)
    if keys["key_to_lpe"] is None:
        assert grid is None
    else:
        assert grid is not None and state[keys["key_to_lpe"]].shape[1] == math.prod(grid)


@pytest.mark.parametrize("name", NAMES)
def test_the_mask_cell_tiles_a_crop_of_the_backbone_s_multiples(name: str) -> None:
    backbone = get_backbone(name)
    cell = backbone.mask_cell(backbone.multiple(_model(name)))
    assert len(cell) == 3 and all(n % c == 0 for n, c in zip(_size(name), cell, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_the_paper_s_defaults_load_as_configs(name: str) -> None:
    backbone = get_backbone(name)
    config = load_config(None, [f"model.architecture={name}"])
    for section, values in backbone.pretrain_defaults().items():
        assert {k: getattr(getattr(config, section), k) for k in values} == values
    for pretrained in (False, True):
        defaults = backbone.finetune_defaults(pretrained)
        assert defaults["optim"]["lr"] == backbone.transfer_lr or not pretrained
    raw = {"task": {"path": "unused"}, "model": {"architecture": name}}
    tuned = finetune_config(raw)
    assert tuned.optim.lr == backbone.finetune_defaults(False)["optim"]["lr"]
