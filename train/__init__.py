"""`python -m train`: the command-line front end of `jaxcnn.training`.

The package holds the CLI (`train/__main__.py`) and the recipes it runs (`train/configs/`,
one Python file per job, each with a `get_config()`). It is not part of the installed
library: run it from the repository root. See `train/__main__.py` for usage.
"""
