"""Training recipes: one Python file per job, each defining `get_config()`.

Every recipe starts from `jaxcnn.training.config.default_config()` (where each key is
documented) and overrides only what it changes; the returned config is locked, so a typo in
a key fails loudly. Each file's docstring states the command that runs it, the hardware it
was meant for, and the result to expect with its source.

Files are loaded by path (`--config=train/configs/NAME.py`), not imported as modules, so
this package needs no code of its own.
"""
