"""openmind_ssl: stream an OpenMind dataset into PyTorch self-supervised pretraining and
fine-tuning.

The training side arrives with the SSL issues (data streaming, pretraining, the six other SSL
methods, fine-tuning); this package exists now so that both packages install, type-check and
version together from the first commit.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
