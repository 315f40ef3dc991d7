"""The conformance suite of the SSL methods: every method on both architectures (14 pairs)
runs the shared contract through the real trainer on the synthetic collection, with shrunken
networks and crops.

Per pair: a few optimizer steps with finite losses; every parameter that trains gets a finite
gradient from the method's loss; the final checkpoint loads into a freshly built network with
``strict=True`` and equals it; the checkpoint's encoder key map points at the backbone's
weights. Each method's own loss is tested on hand-made cases in ``test_method_<module>.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from openmind_data.curate import BuildResult  # noqa: E402
from openmind_ssl.methods import METHODS, Batch, make_method  # noqa: E402
from openmind_ssl.models import find_backbone  # noqa: E402
from openmind_ssl.train import checkpoint  # noqa: E402
from openmind_ssl.train.config import load_config  # noqa: E402
from openmind_ssl.train.trainer import Pretrainer  # noqa: E402

ARCHITECTURES = {
    "resenc_l": ["model.features_per_stage=[4,8,16,16]", "model.blocks_per_stage=[1,1,1,1]"],
    "primus_m": [
        "model.embed_dim=48",
        "model.depth=2",
        "model.num_heads=2",
        "model.decoder_depth=1",
        "model.drop_path_rate=0.1",
    ],
}
#: Per method: the stream's crop and the method's own sizes, shrunk like the networks.
METHOD_SIZES: dict[str, list[str]] = {name: ["train.patch_size=[32,32,32]"] for name in METHODS}
METHOD_SIZES["simclr"] = [
    "train.patch_size=[48,48,48]",
    "method.options={view_size: [32, 32, 32], hidden_dim: 32, out_dim: 16}",
]
METHOD_SIZES["voco"] = [
    "train.patch_size=[64,64,32]",
    "method.options={base_grid: [2, 2, 1], targets: 2, hidden_dim: 32, out_dim: 16}",
]


def _config(method: str, architecture: str, folder: Path, out: Path) -> Any:
    overrides = [
        f"data.source={folder}",
        "data.modalities=[T1w]",
        "data.spacing=3.0",
        "data.crops_per_volume=2",
        "data.shuffle_buffer=2",
        "data.workers=0",
        "data.augment=false",
        f"method.name={method}",
        f"model.architecture={architecture}",
        "train.epochs=1",
        "train.steps_per_epoch=2",
        "train.batch_size=2",
        "train.progress=false",
        f"train.out={out}",
        *ARCHITECTURES[architecture],
        *METHOD_SIZES[method],
    ]
    return load_config(None, overrides)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_on_both_architectures(
    method: str, architecture: str, built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    config = _config(method, architecture, built[0].out, tmp_path / "run")
    trainer = Pretrainer(config)
    result = trainer.fit()
    assert result.step == 2 and all(math.isfinite(loss) for loss in result.losses), result

    # Gradients: a fresh network, one batch of the run's own crops.
    torch.manual_seed(1)
    network = make_method(config).build()
    stream = trainer.samples()
    samples = [next(stream), next(stream)]

    def stack(key: str) -> Any:
        return torch.stack([s[key] for s in samples]).float()

    batch = Batch(stack("image"), stack("anat_mask"), stack("anon_mask"), [0, 1])
    terms = trainer.method.loss(network, batch, seed=0)
    assert terms.total.isfinite() and terms.weight > 0
    (terms.total / terms.weight).backward()
    for name, parameter in network.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"{method}/{architecture}: {name} got no gradient"
            assert parameter.grad.isfinite().all(), f"{method}/{architecture}: {name}"

    # The checkpoint: loads strictly into a fresh build, equal to the trained weights.
    saved = checkpoint.load(tmp_path / "run" / "final.pt")
    fresh = make_method(config).build()
    fresh.load_state_dict(saved["model"], strict=True)
    trained = trainer.network.state_dict()
    assert all(torch.equal(fresh.state_dict()[k], trained[k].cpu()) for k in trained)

    # The key map: the backbone's encoder, stem and input projection, wherever it sits.
    keys = saved["architecture"]
    assert keys["method"] == method and keys["name"] == architecture
    assert keys["patch_size"] == list(trainer.method.network_input_size)  # what the net saw
    prefix, _ = find_backbone(fresh)
    assert any(k.startswith(keys["key_to_encoder"] + ".") for k in saved["model"])
    assert any(k.startswith(keys["key_to_stem"] + ".") for k in saved["model"])
    for name in keys["keys_to_in_proj"]:
        weight = saved["model"][f"{name}.weight"]
        assert weight.shape[1] == 1  # one input channel: what fine-tuning repeats
    assert keys["key_to_encoder"].startswith(prefix)
