"""Stream OpenMind images into PyTorch: metadata filters, sharding across DDP ranks and
DataLoader workers, RAS reorientation, resampling, z-scoring inside the anatomy mask and random
crops centred inside it."""

from openmind_ssl.data.augment import Augmentation, augment
from openmind_ssl.data.cache import CachedVolume, VolumeCache
from openmind_ssl.data.crops import Crop, candidate_centres, crop
from openmind_ssl.data.preprocess import Preprocessing, Volume, preprocess
from openmind_ssl.data.sharding import Unit, assign
from openmind_ssl.data.stream import OpenMindStream, Position, StreamOptions, TooManyFailuresError

__all__ = [
    "Augmentation",
    "CachedVolume",
    "Crop",
    "OpenMindStream",
    "Position",
    "Preprocessing",
    "StreamOptions",
    "TooManyFailuresError",
    "Unit",
    "Volume",
    "VolumeCache",
    "assign",
    "augment",
    "candidate_centres",
    "crop",
    "preprocess",
]
