"""#11.3: the head-model and embedding caches are written atomically per writer, so
parallel first runs on a fresh cache (batch --workers N, two fits at once) all succeed."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flamefit.models import open_head

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAMEFIT_")}
    env.update(FLAMEFIT_THREADS="1", XDG_CONFIG_HOME=str(tmp_path / "config"),
               PYTHONPATH=str(REPO / "backend"))
    return env


@pytest.mark.skipif(open_head.anny_version() is None, reason="anny is not installed")
def test_two_first_time_model_loads_on_a_fresh_cache_both_succeed(tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "flamefit.cli", "models", "--cache-dir", str(cache), "--json"]
    runs = [subprocess.Popen(command, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [run.communicate(timeout=600) + (run.returncode,) for run in runs]
    for out, err, rc in results:
        assert rc == 0, err[-2000:]
        assert json.loads(out)["head_model"]["vertices"] > 0
    names = sorted(p.name for p in cache.iterdir())
    assert not [n for n in names if ".tmp" in n], names  # no temporaries left behind
    assert open_head.cache_path(cache).name in names


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from flamefit.models.head_model import HeadModel
    rng = np.random.default_rng(int(sys.argv[2]))
    model = HeadModel(name="tiny", version="1", licence="CC0", v_template=rng.random((50, 3), np.float32),
                      faces=np.array([[0, 1, 2]] * 10), identity_basis=np.zeros((50, 3, 2), np.float32),
                      expression_basis=np.zeros((50, 3, 1), np.float32),
                      joint_regressor=np.full((5, 50), 0.02, np.float32),
                      skin_weights=np.tile(np.eye(5, dtype=np.float32)[:1], (50, 1)))
    for _ in range(40):
        model.save(sys.argv[1])
        again = HeadModel.load_cache(sys.argv[1])  # every read sees one whole file
        assert again.v_template.shape == (50, 3)
""")


def test_parallel_saves_of_one_cache_file_never_collide(tmp_path):
    target = tmp_path / "model.npz"
    runs = [subprocess.Popen([sys.executable, "-c", SAVER, str(target), str(seed)], env=_env(tmp_path),
                             stderr=subprocess.PIPE, text=True) for seed in range(4)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "config") == ["model.npz"]
