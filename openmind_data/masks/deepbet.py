"""deepbet (Fisch et al. 2024): a learned brain masker small enough for the CPU.

deepbet ships two TorchScript networks in its wheel (MIT licence): a bounding-box network that
finds the brain on a 128^3 resampling of the whole image, and a segmentation network that masks
the brain on a 256^3 resampling of that box with a 10% margin. Both take the image in the
closest canonical (RAS) voxel order, resampled by nearest neighbour on the voxel grid (deepbet
ignores the spacing), with intensities clipped to the 0.5-99.5th percentiles of the small
resampling, scaled to 0-1 and then standardised to ImageNet's mean and spread (0.449, 0.226).

This module runs those networks itself: deepbet's own package imports its GUI toolkit and two
compiled helpers at import time, none of which the networks need. Install the wheel without its
dependencies (``pip install --no-deps deepbet``); torch is the only requirement, imported when
the first mask is made. The largest connected part is kept and its holes filled, as deepbet does.

deepbet was trained on T1-weighted images only; :mod:`benchmarks.masks` measures it on every
contrast the collection holds.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from openmind_data.errors import ConfigError
from openmind_data.masks.anatomy import fill_holes
from openmind_data.masks.learned import LearnedBrainMasker, package_version

__all__ = ["DeepBetBrainMasker", "deepbet_models"]

#: The two networks' files inside deepbet's wheel, relative to its install root.
MODEL_FILES: Final = ("data/models/bbox_model.pt", "data/models/model.pt")
#: deepbet's grids: the whole image for the box, the box for the mask.
SMALL_SHAPE: Final = (128, 128, 128)
SHAPE: Final = (256, 256, 256)
BOX_MARGIN: Final = 0.1
#: Share of a projection's mean the box network's output must exceed to count (deepbet's 0.02).
BOX_THRESHOLD: Final = 0.02
THRESHOLD: Final = 0.5


def deepbet_models() -> Path | None:
    """The folder that holds deepbet's ``data/models`` when its wheel is installed, else None."""
    try:
        distribution = metadata.distribution("deepbet")
    except metadata.PackageNotFoundError:
        return None
    root = Path(str(distribution.locate_file("")))
    return root if all((root / name).is_file() for name in MODEL_FILES) else None


class DeepBetBrainMasker(LearnedBrainMasker):
    """deepbet's two networks (see the module docstring); ``root`` holds ``data/models``."""

    name = "deepbet"
    #: What deepbet was trained on: T1-weighted images. 'auto' gives it no other contrast
    #: (on the synthetic MP2RAGE inversion images its Dice fell to 0.73).
    contrasts = frozenset({"T1w", "inplaneT1", "UNIT1"})

    def __init__(self, root: str | Path | None = None, device: str = "cpu") -> None:
        found = Path(root) if root is not None else deepbet_models()
        self.root = found
        self.device = device

    def available(self) -> bool:
        """Whether torch imports and both network files are present."""
        return not self.missing()

    def missing(self) -> list[str]:
        missing = []
        if importlib.util.find_spec("torch") is None:
            missing.append("torch")
        if self.root is None:
            missing.append("the deepbet wheel (pip install --no-deps deepbet)")
        else:
            missing += [name for name in MODEL_FILES if not (self.root / name).is_file()]
        return missing

    def parameters(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "deepbet": package_version("deepbet"),
            "torch": package_version("torch"),
            "device": self.device,
            "small_shape": list(SMALL_SHAPE),
            "shape": list(SHAPE),
            "box_margin": BOX_MARGIN,
            "threshold": THRESHOLD,
            "postprocess": "largest connected part, holes filled",
        }

    @cached_property
    def _networks(self) -> tuple[Any, Any]:
        if not self.available():
            raise ConfigError(
                f"the deepbet brain masker needs {', '.join(self.missing())}; install torch "
                "(the ssl extra) and 'pip install --no-deps deepbet', or choose 'template'"
            )
        torch = importlib.import_module("torch")
        assert self.root is not None
        networks = []
        for name in MODEL_FILES:
            network = torch.jit.load(str(self.root / name), map_location=self.device)
            network.eval()
            networks.append(network)
        return networks[0], networks[1]

    def _mask(
        self,
        canonical: NDArray[np.float32],
        spacing: NDArray[np.float64],
        affine: NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        return fill_holes(_largest(self._predict(canonical) > THRESHOLD))

    def _predict(self, canonical: NDArray[np.float32]) -> NDArray[np.float32]:
        """deepbet's two-stage prediction on a canonical (RAS) array: the mask's probability."""
        torch = importlib.import_module("torch")
        functional = importlib.import_module("torch.nn.functional")
        box_net, mask_net = self._networks
        with torch.inference_mode():
            x = torch.nan_to_num(torch.from_numpy(canonical).to(self.device))
            small = functional.interpolate(x[None, None], SMALL_SHAPE, mode="nearest-exact")[0, 0]
            low, high = small.quantile(0.005), small.quantile(0.995)
            found = box_net(_normalise(small, low, high)[None, None])[0, 1]
            found = _largest(found.cpu().numpy() > 0.5)
            box = _box(found, canonical.shape)
            crop = functional.interpolate(x[box][None, None], SHAPE, mode="nearest-exact")
            inside = mask_net(_normalise(crop[0, 0], low, high)[None, None])[0, 1]
            probability = torch.zeros_like(x)
            probability[box] = functional.interpolate(
                inside[None, None], probability[box].shape, mode="nearest-exact"
            )[0, 0]
            result: NDArray[np.float32] = probability.cpu().numpy()
        return result


def _normalise(x: Any, low: Any, high: Any) -> Any:
    scaled = ((x - low) / (high - low)).clamp(0, 1)
    return 0.226 * (scaled - scaled.mean()) / scaled.std() + 0.449


def _box(found: NDArray[np.bool_], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The brain's box in the full grid from its mask on the small grid, with deepbet's margin.

    Where the box network found nothing, the whole grid (the mask network then decides)."""
    if not found.any():
        return tuple(slice(0, n) for n in shape)
    box = []
    for axis, n in enumerate(shape):
        others = tuple(a for a in range(3) if a != axis)
        rows = np.flatnonzero(found.mean(axis=others) > BOX_THRESHOLD)
        if rows.size == 0:
            rows = np.flatnonzero(found.any(axis=others))
        scale = n / found.shape[axis]
        centre = scale * (rows.max() + 1 + rows.min()) / 2
        size = (1 + 2 * BOX_MARGIN) * scale * (rows.max() + 1 - rows.min())
        low, high = int(round(centre) - round(size) / 2), int(round(centre) + round(size) / 2)
        box.append(slice(max(0, low), min(n, high)))
    return tuple(box)


def _largest(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))  # as cc3d
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest: NDArray[np.bool_] = labels == int(np.argmax(sizes))
    return largest
