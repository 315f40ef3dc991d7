"""Pretraining: configs, the MAE loss, the loop, exact resume, and DDP under torchrun (CPU, gloo).

Networks are shrunk (a few channels, two transformer blocks) and crops are 32^3 voxels at 3 mm,
so a step takes milliseconds; everything else is the code a GPU run uses."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

torch = pytest.importorskip("torch")

from method_cases import defaced_batch, tiny_run, write_config  # noqa: E402

from openmind_data.curate import BuildResult  # noqa: E402
from openmind_data.errors import ConfigError  # noqa: E402
from openmind_ssl.methods import METHODS, Batch, make_method  # noqa: E402
from openmind_ssl.methods.common import sample_generator  # noqa: E402
from openmind_ssl.methods.mae import block_mask, token_keep  # noqa: E402
from openmind_ssl.models import build_network, parameter_count  # noqa: E402
from openmind_ssl.train import checkpoint  # noqa: E402
from openmind_ssl.train.config import ModelConfig, load_config  # noqa: E402
from openmind_ssl.train.schedule import learning_rate  # noqa: E402
from openmind_ssl.train.trainer import Pretrainer  # noqa: E402

SCRIPTS = Path(__file__).parents[1] / "scripts"
# -- configs ------------------------------------------------------------------------------


def test_the_bundled_configs_are_the_papers_runs() -> None:
    """One config per method and architecture; the MAE ones are the paper's four runs."""
    configs = {path.stem: load_config(path) for path in sorted(SCRIPTS.glob("pretrain_*.yaml"))}
    pairs = {(c.method.name, c.model.architecture) for c in configs.values()}
    assert pairs == {(m, a) for m in METHODS for a in ("resenc_l", "primus_m")}
    for name, config in configs.items():
        assert name.startswith(f"pretrain_{config.model.architecture}_{config.method.name}")
        make_method(config)  # the method's own options are valid too
    configs = {k: v for k, v in configs.items() if v.method.name == "mae"}
    assert set(configs) == {
        "pretrain_resenc_l_mae",
        "pretrain_resenc_l_mae_anon",
        "pretrain_primus_m_mae",
        "pretrain_primus_m_mae_anon",
    }
    resenc, primus = configs["pretrain_resenc_l_mae"], configs["pretrain_primus_m_mae"]
    assert (resenc.optim.name, resenc.optim.lr, resenc.optim.momentum) == ("sgd", 1e-2, 0.99)
    assert resenc.optim.nesterov and resenc.optim.warmup_epochs == 0
    assert (primus.optim.name, primus.optim.lr, primus.optim.weight_decay) == ("adamw", 3e-4, 0.05)
    assert primus.optim.warmup_epochs > 0
    for config in configs.values():
        assert config.train.patch_size == (160, 160, 160)
        assert config.method.options["mask_ratio"] == 0.75
        assert (config.train.epochs, config.train.steps_per_epoch) == (1000, 250)
    assert configs["pretrain_resenc_l_mae_anon"].method.anon_aware
    assert not resenc.method.anon_aware


def test_config_mistakes_name_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train: {epochs: 2, learning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key train\.learning_rate"):
        load_config(path)
    path.write_text("train: {epochs: two}\n")
    with pytest.raises(ConfigError, match=r"train\.epochs must be int"):
        load_config(path)
    path.write_text("model: {architecture: unet}\n")
    with pytest.raises(ConfigError, match=r"model\.architecture must be one of"):
        load_config(path)
    with pytest.raises(ConfigError, match="Primus needs multiples of 8"):
        load_config(None, ["model.architecture=primus_m", "train.patch_size=[60, 64, 64]"])
    config = load_config(None, ["optim.lr=3e-4", "data.modalities=[T1w, FLAIR]"])
    assert config.optim.lr == 3e-4 and config.data.modalities == ("T1w", "FLAIR")


def test_the_learning_rate_warms_up_linearly_then_decays_polynomially() -> None:
    rates = [learning_rate(s, peak=1.0, warmup_steps=4, total_steps=14) for s in range(14)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert rates[4] == 1.0 and rates[9] == pytest.approx(0.5**0.9)
    assert all(a > b for a, b in itertools.pairwise(rates[4:])) and rates[-1] > 0
    assert learning_rate(0, peak=0.01, warmup_steps=0, total_steps=10) == 0.01


# -- MAE ----------------------------------------------------------------------------------


def test_mae_masks_hide_three_quarters_and_replay_from_their_keys() -> None:
    generators = [sample_generator(0, key) for key in (5, 6)]
    mask = block_mask((32, 32, 64), 16, 0.75, generators)
    assert mask.shape == (2, 1, 32, 32, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.mean(dim=(1, 2, 3, 4)).tolist() == [0.75, 0.75]
    assert not torch.equal(mask[0], mask[1])
    again = block_mask((32, 32, 64), 16, 0.75, [sample_generator(0, 6)])
    assert torch.equal(again[0], mask[1])  # a sample's mask depends on its key, not its batch
    keep = token_keep(64, 0.75, [sample_generator(0, key) for key in range(3)])
    assert keep.shape == (3, 16) and all(len(set(row.tolist())) == 16 for row in keep)


def _batch(seed: int, anon_noise: float | None) -> Batch:
    return defaced_batch(seed, anon_noise, anatomy_gap=4)


@pytest.mark.parametrize("architecture", ["resenc_l", "primus_m"])
def test_the_anonymization_aware_loss_ignores_whatever_lies_in_the_deface_mask(
    architecture: str, tmp_path: Path
) -> None:
    raw = tiny_run(tmp_path, tmp_path / "run", architecture, method={"anon_aware": True})
    method = make_method(write_config(raw, tmp_path / "run.yaml"))
    torch.manual_seed(0)
    model = method.build().eval()
    base = method.loss(model, _batch(1, anon_noise=None), seed=0)
    for noise in (0.0, 5.0, 1e4):
        other = method.loss(model, _batch(1, anon_noise=noise), seed=0)
        assert torch.equal(other.total, base.total) and torch.equal(other.weight, base.weight)
    # The weight counts the hidden voxels outside the deface band: 3/4 of 20/32 of the crop.
    assert base.weight.item() == pytest.approx(2 * 32**3 * 0.75 * 20 / 32, rel=0.1)
    plain = make_method(
        write_config(tiny_run(tmp_path, tmp_path / "p", architecture), tmp_path / "p.y")
    )
    unaware = [plain.loss(model, _batch(1, anon_noise=n), seed=0).total for n in (0.0, 5.0)]
    assert not torch.equal(unaware[0], unaware[1])  # without the option, the band counts
    raw["method"]["anatomy_only"] = True
    anatomy = make_method(write_config(raw, tmp_path / "anatomy.yaml"))
    assert anatomy.loss(model, _batch(1, None), seed=0).weight < base.weight


def test_both_architectures_report_their_paper_parameter_counts() -> None:
    """Counted by dynamic_network_architectures 0.4.4 (ResidualEncoderUNet as nnssl builds
    ResEnc-L; PrimusM at 160^3), one input channel and one output channel."""
    crop = (160, 160, 160)
    assert parameter_count(build_network(ModelConfig("resenc_l"), crop)) == 102_348_965
    assert parameter_count(build_network(ModelConfig("primus_m"), crop)) == 151_786_529
    with_decoder = build_network(ModelConfig("primus_m"), crop, mae_decoder=True)
    assert parameter_count(with_decoder) > 151_786_529  # the MAE's two decoder blocks


# -- the loop -----------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["resenc_l", "primus_m"])
def test_one_step_for_each_architecture_writes_a_loadable_checkpoint(
    architecture: str, built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    raw = tiny_run(built[0].out, tmp_path / "run", architecture, train={"epochs": 1})
    raw["train"]["steps_per_epoch"] = 1
    config = write_config(raw, tmp_path / "run.yaml")
    trainer = Pretrainer(config)
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    result = trainer.fit()
    assert result.step == 1 and not result.stopped and len(result.losses) == 1
    saved = checkpoint.load(tmp_path / "run" / "final.pt")
    changed = [k for k, v in saved["model"].items() if not torch.equal(v, before[k])]
    assert changed, "the optimizer step changed no weight"
    keys = saved["architecture"]
    assert keys["parameters"] == parameter_count(trainer.network)
    assert keys["key_to_encoder"] in {"encoder.stages", "eva"}
    for name in keys["keys_to_in_proj"]:
        assert f"{name}.weight" in saved["model"]
    assert saved["config"]["model"]["architecture"] == architecture
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,lr") and len(rows) == 2


def test_the_loss_decreases_over_a_few_dozen_steps(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    """80 steps on the synthetic T1w crops: the MAE loss on a fixed batch (fixed masks) falls
    by at least a tenth. (Step losses are too noisy to compare: every step brings other
    crops.) The fixed batch is the stream's first crops, so its images follow the shards' IQS
    order: under the IQS models 2.0.0 and 2.1.0 the loss fell to 0.79 and 0.88 of its start
    in 40 steps, to 0.82 and 0.84 in 80."""
    raw = tiny_run(built[0].out, tmp_path / "run", optim={"name": "adamw", "lr": 3e-3})
    raw["train"].update(epochs=1, steps_per_epoch=80)
    raw["data"]["cache"] = str(tmp_path / "cache")
    trainer = Pretrainer(write_config(raw, tmp_path / "run.yaml"))
    samples = list(itertools.islice(trainer.samples(), 8))

    def stack(key: str) -> torch.Tensor:
        return torch.stack([s[key] for s in samples]).float()

    fixed = Batch(stack("image"), stack("anat_mask"), stack("anon_mask"), list(range(8)))

    def loss() -> float:
        with torch.no_grad():
            terms = trainer.method.loss(trainer.network.eval(), fixed, seed=123)
        trainer.network.train()
        return float(terms.total / terms.weight)

    before = loss()
    trainer.fit()
    assert loss() < 0.9 * before


def test_a_run_stopped_by_a_signal_resumes_bit_identically(
    built: tuple[BuildResult, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two DataLoader workers, drop path on (Primus): a SIGUSR1 during step 4 of 6 stops the
    run with a checkpoint; the same config resumes it; weights, optimizer state and losses
    equal those of a run that never stopped, bit for bit."""
    overrides = {"workers": 2, "augment": True, "modalities": None}  # 8 row groups
    whole_raw = tiny_run(built[0].out, tmp_path / "whole", "primus_m", data=overrides)
    whole_raw["model"]["drop_path_rate"] = 0.3
    whole = Pretrainer(write_config(whole_raw, tmp_path / "whole.yaml")).fit()

    raw = tiny_run(built[0].out, tmp_path / "split", "primus_m", data=overrides)
    raw["model"]["drop_path_rate"] = 0.3
    config = write_config(raw, tmp_path / "split.yaml")
    first = Pretrainer(config)
    original = first.method.loss
    calls = 0

    def signalled(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 4:
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(*args, **kwargs)

    monkeypatch.setattr(first.method, "loss", signalled)
    stopped = first.fit()
    assert stopped.stopped and stopped.step == 4
    resumed = Pretrainer(config).fit()
    assert resumed.step == 6 and not resumed.stopped
    assert stopped.losses + resumed.losses == whole.losses
    a = checkpoint.load(tmp_path / "whole" / "final.pt")
    b = checkpoint.load(tmp_path / "split" / "final.pt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["data"] == b["data"]
    rows = (tmp_path / "split" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(1, 7)]


def test_a_checkpoint_of_another_run_is_refused(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    raw = tiny_run(built[0].out, tmp_path / "run", train={"epochs": 1})
    raw["train"]["steps_per_epoch"] = 1
    Pretrainer(write_config(raw, tmp_path / "a.yaml")).fit()
    raw["optim"]["lr"] = 0.5
    with pytest.raises(ConfigError, match=r"belongs to another run \(optim\.lr: 0\.01 -> 0\.5"):
        Pretrainer(write_config(raw, tmp_path / "b.yaml")).fit()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_torchrun_on_two_cpu_processes_matches_one_process(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    """``torchrun --nproc-per-node 2 openmind-ssl pretrain`` (gloo) with one loader worker per
    rank reads the same global batches as one process with two workers, draws the same masks
    and normalises the loss over both ranks: its weights equal the single process's."""
    # SGD, the paper's ResEnc-L optimizer. (Adam would turn the float noise in the near-zero
    # gradients of biases in front of instance norms into full-size steps of either sign.)
    raw = tiny_run(built[0].out, tmp_path / "ddp")
    raw["data"].update(workers=1, modalities=None)  # 8 row groups for 2 readers
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    command += ["-m", "openmind_ssl.cli", "pretrain", "--config", str(tmp_path / "ddp.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    raw["train"]["out"] = str(tmp_path / "single")
    raw["data"]["workers"] = 2
    Pretrainer(write_config(raw, tmp_path / "single.yaml")).fit()
    ddp = checkpoint.load(tmp_path / "ddp" / "final.pt")
    single = checkpoint.load(tmp_path / "single" / "final.pt")
    assert len(ddp["random"]) == 2 and len(single["random"]) == 1
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    ddp_losses = [r.split(",")[2] for r in (tmp_path / "ddp/metrics.csv").read_text().split()]
    one_losses = [r.split(",")[2] for r in (tmp_path / "single/metrics.csv").read_text().split()]
    assert [float(x) for x in ddp_losses[1:]] == pytest.approx(
        [float(x) for x in one_losses[1:]], rel=1e-5
    )


def test_more_readers_than_row_groups_is_refused_before_training(
    built: tuple[BuildResult, Path], tmp_path: Path
) -> None:
    raw = tiny_run(built[0].out, tmp_path / "run", data={"workers": 2})  # T1w: one row group
    with pytest.raises(ConfigError, match=r"1 row groups selected for 2 readers"):
        Pretrainer(write_config(raw, tmp_path / "run.yaml")).fit()
