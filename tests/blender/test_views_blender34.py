"""#19.3 in Debian's Blender 3.4 (the oldest supported), from the installed zip: a 3-view bundle
imports as one head with three cameras, and the Views operator puts each photo's camera,
render size and expression in place (the head lands on that photo's landmarks)."""

import json
import subprocess

import synth_views
from test_blender34 import _clean_profile_env, _json_line, addon_zip  # noqa: F401  (addon_zip: a fixture)
from testenv import BLENDER, requires_blender34

SCRIPT = r'''
import bpy, json, sys
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
zip_path, bundle = sys.argv[sys.argv.index("--") + 1:][:2]
bpy.ops.preferences.addon_install(filepath=zip_path)
bpy.ops.preferences.addon_enable(module="blender_flamefit")
from blender_flamefit.blender import importer
bpy.ops.wm.read_homefile(use_empty=True)
sc = bpy.context.scene
r = importer.import_bundle(bpy.context, bundle)
b = r.bundle
faces = b.mesh["faces"].data
out = {"types": sorted(o.type for o in r.collection.objects), "views": []}
for k in range(len(b.views)):
    assert bpy.ops.flamefit.set_view(index=k, result=r.collection.name) == {"FINISHED"}
    dg = bpy.context.evaluated_depsgraph_get()
    ev = r.head.evaluated_get(dg)
    me = ev.to_mesh()
    co = [v.co.copy() for v in me.vertices]
    ev.to_mesh_clear()
    W, H = sc.render.resolution_x, sc.render.resolution_y
    err = 0.0
    for i, (x, y) in enumerate(b.views[k].landmarks_2d):
        f = int(b.mesh["landmark_face_idx"].data[i])
        bary = b.mesh["landmark_bary"].row(i)
        p = sum((co[faces[3 * f + c]] * bary[c] for c in range(3)), Vector())
        u, v, _ = world_to_camera_view(sc, sc.camera, r.head.matrix_world @ p)
        err = max(err, abs(u * W - x), abs((1 - v) * H - y))
    out["views"].append({"camera": sc.camera.name, "res": [W, H], "err": err,
                         "bg": bool(sc.camera.data.background_images[0].image)})
print("JSON" + json.dumps(out))
'''


@requires_blender34
def test_three_views_in_blender34(addon_zip, tmp_path):  # noqa: F811
    folder = tmp_path / "person"
    synth_views.write_views_bundle(str(folder), photos_dir=str(tmp_path / "photos"))
    script = tmp_path / "views.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([BLENDER, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script),
                           "--", str(addon_zip), str(folder)], env=_clean_profile_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = _json_line(proc.stdout)
    assert out["types"] == ["CAMERA", "CAMERA", "CAMERA", "LIGHT", "LIGHT", "MESH"]
    info = json.loads((folder / "result.json").read_text())["views"]
    assert [v["camera"] for v in out["views"]] == ["person_front_camera", "person_left_camera", "person_right_camera"]
    assert [v["res"] for v in out["views"]] == [v["camera"]["image_size"] for v in info]
    assert all(v["bg"] for v in out["views"])
    assert max(v["err"] for v in out["views"]) < 0.05, out["views"]
