"""jaxcnn: classic convolutional networks and the operations under them, in JAX.

`import jaxcnn` is light: it imports JAX, Flax and the library, never tensorflow, grain or
torch.
"""

from . import convert, layers, ops, transfer
from .analysis import summary
from .models import create_model, list_models
from .xla import compiler_options, enable_compilation_cache

# The one place the version is written: pyproject.toml reads it (statically, without importing).
__version__ = "0.1.0"

__all__ = [
    "__version__",
    "compiler_options",
    "convert",
    "create_model",
    "enable_compilation_cache",
    "layers",
    "list_models",
    "ops",
    "summary",
    "transfer",
]
