"""The brain-mask backend interface, and the base the learned backends share.

:class:`BrainMasker` is what every backend implements: one 3D image in its native grid and its
voxel-to-world (RAS mm) affine in, a boolean mask in that grid out. :class:`LearnedBrainMasker`
does for the learned backends (deepbet, HD-BET) what they have in common: it checks the input,
hands the image over in its closest canonical (RAS) voxel order, which both networks were
trained on, turns the mask back into the native grid, and keeps it inside the caller's anatomy;
a backend implements :meth:`LearnedBrainMasker._mask` alone.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from openmind_data.errors import ConfigError

__all__ = ["BrainMasker", "LearnedBrainMasker", "package_version"]

_RAS = np.array([[0, 1], [1, 1], [2, 1]])


@runtime_checkable
class BrainMasker(Protocol):
    """A brain-mask backend: one image in its native grid in, a boolean mask in that grid out."""

    name: str

    def parameters(self) -> dict[str, Any]:
        """JSON-able settings and versions, recorded as provenance beside every mask."""
        ...

    def available(self) -> bool:
        """Whether everything the backend needs (packages, weights) is installed."""
        ...

    def missing(self) -> list[str]:
        """What is not installed, for the error message; empty when :meth:`available`."""
        ...

    def __call__(
        self,
        data: NDArray[np.floating[Any]],
        affine: NDArray[np.float64],
        anatomy: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.bool_]:
        """The brain mask of ``data`` (3D) whose voxel-to-world (RAS mm) matrix is ``affine``.

        ``anatomy``, where the caller has it, marks where the head is (not air or padding);
        the brain mask stays inside it. Given it, a backend takes the caller's word that the
        image is a head, not a brain extract (the masks stage decides that first); without
        it, the template backend finds solid fill and a skull-stripped body itself.
        """
        ...


class LearnedBrainMasker:
    """Base of the learned backends (see the module docstring)."""

    name: str
    #: The modalities the network was trained on (None: any); 'auto' gives it no other.
    contrasts: frozenset[str] | None = None

    def __call__(
        self,
        data: NDArray[np.floating[Any]],
        affine: NDArray[np.float64],
        anatomy: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.bool_]:
        volume = np.asarray(data, dtype=np.float32)
        if volume.ndim != 3:
            raise ConfigError(f"brain masks need a 3D image, got shape {volume.shape}")
        matrix = np.asarray(affine, dtype=np.float64)
        orientation = nib.io_orientation(matrix)
        canonical = np.ascontiguousarray(nib.apply_orientation(volume, orientation))
        zooms = np.sqrt((matrix[:3, :3] ** 2).sum(axis=0))
        spacing = np.empty(3)
        spacing[orientation[:, 0].astype(int)] = zooms  # in the canonical axes' order
        grid = matrix @ nib.orientations.inv_ornt_aff(orientation, volume.shape)
        mask = np.asarray(self._mask(canonical, spacing, grid), dtype=bool)
        if mask.shape != canonical.shape:
            raise ConfigError(
                f"{self.name} returned a mask of shape {mask.shape} for an image of "
                f"{canonical.shape}"
            )
        back = nib.orientations.ornt_transform(_RAS, orientation)
        native: NDArray[np.bool_] = np.ascontiguousarray(nib.apply_orientation(mask, back))
        if anatomy is not None:
            native &= np.asarray(anatomy, dtype=bool)
        return native

    def _mask(
        self,
        canonical: NDArray[np.float32],
        spacing: NDArray[np.float64],
        affine: NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        """The brain mask of ``canonical``: the image in RAS voxel order, ``spacing`` mm per
        axis, ``affine`` its voxel-to-world matrix (for a backend that writes files)."""
        raise NotImplementedError


def package_version(package: str) -> str | None:
    """An installed package's version, for a backend's provenance; None where it is absent."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
