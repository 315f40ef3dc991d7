"""Fine-tuning end to end on CPU: a tiny ResEnc pretrained for 200 MAE steps on the synthetic
collection, adapted to the synthetic downstream tasks (lesion segmentation in two channels,
lesion presence), trained by each schedule, evaluated, resumed, and benchmarked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from method_cases import TINY_MODEL, tiny_run, write_config
from torch.nn import functional
from typer.testing import CliRunner

from openmind_data.curate import BuildResult
from openmind_data.errors import ConfigError
from openmind_ssl.cli import app
from openmind_ssl.finetune.adapt import load_pretrained, read_pretrained
from openmind_ssl.finetune.config import finetune_config
from openmind_ssl.finetune.networks import build_downstream, parameter_groups
from openmind_ssl.finetune.synthetic import write_classification_task, write_segmentation_task
from openmind_ssl.finetune.tasks import read_segmentation_task
from openmind_ssl.finetune.trainer import Finetuner, _deep_supervision
from openmind_ssl.finetune.volumes import prepare
from openmind_ssl.models import Primus
from openmind_ssl.train import checkpoint
from openmind_ssl.train.config import ModelConfig
from openmind_ssl.train.trainer import Pretrainer

PATCH = [32, 32, 32]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("downstream")
    return {
        "segmentation": write_segmentation_task(root / "lesions", cases=8, voxel_mm=4.0),
        "classification": write_classification_task(root / "presence", cases=8, voxel_mm=4.0),
    }


@pytest.fixture(scope="module")
def pretrained(built: tuple[BuildResult, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ResEnc after 200 MAE steps on the synthetic collection's T1w crops."""
    out = tmp_path_factory.mktemp("pretrain")
    raw = tiny_run(built[0].out, out / "run", optim={"name": "adamw", "lr": 3e-3})
    raw["train"].update(epochs=4, steps_per_epoch=50, checkpoint_every=4)
    raw["data"]["cache"] = str(out / "cache")
    result = Pretrainer(write_config(raw, out / "run.yaml")).fit()
    assert result.step == 200
    return out / "run" / "final.pt"


def run_config(
    dataset: Path, out: Path, kind: str = "segmentation", **sections: dict[str, Any]
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "task": {"kind": kind, "path": str(dataset), "spacing": 4.0, "val_fraction": 0.25},
        "schedule": {"epochs": 5, "decoder_epochs": 2, "warmup_epochs": 1},
        "train": {
            "steps_per_epoch": 2,
            "batch_size": 2,
            "patch_size": PATCH,
            "workers": 0,
            "out": str(out),
            "progress": False,
        },
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def encoder_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() for k, v in network.state_dict().items() if k.startswith("encoder.stages.")
    }


# -- adaptation ----------------------------------------------------------------------------


def test_the_checkpoint_encoder_and_stem_load_with_the_stem_repeated_over_two_channels(
    pretrained: Path,
) -> None:
    saved = checkpoint.load(pretrained)["model"]
    network = build_downstream(
        ModelConfig("resenc_l", **_tiny()), (32, 32, 32), kind="segmentation",
        input_channels=2, num_classes=3,
    )  # fmt: skip
    fresh_decoder = {k: v.clone() for k, v in network.state_dict().items() if "seg_layers" in k}
    report = load_pretrained(network, read_pretrained(pretrained), "resenc_l")
    state = network.state_dict()
    for key, value in saved.items():
        if key.startswith("encoder.stages."):
            assert torch.equal(state[key], value), key
    stem = "encoder.stem.convs.0.conv.weight"
    assert state[stem].shape[1] == 2
    assert torch.equal(state[stem], saved[stem].repeat(1, 2, 1, 1, 1) / 2)
    assert torch.equal(state["decoder.encoder.stem.convs.0.conv.weight"], state[stem])  # alias
    for key, value in fresh_decoder.items():
        assert torch.equal(state[key], value), f"{key} is the task's own, not pretrained"
    assert set(report.adapted) == {stem, "encoder.stem.convs.0.all_modules.0.weight"}
    assert report.fresh > 0


def test_primus_position_embeddings_are_interpolated_to_the_downstream_grid(
    tmp_path: Path,
) -> None:
    size = {k: v for k, v in TINY_MODEL["primus_m"].items() if k != "decoder_depth"}
    torch.manual_seed(0)
    source = Primus(1, 1, input_shape=(32, 32, 32), **size)  # 4^3 tokens
    # nnssl's checkpoint layout, saved from a DDP-wrapped network ("module." prefixes).
    plan = {
        "architecture_plans": {"arch_class_name": "PrimusM"},
        "key_to_encoder": "eva",
        "key_to_stem": "down_projection",
        "keys_to_in_proj": ["down_projection.proj"],
        "key_to_lpe": "eva.pos_embed",
    }
    weights = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"network_weights": weights, "nnssl_adaptation_plan": plan}, tmp_path / "n.pt")
    model = ModelConfig("primus_m", **size)
    network = build_downstream(
        model, (48, 48, 48), kind="segmentation", input_channels=1, num_classes=2
    )  # 6^3 tokens
    report = load_pretrained(network, read_pretrained(tmp_path / "n.pt"), "primus_m")
    expected = functional.interpolate(
        source.eva.pos_embed.detach().transpose(1, 2).reshape(1, -1, 4, 4, 4),
        size=(6, 6, 6),
        mode="trilinear",
        align_corners=False,
    )
    assert torch.allclose(network.eva.pos_embed.detach(), expected.flatten(2).transpose(1, 2))
    assert "eva.pos_embed" in report.adapted
    block = "eva.blocks.1.mlp.fc2.weight"
    assert torch.equal(network.state_dict()[block], source.state_dict()[block])
    with pytest.raises(ConfigError, match="resenc_l network"):
        load_pretrained(
            build_downstream(
                ModelConfig("resenc_l", **_tiny()), (32,) * 3, kind="segmentation",
                input_channels=1, num_classes=2,
            ),
            read_pretrained(tmp_path / "n.pt"),
            "resenc_l",
        )  # fmt: skip


def test_a_checkpoint_missing_encoder_tensors_is_refused_by_name(
    pretrained: Path, tmp_path: Path
) -> None:
    saved = checkpoint.load(pretrained)["model"]
    del saved["encoder.stages.1.blocks.0.conv1.conv.weight"]
    torch.save(saved, tmp_path / "bare.pt")
    network = build_downstream(
        ModelConfig("resenc_l", **_tiny()), (32,) * 3, kind="segmentation",
        input_channels=1, num_classes=2,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"bare\.pt.*encoder\.stages\.1\.blocks\.0\.conv1"):
        load_pretrained(network, read_pretrained(tmp_path / "bare.pt", "resenc_l"), "resenc_l")


# -- the schedules on the synthetic task ---------------------------------------------------


@pytest.mark.parametrize("schedule", ["default", "frozen", "warmup", "valley", "sawtooth"])
def test_each_schedule_trains_what_it_says_from_the_pretrained_encoder(
    schedule: str, tasks: dict[str, Path], pretrained: Path, tmp_path: Path
) -> None:
    raw = run_config(tasks["segmentation"], tmp_path / "run", schedule={"name": schedule})
    raw["pretrained"] = str(pretrained)
    trainer = Finetuner(finetune_config(raw))
    before = encoder_weights(trainer.network)
    decoder_before = [p.detach().clone() for p in trainer.groups["decoder"]]
    result = trainer.fit()
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(rows["epoch"]) == list(range(5))
    for epoch, row in rows.iterrows():
        trains = "+".join(sorted(trainer.schedule.trainable(int(epoch))))
        assert row["trains"] == trains
        assert row["lr_first"] == pytest.approx(trainer.schedule.learning_rate(int(epoch), 0, 2))
    after = encoder_weights(trainer.network)
    moved = any(not torch.equal(before[k], after[k]) for k in before)
    assert moved == (schedule != "frozen")
    assert any(
        not torch.equal(a, p.detach())
        for a, p in zip(decoder_before, trainer.groups["decoder"], strict=True)
    )
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert evaluation == result.evaluation
    assert evaluation["metric"] == "dice" and set(evaluation["dice"]) == {"lesion", "perilesional"}
    assert 0 <= evaluation["value"] <= 1 and len(evaluation["held_out"]) == 2
    assert (tmp_path / "run" / "final.pt").is_file()


def test_segmentation_learns_the_lesions_from_scratch(
    tasks: dict[str, Path], tmp_path: Path
) -> None:
    """200 steps: the held-out lesion cores are found (an untrained network scores ~0)."""
    raw = run_config(
        tasks["segmentation"],
        tmp_path / "run",
        task={"oversample": 0.66},
        model={"architecture": "resenc_l", "features_per_stage": [8, 16, 32, 32]},
        schedule={"name": "default", "epochs": 4},
        optim={"name": "adamw", "lr": 1e-2, "weight_decay": 0.0},
        train={"steps_per_epoch": 50},
    )
    raw["model"]["blocks_per_stage"] = [1, 1, 1, 1]
    trainer = Finetuner(finetune_config(raw))
    assert trainer.network.decoder.deep_supervision  # nnU-Net's default for ResEnc
    layers = trainer.network.decoder.seg_layers  # deepest (coarsest) first
    before = [[p.detach().clone() for p in layer.parameters()] for layer in layers]
    untrained = trainer.evaluate(tmp_path / "run" / "preprocessed" / "4mm")
    result = trainer.fit()
    changed = [
        any(not torch.equal(a, p) for a, p in zip(old, layer.parameters(), strict=True))
        for old, layer in zip(before, layers, strict=True)
    ]
    # Every stage learns but the coarsest, which nnU-Net weighs 0 (no weight decay here).
    assert changed == [False] + [True] * (len(layers) - 1)
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert untrained["dice"]["lesion"] < 0.1
    assert result.evaluation["dice"]["lesion"] > 0.6


def test_classification_from_the_pretrained_encoder_reports_balanced_accuracy_and_auroc(
    tasks: dict[str, Path], pretrained: Path, tmp_path: Path
) -> None:
    raw = run_config(
        tasks["classification"], tmp_path / "run", "classification",
        schedule={"name": "warmup"},
    )  # fmt: skip
    raw["pretrained"] = str(pretrained)
    trainer = Finetuner(finetune_config(raw))
    assert set(trainer.network.state_dict()) >= {"head.weight", "encoder.stem.convs.0.conv.weight"}
    evaluation = trainer.fit().evaluation
    assert evaluation["metric"] == "balanced_accuracy"
    assert 0 <= evaluation["value"] <= 1 and 0 <= evaluation["auroc"] <= 1
    assert evaluation["classes"] == ["healthy", "lesions"]
    held = [case["label"] for case in evaluation["cases"]]
    assert sorted(held) == [0, 1]  # each class held out


def test_an_interrupted_run_resumes_to_the_same_weights(
    tasks: dict[str, Path], pretrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(out: Path) -> Any:
        raw = run_config(tasks["segmentation"], out, schedule={"name": "sawtooth"})
        raw["pretrained"] = str(pretrained)
        return finetune_config(raw)

    whole = Finetuner(config(tmp_path / "whole")).fit()
    original = Finetuner._save

    def stop_after_epoch_3(self: Finetuner, name: str) -> Path:
        path = original(self, name)
        if self.epoch == 3:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Finetuner, "_save", stop_after_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        Finetuner(config(tmp_path / "split")).fit()
    monkeypatch.setattr(Finetuner, "_save", original)
    resumed = Finetuner(config(tmp_path / "split")).fit()
    assert len(resumed.losses) == 2
    a = checkpoint.load(tmp_path / "whole" / "final.pt")["model"]
    b = checkpoint.load(tmp_path / "split" / "final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.evaluation["value"] == whole.evaluation["value"]
    rows = pd.read_csv(tmp_path / "split" / "metrics.csv")
    assert list(rows["epoch"]) == list(range(5))
    with pytest.raises(ConfigError, match="another run"):
        other = run_config(tasks["segmentation"], tmp_path / "split", schedule={"name": "valley"})
        other["pretrained"] = str(pretrained)
        Finetuner(finetune_config(other)).fit()


# -- datasets and configs ------------------------------------------------------------------


def test_the_decathlon_layout_reads_as_the_nnunet_one(
    tasks: dict[str, Path], tmp_path: Path
) -> None:
    """The same cases written as the Medical Segmentation Decathlon does: one 4D image per
    case, labels value -> name, a training list."""
    source = read_segmentation_task(tasks["segmentation"])
    root = tmp_path / "Task01_Lesions"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for case in source.cases[:2]:
        channels = [nib.load(p) for p in case.images]
        stacked = np.stack([np.asarray(c.dataobj) for c in channels], axis=-1)
        nib.save(
            nib.Nifti1Image(stacked, channels[0].affine), root / "imagesTr" / f"{case.name}.nii.gz"
        )
        shutil.copy(case.target, root / "labelsTr" / f"{case.name}.nii.gz")
        training.append(
            {"image": f"./imagesTr/{case.name}.nii.gz", "label": f"./labelsTr/{case.name}.nii.gz"}
        )
    meta = {
        "modality": {"0": "T1w", "1": "FLAIR"},
        "labels": {"0": "background", "1": "lesion", "2": "perilesional"},
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    decathlon = read_segmentation_task(root)
    assert decathlon.channels == source.channels and decathlon.labels == source.labels
    for ours, theirs in zip(decathlon.cases, source.cases[:2], strict=False):
        a = prepare(ours, 2, 4.0, tmp_path / "a")
        b = prepare(theirs, 2, 4.0, tmp_path / "b")
        assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    (root / "labelsTr" / f"{source.cases[0].name}.nii.gz").unlink()
    with pytest.raises(ConfigError, match=f"{source.cases[0].name}.nii.gz does not exist"):
        read_segmentation_task(root)


def test_config_mistakes_name_the_file_and_the_key(tasks: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "ft.yaml"
    raw = run_config(tasks["segmentation"], tmp_path / "run", schedule={"nmae": "valley"})
    path.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", "--config", str(path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert "ft.yaml" in result.stderr and "schedule.nmae" in result.stderr
    with pytest.raises(ConfigError, match="task section is required"):
        finetune_config({"schedule": {"name": "valley"}})


# -- the benchmark -------------------------------------------------------------------------


def test_the_benchmark_runs_every_combination_and_renders_the_table(
    tasks: dict[str, Path], pretrained: Path, tmp_path: Path
) -> None:
    suite = {
        "out": str(tmp_path / "bench"),
        "base": {
            "schedule": {"epochs": 4, "decoder_epochs": 2, "warmup_epochs": 1},
            "train": {
                "steps_per_epoch": 1,
                "batch_size": 2,
                "patch_size": PATCH,
                "workers": 0,
                "progress": False,
            },
        },
        "checkpoints": {"scratch": None, "mae": str(pretrained)},
        "schedules": ["default", "sawtooth"],
        "datasets": {
            "lesions": {
                "kind": "segmentation",
                "path": str(tasks["segmentation"]),
                "spacing": 4.0,
                "domain": "ID",
            },
            "presence": {
                "kind": "classification",
                "path": str(tasks["classification"]),
                "spacing": 4.0,
                "domain": "OOD",
                "train": {"patch_size": [48, 64, 64]},  # this dataset's own
            },
        },
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    runner = CliRunner()
    result = runner.invoke(app, ["benchmark", "--suite", str(path)])
    assert result.exit_code == 0, result.output
    bench = tmp_path / "bench"
    table = pd.read_csv(bench / "benchmark.csv")
    assert list(zip(table["checkpoint"], table["schedule"], strict=True)) == [
        ("scratch", "default"), ("mae", "default"), ("mae", "sawtooth"),
    ]  # fmt: skip
    assert {"lesions", "presence", "All", "ID", "OOD"} <= set(table.columns)
    both = table[["lesions", "presence"]].mean(axis=1)
    assert np.allclose(table["All"], both, atol=0.01)
    assert "lesions (Dice, ID)" in (bench / "benchmark.md").read_text()
    assert (bench / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = pd.read_csv(bench / "results.csv")
    assert len(results) == 6
    # The scratch run trains the checkpoint's architecture at nnU-Net's from-scratch rate.
    scratch = yaml.safe_load(
        (bench / "scratch" / "default" / "lesions" / "config.yaml").read_text()
    )
    assert scratch["model"]["features_per_stage"] == _tiny()["features_per_stage"]
    assert scratch["optim"]["lr"] == 1e-2 and scratch["pretrained"] is None
    presence = yaml.safe_load((bench / "mae" / "sawtooth" / "presence" / "config.yaml").read_text())
    assert presence["train"]["patch_size"] == [48, 64, 64]
    assert presence["train"]["steps_per_epoch"] == 1  # the rest from base
    # Run again: every evaluation is read back, nothing is trained.
    stamps = {p: p.stat().st_mtime_ns for p in bench.rglob("final.pt")}
    again = runner.invoke(app, ["benchmark", "--suite", str(path)])
    assert again.exit_code == 0, again.output
    assert stamps == {p: p.stat().st_mtime_ns for p in bench.rglob("final.pt")}
    # A finished run of another configuration is not taken for this suite's.
    changed = runner.invoke(app, ["benchmark", "--suite", str(path), "--set", "base.optim.lr=0.5"])
    assert changed.exit_code == 2 and changed.stderr.startswith("error: ")
    assert "optim.lr" in changed.stderr


def test_deep_supervision_weighs_each_stage_against_labels_at_its_resolution() -> None:
    """Three outputs (full, half, quarter resolution): weights 1, 1/2 and 0, normalised."""
    seen: list[tuple[int, ...]] = []

    class MeanOfOutput(torch.nn.Module):
        def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            assert target.shape[2:] == output.shape[2:] and target.dtype == torch.int64
            seen.append(tuple(target.shape[2:]))
            return output.mean()

    label = torch.zeros(1, 1, 8, 8, 8, dtype=torch.int64)
    label[..., 4:, :, :] = 1
    outputs = [torch.full((1, 2, n, n, n), float(v)) for n, v in ((8, 1), (4, 2), (2, 3))]
    loss = _deep_supervision(MeanOfOutput(), outputs, label)
    assert float(loss) == pytest.approx((1 * 1 + 0.5 * 2) / 1.5)
    assert seen == [(8, 8, 8), (4, 4, 4)]  # the coarsest output (weight 0) is not scored


def test_parameter_groups_split_the_network_once() -> None:
    network = build_downstream(
        ModelConfig("resenc_l", **_tiny()), (32,) * 3, kind="segmentation",
        input_channels=1, num_classes=2,
    )  # fmt: skip
    groups = parameter_groups(network, "resenc_l")
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in network.parameters() if p.requires_grad}
    assert set(ids) == trainable
    encoder = {id(p) for p in network.encoder.parameters()}
    assert {id(p) for p in groups["encoder"]} == encoder


def _tiny() -> dict[str, Any]:
    return dict(TINY_MODEL["resenc_l"])


def test_a_primus_checkpoint_fine_tunes_at_another_patch_size(
    built: tuple[BuildResult, Path], tasks: dict[str, Path], tmp_path: Path
) -> None:
    """MAE-pretrained at 32^3 (4^3 tokens), fine-tuned at 48^3 (6^3 tokens): the position
    embedding is interpolated, and Sawtooth's decoder stage runs at a hundredth of the rate."""
    raw = tiny_run(built[0].out, tmp_path / "pretrain", "primus_m", train={"epochs": 1})
    raw["train"]["steps_per_epoch"] = 3
    Pretrainer(write_config(raw, tmp_path / "pretrain.yaml")).fit()
    config = run_config(
        tasks["segmentation"], tmp_path / "run", schedule={"name": "sawtooth"},
        train={"patch_size": [48, 48, 48]},
    )  # fmt: skip
    config["pretrained"] = str(tmp_path / "pretrain" / "final.pt")
    trainer = Finetuner(finetune_config(config))
    assert trainer.config.model.embed_dim == TINY_MODEL["primus_m"]["embed_dim"]
    assert trainer.config.optim.lr == 1e-4 and trainer.config.optim.name == "adamw"
    assert trainer.load_report is not None
    assert "eva.pos_embed" in trainer.load_report.adapted
    assert trainer.network.eva.pos_embed.shape[1] == 6**3
    trainer.fit()
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert rows["lr_last"][0] == pytest.approx(1e-6)  # the decoder warm-up's peak: lr x 0.01
    assert rows["lr_last"][2] == pytest.approx(1e-4)  # the whole network's
