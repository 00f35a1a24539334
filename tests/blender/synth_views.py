"""Write schema-3 result bundles (several photos of one head) without the backend, as
/work/notes/s2/schema3.md and INTERFACE.md section 3 describe them: the synthetic head of
synth_bundle posed in the reference view's camera frame (the world), one camera per view
placed from the head's rigid transform in that view, per-view expression, jaw, SH light,
landmarks and photo. numpy only."""

from __future__ import annotations

import json
import os

import numpy as np
import synth_bundle as sb

# front, turned left, turned right; each its own expression, jaw and light, the third a crop
DEFAULT_VIEWS = (
    dict(name="front", yaw=0.0, pitch=-4.0, expression=[0.5, -0.3], jaw=0.10, sh_scale=(1.0, 1.0, 1.0),
         size=(320, 256)),
    dict(name="left", yaw=40.0, pitch=0.0, expression=[1.5, 0.4], jaw=0.25, sh_scale=(1.0, 0.8, 0.6),
         size=(320, 256)),
    dict(name="right", yaw=-45.0, pitch=3.0, expression=[-0.5, 1.0], jaw=0.0, sh_scale=(0.6, 0.7, 1.0),
         size=(240, 256)),
)
FOCAL = (560.0, 560.0)
TRANSLATION = np.array([0.004, -0.01, -0.62])


def head_transform(yaw, pitch):
    """The head's rigid transform in one view's camera (4x4): turned, then 0.62 m in front."""
    M = np.eye(4)
    M[:3, :3] = sb.rot("x", pitch) @ sb.rot("y", yaw)
    M[:3, 3] = TRANSLATION
    return M


def view_sh(scale, flip_x=False):
    sh = np.array(sb.SH_DEFAULT, dtype=np.float64) * np.asarray(scale)[None]
    if flip_x:
        sh[1] *= -1  # light from the other side
    return sh


def write_views_bundle(out_dir, views=DEFAULT_VIEWS, *, photos_dir=None, user_photos=None,
                       model_name="Synthetic test head"):
    """Write a complete schema-3 bundle; returns the result dict. The "user's" photos (views[k].
    photo.path) are `user_photos` (never written), else <photos_dir>/<view name>.png (written
    when missing)."""
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    photos_dir = photos_dir or os.path.dirname(out_dir)
    os.makedirs(photos_dir, exist_ok=True)
    local, faces, uvs, uv_faces = sb.head_mesh()
    M0 = head_transform(views[0]["yaw"], views[0]["pitch"])
    to_world = lambda p: p @ M0[:3, :3].T + M0[:3, 3]  # noqa: E731 - head-local -> reference camera
    low_front = np.clip(-local[:, 1] / 0.1, 0, 1) * np.clip(local[:, 2] / 0.09, 0, 1)
    d_exp0, d_exp1, d_id, d_jaw = (np.zeros_like(local) for _ in range(4))
    d_exp0[:, 1] = -0.01 * low_front
    d_exp1[:, 0] = 0.006 * np.sign(local[:, 0]) * low_front
    d_id[:, 0] = 0.05 * local[:, 0]
    jaw0 = views[0]["jaw"]
    d_jaw[:, 1] = -0.08 * jaw0 * low_front  # the reference view's jaw turn (value 1)
    d_jaw[:, 2] = -0.02 * jaw0 * low_front
    names = np.array(["id_000", "exp_000", "exp_001", "jawOpenPose"])
    deltas = np.stack([d_id, d_exp0, d_exp1, d_jaw]) @ M0[:3, :3].T  # turned like the head
    values = np.array([0.0, *views[0]["expression"], 1.0], np.float32)
    basis = to_world(local)
    fitted = basis + np.tensordot(values, deltas, 1)
    rng = np.random.default_rng(0)
    front = np.nonzero(local[faces].mean(1)[:, 2] > 0.05)[0]
    lmk_faces = rng.choice(front, 68, replace=False).astype(np.int32)
    bary = rng.dirichlet([2, 2, 2], 68).astype(np.float32)
    np.savez_compressed(os.path.join(out_dir, "mesh.npz"), vertices=fitted.astype(np.float32), faces=faces,
                        uv_coords=uvs, uv_faces=uv_faces, shape_key_names=names,
                        shape_key_deltas=deltas.astype(np.float32),
                        shape_key_ranges=np.array([[-3, 3], [-3, 3], [-3, 3], [0, 2]], np.float32),
                        landmark_face_idx=lmk_faces, landmark_bary=bary,
                        basis_vertices=basis.astype(np.float32), shape_key_values=values)
    sb.write_png(os.path.join(out_dir, "albedo.png"), sb.albedo_texture())
    with open(os.path.join(out_dir, "mesh.obj"), "w") as fh:
        fh.writelines(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in fitted)
    with open(os.path.join(out_dir, "mesh.mtl"), "w") as fh:
        fh.write("newmtl albedo\nKd 1 1 1\nmap_Kd albedo.png\n")

    out_views, stacked = [], {k: [] for k in ("expression", "pose", "translation", "sh", "world_to_camera")}
    inv_M0 = np.linalg.inv(M0)
    for k, v in enumerate(views):
        W, H = v["size"]
        principal = (W / 2 + 11.3, H / 2 - 6.3)
        Mk = head_transform(v["yaw"], v["pitch"])
        w2c = Mk @ inv_M0
        # the head as this photo showed it: its expression, its jaw as a multiple of the reference's
        values_k = np.array([0.0, *v["expression"], v["jaw"] / jaw0 if jaw0 else 0.0])
        shown = basis + np.tensordot(values_k, deltas, 1)
        lmk3d = (shown[faces[lmk_faces]] * bary[..., None]).sum(1)
        lmk2d = sb.project(lmk3d, w2c[:3, :3], w2c[:3, 3], FOCAL, principal)
        sh = view_sh(v["sh_scale"], flip_x=k == 2)
        suffix = "" if k == 0 else f"-{k + 1}"
        yy, xx = np.mgrid[0:H, 0:W]
        img = np.stack([60 + 100 * xx / W, 80 + 60 * yy / H, np.full_like(xx, 120.0 + 40 * k)], -1)
        for x, y in lmk2d:
            img[max(0, int(y) - 1):int(y) + 2, max(0, int(x) - 1):int(x) + 2] = (255, 255, 0)
        files = {"photo": f"photo{suffix}.png", "overlay": f"overlay{suffix}.png", "report": f"report{suffix}.png"}
        sb.write_png(os.path.join(out_dir, files["photo"]), img.astype(np.uint8))
        sb.write_png(os.path.join(out_dir, files["overlay"]), np.full((H, W, 3), 90, np.uint8))
        sb.write_png(os.path.join(out_dir, files["report"]), np.full((32, 64, 3), 200, np.uint8))
        user_photo = user_photos[k] if user_photos else os.path.join(photos_dir, f"{v['name']}.png")
        if not user_photos and not os.path.exists(user_photo):
            sb.write_png(user_photo, img.astype(np.uint8))
        pose = {"global": [np.radians(v["pitch"]), np.radians(v["yaw"]), 0.0], "neck": [0, 0, 0],
                "jaw": [v["jaw"], 0.0, 0.0], "eye_left": [0, 0, 0], "eye_right": [0, 0, 0]}
        out_views.append({
            "name": v["name"],
            "photo": {"path": user_photo, "width": W, "height": H},
            "camera": {"type": "pinhole", "focal_px": list(FOCAL), "principal_px": list(principal),
                       "image_size": [W, H], "world_to_camera": w2c.tolist(),
                       "convention": "X_cam = R X + t; x = fx X_cam.x / -X_cam.z + cx; y = -fy X_cam.y / -X_cam.z + cy"},
            "parameters": {"expression": list(v["expression"]), "pose": pose, "translation": TRANSLATION.tolist()},
            "lights": {"sh": sh.tolist(), "convention": "see section 4 (this view's camera frame)"},
            "landmarks_2d": lmk2d.tolist(),
            "detected_landmarks_2d": (lmk2d + 0.5).tolist(),
            "landmarks_3d": (lmk3d @ w2c[:3, :3].T + w2c[:3, 3]).tolist(),
            "metrics": {"landmark_error_px": 0.7 + k, "landmark_error_eye_fraction": 0.012,
                        "photometric_error": 0.021, "psnr_db": 29.5 - k},
            "fit": {"crop": [0, 0, W, H]},
            "files": files,
        })
        stacked["expression"].append(v["expression"])
        stacked["pose"].append([pose[j] for j in ("global", "neck", "jaw", "eye_left", "eye_right")])
        stacked["translation"].append(TRANSLATION)
        stacked["sh"].append(sh)
        stacked["world_to_camera"].append(w2c)
    np.savez(os.path.join(out_dir, "params.npz"), identity=np.zeros(1, np.float32),
             **{k: np.asarray(a, np.float32) for k, a in stacked.items()})
    result = {
        "schema_version": 3,
        "flamefit_version": "0.1.0",
        "model": {"name": model_name, "version": "test", "licence": "CC0", "id": "synthetic"},
        "parameters": {"identity": [0.0]},
        "expression_names": ["exp_000", "exp_001"],
        "files": {"mesh": "mesh.npz", "obj": "mesh.obj", "mtl": "mesh.mtl", "albedo": "albedo.png",
                  "params": "params.npz"},
        "fit": {"texture_size": 256, "device": "cpu"},
        "metrics": {"landmark_error_px": 1.7, "psnr_db": 28.5, "views": len(views)},
        "timings": {"total": 0.1},
        "views": out_views,
    }
    with open(os.path.join(out_dir, "result.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    return result
