"""The training engine: state, pure steps, parallelism, checkpoints, metrics and the loop.

    from jaxcnn.training import train_and_evaluate, default_config
    config = default_config()          # LeNet-5 on the bundled digits
    result = train_and_evaluate(config, "runs/lenet_digits")

Submodules: `state` (TrainState), `steps` (train_step, eval_step), `optim` (SGD, schedules,
reduce-on-plateau), `parallel` (jit + mesh, pmap, one device), `checkpoint` (orbax),
`metrics` (jsonl, TensorBoard, curves.png, progress bar), `loop` (train_and_evaluate).
Importing this package does not import orbax, grain, TFDS, tqdm or matplotlib.
"""

from .checkpoint import CheckpointError, WorkdirInUseError, load_run
from .config import DEFAULTS, ConfigError, default_config
from .loop import NonFiniteLossError, evaluate, train_and_evaluate
from .optim import Plateau, learning_rate_schedule, make_optimizer
from .parallel import DataParallel
from .state import TrainState, create_train_state
from .steps import cross_entropy, eval_step, topk_correct, train_step

__all__ = [
    "DEFAULTS",
    "CheckpointError",
    "ConfigError",
    "DataParallel",
    "NonFiniteLossError",
    "Plateau",
    "TrainState",
    "WorkdirInUseError",
    "create_train_state",
    "cross_entropy",
    "default_config",
    "eval_step",
    "evaluate",
    "learning_rate_schedule",
    "load_run",
    "make_optimizer",
    "topk_correct",
    "train_and_evaluate",
    "train_step",
]
