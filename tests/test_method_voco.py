"""VoCo: the overlap labels of hand-placed crops, the prediction and orthogonality terms on
hand-made embeddings, the momentum teacher's update, and a few trainer steps on both
architectures with shrunken networks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from method_cases import TINY_MODEL, method_config  # noqa: E402

from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.methods import Batch, make_method  # noqa: E402
from openmind_ssl.methods.voco import (  # noqa: E402
    VoCoNet,
    base_corners,
    orthogonality_loss,
    overlap_fractions,
    prediction_logits,
    prediction_loss,
)
from openmind_ssl.models import Primus, adaptation_keys, find_backbone  # noqa: E402
from openmind_ssl.train.config import load_config  # noqa: E402

SCRIPTS = Path(__file__).parents[1] / "scripts"
SMALL = {"base_grid": [2, 2, 2], "targets": 3, "hidden_dim": 32, "out_dim": 16}


def _config(architecture: str, *overrides: str, **options: Any) -> Any:
    """A 32^3 crop cut into 2x2x2 base crops of 16^3, three targets, a small projector;
    ``options`` change the method's own settings."""
    options = {**SMALL, **options}
    return method_config("voco", architecture, f"method.options={json.dumps(options)}", *overrides)


def _batch(keys: list[int]) -> Batch:
    image = torch.stack(
        [torch.randn(1, 32, 32, 32, generator=torch.Generator().manual_seed(k)) for k in keys]
    )
    return Batch(image, torch.ones_like(image), torch.zeros_like(image), keys)


# -- labels ---------------------------------------------------------------------------------


def test_the_base_grid_tiles_the_crop_in_c_order() -> None:
    corners = base_corners((2, 2, 1), (16, 16, 32))
    assert corners.tolist() == [[0, 0, 0], [0, 16, 0], [16, 0, 0], [16, 16, 0]]


def test_overlap_labels_of_hand_placed_crops() -> None:
    size = (16, 16, 32)
    bases = base_corners((2, 2, 1), size)
    targets = torch.tensor(
        [
            [16, 0, 0],  # exactly base 2
            [8, 0, 0],  # half on base 0, half on base 2
            [8, 8, 0],  # a quarter on each
            [0, 4, 0],  # three quarters on base 0, one on base 1
        ]
    )
    labels = overlap_fractions(targets, bases, size)
    assert labels.tolist() == [
        [0.0, 0.0, 1.0, 0.0],
        [0.5, 0.0, 0.5, 0.0],
        [0.25, 0.25, 0.25, 0.25],
        [0.75, 0.25, 0.0, 0.0],
    ]
    # a target anywhere in the crop is covered exactly once by the grid
    anywhere = torch.randint(0, 17, (50, 3)) * torch.tensor([1, 1, 0])
    assert torch.allclose(overlap_fractions(anywhere, bases, size).sum(dim=1), torch.ones(50))


def test_the_methods_crops_and_labels_are_where_it_says() -> None:
    """On an image whose voxels hold their own coordinates, every crop tells where it was cut:
    the base crops tile the grid, and each target's labels are its overlaps counted by hand."""
    method = make_method(_config("resenc_l", augment=False, targets=40))
    axis = torch.arange(32.0)
    image = (axis[:, None, None] * 10000 + axis[None, :, None] * 100 + axis[None, None, :])[None]
    batch = Batch(image[None], torch.ones(1, 1, 32, 32, 32), torch.zeros(1, 1, 32, 32, 32), [3])
    bases, targets, labels = method.crops(batch, seed=0)
    assert bases.shape == (8, 1, 16, 16, 16) and targets.shape == (40, 1, 16, 16, 16)
    assert labels.shape == (1, 40, 8)
    grid = [(x, y, z) for x in (0, 16) for y in (0, 16) for z in (0, 16)]
    for base, (x, y, z) in zip(bases, grid, strict=True):
        assert torch.equal(base, image[:, x : x + 16, y : y + 16, z : z + 16])
    for target, row in zip(targets, labels[0], strict=True):
        first = int(target[0, 0, 0, 0])
        x, y, z = first // 10000, first // 100 % 100, first % 100
        assert torch.equal(target, image[:, x : x + 16, y : y + 16, z : z + 16])
        by_hand = []
        for corner in grid:
            sides = [
                max(0, min(a, b) + 16 - max(a, b)) for a, b in zip((x, y, z), corner, strict=True)
            ]
            by_hand.append(math.prod(sides) / 16**3)
        assert row.tolist() == pytest.approx(by_hand)
    # a sample's crops depend on its key, not on its batch
    two = Batch(image[None].repeat(2, 1, 1, 1, 1), *[torch.ones(2, 1, 32, 32, 32)] * 2, [9, 3])
    _, again, again_labels = method.crops(two, seed=0)
    assert torch.equal(again[40:], targets) and torch.equal(again_labels[1], labels[0])


# -- the loss terms -------------------------------------------------------------------------


def test_the_prediction_loss_of_perfect_and_of_blind_predictions() -> None:
    labels = torch.tensor([[[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]]])
    # perfect: -log(1 + 1e-6) on the overlapping pairs, 0 on the others
    positive, negative = prediction_loss(labels.clone(), labels)
    assert positive.item() == pytest.approx(-math.log(1 + 1e-6), abs=1e-7)  # float32: ~0
    assert negative.item() == 0
    # blind (every prediction 0): -log(1 - label + 1e-6) weighted by the labels, over their sum
    positive, negative = prediction_loss(torch.zeros_like(labels), labels)
    expected = (2 * 0.5 * -math.log(0.5 + 1e-6) + 1.0 * -math.log(1e-6)) / (2 + 1e-6)
    assert positive.item() == pytest.approx(expected, rel=1e-5)
    assert negative.item() == 0
    # every prediction 0.5: the five empty pairs cost 0.25 each
    _, negative = prediction_loss(torch.full_like(labels, 0.5), labels)
    assert negative.item() == pytest.approx(0.25 * 5 / (5 + 1e-6))


def test_predictions_are_relud_cosine_similarities() -> None:
    bases = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]])
    targets = torch.tensor([[[1.0, 1.0]]])
    logits = prediction_logits(targets, bases)
    assert logits.shape == (1, 1, 3)
    assert logits[0, 0].tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(0.5), 0.0])


def test_the_orthogonality_term_is_zero_for_orthogonal_bases_and_one_for_equal_ones() -> None:
    orthogonal = torch.eye(4).unsqueeze(0) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None]
    assert orthogonality_loss(orthogonal).item() == 0
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])  # ReLU: anti-aligned costs nothing
    assert orthogonality_loss(opposite).item() == 0
    equal = torch.ones(2, 5, 3)
    assert orthogonality_loss(equal).tolist() == pytest.approx([1.0, 1.0])
    # three bases, one pair at 60 degrees: 0.5 over three pairs
    half = torch.tensor([[[1.0, 0.0, 0.0], [0.5, math.sqrt(0.75), 0.0], [0.0, 0.0, 1.0]]])
    assert orthogonality_loss(half).item() == pytest.approx(0.5 / 3)


# -- the teacher ----------------------------------------------------------------------------


def test_the_teacher_moves_by_one_minus_the_momentum_towards_the_student() -> None:
    method = make_method(_config("resenc_l", momentum=0.75))
    torch.manual_seed(0)
    network = method.build()
    assert isinstance(network, VoCoNet)
    with torch.no_grad():
        for parameter in [*network.backbone.parameters(), *network.projector.parameters()]:
            parameter.add_(torch.randn_like(parameter))
    student = {k: v.clone() for k, v in network.state_dict().items() if k[:8] != "teacher."}
    before = {k[8:]: v.clone() for k, v in network.state_dict().items() if k[:8] == "teacher."}
    assert before.keys() == student.keys()
    method.after_step(network)
    after = {k[8:]: v for k, v in network.state_dict().items() if k[:8] == "teacher."}
    moved = 0
    for name, old in before.items():
        if old.is_floating_point():
            expected = old + 0.25 * (student[name] - old)
            torch.testing.assert_close(after[name], expected, rtol=0, atol=1e-6)
            moved += int(not torch.equal(student[name], old))
    assert moved > 0
    # the student is untouched
    assert all(torch.equal(v, student[k]) for k, v in network.state_dict().items() if k in student)


def test_with_momentum_zero_the_teacher_is_the_students_copy() -> None:
    method = make_method(_config("primus_m", momentum=0.0))
    network = method.build()
    with torch.no_grad():
        for parameter in network.projector.parameters():
            parameter.mul_(2)
    method.after_step(network)
    state = network.state_dict()
    for name, value in state.items():
        if name.startswith("teacher."):
            assert torch.equal(value, state[name[8:]]), name


@pytest.mark.parametrize("architecture", sorted(TINY_MODEL))
def test_the_teacher_is_frozen_checkpointed_and_not_the_adapted_backbone(
    architecture: str,
) -> None:
    method = make_method(_config(architecture))
    network = method.build()
    assert isinstance(network, VoCoNet)
    assert find_backbone(network)[0] == "backbone"
    assert adaptation_keys(network)["key_to_encoder"].startswith("backbone.")
    assert all(not p.requires_grad for p in network.teacher.parameters())
    assert any(k.startswith("teacher.backbone.") for k in network.state_dict())
    network.train()
    assert network.backbone.training and not network.teacher.training
    if architecture == "primus_m":
        assert isinstance(network.backbone, Primus)
        assert network.backbone.input_shape == (16, 16, 16)  # one base crop


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("architecture", sorted(TINY_MODEL))
def test_every_trainable_parameter_gets_a_gradient(architecture: str, symmetric: bool) -> None:
    method = make_method(_config(architecture, symmetric=symmetric))
    torch.manual_seed(0)
    network = method.build()
    terms = method.loss(network, _batch([0, 1]), seed=0)
    assert terms.weight.item() == 2 and math.isfinite(terms.total.item())
    assert set(terms.logs) == {"positive", "negative", "orthogonality"}
    terms.total.backward()
    trained = [n for n, p in network.named_parameters() if p.requires_grad]
    assert trained and not any(n.startswith("teacher.") for n in trained)
    for name, parameter in network.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.isfinite().all(), name
        else:
            assert parameter.grad is None, name


def test_crops_that_do_not_tile_the_patch_are_refused() -> None:
    with pytest.raises(ConfigError, match="does not split"):
        make_method(_config("resenc_l", base_grid=[3, 2, 2]))
    with pytest.raises(ConfigError, match="at least two"):
        make_method(_config("resenc_l", base_grid=[1, 1, 1]))
    with pytest.raises(ConfigError, match="Primus needs multiples of 8"):
        make_method(_config("primus_m", base_grid=[8, 2, 2]))
    with pytest.raises(ConfigError, match="bottleneck"):  # 4 voxels, 4 stages: 1 left
        make_method(_config("resenc_l", base_grid=[4, 4, 8]))


def test_the_bundled_voco_configs_are_nnssls_runs() -> None:
    for architecture in ("resenc_l", "primus_m"):
        config = load_config(SCRIPTS / f"pretrain_{architecture}_voco.yaml")
        method = make_method(config)
        assert config.method.name == "voco" and config.model.architecture == architecture
        assert config.train.patch_size == (256, 256, 64)
        assert method.options.base_grid == (4, 4, 1) and method.options.targets == 4
        assert method.network_input_size == (64, 64, 64)
        assert method.options.momentum == 0.9
    resenc = load_config(SCRIPTS / "pretrain_resenc_l_voco.yaml")
    assert (resenc.optim.name, resenc.optim.lr, resenc.optim.grad_clip) == ("sgd", 1e-2, 0.0)
    primus = load_config(SCRIPTS / "pretrain_primus_m_voco.yaml")
    assert (primus.optim.name, primus.optim.lr, primus.optim.warmup_epochs) == ("adamw", 3e-4, 50)
