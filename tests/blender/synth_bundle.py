"""Write FlameFit result bundles that follow the bundle schema (backend/flamefit/bundle/
schema.json, versions 1 and 2: one photo, no views) without the backend: an ellipsoid "head" with a nose, UVs
with a seam (so per-corner UVs matter), shape keys, a tilted off-centre pinhole camera, SH
lighting, a textured albedo and (schema 2) the upright photo. numpy only (no bpy, no torch)."""

from __future__ import annotations

import json
import math
import os
import struct
import zlib

import numpy as np

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "backend", "flamefit", "bundle", "schema.json")
with open(SCHEMA_PATH, encoding="utf8") as _fh:
    SCHEMA = json.load(_fh)
SCHEMA_VERSION = SCHEMA["schema_version"]
FLAT_VERSION = min(SCHEMA_VERSION, 2)  # the newest one-photo layout; schema 3 (views): synth_views.py


def file_names(version):
    """files.* of a bundle of `version`: key -> file name, from the schema."""
    return {key: entry["path"] for key, entry in SCHEMA["files"].items() if entry.get("since", 1) <= version}

SH_DEFAULT = [[3.1, 2.9, 2.7], [0.35, 0.3, 0.28], [0.55, 0.5, 0.45], [0.95, 0.9, 0.85],
              [0.05, 0.04, 0.03], [0.12, 0.11, 0.1], [-0.06, -0.05, -0.04], [0.1, 0.08, 0.07],
              [0.12, 0.1, 0.09]]
SH_C = np.array([1 / math.sqrt(4 * math.pi), *(2 * math.pi / 3 * math.sqrt(3 / (4 * math.pi)),) * 3,
                 *(math.pi / 4 * 3 * math.sqrt(5 / (12 * math.pi)),) * 3,
                 math.pi / 4 * 1.5 * math.sqrt(5 / (12 * math.pi)), math.pi / 4 * 0.5 * math.sqrt(5 / (4 * math.pi))])


def sh_shading(normals, sh):
    """numpy SH shading (INTERFACE.md section 4); normals (..., 3) world space."""
    n = np.asarray(normals, dtype=np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    P = np.stack([np.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1)
    return (P * SH_C) @ np.asarray(sh, dtype=np.float64)


def write_png(path, rgb):
    """Minimal 8-bit RGB(A) PNG writer."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, c = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    colour_type = {3: 2, 4: 6}[c]
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def rot(axis, deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def head_mesh(rings=24, segments=32):
    """Ellipsoid head facing +Z with a nose bump; one vertex per pole; UV seam at the back."""

    def point(theta, phi):
        d = np.array([math.sin(theta) * math.sin(phi), math.cos(theta), -math.sin(theta) * math.cos(phi)])
        p = d * np.array([0.075, 0.105, 0.09])
        front = max(0.0, d[2]) ** 6 * math.exp(-((d[1] + 0.05) / 0.25) ** 2)
        p[2] += 0.025 * front  # nose
        return p

    verts = [point(0.0, 0.0)]
    for r in range(1, rings):
        for s in range(segments):
            verts.append(point(math.pi * r / rings, 2 * math.pi * s / segments))
    verts.append(point(math.pi, 0.0))
    verts = np.array(verts, dtype=np.float32)
    uvs = np.array([(s / segments, 1 - r / rings) for r in range(rings + 1) for s in range(segments + 1)],
                   dtype=np.float32)

    def vid(r, s):
        if r == 0:
            return 0
        if r == rings:
            return len(verts) - 1
        return 1 + (r - 1) * segments + (s % segments)

    def tid(r, s):
        return r * (segments + 1) + s

    faces, uv_faces = [], []
    for r in range(rings):
        for s in range(segments):
            a, b, c, d = (r, s), (r, s + 1), (r + 1, s + 1), (r + 1, s)
            for tri in ((a, c, d), (a, b, c)):
                vi = [vid(*p) for p in tri]
                if len(set(vi)) < 3:
                    continue
                faces.append(vi)
                uv_faces.append([tid(*p) for p in tri])
    return verts, np.array(faces, dtype=np.int32), uvs, np.array(uv_faces, dtype=np.int32)


def albedo_texture(size=256):
    v, u = np.mgrid[0:size, 0:size] / size  # row 0 = top of the image = v_obj 1
    skin = np.stack([0.85 - 0.1 * v, 0.62 - 0.05 * v, 0.52 + 0.0 * u], -1)
    checker = ((np.floor(u * 16) + np.floor(v * 12)) % 2)[..., None]
    img = skin * (0.85 + 0.15 * checker)
    # a dark band ("mouth") and two dark spots ("eyes") on the front (u ~ 0.5)
    img[(np.abs(v - 0.63) < 0.015) & (np.abs(u - 0.5) < 0.06)] = (0.45, 0.15, 0.15)
    for du in (-0.07, 0.07):
        img[((u - 0.5 - du) ** 2 + ((v - 0.45) * 0.8) ** 2) < 0.025 ** 2] = (0.1, 0.1, 0.15)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def project(points, R, t, focal, principal):
    cam = points @ R.T + t
    depth = -cam[:, 2]
    return np.stack([focal[0] * cam[:, 0] / depth + principal[0],
                     -focal[1] * cam[:, 1] / depth + principal[1]], -1)


def write_bundle(out_dir, photo_path=None, *, size=(320, 256), focal=(560.0, 560.0),
                 principal=(171.3, 121.7), sh=None, schema_version=FLAT_VERSION, with_photo=True,
                 yaw=9.0, pitch=-6.0, model_name="Synthetic test head"):
    """Write a complete bundle to out_dir; returns the result dict. `photo_path` is where the
    "user's" photo is (result.json's photo.path); schema 2 bundles also hold it as photo.png."""
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    sh = np.asarray(sh if sh is not None else SH_DEFAULT, dtype=np.float64)
    W, H = size
    verts, faces, uvs, uv_faces = head_mesh()
    # shape keys: jaw-ish, smile-ish, width
    low_front = np.clip(-verts[:, 1] / 0.1, 0, 1) * np.clip(verts[:, 2] / 0.09, 0, 1)
    d0, d1, d2 = np.zeros_like(verts), np.zeros_like(verts), np.zeros_like(verts)
    d0[:, 1] = -0.01 * low_front
    d1[:, 0] = 0.006 * np.sign(verts[:, 0]) * low_front
    d2[:, 0] = 0.05 * verts[:, 0]
    names = np.array(["exp_000", "exp_001", "id_000"])
    deltas = np.stack([d0, d1, d2]).astype(np.float32)
    ranges = np.array([[-3, 3], [-3, 3], [-2.5, 2.5]], dtype=np.float32)
    # landmarks: 68 front faces, deterministic barycentrics
    rng = np.random.default_rng(0)
    centres = verts[faces].mean(1)
    front = np.nonzero(centres[:, 2] > 0.05)[0]
    lmk_faces = rng.choice(front, 68, replace=False).astype(np.int32)
    bary = rng.dirichlet([2, 2, 2], 68).astype(np.float32)
    lmk3d = (verts[faces[lmk_faces]] * bary[..., None]).sum(1)
    R = rot("x", pitch) @ rot("y", yaw)
    t = np.array([0.004, -0.01, -0.62])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    lmk2d = project(lmk3d.astype(np.float64), R, t, focal, principal)

    names_of = file_names(schema_version) if schema_version in SCHEMA["readable_versions"] else file_names(1)
    extra = {}
    if schema_version >= 2:  # a neutral Basis; the fitted face = Basis + sum(values * deltas)
        values = np.array([0.5, -0.3, 0.0], np.float32)
        extra = dict(basis_vertices=(verts - np.tensordot(values, deltas, 1)).astype(np.float32),
                     shape_key_values=values)
    np.savez_compressed(os.path.join(out_dir, names_of["mesh"]), vertices=verts, faces=faces, uv_coords=uvs,
                        uv_faces=uv_faces, shape_key_names=names, shape_key_deltas=deltas,
                        shape_key_ranges=ranges, landmark_face_idx=lmk_faces, landmark_bary=bary, **extra)
    np.savez(os.path.join(out_dir, names_of["params"]), identity=np.zeros(1, np.float32),
             expression=np.zeros(2, np.float32), pose=np.zeros((5, 3), np.float32),
             translation=np.zeros(3, np.float32), sh=sh.astype(np.float32),
             focal_px=np.array(focal, np.float32), principal_px=np.array(principal, np.float32),
             world_to_camera=w2c.astype(np.float32))
    write_png(os.path.join(out_dir, names_of["albedo"]), albedo_texture())
    write_png(os.path.join(out_dir, names_of["overlay"]), np.full((H, W, 3), 90, np.uint8))
    write_png(os.path.join(out_dir, names_of["report"]), np.full((32, 64, 3), 200, np.uint8))
    with open(os.path.join(out_dir, names_of["obj"]), "w") as fh:
        fh.write("mtllib mesh.mtl\n")
        fh.writelines(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in verts)
        fh.writelines(f"vt {a:.6f} {b:.6f}\n" for a, b in uvs)
        fh.write("usemtl albedo\n")
        fh.writelines(f"f {a+1}/{x+1} {b+1}/{y+1} {c+1}/{z+1}\n" for (a, b, c), (x, y, z) in zip(faces, uv_faces, strict=False))
    with open(os.path.join(out_dir, "mesh.mtl"), "w") as fh:
        fh.write("newmtl albedo\nKd 1 1 1\nmap_Kd albedo.png\n")
    if photo_path is None:
        photo_path = os.path.join(os.path.dirname(out_dir), "synthetic_photo.png")
    files = {key: name for key, name in names_of.items() if key != "photo"}
    if with_photo:
        yy, xx = np.mgrid[0:H, 0:W]
        img = np.stack([60 + 100 * xx / W, 80 + 60 * yy / H, np.full_like(xx, 120.0)], -1)
        for x, y in lmk2d:
            img[max(0, int(y) - 1):int(y) + 2, max(0, int(x) - 1):int(x) + 2] = (255, 255, 0)
        if not os.path.exists(photo_path):
            write_png(photo_path, img.astype(np.uint8))
        if "photo" in names_of:
            write_png(os.path.join(out_dir, names_of["photo"]), img.astype(np.uint8))
            files["photo"] = names_of["photo"]
    result = {
        "schema_version": schema_version,
        "flamefit_version": "0.1.0",
        "model": {"name": model_name, "version": "test", "licence": "CC0", "id": "synthetic"},
        "photo": {"path": os.path.abspath(photo_path), "width": W, "height": H},
        "camera": {"type": "pinhole", "focal_px": list(focal), "principal_px": list(principal),
                   "image_size": [W, H], "world_to_camera": w2c.tolist(),
                   "convention": "X_cam = R X + t; x = fx X_cam.x / -X_cam.z + cx; y = -fy X_cam.y / -X_cam.z + cy"},
        "parameters": {"identity": [0.0], "expression": [0.0, 0.0], "expression_names": ["exp_000", "exp_001"],
                       "pose": {"global": [0, 0, 0], "neck": [0, 0, 0], "jaw": [0, 0, 0],
                                "eye_left": [0, 0, 0], "eye_right": [0, 0, 0]},
                       "translation": [0, 0, 0]},
        "lights": {"sh": sh.tolist(), "convention": "see section 4"},
        "landmarks_2d": lmk2d.tolist(),
        "detected_landmarks_2d": (lmk2d + 0.5).tolist(),
        "landmarks_3d": lmk3d.tolist(),
        "metrics": {"landmark_error_px": 0.7, "landmark_error_eye_fraction": 0.012,
                    "photometric_error": 0.021, "psnr_db": 29.5},
        "timings": {"total": 0.1},
        "files": files,
    }
    with open(os.path.join(out_dir, "result.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    return result
