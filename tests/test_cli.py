import json
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from openmind_data.cli import app
from openmind_data.errors import ConfigError

runner = CliRunner()


def test_help_is_instant_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, openmind_data.cli; "
        "print(sorted(m for m in ('numpy', 'nibabel', 'pyarrow', 'scipy', 'bids') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "openmind_data.cli", "--help"], capture_output=True, check=True
    )
    assert time.perf_counter() - start < 5.0  # generous: a cold interpreter on a busy machine


def test_synth_command_writes_collection_and_montage(tmp_path: Path) -> None:
    out = tmp_path / "collection"
    result = runner.invoke(
        app,
        [
            "--no-progress",
            "synth",
            str(out),
            "--resolution",
            "tiny",
            "--subjects",
            "2",
            "--no-quality",
            "--montage",
            str(tmp_path / "m.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "broken on purpose" in result.output
    truth = json.loads((out / "truth" / "ground_truth.json").read_text())
    assert truth["config"]["resolution"] == "tiny"
    assert (tmp_path / "m.png").stat().st_size > 10_000
    again = runner.invoke(app, ["synth", str(out), "--resolution", "tiny"])
    assert again.exit_code == 2
    assert "not empty" in again.output


def test_synth_rejects_unknown_resolution(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--resolution", "huge"])
    assert result.exit_code == 2
    assert "resolution" in result.output


def test_schema_and_modalities_commands() -> None:
    result = runner.invoke(app, ["schema", "images"])
    assert result.exit_code == 0
    assert "image_quality_score" in result.output and "1 (best) to 5 (worst)" in result.output
    assert runner.invoke(app, ["schema", "nope"]).exit_code != 0
    result = runner.invoke(app, ["modalities"])
    assert result.exit_code == 0
    assert "UNIT1" in result.output and "anat/MP2RAGE inv~." in result.output


def test_build_command_builds_then_resumes(tmp_path: Path) -> None:
    import openmind_data
    from openmind_data.synth import SynthConfig, synthesize

    assert callable(openmind_data.build)  # the function, though openmind_data.curate holds it
    config = SynthConfig(seed=5, resolution="tiny", subjects=2, quality=False, diffusion=False)
    root = synthesize(tmp_path / "sources", config).root
    out = tmp_path / "openmind"
    command = ["--no-progress", "build", str(root), "--out", str(out), "--workers", "2"]
    first = runner.invoke(app, [*command, "--nifti-tree", str(tmp_path / "tree")])
    assert first.exit_code == 0, first.output
    assert "units_resumed: 0" in first.output and "duplicate 1" in first.output
    assert (out / "metadata" / "images.parquet").is_file()
    assert (tmp_path / "tree" / "openneuro_metadata.csv").is_file()
    again = runner.invoke(app, command)
    assert again.exit_code == 0, again.output
    assert "units_run: 0" in again.output
    refused = runner.invoke(app, [*command, "--deface", "off"])
    assert refused.exit_code == 2 and "--fresh" in refused.output


def test_an_openmind_error_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    """The message alone on stderr (it names the file and what to do); -vv adds the traceback."""
    result = runner.invoke(app, ["build", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'missing'}: not a folder\n"
    assert "Traceback" not in result.output
    loud = runner.invoke(app, ["-vv", "build", str(tmp_path / "missing"), "--out", "o"])
    assert isinstance(loud.exception, ConfigError)
    from openmind_ssl.cli import app as ssl_app

    ssl = runner.invoke(ssl_app, ["pretrain", "--config", str(tmp_path / "none.yaml")])
    assert ssl.exit_code == 2 and ssl.stderr.startswith("error: ") and "none.yaml" in ssl.stderr
