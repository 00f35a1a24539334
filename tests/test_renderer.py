"""Renderer tests: analytic and exact expectations, no snapshots."""

import math

import numpy as np
import pytest
import torch

from flamefit.render import (
    OrthographicCamera,
    PinholeCamera,
    RasterizationSettings,
    SHLight,
    composite,
    directional_light_sh,
    face_region_mask,
    interpolate,
    rasterize,
    rasterize_mesh,
    rasterize_uv,
    refresh_bary,
    render_rgb,
    sample_texture,
    sh_basis,
    sh_shading,
    soft_mask,
    texel_values,
    unwrap_image,
    vertex_normals,
)
from flamefit.render.lighting import ambient_light_sh

EYE = torch.eye(3)[None]


def ortho_camera(scale, size, dtype=torch.float32):
    """Orthographic camera looking down -Z at the origin, which lands on the image centre."""
    return OrthographicCamera(torch.tensor([scale], dtype=dtype), torch.tensor([[size / 2, size / 2]], dtype=dtype),
                              EYE.to(dtype), torch.zeros(1, 3, dtype=dtype))


def sphere(subdivisions=4, radius=1.0, dtype=torch.float32):
    """An icosphere: an icosahedron, each triangle split in four `subdivisions` times,
    vertices pushed onto the sphere; faces counter-clockwise seen from outside."""
    t = (1 + math.sqrt(5)) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(v, float) / np.linalg.norm(v) for v in verts]
    for _ in range(subdivisions):
        midpoint, split = {}, []

        def middle(a, b, midpoint=midpoint):  # this subdivision's edge midpoints
            key = (min(a, b), max(a, b))
            if key not in midpoint:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                midpoint[key] = len(verts) - 1
            return midpoint[key]

        for a, b, c in faces:
            ab, bc, ca = middle(a, b), middle(b, c), middle(c, a)
            split += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = split
    return torch.tensor(np.array(verts) * radius, dtype=dtype)[None], torch.tensor(faces, dtype=torch.int64)


def white_texture():
    return torch.ones(1, 3, 2, 2)


# ----------------------------------------------------------------------------- rasteriser


def test_single_triangle_coverage_and_barycentrics_match_exact_geometry():
    tri = np.array([[1.3, 0.7], [9.2, 3.1], [3.4, 8.8]])
    screen = torch.tensor(np.c_[tri, [2.0, 3.0, 4.0]], dtype=torch.float64)[None]
    frags = rasterize(screen, torch.tensor([[0, 1, 2]]), (10, 12))

    def cross(a, b):
        return a[0] * b[1] - a[1] * b[0]

    area2 = cross(tri[1] - tri[0], tri[2] - tri[0])
    for i in range(10):
        for j in range(12):
            p = np.array([j + 0.5, i + 0.5])
            weights = [cross(tri[(k + 1) % 3] - p, tri[(k + 2) % 3] - p) / area2 for k in range(3)]
            inside = min(weights) >= 0
            assert (frags.face_ids[0, i, j].item() == 0) == inside, (i, j)
            if inside:
                np.testing.assert_allclose(frags.bary[0, i, j].numpy(), weights, atol=1e-12)
                np.testing.assert_allclose(frags.depth[0, i, j].item(), np.dot(weights, [2, 3, 4]), atol=1e-12)
            else:
                assert frags.bary[0, i, j].abs().sum() == 0 and frags.depth[0, i, j] == 0


def test_pixel_centre_on_an_edge_is_covered_once_and_no_gap_along_shared_edges():
    # A square split along its diagonal, whose pixel centres lie exactly on the shared edge.
    screen = torch.tensor([[[0.0, 0.0, 1.0], [8.0, 0.0, 1.0], [8.0, 8.0, 1.0], [0.0, 8.0, 1.0]]])
    for faces in ([[0, 1, 2], [0, 2, 3]], [[0, 2, 3], [0, 1, 2]]):
        ids = rasterize(screen, torch.tensor(faces), (8, 8)).face_ids[0]
        assert (ids >= 0).all()  # no gap anywhere, including the diagonal
        assert (ids.diagonal() == 0).all()  # equal depth: the lowest face id wins


@pytest.mark.parametrize("perspective", [False, True])
def test_random_triangle_soup_matches_a_brute_force_z_buffer(perspective):
    gen = torch.Generator().manual_seed(3)
    F_, H, W = 60, 20, 24
    xy = torch.rand(F_, 3, 2, generator=gen, dtype=torch.float64) * torch.tensor([34.0, 30.0]) - 5  # some off-image
    depth = (torch.rand(F_, 1, generator=gen, dtype=torch.float64) * 4 + 1) + torch.rand(F_, 3, generator=gen) * 0.5
    screen = torch.cat((xy, depth[..., None]), -1).reshape(1, -1, 3)
    frags = rasterize(screen, torch.arange(3 * F_).view(F_, 3), (H, W), perspective_correct=perspective)

    cols, rows = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    p = torch.stack((cols, rows), -1).double()[None]  # (1, H, W, 2)
    a, b, c = (xy[:, k, None, None, :] for k in range(3))

    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    area = cross(b - a, c - a)
    bary = torch.stack((cross(b - p, c - p), cross(c - p, a - p), cross(a - p, b - p)), -1) / area[..., None]
    inside = (bary >= 0).all(-1)
    z = depth[:, None, None, :]
    surface = 1 / (bary / z).sum(-1) if perspective else (bary * z).sum(-1)
    surface = torch.where(inside, surface, torch.inf)
    expected = torch.where(inside.any(0), surface.argmin(0), -1)
    assert torch.equal(frags.face_ids[0], expected)
    assert torch.allclose(frags.depth[0][expected >= 0], surface.amin(0)[expected >= 0], atol=1e-9)


def test_perspective_correct_barycentrics_reproduce_the_3d_point_on_the_pixel_ray():
    camera = PinholeCamera(torch.tensor([50.0], dtype=torch.float64), torch.tensor([[16.0, 16.0]], dtype=torch.float64),
                           EYE.double(), torch.zeros(1, 3, dtype=torch.float64))
    verts = torch.tensor([[[-0.5, -0.4, -1.0], [0.6, -0.3, -3.0], [0.0, 0.5, -2.0]]], dtype=torch.float64)
    frags = rasterize_mesh(camera, verts, torch.tensor([[0, 1, 2]]), (32, 32))
    assert len(frags.pixel_index) > 50
    points = (frags.pixel_bary[:, :, None] * verts[0][None]).sum(1)  # camera == world here
    reprojected = camera.project(points[None])[0]
    np.testing.assert_allclose(reprojected[:, :2].t().numpy(), frags.pixel_centres.numpy(), atol=1e-9)
    np.testing.assert_allclose(reprojected[:, 2].numpy(), frags.pixel_depth.numpy(), atol=1e-12)


def test_nearest_surface_wins_whatever_the_face_order():
    near = [[2.0, 2.0, 1.0], [14.0, 3.0, 1.0], [4.0, 13.0, 1.0]]
    far = [[6.0, 1.0, 2.0], [15.0, 12.0, 2.0], [1.0, 9.0, 2.0]]
    screen = torch.tensor([near + far])
    a = rasterize(screen, torch.tensor([[0, 1, 2], [3, 4, 5]]), (16, 16))
    b = rasterize(screen, torch.tensor([[3, 4, 5], [0, 1, 2]]), (16, 16))
    assert torch.equal(a.depth, b.depth)
    assert torch.equal(a.face_ids, torch.where(b.face_ids >= 0, 1 - b.face_ids, b.face_ids))
    assert torch.allclose(a.depth[a.face_ids == 0], torch.tensor(1.0))
    assert torch.allclose(a.depth[a.face_ids == 1], torch.tensor(2.0))
    # Every pixel both triangles cover shows the near one.
    far_alone = rasterize(torch.tensor([far]), torch.tensor([[0, 1, 2]]), (16, 16)).mask
    near_alone = rasterize(torch.tensor([near]), torch.tensor([[0, 1, 2]]), (16, 16)).mask
    overlap = far_alone & near_alone
    assert overlap.sum() > 20 and (a.face_ids[overlap] == 0).all()
    assert torch.equal(a.mask, far_alone | near_alone)


def test_sphere_silhouette_area_matches_pi_r_squared():
    size, radius_px = 100, 40.0
    verts, faces = sphere(4)
    frags = rasterize_mesh(ortho_camera(radius_px, size), verts, faces, (size, size))
    count = frags.mask.sum().item()
    expected = math.pi * radius_px ** 2
    # The inscribed polygon loses at most pi r^2 theta^2 / 4 (theta = longest edge angle,
    # ~0.08 rad at level 4: ~8 px); centre sampling of the ~1.27 * 2 pi r boundary pixels
    # errs by zero on average with sigma ~ sqrt(319 / 6) ~ 7 px. 1% (50 px) covers both.
    assert abs(count - expected) < 0.01 * expected
    # No holes inside the inscribed outline, nothing outside the sphere.
    rows, cols = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    radius = ((cols - size / 2) ** 2 + (rows - size / 2) ** 2).sqrt()
    assert frags.mask[0][radius < radius_px * math.cos(0.05)].all()
    assert not frags.mask[0][radius > radius_px].any()
    # Depth at the centre pixel is the sphere's front (orthographic depth = -z).
    assert abs(frags.depth[0, 50, 50].item() + 1.0) < 2e-3


def test_vertex_normals_of_a_sphere_point_outward():
    verts, faces = sphere(3)
    normals = vertex_normals(verts, faces)
    cosine = (normals * torch.nn.functional.normalize(verts, dim=-1)).sum(-1)
    assert cosine.min() > 0.999


def test_backface_culling_drops_the_far_side_only():
    verts, faces = sphere(3)
    camera = ortho_camera(30.0, 80)
    screen = camera.transform_points(verts)
    culled = rasterize(screen, faces, (80, 80), cull_backfaces=True)
    full = rasterize(screen, faces, (80, 80))
    assert torch.equal(culled.face_ids, full.face_ids)  # a closed convex mesh: same visible faces


def test_fragments_are_immutable_and_detach_keeps_the_visibility():
    import dataclasses

    verts, faces = sphere(2)
    verts.requires_grad_(True)
    frags = rasterize_mesh(ortho_camera(30.0, 64), verts, faces, RasterizationSettings((64, 64), cull_backfaces=True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        frags.pixel_face = frags.pixel_face[:1]
    ids = frags.face_ids
    detached = frags.detach()
    assert frags.bary_cn.requires_grad and not detached.bary_cn.requires_grad and not detached.pixel_depth.requires_grad
    assert detached.face_ids is ids and torch.equal(detached.bary_cn, frags.bary_cn.detach())
    # Culling in the settings: a closed convex mesh shows the same faces either way.
    assert torch.equal(ids, rasterize_mesh(ortho_camera(30.0, 64), verts, faces, (64, 64)).face_ids)


def test_sh_light_diffuse_is_the_renderers_shading():
    verts, faces = sphere(2)
    light = SHLight.ambient(torch.tensor([[0.3, 0.3, 0.3]])) + SHLight.directional(
        torch.tensor([[0.2, 0.5, 1.0]]), torch.tensor([[0.8, 0.7, 0.6]]))
    rendering = render_rgb(ortho_camera(30.0, 48), verts, faces, torch.full((len(faces), 3, 2), 0.5), white_texture(),
                           light, (48, 48))
    expected = light.diffuse(rendering.pixel_normals[None])[0]
    assert torch.allclose(rendering.pixel_shading, expected, atol=1e-6)
    with_tensor = render_rgb(ortho_camera(30.0, 48), verts, faces, torch.full((len(faces), 3, 2), 0.5),
                             white_texture(), light.coefficients, (48, 48))
    assert torch.equal(with_tensor.pixel_shading, rendering.pixel_shading)


def test_refresh_bary_matches_a_fresh_rasterisation_while_visibility_holds():
    verts, faces = sphere(3, dtype=torch.float64)
    camera = ortho_camera(30.0, 80, torch.float64)
    frags = rasterize_mesh(camera, verts, faces, (80, 80))
    moved = verts * 1.0001
    fresh = rasterize_mesh(camera, moved, faces, (80, 80))
    cached = rasterize_mesh(camera, moved, faces, (80, 80), visibility=frags)
    via_ids = rasterize(camera.transform_points(moved), faces, (80, 80), face_ids=frags.face_ids)
    same = fresh.face_ids == frags.face_ids
    assert same.float().mean() > 0.95
    assert torch.allclose(fresh.bary[same], cached.bary[same], atol=1e-9)
    assert torch.allclose(via_ids.bary, cached.bary, atol=1e-12)


# ----------------------------------------------------------------------------- cameras


def test_pinhole_projection_matches_a_hand_computation():
    rotation = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]])  # 90 deg about +Y
    camera = PinholeCamera(torch.tensor([[100.0, 120.0]]), torch.tensor([[50.0, 40.0]]), rotation,
                           torch.tensor([[0.1, 0.0, -2.0]]))
    point = torch.tensor([[[0.5, 0.2, 0.3]]])
    # X_cam = R X + t = (0.3 + 0.1, 0.2, -0.5 - 2.0) = (0.4, 0.2, -2.5); depth 2.5
    # x = 100 * 0.4 / 2.5 + 50 = 66; y = -120 * 0.2 / 2.5 + 40 = 30.4
    np.testing.assert_allclose(camera.transform_points(point)[0, 0].numpy(), [66.0, 30.4, 2.5], rtol=1e-6)


def test_orthographic_projection_matches_the_formula():
    camera = OrthographicCamera(torch.tensor([200.0]), torch.tensor([[64.0, 60.0]]), EYE, torch.tensor([[0.01, 0.0, 0.0]]))
    point = torch.tensor([[[0.1, -0.05, 0.3]]])
    np.testing.assert_allclose(camera.transform_points(point)[0, 0].numpy(), [86.0, 70.0, -0.3], rtol=1e-6)


def test_gradcheck_cameras_wrt_all_parameters():
    points = torch.tensor([[[0.1, 0.2, -1.5], [-0.3, 0.1, -2.0]]], dtype=torch.float64)

    def pinhole(focal, principal, rotation, translation):
        return PinholeCamera(focal, principal, rotation, translation).transform_points(points)

    def ortho(scale, principal, rotation, translation):
        return OrthographicCamera(scale, principal, rotation, translation).transform_points(points)

    def leaf(values):
        return torch.tensor(values, dtype=torch.float64).requires_grad_()

    rotation = (torch.eye(3, dtype=torch.float64) + 0.1)[None].requires_grad_()
    assert torch.autograd.gradcheck(pinhole, (leaf([[50.0, 60.0]]), leaf([[30.0, 20.0]]), rotation, leaf([[0.1, 0.0, 0.2]])))
    assert torch.autograd.gradcheck(ortho, (leaf([40.0]), leaf([[30.0, 20.0]]), rotation, leaf([[0.1, 0.0, 0.2]])))


def test_camera_batch_broadcasts_and_mismatches_raise():
    camera = PinholeCamera(torch.tensor([50.0, 60.0]), torch.tensor([[30.0, 20.0]]), EYE, torch.tensor([[0.0, 0.0, -2.0]]))
    screen = camera.transform_points(torch.tensor([[[0.1, 0.2, 0.0]]]))  # two cameras, one mesh
    np.testing.assert_allclose(screen[:, 0].numpy(), [[32.5, 15.0, 2.0], [33.0, 14.0, 2.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="batch"):
        camera.transform_points(torch.zeros(3, 4, 3))


def test_faces_behind_a_pinhole_camera_are_culled_without_garbage():
    camera = PinholeCamera(torch.tensor([40.0]), torch.tensor([[16.0, 16.0]]), EYE, torch.zeros(1, 3))
    verts = torch.tensor([[[-0.5, -0.5, -1.0], [0.5, -0.5, -1.0], [0.0, 0.5, 1.0]]])  # last one behind
    screen = camera.transform_points(verts)
    assert torch.isfinite(screen).all() and screen[0, 2, 2] == -1.0
    frags = rasterize_mesh(camera, verts, torch.tensor([[0, 1, 2]]), (32, 32))
    assert not frags.mask.any()


# ----------------------------------------------------------------------------- shading


def band_limited_lambert(cosine):
    """sum_l A_l (2l + 1) / (4 pi) P_l(cos): the 9-term SH irradiance of a unit distant light."""
    return 0.25 + 0.5 * cosine + (5 / 32) * (3 * cosine ** 2 - 1)


def test_sh_shading_equals_closed_form_irradiance_of_a_directional_light():
    direction = torch.nn.functional.normalize(torch.tensor([[0.3, 0.5, 0.8]], dtype=torch.float64), dim=-1)
    sh = directional_light_sh(direction, torch.ones(1, 3, dtype=torch.float64))
    normals = torch.nn.functional.normalize(torch.randn(1, 500, 3, dtype=torch.float64), dim=-1)
    shading = sh_shading(normals, sh)
    cosine = (normals * direction[:, None]).sum(-1, keepdim=True)
    np.testing.assert_allclose(shading.numpy(), band_limited_lambert(cosine).expand(-1, -1, 3).numpy(), atol=1e-12)
    # ... which is the clamped cosine up to the known 9-term truncation error (< 0.1).
    assert (shading - cosine.clamp(min=0)).abs().max() < 0.1


def test_ambient_coefficient_sqrt_4pi_gives_unit_shading():
    sh = ambient_light_sh(torch.tensor([[1.0, 0.5, 0.25]]))
    assert abs(sh[0, 0, 0].item() - math.sqrt(4 * math.pi)) < 1e-6
    normals = torch.nn.functional.normalize(torch.randn(1, 7, 3), dim=-1)
    np.testing.assert_allclose(sh_shading(normals, sh).numpy(), np.tile([1.0, 0.5, 0.25], (1, 7, 1)), rtol=1e-6)
    assert sh_basis(normals).shape == (1, 7, 9)


def test_rendered_sphere_shading_matches_lambertian_irradiance():
    size, radius_px = 96, 40.0
    verts, faces = sphere(4)
    direction = torch.nn.functional.normalize(torch.tensor([[-0.4, 0.6, 0.7]]), dim=-1)
    sh = directional_light_sh(direction, torch.ones(1, 3))
    face_uvs = torch.full((faces.shape[0], 3, 2), 0.5)
    out = render_rgb(ortho_camera(radius_px, size), verts, faces, face_uvs, white_texture(), sh, (size, size))
    # True sphere normal at each pixel centre (camera space, image y down).
    centres = out.fragments.pixel_centres
    nx, ny = (centres[0] - size / 2) / radius_px, -(centres[1] - size / 2) / radius_px
    rim = nx ** 2 + ny ** 2 < 0.8  # away from the silhouette, where the facets tilt fastest
    normal = torch.stack((nx, ny, (1 - nx ** 2 - ny ** 2).clamp(min=0).sqrt()), dim=-1)
    expected = band_limited_lambert((normal * direction).sum(-1))
    error = (out.pixel_rgb[:, 0] - expected)[rim].abs()
    assert rim.sum() > 2000 and error.max() < 0.01


def test_texture_uv_origin_is_bottom_left():
    texture = torch.zeros(1, 1, 4, 4)
    texture[0, 0, -1, 0] = 1.0  # bottom-left texel of the image array
    uv = torch.tensor([[[0.125, 0.125], [0.875, 0.875]]])
    np.testing.assert_allclose(sample_texture(texture, uv)[0, :, 0].numpy(), [1.0, 0.0])


def test_interpolation_per_vertex_equals_per_corner():
    verts, faces = sphere(2)
    frags = rasterize_mesh(ortho_camera(20.0, 48), verts, faces, (48, 48))
    values = torch.randn(1, verts.shape[1], 4)
    assert torch.allclose(interpolate(frags, values), interpolate(frags, values[0][faces]), atol=1e-6)
    assert interpolate(frags, values)[~frags.mask].abs().sum() == 0


def test_composite_and_face_region_mask():
    square = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = rasterize_mesh(ortho_camera(8.0, 32), square, faces, (32, 32))
    face_uvs = ((square[0, :, :2] + 1) / 2)[faces]
    uv_mask = torch.zeros(1, 1, 8, 8)
    uv_mask[..., :4] = 1.0  # left half of the texture (u < 0.5)
    mask = face_region_mask(frags, face_uvs, uv_mask)[0, ..., 0]
    assert (mask[12:20, 12:15] == 1).all() and (mask[12:20, 17:20] == 0).all() and mask[0, 0] == 0
    render, photo = torch.full((1, 32, 32, 3), 0.8), torch.full((1, 32, 32, 3), 0.2)
    out = composite(render, frags.mask[..., None].float(), photo)
    assert out[0, 16, 16, 0] == 0.8 and out[0, 0, 0, 0] == 0.2


# ----------------------------------------------------------------------------- gradients


def small_scene(dtype=torch.float64):
    screen = torch.tensor([[[1.2, 1.1, 2.0], [9.7, 2.3, 2.5], [3.1, 9.4, 3.0], [10.6, 10.2, 2.2]]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return screen, faces


@pytest.mark.parametrize("perspective", [False, True])
def test_gradcheck_barycentrics_wrt_vertex_positions(perspective):
    screen, faces = small_scene()
    frags = rasterize(screen, faces, (12, 12), perspective_correct=perspective)

    def bary_and_depth(s):
        out = refresh_bary(frags, s)
        return out.pixel_bary, out.pixel_depth

    assert torch.autograd.gradcheck(bary_and_depth, (screen.clone().requires_grad_(),))


def test_gradcheck_shading_wrt_sh_and_normals():
    normals = torch.nn.functional.normalize(torch.randn(1, 6, 3, dtype=torch.float64), dim=-1).requires_grad_()
    sh = torch.randn(1, 9, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sh_shading, (normals, sh))


def test_gradcheck_texture_sampling():
    texture = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    uv = torch.tensor([[[0.31, 0.72], [0.55, 0.13], [0.91, 0.46]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sample_texture, (texture, uv))


def test_gradcheck_full_render_wrt_vertices_texture_and_sh():
    verts, faces = sphere(1, dtype=torch.float64)
    camera = PinholeCamera(torch.tensor([30.0], dtype=torch.float64), torch.tensor([[8.0, 8.0]], dtype=torch.float64),
                           EYE.double(), torch.tensor([[0.0, 0.0, -3.0]], dtype=torch.float64))
    face_uvs = (verts[0, :, :2] * 0.4 + 0.5)[faces]
    texture = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    sh = (ambient_light_sh(torch.ones(1, 3, dtype=torch.float64)) + 0.1).requires_grad_()
    visibility = render_rgb(camera, verts, faces, face_uvs, texture, sh, (16, 16)).fragments

    def image(v, tex, light):
        return render_rgb(camera, v, faces, face_uvs, tex, light, (16, 16), visibility=visibility).image

    assert torch.autograd.gradcheck(image, (verts.clone().requires_grad_(), texture, sh), fast_mode=True)


# ----------------------------------------------------------------------------- UV space


def uv_grid(cells):
    ticks = torch.linspace(0, 1, cells + 1, dtype=torch.float64)
    v, u = torch.meshgrid(ticks, ticks, indexing="ij")
    uv = torch.stack((u.reshape(-1), v.reshape(-1)), -1)
    faces = []
    for i in range(cells):
        for j in range(cells):
            a, b, c, d = i * (cells + 1) + j, i * (cells + 1) + j + 1, (i + 1) * (cells + 1) + j + 1, (i + 1) * (cells + 1) + j
            faces += [[a, b, c], [a, c, d]]
    return uv, torch.tensor(faces)


def test_uv_rasterisation_covers_every_texel_exactly_once():
    uv, faces = uv_grid(8)
    frags = rasterize_uv(uv, faces, (64, 64))
    assert (frags.face_ids >= 0).all()  # no gap, including on the 8 x 64 diagonal texel centres
    counts = torch.bincount(frags.pixel_face, minlength=len(faces))
    assert counts.sum() == 64 * 64  # one face per texel: each texel counted once
    # Each triangle covers area / texel area = 32 texels; the 8 centres on its diagonal go
    # to the lower face id, so counts are 32 +- 4, never more than the 8 shared texels off.
    assert (counts - 32).abs().max() <= 8
    # Barycentrics place each texel centre exactly.
    centre = frags.pixel_centres.double()
    texel_uv = torch.stack((centre[0] / 64, 1 - centre[1] / 64))
    recon = (frags.bary_cn[:, None] * uv[faces[frags.pixel_face]].permute(1, 2, 0)).sum(0)
    assert torch.allclose(recon, texel_uv, atol=1e-12)


def test_uv_rasterisation_of_a_partial_layout_leaves_empty_texels():
    uv = torch.tensor([[0.1, 0.1], [0.6, 0.1], [0.1, 0.6]])
    frags = rasterize_uv(uv, torch.tensor([[0, 1, 2]]), (40, 40))
    area_texels = 0.5 * 0.5 * 0.5 * 40 * 40
    assert abs(frags.mask.sum().item() - area_texels) <= 3 * 20  # pixelisation along the perimeter


def test_unwrap_image_recovers_the_photo_and_respects_occlusion():
    # A unit square facing the camera, UV = its xy; a smaller square in front covers a corner.
    back = [[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]
    front = [[0.0, 0.0, 0.5], [1.0, 0.0, 0.5], [1.0, 1.0, 0.5], [0.0, 1.0, 0.5]]
    verts = torch.tensor([back + front])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    uv = (verts[0, :, :2] + 1) / 2
    camera = ortho_camera(16.0, 64)
    image_frags = rasterize_mesh(camera, verts, faces, (64, 64))
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    photo = torch.stack((cols / 64, rows / 64, torch.zeros_like(rows)), -1)[None]

    uv_frags = rasterize_uv(uv[:4], faces[:2], (32, 32))  # unwrap the back square only
    texture, weight = unwrap_image(camera, verts[:, :4], faces[:2], uv_frags, photo, image_frags)
    # Texel (i, j): u = (j + 0.5) / 32 -> x = 2u - 1 -> pixel column 32 + 16 x (minus the centre's 0.5).
    j = torch.arange(32.0)
    expected_red = (32 + 16 * (2 * (j + 0.5) / 32 - 1)) / 64 - 0.5 / 64
    visible = weight[0, 0] > 0
    assert torch.allclose(texture[0, 0][visible], expected_red.expand(32, 32)[visible], atol=1e-5)
    # The occluded quarter (u > 0.5, v > 0.5: top-right of the texture) is invisible, the rest visible.
    assert (weight[0, 0, :15, 17:] == 0).all()
    assert (weight[0, 0, 17:, :] > 0.99).all() and (weight[0, 0, :, :15] > 0.99).all()
    assert texel_values(uv_frags, verts[:, :4], faces[:2]).shape == (1, 32 * 32, 3)


# ----------------------------------------------------------------------------- bad input


def test_rasterize_box_sees_the_front_of_a_sphere_in_a_large_photo():
    """The unwrap's z-buffer: only the mesh's box of a large photo, at most max_size px a
    side; texel_visibility against it keeps the front and drops the back."""
    from flamefit.render.uv_raster import rasterize_box, texel_visibility

    verts, faces = sphere(3)
    camera = PinholeCamera(torch.tensor([[3000.0, 3000.0]]), torch.tensor([[900.0, 700.0]]), EYE,
                           torch.tensor([[0.0, 0.0, -4.0]]))
    frags, crop = rasterize_box(camera, verts, faces, (1400, 2000), 128)
    assert frags.image_size == (116, 128)  # the sphere's ~1550 x 1400 px in the photo, scaled
    centres = verts[0][faces].mean(1)[None]  # one "texel" per triangle, at its centre
    screen = crop.transform_points(centres)
    visible = texel_visibility(screen, frags, 1e-3 + screen[..., 2] / crop.focal.mean(),
                               texel_faces=torch.arange(len(faces)))[0]
    to_camera = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 4.0]) - centres[0], dim=-1)
    facing = (torch.nn.functional.normalize(centres[0], dim=-1) * to_camera).sum(-1)  # sphere: normal = position
    row = camera.transform_points(centres)[0, :, 1]  # the photo (rows 0..1400) cuts the sphere
    assert visible[(facing > 0.2) & (row > 1) & (row < 1399)].all()
    assert not visible[facing < -0.2].any()  # the back (near the rim a neighbour of a seen triangle counts)
    assert not visible[(row < -1) | (row > 1401)].any()


def test_degenerate_triangles_are_skipped_without_nan():
    screen = torch.tensor([[[1.0, 1.0, 1.0], [5.0, 5.0, 1.0], [9.0, 9.0, 1.0],  # collinear
                            [2.0, 2.0, 1.0], [2.0, 2.0, 1.0], [2.0, 2.0, 1.0],  # a point
                            [0.0, 0.0, 2.0], [10.0, 0.0, 2.0], [0.0, 10.0, 2.0]]], requires_grad=True)
    frags = rasterize(screen, torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]), (10, 10))
    assert set(frags.pixel_face.tolist()) == {2}
    (frags.bary.sum() + frags.depth.sum()).backward()
    assert torch.isfinite(screen.grad).all()


def test_nan_inputs_raise_value_errors_naming_the_argument():
    verts, faces = sphere(1)
    camera = ortho_camera(10.0, 16)
    face_uvs = torch.zeros(faces.shape[0], 3, 2)
    sh = ambient_light_sh(torch.ones(1, 3))
    bad = verts.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="verts"):
        render_rgb(camera, bad, faces, face_uvs, white_texture(), sh, (16, 16))
    with pytest.raises(ValueError, match="screen_verts"):
        rasterize(bad, faces, (16, 16))
    bad_sh = sh.clone()
    bad_sh[0, 4, 2] = float("nan")
    with pytest.raises(ValueError, match="sh"):
        render_rgb(camera, verts, faces, face_uvs, white_texture(), bad_sh, (16, 16))
    bad_texture = white_texture()
    bad_texture[0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="texture"):
        render_rgb(camera, verts, faces, face_uvs, bad_texture, sh, (16, 16))
    with pytest.raises(ValueError, match="focal"):
        PinholeCamera(torch.tensor([float("nan")]), torch.zeros(1, 2), EYE, torch.zeros(1, 3))


def test_malformed_faces_and_sizes_raise_value_errors():
    screen, faces = small_scene(torch.float32)
    with pytest.raises(ValueError, match="faces"):
        rasterize(screen, torch.tensor([[0, 1, 7]]), (8, 8))
    with pytest.raises(ValueError, match="faces"):
        rasterize(screen, torch.tensor([0, 1, 2]), (8, 8))
    with pytest.raises(ValueError, match="faces"):
        rasterize(screen, faces.float(), (8, 8))
    with pytest.raises(ValueError, match="image_size"):
        rasterize(screen, faces, (0, 8))
    with pytest.raises(ValueError, match="screen_verts"):
        rasterize(screen[0], faces, (8, 8))


def test_empty_mesh_renders_all_background():
    verts = torch.zeros(1, 0, 3)
    faces = torch.zeros(0, 3, dtype=torch.int64)
    frags = rasterize_mesh(ortho_camera(10.0, 16), verts, faces, (16, 16))
    assert not frags.mask.any() and frags.bary.shape == (1, 16, 16, 3)
    out = render_rgb(ortho_camera(10.0, 16), verts, faces, torch.zeros(0, 3, 2), white_texture(),
                     ambient_light_sh(torch.ones(1, 3)), (16, 16))
    assert out.image.abs().sum() == 0 and out.mask.sum() == 0


def test_batched_rendering_matches_single_renders():
    verts, faces = sphere(2)
    batch = torch.cat((verts, verts * 0.7 + 0.1))
    camera = OrthographicCamera(torch.tensor([20.0, 25.0]), torch.tensor([[24.0, 24.0], [20.0, 26.0]]),
                                EYE.expand(2, 3, 3), torch.zeros(2, 3))
    face_uvs = (verts[0, :, :2] * 0.5 + 0.5)[faces]
    textures = torch.rand(2, 3, 8, 8)
    sh = torch.cat((ambient_light_sh(torch.ones(1, 3)), directional_light_sh(torch.tensor([[0.0, 0.0, 1.0]]),
                                                                              torch.ones(1, 3))))
    both = render_rgb(camera, batch, faces, face_uvs, textures, sh, (48, 48)).image
    for b in range(2):
        cam_b = OrthographicCamera(camera.scale[b:b + 1], camera.principal[b:b + 1], EYE, torch.zeros(1, 3))
        one = render_rgb(cam_b, batch[b:b + 1], faces, face_uvs, textures[b:b + 1], sh[b:b + 1], (48, 48)).image
        assert torch.allclose(both[b], one[0], atol=1e-6)


# ----------------------------------------------------------------------------- real FLAME, devices


def test_flame_template_renders_with_finite_gradients(flame_extract_path):
    data = np.load(flame_extract_path)
    verts = torch.tensor(data["v_template"])[None].requires_grad_()
    faces = torch.tensor(data["faces"].astype(np.int64))
    camera = PinholeCamera(torch.tensor([300.0]), torch.tensor([[64.0, 64.0]]), EYE, torch.tensor([[0.0, 0.03, -1.0]]))
    face_uvs = (verts.detach()[0, :, :2] + 0.2)[faces]
    texture = torch.rand(1, 3, 32, 32, requires_grad=True)
    sh = ambient_light_sh(torch.ones(1, 3)).requires_grad_()
    out = render_rgb(camera, verts, faces, face_uvs, texture, sh, (128, 128))
    assert 0.15 < out.mask.mean() < 0.9
    out.image.mean().backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in (verts, texture, sh))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_agree():
    verts, faces = sphere(3)
    face_uvs = (verts[0, :, :2] * 0.5 + 0.5)[faces]
    texture = torch.rand(1, 3, 16, 16)
    sh = directional_light_sh(torch.tensor([[0.2, 0.3, 0.9]]), torch.ones(1, 3)) + ambient_light_sh(torch.ones(1, 3)) * 0.2
    camera = PinholeCamera(torch.tensor([60.0]), torch.tensor([[32.0, 32.0]]), EYE, torch.tensor([[0.0, 0.0, -3.0]]))
    results = []
    for device in ("cpu", "cuda"):
        v = verts.to(device).requires_grad_()
        out = render_rgb(camera.to(device), v, faces.to(device), face_uvs.to(device), texture.to(device),
                         sh.to(device), (64, 64))
        out.image.sum().backward()
        results.append((out.fragments.face_ids.cpu(), out.image.detach().cpu(), v.grad.cpu()))
    (ids_cpu, img_cpu, grad_cpu), (ids_gpu, img_gpu, grad_gpu) = results
    assert (ids_cpu == ids_gpu).float().mean() > 0.999  # float rounding may flip exact ties
    same = (ids_cpu == ids_gpu)[..., None]
    assert torch.allclose(img_cpu * same, img_gpu * same, atol=1e-4)
    assert torch.allclose(grad_cpu, grad_gpu, atol=1e-3 * grad_cpu.abs().max().item())


# ----------------------------------------------------------------------------- soft silhouette


def test_soft_mask_is_hard_inside_and_grows_when_the_outline_moves_out():
    square = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]],
                          dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    camera = ortho_camera(7.3, 32, torch.float64)
    screen = camera.transform_points(square)
    frags = rasterize(screen, faces, (32, 32))
    soft = soft_mask(frags, screen)[0, ..., 0]
    hard = frags.mask[0].double()
    band = (soft - hard).abs() > 0
    assert band.any() and (soft[~band] == hard[~band]).all()
    assert ((soft[band] > 0) & (soft[band] < 1)).all()
    # Scaling the square up moves every edge outward: the soft area must grow.
    soft.sum().backward()
    outward = square.detach()[0, :, :2]
    assert (square.grad[0, :, :2] * outward).sum() > 0
    assert torch.autograd.gradcheck(lambda s: soft_mask(frags, s), (screen.detach().requires_grad_(),))
