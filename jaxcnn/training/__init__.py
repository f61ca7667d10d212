"""The training engine: state, pure steps, parallelism, checkpoints, metrics and the loop.

    from jaxcnn.training import DataConfig, TrainConfig, train_and_evaluate
    result = train_and_evaluate(TrainConfig(), "runs/lenet_digits")  # LeNet-5, bundled digits
    config = TrainConfig(model="resnet18", data=DataConfig(source="tfds", name="cifar10"))

Submodules: `config` (TrainConfig and its sections: every key, its default and meaning),
`engine` (build_engine: config + data -> model, state, schedule, compiled steps), `state`
(TrainState), `steps` (train_step, eval_step), `optim` (SGD, schedules, reduce-on-plateau),
`finetune` (frozen layers, per-layer learning rates, init_from), `parallel` (jit + mesh, pmap,
one device), `checkpoint` (orbax), `metrics` (jsonl, TensorBoard, curves.png, progress bar),
`loop` (train_and_evaluate).
Importing this package does not import orbax, grain, TFDS, tqdm or matplotlib.
"""

from ..data.config import DataConfig
from .checkpoint import CheckpointError, WorkdirInUseError, load_run
from .config import (
    DEFAULTS,
    ConfigError,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    default_config,
    parse_config,
)
from .engine import Engine, InputSpec, build_engine
from .loop import NonFiniteLossError, evaluate, train_and_evaluate
from .optim import Plateau, learning_rate_schedule, make_optimizer
from .parallel import DataParallel
from .state import TrainState, create_train_state
from .steps import cross_entropy, eval_step, topk_correct, train_step

__all__ = [
    "DEFAULTS",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataParallel",
    "Engine",
    "InputSpec",
    "NonFiniteLossError",
    "OptimizerConfig",
    "Plateau",
    "ScheduleConfig",
    "TrainConfig",
    "TrainState",
    "WorkdirInUseError",
    "build_engine",
    "create_train_state",
    "cross_entropy",
    "default_config",
    "eval_step",
    "evaluate",
    "learning_rate_schedule",
    "load_run",
    "make_optimizer",
    "parse_config",
    "topk_correct",
    "train_and_evaluate",
    "train_step",
]
