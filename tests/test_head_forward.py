"""HeadLayer's torch forward against an independent plain-numpy FLAME forward."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from flamefit.models.head_model import JOINT_NAMES, JOINT_PARENTS, HeadLayer, HeadModel

EXTRACT = Path(__file__).resolve().parents[2] / "shared/models/flame2023_open_identity60.npz"
NUM_JOINTS = len(JOINT_NAMES)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]
# lbs.rodrigues normalises by |r + 1e-8| (as smplx), a ~1e-8 relative deviation from exact
# Rodrigues; positions are in metres, so 1e-8 m is still far below anything visible.
ATOL = 1e-8


# --- reference: plain numpy, one sample at a time, loops instead of batched algebra ----


def rotation_matrix(axis_angle):
    angle = np.linalg.norm(axis_angle)
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = axis_angle / angle
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def reference_forward(model, identity, expression, pose, translation):
    """One sample: shape -> pose correctives -> kinematic chain -> skinning -> translation."""
    rest = model.v_template.astype(np.float64).copy()
    rest += model.identity_basis[:, :, : len(identity)] @ identity
    rest += model.expression_basis[:, :, : len(expression)] @ expression
    joints = model.joint_regressor.astype(np.float64) @ rest
    rotations = [rotation_matrix(r) for r in pose]
    corrected = rest.copy()
    if model.posedirs is not None:
        feature = np.concatenate([(rotations[j] - np.eye(3)).ravel() for j in range(1, NUM_JOINTS)])
        corrected += (feature @ model.posedirs).reshape(-1, 3)
    world = []
    for j, parent in enumerate(JOINT_PARENTS):
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
        world.append(local if parent < 0 else world[parent] @ local)
    posed = np.zeros_like(corrected)
    for j, transform in enumerate(world):
        # Move the joint's rest position to the origin, then apply its world transform.
        moved = (corrected - joints[j]) @ transform[:3, :3].T + transform[:3, 3]
        posed += model.skin_weights[:, j : j + 1] * moved
    posed_joints = np.stack([transform[:3, 3] for transform in world])
    return posed + translation, posed_joints + translation


# --- models ---------------------------------------------------------------------------


def random_skinning(rng, num_vertices):
    """Skin weights over all joints and a joint regressor of positive weights."""
    weights = rng.dirichlet(np.ones(NUM_JOINTS) * 0.5, size=num_vertices)
    regressor = rng.random((NUM_JOINTS, num_vertices)) ** 8  # a few vertices dominate each joint
    regressor /= regressor.sum(1, keepdims=True)
    posedirs = rng.normal(size=((NUM_JOINTS - 1) * 9, num_vertices * 3)) * 1e-3
    return dict(skin_weights=weights, joint_regressor=regressor, posedirs=posedirs)


def small_model(seed=0, num_vertices=30, num_identity=6, num_expression=4):
    rng = np.random.default_rng(seed)
    return HeadModel(
        name="random", version="test", licence="none",
        v_template=rng.normal(size=(num_vertices, 3)) * 0.1,
        faces=rng.integers(0, num_vertices, (2 * num_vertices, 3)),
        identity_basis=rng.normal(size=(num_vertices, 3, num_identity)) * 1e-2,
        expression_basis=rng.normal(size=(num_vertices, 3, num_expression)) * 1e-2,
        **random_skinning(rng, num_vertices),
    ).validate()


def extract_model():
    if not EXTRACT.exists():
        pytest.skip(f"FLAME 2023 Open extract not found at {EXTRACT}")
    from flamefit.models.flame import load_flame

    model = load_flame(EXTRACT)
    rng = np.random.default_rng(1)
    # The extract is rigid and has no expressions: put a synthetic rig on the real geometry.
    return dataclasses.replace(
        model, expression_basis=rng.normal(size=(model.num_vertices, 3, 5)) * 1e-3, **random_skinning(rng, model.num_vertices)
    ).validate()


def random_parameters(rng, model, batch=3, num_identity=None):
    return dict(
        identity=rng.normal(size=(batch, num_identity or model.num_identity)),
        expression=rng.normal(size=(batch, model.num_expression)),
        pose=rng.normal(size=(batch, NUM_JOINTS, 3)) * 0.4,  # every joint rotated
        translation=rng.normal(size=(batch, 3)) * 0.1,
    )


def torch_forward(model, params, device):
    layer = HeadLayer(model, dtype=torch.float64).to(device)
    inputs = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in params.items()}
    out = layer(**inputs)
    verts, joints = out.vertices, out.joints
    return verts.cpu().numpy(), joints.cpu().numpy()


def assert_matches_reference(model, params, device):
    verts, joints = torch_forward(model, params, device)
    for b in range(len(params["pose"])):
        ref_verts, ref_joints = reference_forward(model, *(params[k][b] for k in ("identity", "expression", "pose", "translation")))
        np.testing.assert_allclose(verts[b], ref_verts, atol=ATOL, rtol=0)
        np.testing.assert_allclose(joints[b], ref_joints, atol=ATOL, rtol=0)


# --- tests ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: OpenMP threads only add overhead (and stall badly on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.mark.parametrize("device", DEVICES)
def test_forward_matches_numpy_reference_small_model(device):
    model = small_model()
    rng = np.random.default_rng(2)
    assert_matches_reference(model, random_parameters(rng, model), device)
    # Fewer coefficients than components: the rest count as zero.
    assert_matches_reference(model, random_parameters(rng, model, num_identity=2), device)


@pytest.mark.parametrize("device", DEVICES)
def test_forward_matches_numpy_reference_real_geometry(device):
    model = extract_model()
    assert_matches_reference(model, random_parameters(np.random.default_rng(3), model, batch=2), device)


def test_reference_itself_rotates_rigidly():
    # Sanity check on the reference: a global-only rotation of a model skinned to the
    # global joint is a rigid rotation about that joint.
    model = small_model()
    model = dataclasses.replace(model, skin_weights=np.eye(NUM_JOINTS)[np.zeros(model.num_vertices, int)], posedirs=None)
    pose = np.zeros((NUM_JOINTS, 3))
    pose[0] = [0, np.pi / 2, 0]
    verts, _ = reference_forward(model, np.zeros(0), np.zeros(0), pose, np.zeros(3))
    centre = model.joint_regressor[0] @ model.v_template
    rel = model.v_template - centre
    np.testing.assert_allclose(verts - centre, np.stack([rel[:, 2], rel[:, 1], -rel[:, 0]], 1), atol=1e-12)


def test_zero_pose_gives_shaped_template():
    model = small_model()
    rng = np.random.default_rng(4)
    params = random_parameters(rng, model)
    params["pose"][:] = 0
    del params["translation"]
    layer = HeadLayer(model, dtype=torch.float64)
    out = layer(**{k: torch.as_tensor(v) for k, v in params.items()})
    verts, joints = out.vertices, out.joints
    shaped = model.v_template + np.einsum("vck,bk->bvc", model.identity_basis, params["identity"])
    shaped += np.einsum("vck,bk->bvc", model.expression_basis, params["expression"])
    np.testing.assert_allclose(verts.numpy(), shaped, atol=1e-12)
    np.testing.assert_allclose(joints.numpy(), np.einsum("jv,bvc->bjc", model.joint_regressor, shaped), atol=1e-12)


def test_gradients_reach_every_parameter():
    model = small_model()
    layer = HeadLayer(model, dtype=torch.float64)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in random_parameters(np.random.default_rng(5), model).items()}
    out = layer(**params)
    verts, joints = out.vertices, out.joints
    target = torch.randn_like(verts)
    ((verts - target) ** 2).sum().add(joints.square().sum()).backward()
    for name, tensor in params.items():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), name
        assert (tensor.grad.abs().flatten(1).sum(1) > 0).all(), name
    assert (params["pose"].grad.abs().sum(-1) > 0).all()  # every joint of every sample


def test_gradients_are_correct():
    model = small_model(num_vertices=8, num_identity=3, num_expression=2)
    layer = HeadLayer(model, dtype=torch.float64)
    params = random_parameters(np.random.default_rng(6), model, batch=2)
    inputs = tuple(torch.tensor(params[k], requires_grad=True) for k in ("identity", "expression", "pose", "translation"))
    assert torch.autograd.gradcheck(lambda *args: layer(*args).vertices, inputs)


# --- shape keys (bundle schema 2: a neutral Basis, keys holding the fitted values) -------


def fitted_parameters(rng, model, nonnegative):
    """Parameters as a fit leaves them: batch of one, jaw open, head turned, eyes turned."""
    S, E = min(model.num_identity, 100), model.num_expression
    expression = rng.uniform(0, 0.5, E) * (rng.random(E) < 0.3) if nonnegative else rng.normal(size=E) * 0.7
    pose = np.zeros((NUM_JOINTS, 3))
    pose[0] = [0.1, 0.3, -0.05]
    pose[1] = [0.05, -0.1, 0.0]
    pose[2] = [0.2, 0.01, 0.0]  # jaw open ~11 degrees
    pose[3] = pose[4] = [0.02, 0.05, 0.0]
    return dict(identity=rng.normal(size=S) * 0.8, expression=expression, pose=pose, translation=np.array([0.01, -0.02, -0.6]))


@pytest.mark.parametrize("which", ["open_head", "extract"])
def test_shape_keys_reproduce_the_fit_from_a_neutral_basis(which):
    if which == "open_head":
        from flamefit.config import load_settings
        from flamefit.models import load_head_model

        model = load_head_model(load_settings())
    else:
        model = extract_model()
    layer = HeadLayer(model)  # float32, as the fit and the bundle writer use it
    params = fitted_parameters(np.random.default_rng(3), model, nonnegative=bool(model.expression_names))
    p = {k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in params.items()}
    fitted = layer(**p).vertices[0].numpy()
    keys = layer.shape_keys(p["identity"], p["expression"], p["pose"], p["translation"])

    S, E, V = len(params["identity"]), model.num_expression, model.num_vertices
    assert keys.deltas.shape == (len(keys.names), V, 3) and keys.basis.shape == (V, 3)
    assert len(set(keys.names)) == len(keys.names)
    error_mm = np.abs(keys.vertices() - fitted).max() * 1000
    print(f"\n{model.name}: {len(keys.names)} keys, max |basis + sum values*deltas - fitted| = {error_mm:.2e} mm")
    assert error_mm < 1e-3
    # Basis: the fitted identity with a neutral face (no expression, jaw closed, eyes at rest).
    neutral_pose = p["pose"].clone()
    neutral_pose[:, 2:] = 0
    neutral = layer(p["identity"], torch.zeros(1, E), neutral_pose, p["translation"]).vertices[0].numpy()
    np.testing.assert_allclose(keys.basis, neutral, atol=1e-6)
    assert np.abs(fitted - keys.basis).max() > 1e-3  # the fit's expression is not in the basis
    # Identity keys: relative to the fitted identity, value 0; expression keys hold the coefficients.
    np.testing.assert_array_equal(keys.values[:S], 0)
    np.testing.assert_allclose(keys.values[S:S + E], params["expression"], rtol=1e-6)
    assert keys.names[S + E] in ("jawOpen", "jawOpenPose") and keys.values[S + E] == 1.0
    assert keys.names[-1] == "eyesPose" and keys.values[-1] == 1.0
    step = p["identity"].clone()
    step[0, 4] += 1
    moved = layer(step, torch.zeros(1, E), neutral_pose, p["translation"]).vertices[0].numpy()
    np.testing.assert_allclose(keys.basis + keys.deltas[4], moved, atol=1e-5)
    # Turning every expression key and the jaw off leaves the basis.
    off = keys.values.copy()
    off[S:] = 0
    np.testing.assert_allclose(keys.vertices(off), keys.basis, atol=1e-6)
    lo, hi = keys.ranges.T
    assert (lo <= keys.values).all() and (keys.values <= hi).all()
