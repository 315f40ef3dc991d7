"""openmind_ssl: stream an OpenMind dataset into PyTorch self-supervised pretraining and
fine-tuning.

- ``openmind_ssl.data``: the stream of crops (filters, sharding, preprocessing, cache, resume);
- ``openmind_ssl.models``: ResEnc-L and Primus-M with dynamic_network_architectures' names;
- ``openmind_ssl.methods``: SSL methods behind one interface (MAE so far);
- ``openmind_ssl.train``: the run's config and the torchrun trainer (``openmind-ssl pretrain``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
