"""Linear blend skinning for head models (FLAME's forward, after smplx's `lbs`).

All functions are batched and device-agnostic; shapes use B = batch, V = vertices,
J = joints.
"""

import torch


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3); smooth at zero angle."""
    angle = torch.linalg.norm(axis_angle + 1e-8, dim=-1, keepdim=True)
    axis = axis_angle / angle
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*x.shape, 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin * skew + (1 - cos) * (skew @ skew)


def chain_transforms(rotations: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor):
    """Pose a kinematic tree.

    rotations (B,J,3,3) local rotations, joints (B,J,3) rest positions, parents (J,)
    with parents[0] == -1 and parents[j] < j. Returns the posed joint positions
    (B,J,3) and the (B,J,4,4) transforms that map rest-pose points to posed points.
    """
    batch, num_joints = joints.shape[:2]
    rel_joints = joints.clone()
    rel_joints[:, 1:] -= joints[:, parents[1:]]
    local = torch.cat([rotations, rel_joints[..., None]], dim=-1)
    bottom = torch.tensor([0, 0, 0, 1.0], dtype=joints.dtype, device=joints.device)
    local = torch.cat([local, bottom.expand(batch, num_joints, 1, 4)], dim=-2)

    world = [local[:, 0]]
    for j in range(1, num_joints):
        world.append(world[int(parents[j])] @ local[:, j])
    world = torch.stack(world, dim=1)

    posed_joints = world[..., :3, 3]
    # Remove the rest position so the transform applies to rest-pose vertices.
    rest = torch.cat([joints, torch.zeros_like(joints[..., :1])], dim=-1)[..., None]
    correction = torch.nn.functional.pad(world @ rest, (3, 0))
    return posed_joints, world - correction


def blend_skinning(
    rest_verts: torch.Tensor,
    pose: torch.Tensor,
    joint_regressor: torch.Tensor,
    parents: torch.Tensor,
    skin_weights: torch.Tensor,
    posedirs: torch.Tensor | None,
):
    """Pose-corrected linear blend skinning.

    rest_verts (B,V,3) shaped template, pose (B,J,3) axis-angle per joint,
    joint_regressor (J,V), skin_weights (V,J), posedirs (P,V*3) with P=(J-1)*9 or None.
    Returns posed vertices (B,V,3) and posed joints (B,J,3).
    """
    batch = rest_verts.shape[0]
    joints = torch.einsum("jv,bvc->bjc", joint_regressor, rest_verts)
    rotations = rodrigues(pose)
    if posedirs is not None:
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
        rest_verts = rest_verts + (pose_feature @ posedirs).reshape(batch, -1, 3)
    posed_joints, transforms = chain_transforms(rotations, joints, parents)
    per_vertex = torch.einsum("vj,bjmn->bvmn", skin_weights, transforms)
    homogeneous = torch.nn.functional.pad(rest_verts, (0, 1), value=1.0)
    posed = (per_vertex @ homogeneous[..., None])[..., :3, 0]
    return posed, posed_joints
