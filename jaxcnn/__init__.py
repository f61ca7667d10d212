"""jaxcnn: classic convolutional networks and the operations under them, in JAX.

`import jaxcnn` is light: it imports JAX and the ops, never tensorflow, grain or torch.
"""

from . import ops

__version__ = "0.1.0"

__all__ = ["__version__", "ops"]
