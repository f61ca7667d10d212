"""The model zoo: one file per family, every model in one registry.

jaxcnn.list_models()
model = jaxcnn.create_model("resnet50", num_classes=1000, dtype=jnp.float32)
variables = model.init(key, x, train=False)
logits = model.apply(variables, x, train=False)
model = configure_batch_norm(model, axis_name="batch", frozen=("bn1", "layer1"))
"""

# Importing the family modules registers their models.
from . import alexnet, googlenet, inception, lenet, resnet, vgg  # noqa: F401
from .batch_norm import configure_batch_norm
from .registry import CheckpointDialect, ModelSpec, create_model, get_spec, list_models, register

__all__ = [
    "CheckpointDialect",
    "ModelSpec",
    "configure_batch_norm",
    "create_model",
    "get_spec",
    "list_models",
    "register",
]
