"""SimCLR: NT-Xent on hand-made embeddings, the overlapping views and their augmentation, the
gradient of the cross-rank loss under DDP (two gloo processes), and a few trainer steps on both
architectures with shrunken networks."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from method_cases import TINY_MODEL, method_config  # noqa: E402

from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.methods import Batch, make_method  # noqa: E402
from openmind_ssl.methods.common import sample_generator  # noqa: E402
from openmind_ssl.methods.simclr import (  # noqa: E402
    ContrastiveNet,
    ViewAugmentation,
    augment_view,
    draw_augmentation,
    nt_xent,
    overlapping_offsets,
)
from openmind_ssl.models import Primus, adaptation_keys, find_backbone  # noqa: E402
from openmind_ssl.train.config import load_config  # noqa: E402

SCRIPTS = Path(__file__).parents[1] / "scripts"
SMALL = "method.options={view_size: [16, 16, 16], hidden_dim: 32, out_dim: 16}"


def _config(architecture: str, *overrides: str) -> Any:
    return method_config("simclr", architecture, SMALL, *overrides)


def _batch(keys: list[int]) -> Batch:
    image = torch.stack(
        [torch.randn(1, 32, 32, 32, generator=torch.Generator().manual_seed(k)) for k in keys]
    )
    return Batch(image, torch.ones_like(image), torch.zeros_like(image), keys)


# -- NT-Xent --------------------------------------------------------------------------------


def test_nt_xent_of_two_identical_pairs_orthogonal_to_each_other() -> None:
    """Views (e1, e1) and (e2, e2), e1 _|_ e2: every anchor sees its partner at similarity 1 and
    the two views of the other pair at 0, so each term is
    -log(e^(1/t) / (e^(1/t) + 2)) = log(1 + 2 e^(-1/t)); at t = 0.5: log(1 + 2 e^-2)."""
    e1, e2 = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 0.5, 0.0])  # norms do not matter
    first, second = torch.stack([e1, e2]), torch.stack([e1, e2])
    total, accuracy = nt_xent(first, second, temperature=0.5)
    assert total.item() == pytest.approx(4 * math.log(1 + 2 * math.exp(-2)), rel=1e-6)
    assert accuracy == 1.0
    total, _ = nt_xent(first, second, temperature=1.0)
    assert total.item() == pytest.approx(4 * math.log(1 + 2 * math.exp(-1)), rel=1e-6)


def test_nt_xent_when_every_view_is_the_same_is_log_of_the_candidates() -> None:
    """All similarities 1: each anchor picks its partner among 2P - 1 equal candidates."""
    same = torch.ones(3, 4)
    total, _ = nt_xent(same, same.clone(), temperature=0.5)
    assert total.item() == pytest.approx(6 * math.log(5), rel=1e-6)


def test_nt_xent_with_swapped_partners() -> None:
    """Pairs (e1, e2) and (e2, e1): an anchor's partner is orthogonal to it (logit 0), one
    negative equals it (logit 2) and one is orthogonal (logit 0): -log(1 / (2 + e^2))."""
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    total, accuracy = nt_xent(torch.stack([e1, e2]), torch.stack([e2, e1]), temperature=0.5)
    assert total.item() == pytest.approx(4 * math.log(2 + math.exp(2)), rel=1e-6)
    assert accuracy == 0.0


# -- views ----------------------------------------------------------------------------------


def test_overlapping_views_stay_in_the_crop_and_share_half_of_every_axis() -> None:
    crop, view = (192, 192, 64), (64, 64, 64)
    for key in range(200):
        a, b = overlapping_offsets(sample_generator(0, key), crop, view, 0.5)
        for lo_a, lo_b, c, v in zip(a, b, crop, view, strict=True):
            assert 0 <= lo_a <= c - v and 0 <= lo_b <= c - v
            assert abs(lo_a - lo_b) <= 32  # overlap >= 32 of 64 voxels on the axis
    again = overlapping_offsets(sample_generator(0, 7), crop, view, 0.5)
    assert again == overlapping_offsets(sample_generator(0, 7), crop, view, 0.5)
    # min_overlap 1: the views coincide
    a, b = overlapping_offsets(sample_generator(0, 1), crop, view, 1.0)
    assert a == b


def test_augmentations_keep_the_voxels_they_only_move_and_gamma_keeps_the_statistics() -> None:
    view = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(augment_view(view, ViewAugmentation()), view)
    moved = augment_view(view, ViewAugmentation(flips=(True, False, True), rot90=1))
    assert torch.equal(moved.flatten().sort().values, view.flatten().sort().values)
    assert torch.equal(moved, view.flip(1, 3).rot90(1, dims=(1, 2)))
    for inverted in (True, False):
        aug = ViewAugmentation(**{"gamma_inverted" if inverted else "gamma": 1.4})
        out = augment_view(view, aug)
        assert not torch.allclose(out, view)
        assert out.mean().item() == pytest.approx(view.mean().item(), abs=1e-5)
        assert out.std().item() == pytest.approx(view.std().item(), rel=1e-4)
    blurred = augment_view(view, ViewAugmentation(blur_sigma=1.0))
    assert blurred.std() < view.std() and blurred.mean().item() == pytest.approx(
        view.mean().item(), abs=0.05
    )
    contrast = augment_view(view, ViewAugmentation(contrast=1.25))
    assert contrast.min() >= view.min() and contrast.max() <= view.max()
    # the draws replay, and vary from view to view
    draws = [draw_augmentation(sample_generator(0, k), (8, 8, 8)) for k in range(50)]
    assert draws[3] == draw_augmentation(sample_generator(0, 3), (8, 8, 8))
    assert len({d.flips for d in draws}) > 1 and any(d.rot90 for d in draws)
    flat = [draw_augmentation(sample_generator(0, k), (8, 16, 8)) for k in range(50)]
    assert not any(d.rot90 for d in flat)  # a quarter turn would change a non-square plane


def test_a_samples_views_depend_on_its_key_not_on_its_batch() -> None:
    method = make_method(_config("resenc_l"))
    first, second = method.views(_batch([4, 5]), seed=3)
    assert first.shape == second.shape == (4, 1, 16, 16, 16)  # 2 samples x 2 pairs
    alone_first, alone_second = method.views(_batch([5]), seed=3)
    assert torch.equal(alone_first, first[2:]) and torch.equal(alone_second, second[2:])
    other, _ = method.views(_batch([4, 5]), seed=4)
    assert not torch.equal(other, first)


def test_views_larger_than_the_crop_or_not_whole_tokens_are_refused() -> None:
    with pytest.raises(ConfigError, match="does not fit"):
        make_method(_config("resenc_l", "method.options={view_size: [48, 16, 16]}"))
    with pytest.raises(ConfigError, match="Primus needs multiples of 8"):
        make_method(_config("primus_m", "method.options={view_size: [12, 16, 16]}"))
    with pytest.raises(ConfigError, match="temperature"):
        make_method(_config("resenc_l", "method.options={temperature: 0}"))


# -- the network ----------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", sorted(TINY_MODEL))
def test_every_trainable_parameter_gets_a_gradient_and_the_decoder_is_frozen(
    architecture: str,
) -> None:
    method = make_method(_config(architecture))
    torch.manual_seed(0)
    network = method.build()
    assert isinstance(network, ContrastiveNet)
    assert find_backbone(network)[0] == "backbone"
    assert adaptation_keys(network)["key_to_encoder"].startswith("backbone.")
    terms = method.loss(network, _batch([0, 1]), seed=0)
    assert terms.weight.item() == 8  # 2 samples x 2 pairs x 2 views
    assert math.isfinite(terms.total.item())
    if architecture == "resenc_l":  # every block starts as its skip: all views embed alike,
        assert terms.total.item() / 8 == pytest.approx(math.log(7), abs=0.05)  # log(candidates)
    terms.total.backward()
    trained = {n for n, p in network.named_parameters() if p.requires_grad}
    for name, parameter in network.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.isfinite().all(), name
    decoder = "backbone.decoder." if architecture == "resenc_l" else "backbone.up_projection."
    assert not any(n.startswith(decoder) for n in trained)
    assert any(n.startswith("projector.") for n in trained)
    encoder = "backbone.encoder." if architecture == "resenc_l" else "backbone.eva."
    assert any(n.startswith(encoder) for n in trained)


def test_primus_is_built_for_the_view_not_for_the_crop() -> None:
    method = make_method(_config("primus_m"))
    _, backbone = find_backbone(method.build())
    assert isinstance(backbone, Primus) and backbone.input_shape == (16, 16, 16)
    assert method.network_input_size == (16, 16, 16)


# -- DDP ------------------------------------------------------------------------------------


#: One of two gloo ranks (run as a script, so that it imports only torch and the method): its
#: share of the pairs, the trainer's normalisation, DDP's gradient average; rank 0 saves the
#: global loss and the gradients.
DDP_WORKER = """
import os
import sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from openmind_ssl.methods.simclr import nt_xent

rank, world, rendezvous, out = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
generator = torch.Generator().manual_seed(0)
first = torch.randn(6, 5, generator=generator)
second = first + 0.3 * torch.randn(6, 5, generator=generator)
torch.manual_seed(0)
network = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
pairs = 6 // world
mine = slice(rank * pairs, (rank + 1) * pairs)
model = DistributedDataParallel(network)
embeddings = model(torch.cat([first[mine], second[mine]]))
total, _ = nt_xent(embeddings[:pairs], embeddings[pairs:], temperature=0.5)
weight = torch.tensor(2.0 * pairs)
dist.all_reduce(weight)
(total * world / weight).backward()
summed = total.detach().clone()
dist.all_reduce(summed)
if rank == 0:
    torch.save({"loss": summed / weight, "grads": [p.grad for p in network.parameters()]}, out)
dist.barrier()
# Leave without tearing gloo down: torch 2.13's CPU build aborts in that teardown now and then
# ("terminate called without an active exception", with or without DDP), after all the work.
os._exit(0)
"""


def test_two_gloo_ranks_give_the_loss_and_gradient_of_one_process(tmp_path: Path) -> None:
    """Negatives gathered from every rank with their gradients: two ranks of three pairs each
    compute the same loss and (after DDP's average) the same gradients as one process with all
    six pairs."""
    script, out = tmp_path / "worker.py", tmp_path / "ddp.pt"
    script.write_text(DDP_WORKER)
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), rendezvous, str(out)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    try:
        for rank in ranks:
            _, stderr = rank.communicate(timeout=120)
            assert rank.returncode == 0, stderr[-3000:]
    finally:
        for rank in ranks:  # a rank left waiting for its dead peer
            if rank.poll() is None:
                rank.kill()
                rank.wait()
    ddp = torch.load(out)

    generator = torch.Generator().manual_seed(0)
    first = torch.randn(6, 5, generator=generator)
    second = first + 0.3 * torch.randn(6, 5, generator=generator)
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    embeddings = network(torch.cat([first, second]))
    total, _ = nt_xent(embeddings[:6], embeddings[6:], temperature=0.5)
    (total / 12).backward()
    assert ddp["loss"].item() == pytest.approx(total.item() / 12, rel=1e-6)
    for mine, single in zip(ddp["grads"], network.parameters(), strict=True):
        torch.testing.assert_close(mine, single.grad, rtol=1e-5, atol=1e-7)
    # the gathered negatives matter: each rank alone would give another loss
    alone, _ = nt_xent(embeddings[:3], embeddings[6:9], temperature=0.5)
    assert alone.item() / 6 != pytest.approx(total.item() / 12, rel=1e-3)


# -- the bundled configs --------------------------------------------------------------------


def test_the_bundled_simclr_configs_are_nnssls_runs() -> None:
    for architecture in ("resenc_l", "primus_m"):
        config = load_config(SCRIPTS / f"pretrain_{architecture}_simclr.yaml")
        method = make_method(config)
        assert config.method.name == "simclr" and config.model.architecture == architecture
        assert config.train.patch_size == (192, 192, 64)
        assert method.options.view_size == (64, 64, 64)
        assert method.options.temperature == 0.5 and method.options.pairs_per_sample == 2
    resenc = load_config(SCRIPTS / "pretrain_resenc_l_simclr.yaml")
    assert (resenc.optim.name, resenc.optim.lr, resenc.optim.grad_clip) == ("sgd", 1e-2, 0.1)
    primus = load_config(SCRIPTS / "pretrain_primus_m_simclr.yaml")
    assert (primus.optim.name, primus.optim.lr, primus.optim.warmup_epochs) == ("adamw", 3e-4, 50)
