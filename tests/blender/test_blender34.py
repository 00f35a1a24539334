"""Packaging and headless use with Debian's Blender 3.4 (`apt-get install -y blender`),
in subprocesses with a clean user profile; plus the extension install in bpy 5.0."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from testenv import BLENDER, REPO, backend_env, requires_blender34


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(REPO / "build_addon.py"), "-o", str(out)], check=True,
                   capture_output=True, text=True)
    (zip_path,) = out.glob("flamefit-*.zip")
    return zip_path


def _clean_profile_env(tmp_path, **extra):
    env = dict(os.environ)
    for key in ("FLAMEFIT_PYTHON", "PYTHONPATH"):
        env.pop(key, None)
    env.update(BLENDER_USER_CONFIG=str(tmp_path / "config"), BLENDER_USER_SCRIPTS=str(tmp_path / "scripts"),
               BLENDER_USER_DATAFILES=str(tmp_path / "datafiles"))
    env.update(extra)
    return env


def _json_line(stdout):
    lines = [ln[4:] for ln in stdout.splitlines() if ln.startswith("JSON")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1])


def test_zip_layout(addon_zip):
    names = zipfile.ZipFile(addon_zip).namelist()
    assert {n.split("/")[0] for n in names} == {"blender_flamefit"}
    for required in ("__init__.py", "blender_manifest.toml", "batch.py", "backend/pyproject.toml",
                     "backend/flamefit/__init__.py", "backend/flamefit/cli.py", "io/bundle.py", "io/options.py",
                     "blender/importer.py", "blender/mesh.py", "ui/job_runner.py", "ui/operators.py"):
        assert f"blender_flamefit/{required}" in names
    shipped = json.loads(zipfile.ZipFile(addon_zip).read("blender_flamefit/io/schema.json"))
    assert shipped == json.loads((REPO / "backend" / "flamefit" / "bundle" / "schema.json").read_text())
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    init = zipfile.ZipFile(addon_zip).read("blender_flamefit/__init__.py").decode()
    assert "bl_info" in init
    # relative imports only: no module imports the package by name
    for n in names:
        if n.endswith(".py") and "/backend/" not in n:
            text = zipfile.ZipFile(addon_zip).read(n).decode()
            assert "import blender_flamefit" not in text.replace("import blender_flamefit.batch as b", "")
            assert "from blender_flamefit" not in text


INSTALL_SCRIPT = r'''
import bpy, json, sys
zip_path, bundle = sys.argv[sys.argv.index("--") + 1:][:2]
bpy.ops.preferences.addon_install(filepath=zip_path)
bpy.ops.preferences.addon_enable(module="blender_flamefit")
import blender_flamefit
from blender_flamefit.blender import importer
from bpy_extras.object_utils import world_to_camera_view
out = {"enabled": "blender_flamefit" in bpy.context.preferences.addons,
       "ops": hasattr(bpy.ops.flamefit, "fit_photo") and hasattr(bpy.ops.import_scene, "flamefit")
              and hasattr(bpy.ops.flamefit, "setup_backend"),
       "panel": hasattr(bpy.types, "FLAMEFIT_PT_main"),
       "texture_size": bpy.context.preferences.addons["blender_flamefit"].preferences.texture_size,
       "file": blender_flamefit.__file__,
       "backend_source": blender_flamefit.io.setup_backend.backend_source_dir(),
       "backend_state": blender_flamefit.ui.preferences.resolve_backend(bpy.context)}
bpy.ops.wm.read_homefile(use_empty=True)
sc = bpy.context.scene
r = importer.import_bundle(bpy.context, bundle)
W, H = sc.render.resolution_x, sc.render.resolution_y
err = 0.0
for p, (x, y) in zip(importer.landmark_points_blender(r), r.bundle.landmarks_2d):
    u, v, _ = world_to_camera_view(sc, r.camera, p)
    err = max(err, abs(u * W - x), abs((1 - v) * H - y))
out.update(objects=sorted(o.type for o in r.collection.objects), reproj=err,
           keys=len(r.head.data.shape_keys.key_blocks), numpy="numpy" in sys.modules)
bpy.ops.preferences.addon_disable(module="blender_flamefit")
out["disabled"] = not hasattr(bpy.types.Scene, "flamefit")
print("JSON" + json.dumps(out))
'''


@requires_blender34
def test_zip_installs_and_enables_in_blender34(addon_zip, tmp_path, synth_bundle_dir):
    script = tmp_path / "install.py"
    script.write_text(INSTALL_SCRIPT)
    proc = subprocess.run([BLENDER, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script),
                           "--", str(addon_zip), str(synth_bundle_dir)], env=_clean_profile_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = _json_line(proc.stdout)
    assert out["enabled"] and out["ops"] and out["panel"] and out["texture_size"] == 1024
    assert out["file"].startswith(str(tmp_path / "scripts"))
    assert out["backend_source"].endswith("blender_flamefit/backend")  # bundled copy, for Set up backend
    assert out["backend_state"][0] == "" and "not set up" in out["backend_state"][1]
    assert out["objects"] == ["CAMERA", "LIGHT", "LIGHT", "MESH"] and out["keys"] == 4
    assert out["reproj"] < 1.0
    assert out["disabled"]


def test_zip_installs_as_extension_in_bpy5(addon_zip, tmp_path):
    code = r'''
import bpy, json, sys
res = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
mod = sys.modules.get("bl_ext.user_default.flamefit")
print("JSON" + json.dumps({"result": list(res), "loaded": mod is not None,
      "ops": hasattr(bpy.ops.flamefit, "fit_photo"), "scene": hasattr(bpy.types.Scene, "flamefit"),
      "prefs": "bl_ext.user_default.flamefit" in bpy.context.preferences.addons,
      "data": mod.ui.preferences.user_data_dir() if mod else ""}))
'''
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "res"))
    proc = subprocess.run([sys.executable, "-c", code, str(addon_zip)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _json_line(proc.stdout)
    assert out == {"result": ["FINISHED"], "loaded": True, "ops": True, "scene": True, "prefs": True,
                   "data": out["data"]}
    assert out["data"].startswith(str(tmp_path / "res"))


CHECK_BLEND = r'''
import bpy, json
sc = bpy.context.scene
coll = [c for c in bpy.data.collections if "flamefit_bundle" in c]
head = [o for o in bpy.data.objects if o.type == "MESH"]
mat = head[0].data.materials[0] if head and head[0].data.materials else None
img = next((n.image for n in mat.node_tree.nodes if n.type == "TEX_IMAGE"), None) if mat else None
print("JSON" + json.dumps({
    "collections": [c.name for c in coll],
    "types": sorted(o.type for o in bpy.data.objects),
    "keys": [k.name for k in head[0].data.shape_keys.key_blocks] if head and head[0].data.shape_keys else [],
    "uv": len(head[0].data.uv_layers) if head else 0,
    "image_packed": bool(img and img.packed_file), "image_size": list(img.size) if img else [],
    "camera": sc.camera.name if sc.camera else None, "bg": bool(sc.camera and sc.camera.data.background_images),
    "world": sc.world.name if sc.world else None, "engine": sc.render.engine,
    "res": [sc.render.resolution_x, sc.render.resolution_y]}))
'''


def _check_blend(blend, tmp_path):
    script = tmp_path / "check_blend.py"
    script.write_text(CHECK_BLEND)
    proc = subprocess.run([BLENDER, "-b", str(blend), "--python-exit-code", "1", "--python", str(script)],
                          env=_clean_profile_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return _json_line(proc.stdout)


def _run_batch(photo_or_dir, out_dir, env, tmp_path, extra=(), cwd=REPO):
    cmd = [BLENDER, "-b", "--factory-startup", "--python-exit-code", "1",
           "--python", str(REPO / "blender_flamefit" / "batch.py"), "--", str(photo_or_dir), str(out_dir), *extra]
    return subprocess.run(cmd, env=_clean_profile_env(tmp_path, **env), capture_output=True, text=True,
                          timeout=1200, cwd=str(cwd))


@requires_blender34
def test_headless_batch_blender34(tmp_path):
    """The documented batch command (fake backend, fast) on a folder -> one backend process,
    .blend + preview per photo; checked by reopening."""
    import synth_bundle

    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("anna", "ben"):
        synth_bundle.write_png(str(photos / f"{stem}.png"), synth_bundle.albedo_texture(96))
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    calls = tmp_path / "calls.jsonl"
    # relative paths, as a user types them
    proc = _run_batch("photos", "out", backend_env(fake=True, FAKE_FLAMEFIT_CALLS=calls), tmp_path,
                      extra=["--samples", "8", "--preview-size", "128", "--no-use-expression"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 of 2 photos done" in proc.stdout
    (argv,) = [json.loads(line) for line in calls.read_text().splitlines()]  # one process for the folder
    assert argv[:4] == ["batch", str(photos), "-o", str(out)] and "--json-progress" in argv
    assert "--no-expression" in argv  # the fit options reach the backend
    for stem in ("anna", "ben"):
        assert (out / f"{stem}.png").stat().st_size > 1000
        assert (out / stem / "result.json").is_file()
        info = _check_blend(out / f"{stem}.blend", tmp_path)
        assert info["collections"] == [stem]
        assert info["types"] == ["CAMERA", "LIGHT", "LIGHT", "MESH"]
        assert info["keys"] == ["Basis", "exp_000", "exp_001", "id_000"] and info["uv"] == 1
        assert info["image_packed"] and info["image_size"] == [256, 256]
        assert info["camera"] == f"{stem}_camera" and info["bg"] and info["world"] == f"{stem}_world"
        assert info["engine"] == "CYCLES" and info["res"] == [320, 256]


@requires_blender34
def test_headless_batch_reports_failures(tmp_path):
    import synth_bundle

    photo = tmp_path / "noface.png"
    synth_bundle.write_png(str(photo), synth_bundle.albedo_texture(32))
    proc = _run_batch(photo, tmp_path / "out", backend_env(fake=True, FAKE_FLAMEFIT_MODE="noface"), tmp_path)
    assert proc.returncode == 1
    assert "no face found in noface.png" in proc.stderr
    assert not (tmp_path / "out" / "noface.blend").exists()
    # in a folder: the failed photo is reported, the others are still saved
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in ("a", "b"):
        synth_bundle.write_png(str(photos / f"{stem}.png"), synth_bundle.albedo_texture(32))
    proc = _run_batch(photos, tmp_path / "out2", backend_env(fake=True, FAKE_FLAMEFIT_MODE="noface-first"), tmp_path,
                      extra=["--no-preview"])
    assert proc.returncode == 1 and "1 of 2 photos done" in proc.stdout
    assert "flamefit batch: error: a.png: no face found in a.png" in proc.stderr
    assert (tmp_path / "out2" / "b.blend").is_file() and not (tmp_path / "out2" / "a.blend").exists()
    # no interpreter at all
    proc = _run_batch(photo, tmp_path / "out", {}, tmp_path)
    assert proc.returncode == 1 and "backend is not set up" in proc.stderr


@requires_blender34
def test_headless_batch_real_backend(real_backend, astronaut_png, tmp_path):
    """The documented batch command with the real `flamefit batch` on a folder with the astronaut photo."""
    import numpy as np

    photos = tmp_path / "photos"
    photos.mkdir()
    os.symlink(astronaut_png, photos / "astronaut.png")
    out = tmp_path / "out"
    proc = _run_batch(photos, out, backend_env(fake=False), tmp_path, extra=["--samples", "16", "--preview-size", "256"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = _check_blend(out / "astronaut.blend", tmp_path)
    result = json.loads((out / "astronaut" / "result.json").read_text())
    names = np.load(out / "astronaut" / "mesh.npz")["shape_key_names"]
    assert info["collections"] == ["astronaut"]
    assert info["types"] == ["CAMERA", "LIGHT", "LIGHT", "MESH"]
    assert info["keys"] == ["Basis", *map(str, names)] and len(names) > 50  # expression and identity keys
    assert info["uv"] == 1 and info["image_packed"] and info["image_size"][0] >= 256
    assert info["res"] == [result["views"][0]["photo"]["width"], result["views"][0]["photo"]["height"]] == [512, 512]
    assert info["camera"] == "astronaut_camera" and info["bg"] and info["engine"] == "CYCLES"
    assert (out / "astronaut.png").stat().st_size > 10000
    assert (out / "summary.csv").is_file()


def test_batch_entry_point_in_bpy5(tmp_path):
    """batch.main() in Blender 5.0's Python (the PyPI module, in a subprocess: it empties the file)."""
    import synth_bundle

    photo = tmp_path / "cara.png"
    synth_bundle.write_png(str(photo), synth_bundle.albedo_texture(64))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bpy; import blender_flamefit.batch as b; "
            "b.main(sys.argv[2:])")
    env = dict(os.environ, **backend_env(fake=True))
    proc = subprocess.run([sys.executable, "-c", code, str(REPO), str(photo), str(tmp_path / "out"),
                           "--samples", "4", "--preview-size", "96"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "out" / "cara.blend").is_file() and (tmp_path / "out" / "cara.png").is_file()
