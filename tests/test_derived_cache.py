"""models/derived.py: what the texture stage derives from the head model alone (texel map,
mirror map, feature zones, seam graph) is kept on disk under the cache folder, so a fresh
process reads it instead of building it, and what it reads gives the same texture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# One fresh process: prepare the open head with a cache folder, run the texture stage's
# model-derived pieces at 256^2 on a fixed texture, print a digest of the outputs.
SCRIPT = r"""
import hashlib, json, sys, time
import numpy as np
from flamefit.config import load_settings
from flamefit.fitting import prepare_model
from flamefit.models import load_head_model
from flamefit.render.uv_raster import mirror_texels, texel_map
from flamefit.textures.seams import blend_seams
from flamefit.textures.texture_mask import feature_zones

model = prepare_model(load_head_model(load_settings({})), sys.argv[1])
start = time.perf_counter()
texels = texel_map(model, 256, "cpu")
mirror = mirror_texels(model, texels)
zones = feature_zones(model, texels)
rng = np.random.default_rng(0)
texture = rng.random((256, 256, 3)).astype(np.float32)
weight = rng.random((256, 256))
filled = blend_seams(texture, model, weight, reference=np.array([0.6, 0.4, 0.3]))
seconds = time.perf_counter() - start
digest = hashlib.sha256()
for array in (texels.texel_index.numpy(), texels.face.numpy(), texels.bary.numpy(), mirror.numpy(), *zones, filled):
    digest.update(np.ascontiguousarray(array).tobytes())
print(json.dumps({"digest": digest.hexdigest(), "seconds": seconds}))
"""


def _run(cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "backend"), "FLAMEFIT_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(cache)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_fresh_process_reads_what_the_first_built(tmp_path):
    built = _run(tmp_path / "cache")
    files = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "derived").glob("*.npz"))
    assert files == ["mirror", "seams", "texels", "zones"], files
    read = _run(tmp_path / "cache")
    assert read["digest"] == built["digest"]  # bit for bit the same maps, zones and filled texture


def test_an_unreadable_or_foreign_file_is_built_again(tmp_path):
    built = _run(tmp_path / "cache")
    folder = tmp_path / "cache" / "derived"
    seams = next(folder.glob("seams-*.npz"))
    seams.write_bytes(b"not a zip")  # a truncated or corrupt file
    zones = next(folder.glob("zones-*.npz"))
    # A file that names a class outside the allow-list is never instantiated.
    np.savez(zones, __layout__=np.array(json.dumps({"object": ["subprocess", "Popen"], "fields": {}})))
    again = _run(tmp_path / "cache")
    assert again["digest"] == built["digest"]
    with np.load(zones) as data:  # rewritten with the real zones
        assert "subprocess" not in str(data["__layout__"])
