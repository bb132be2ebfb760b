"""fastnn.warmup() / ``fastnn warmup``: fills an empty Numba cache with what typical models
compile, says so, is a fast no-op the second time, and leaves nothing for the first
training step of ``fastnn train``'s models to compile (issue 13)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import fastnn as fnn
from fastnn import cli

# fastnn.warmup is the function (fastnn/__init__.py re-exports it); this is its module.
warmup_module = sys.modules["fastnn.warmup"]

# The first fit step of fastnn train's default MLP and of --optimizer adam --batchnorm
# --dropout 0.2, at the command's batch of 128, watched for compilation.
FIRST_STEPS = """
import argparse, json
import numpy as np
import fastnn as fnn
from fastnn import cli
from fastnn.progress import CompileWatch

compiled = {}
for name, options in [("mlp", {}),
                      ("adam-bn", {"optimizer": "adam", "batchnorm": True, "dropout": 0.2})]:
    args = argparse.Namespace(model="mlp", epochs=None, optimizer=None, lr=None,
                              momentum=None, weight_decay=None, dropout=0.0)
    for option in (n for names in cli.MODEL_OPTIONS.values() for n in names):
        setattr(args, option, None)
    for key, value in options.items():
        setattr(args, key, value)
    cli._model_settings(args)
    cls, kwargs = cli._optimizer_settings(args)
    model = fnn.Sequential(*cli._mlp_layers(args, [784, *args.hidden, 10]), seed=0)
    model.compile(optimizer=cli._optimizer(cls, kwargs, model), loss="cross_entropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((256, 784), dtype=np.float32)
    y = rng.integers(0, 10, 256)
    with CompileWatch() as watch:
        model.fit(x, y, epochs=1, batch_size=128, validation_data=(x, y), verbose=0)
        model.predict(x)
    compiled[name] = watch.compiled
print(json.dumps(compiled))
"""


def _run(args, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_warmup_fills_the_cache_then_is_already_warm(tmp_path):
    """``python -m fastnn warmup`` (float32, mlp) on an empty cache compiles and prints
    each group with its seconds; a second run loads everything and says it was already
    warm; then the first training steps of fastnn train's models compile nothing."""
    first = _run(["-m", "fastnn", "warmup"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    groups = [name for name, _ in warmup_module.GROUPS["mlp"]]
    for name in groups:
        assert f"float32 {name}: " in first.stdout
    assert "(from the cache)" not in first.stdout.split("\n", 2)[1]   # the first group compiled
    assert "done in" in first.stdout and "already warm" not in first.stdout

    second = _run(["-m", "fastnn", "warmup"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already warm: every kernel loaded from the cache" in second.stdout
    assert second.stdout.count("(from the cache)") == len(groups)

    steps = _run(["-c", textwrap.dedent(FIRST_STEPS)], tmp_path)
    assert steps.returncode == 0, steps.stderr[-3000:]
    assert json.loads(steps.stdout.strip().splitlines()[-1]) == {"mlp": False,
                                                                 "adam-bn": False}


def test_cli_passes_dtypes_and_families(monkeypatch):
    calls = []
    monkeypatch.setattr(warmup_module, "warmup", lambda **kw: calls.append(kw))
    assert cli.main(["warmup"]) == 0
    assert cli.main(["warmup", "--dtype", "float32", "--dtype", "float64", "--all"]) == 0
    assert calls == [{"dtypes": ["float32"], "models": ["mlp"]},
                     {"dtypes": ["float32", "float64"], "models": "all"}]


@pytest.mark.parametrize("kwargs, message", [
    ({"dtypes": ("float16",)}, "float32 and float64"),
    ({"models": ("cnn",)}, "unknown model family 'cnn'"),
])
def test_bad_arguments_are_refused_before_compiling(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fnn.warmup(verbose=False, **kwargs)


def test_warmup_is_public():
    assert set(warmup_module.GROUPS) == {"mlp", "transformer"}
    assert fnn.warmup is warmup_module.warmup and "warmup" in fnn.__all__
