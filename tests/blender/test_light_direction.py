"""The imported key sun shines from where the photo saw light, not from behind the head.

The fit's SH light is estimated from the face's pixels only; behind the head it is
extrapolation. Lights are fitted (lights.rig_for_mesh, the add-on's own path) to the normals
of a synthetic head facing the camera (+Z), with these SH lights as input:
- the astronaut's free per-channel light of the old fit (main before #20): without the
  camera's direction the key came from behind (blue, 160 degrees off the view), with it the
  key lights the head from in front of the silhouette;
- the constrained light of the new fit: the key from the front, every light near grey;
- a real rim light (a sun 95 degrees off the view) is still imported as such.
"""

import math

import numpy as np
from synth_bundle import head_mesh

from blender_flamefit.blender import lights
from blender_flamefit.io import sh_math

ASTRONAUT_FREE = [[2.4025, 2.5503, 3.8422], [-0.2356, -0.2092, -0.1704], [0.2572, 0.3645, 0.6244],
                  [0.1599, 0.1186, -0.5226], [0.0439, 0.1721, 0.3459], [0.3388, 0.417, 0.5687],
                  [-0.2747, -0.3939, -0.8323], [0.0532, 0.0971, 0.202], [0.3658, 0.5039, 1.2315]]
ASTRONAUT_CONSTRAINED = [[1.9703, 1.9218, 1.7989], [-0.0873, -0.0831, -0.0768], [0.1483, 0.1461, 0.1369],
                         [0.4495, 0.4419, 0.4195], [0.0279, 0.0275, 0.0267], [0.0296, 0.03, 0.0286],
                         [-0.0206, -0.0192, -0.0183], [0.0325, 0.0321, 0.0306], [0.0522, 0.0525, 0.0527]]
CAMERA = (0.0, 0.0, 1.0)  # the synthetic head faces +Z, the camera 1 m in front


def rig_for(sh, camera=CAMERA):
    verts, faces, *_ = head_mesh()
    return lights.rig_for_mesh(sh, np.asarray(verts).reshape(-1).tolist(), np.asarray(faces).reshape(-1).tolist(),
                               camera_position_world=camera)


def degrees_off_view(direction):
    return math.degrees(math.acos(max(-1.0, min(1.0, direction[2]))))


def test_old_astronaut_light_key_not_from_behind():
    verts, faces, *_ = head_mesh()
    normals, weights = sh_math.head_normals(np.asarray(verts).reshape(-1).tolist(),
                                            np.asarray(faces).reshape(-1).tolist(), view_dir=CAMERA)
    unconstrained = sh_math.fit_lights(ASTRONAUT_FREE, normals, weights)
    assert degrees_off_view(unconstrained.suns[0].direction) > 120  # the failure: from behind
    rig = rig_for(ASTRONAUT_FREE)
    for sun in rig.suns:
        assert degrees_off_view(sun.direction) <= math.degrees(math.acos(sh_math.MIN_FACING)) + 0.5


def test_constrained_astronaut_light_is_frontal_and_grey():
    rig = rig_for(ASTRONAUT_CONSTRAINED)
    key = rig.suns[0]
    assert key.role == "key" and degrees_off_view(key.direction) < 45
    for colour in [rig.ambient] + [s.colour for s in rig.suns if max(s.colour) > 0.2 * max(key.colour)]:
        c = np.asarray(colour) / np.mean(colour)
        assert np.abs(c - 1).max() < 0.10, colour


def test_a_rim_light_is_kept():
    d = (math.sin(math.radians(95)), 0.0, math.cos(math.radians(95)))  # from the side, slightly behind
    sh = [[0.3 * math.sqrt(4 * math.pi)] * 3] + [[0.0] * 3] * 8  # ambient 0.3, plus the sun's projection:
    norm = (1 / math.sqrt(4 * math.pi), *(math.sqrt(3 / (4 * math.pi)),) * 3, *(math.sqrt(15 / (4 * math.pi)),) * 3,
            0.5 * math.sqrt(15 / (4 * math.pi)), 0.25 * math.sqrt(5 / math.pi))
    x, y, z = d
    poly = (math.pi, x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1)  # band 0 x pi: irradiance
    sh = [[sh[k][c] + poly[k] * norm[k] * 0.8 for c in range(3)] for k in range(9)]
    rig = rig_for(sh)
    assert any(abs(degrees_off_view(s.direction) - 95) < 10 and s.direction[0] > 0.9 for s in rig.suns), rig.suns
