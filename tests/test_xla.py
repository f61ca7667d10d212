"""jaxcnn.compiler_options: what it recommends, the ways to turn it off, the check that
drops options a jaxlib rejects, and that the engine compiles with it without changing results."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcnn
from jaxcnn import xla
from jaxcnn.training import DataParallel, create_train_state, eval_step, train_step

YNN = "xla_cpu_experimental_ynn_fusion_type"
FUSION_KIND = "__ynn_fusion"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv(xla.ENV_SWITCH, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    xla._accepted.cache_clear()
    yield
    xla._accepted.cache_clear()


def test_cpu_gets_the_ynn_option_and_it_compiles():
    opts = jaxcnn.compiler_options("cpu")
    assert opts == {YNN: ""}
    f = jax.jit(lambda x: jnp.tanh(x) @ x, compiler_options=opts)
    np.testing.assert_allclose(f(jnp.eye(3)), np.tanh(np.eye(3)), rtol=1e-6)


def test_other_platforms_get_none_and_the_result_is_a_copy():
    assert jaxcnn.compiler_options("tpu") == {}
    assert jaxcnn.compiler_options("cuda") == {}
    opts = jaxcnn.compiler_options("cpu")
    opts["something"] = "else"
    assert "something" not in jaxcnn.compiler_options("cpu")


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_env_switch_turns_it_off(monkeypatch, value):
    monkeypatch.setenv(xla.ENV_SWITCH, value)
    assert jaxcnn.compiler_options("cpu") == {}


def test_an_option_the_user_sets_in_xla_flags_is_left_to_the_user(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--{YNN}=")
    assert jaxcnn.compiler_options("cpu") == {}


def test_an_option_this_jaxlib_rejects_is_dropped_with_a_warning(monkeypatch):
    monkeypatch.setitem(xla.RECOMMENDED, "cpu", {"xla_no_such_option_for_jaxcnn": "1", YNN: ""})
    with pytest.warns(RuntimeWarning, match="rejects the XLA option xla_no_such_option"):
        opts = jaxcnn.compiler_options("cpu")
    assert opts == {YNN: ""}


OPT_LEVEL = "xla_backend_optimization_level"


def test_run_once_options_add_a_lower_optimisation_level_on_cpu_only(monkeypatch):
    assert xla.run_once_compiler_options("cpu") == {YNN: "", OPT_LEVEL: "1"}
    assert xla.run_once_compiler_options("cuda") == {}
    monkeypatch.setenv("XLA_FLAGS", f"--{OPT_LEVEL}=3")
    assert xla.run_once_compiler_options("cpu") == {YNN: ""}
    monkeypatch.setenv(xla.ENV_SWITCH, "0")
    assert xla.run_once_compiler_options("cpu") == {}


def test_create_train_state_can_be_traced_where_nested_jits_take_no_options():
    """Under eval_shape (or an outer jit) only the outermost jit may carry compiler options:
    create_train_state then compiles nothing of its own and leaves them out."""
    model = jaxcnn.create_model("lenet5", num_classes=10)
    tx = optax.sgd(0.1)
    concrete = create_train_state(model, tx, seed=0, input_shape=(32, 32, 1))
    shapes = jax.eval_shape(lambda: create_train_state(model, tx, seed=0, input_shape=(32, 32, 1)))
    again = jax.eval_shape(
        lambda v: create_train_state(model, tx, seed=0, input_shape=(32, 32, 1), variables=v),
        {"params": concrete.params},
    )
    for tree in (shapes, again):
        assert jax.tree.map(lambda x: (x.shape, x.dtype), tree.params) == jax.tree.map(
            lambda x: (x.shape, x.dtype), concrete.params
        )


@pytest.mark.parametrize(
    "name, shape",
    [
        ("lenet5", (32, 32, 1)),
        pytest.param("resnet18", (40, 40, 3), marks=pytest.mark.slow),
        pytest.param("googlenet", (64, 64, 3), marks=pytest.mark.slow),
    ],
)
def test_initialisation_under_run_once_options_is_bit_identical(name, shape):
    """The parameters a run starts from do not depend on how fast their program compiled:
    equal to XLA's defaults and to eager `model.init`, to the bit."""
    model = jaxcnn.create_model(name, num_classes=10)
    x = jnp.zeros((1, *shape))
    key = jax.random.fold_in(jax.random.PRNGKey(3), 0)

    def init(k):
        return model.init(k, x, train=False)

    fast = jax.jit(init, compiler_options=xla.run_once_compiler_options("cpu"))(key)
    default = jax.jit(init)(key)
    leaves = jax.tree.leaves(fast)
    assert len(leaves) == len(jax.tree.leaves(default)) > 0
    for a, b in zip(leaves, jax.tree.leaves(default), strict=True):
        np.testing.assert_array_equal(a, b)
    if name == "lenet5":  # eager: one kernel per operation, no fusion at all
        for a, b in zip(leaves, jax.tree.leaves(init(key)), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_engine_compiles_with_them_and_results_match_xla_defaults(monkeypatch):
    # The option changes which kernels run, not what is computed: training steps of LeNet-5
    # (convolutions, pools, dense layers, tanh: smooth, so rounding differences stay rounding
    # differences; a ReLU network can flip a unit whose input rounds to either side of 0)
    # update every parameter alike to float32 rounding.
    model = jaxcnn.create_model("lenet5", num_classes=5)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.standard_normal((16, 32, 32, 1)).astype(np.float32),
        "label": rng.integers(0, 5, 16).astype(np.int32),
    }
    step = functools.partial(train_step, label_smoothing=0.0, aux_loss_weight=0.0)
    start = create_train_state(model, optax.sgd(0.05, 0.9), seed=0, input_shape=(32, 32, 1))
    p0 = jax.device_get(start.params)
    updates, losses = {}, {}
    for switch in ("1", "0"):
        monkeypatch.setenv(xla.ENV_SWITCH, switch)
        dp = DataParallel("jit")
        assert dp.compiler_options == ({YNN: ""} if switch == "1" else {})
        state = dp.put_state(jax.tree.map(jnp.array, start))
        run = dp.compile_train_step(step)
        for _ in range(3):
            state, metrics = run(state, dp.put_batch(batch))
        p1 = jax.device_get(state.params)
        updates[switch] = jax.tree.leaves(jax.tree.map(lambda a, b: a - b, p1, p0))
        losses[switch] = float(dp.fetch(metrics)["loss"])
    np.testing.assert_allclose(losses["1"], losses["0"], rtol=1e-5)
    for on, off in zip(updates["1"], updates["0"], strict=True):
        assert np.abs(on - off).max() <= 1e-5 * np.abs(off).max()


@pytest.mark.slow
def test_engine_steps_are_compiled_without_those_fusions(monkeypatch):
    # What the option is for: the compiled train and eval steps contain no YNNPACK fusion.
    # The control (options off) shows the check can fail, where this jaxlib fuses by default.
    model = jaxcnn.create_model("resnet18", num_classes=5)
    batch = {"image": np.zeros((2, 32, 32, 3), np.float32), "label": np.zeros(2, np.int32)}
    eval_batch = {**batch, "mask": np.ones(2, np.float32)}
    texts = {}
    for switch in ("1", "0"):
        monkeypatch.setenv(xla.ENV_SWITCH, switch)
        dp = DataParallel("jit")
        state = create_train_state(model, optax.sgd(0.1), seed=0, input_shape=(32, 32, 3))
        state = dp.put_state(state)
        train = dp.compile_train_step(
            functools.partial(train_step, label_smoothing=0.0, aux_loss_weight=0.0)
        )
        evaluate = dp.compile_eval_step(eval_step)
        texts[switch] = [
            train.lower(state, dp.put_batch(batch)).compile().as_text(),
            evaluate.lower(state, dp.put_batch(eval_batch)).compile().as_text(),
        ]
    # "__ynn_fusion" names the fusion kind in compiled HLO (source paths appear there too).
    assert not any(FUSION_KIND in t for t in texts["1"])
    if jax.__version__.startswith("0.10."):  # the control: this jaxlib fuses them by default
        assert all(FUSION_KIND in t for t in texts["0"])


def test_compilation_cache_is_set_for_a_block_and_restored(tmp_path):
    from jaxcnn.xla import compilation_cache, enable_compilation_cache

    before = jax.config.jax_compilation_cache_dir
    with compilation_cache(tmp_path / "a") as path:
        assert path == str(tmp_path / "a") == jax.config.jax_compilation_cache_dir
        assert (tmp_path / "a").is_dir()
        jax.jit(lambda x: x * 3.0).lower(1.0).compile()
    assert jax.config.jax_compilation_cache_dir == before
    # A folder the user chose is left alone, inside and after the block.
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    try:
        with compilation_cache(tmp_path / "b") as path:
            assert path == str(tmp_path / "mine")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
        assert enable_compilation_cache(tmp_path / "c") == str(tmp_path / "mine")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
