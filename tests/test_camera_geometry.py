"""Camera geometry against cases with known answers (helper C's tests compare it with real Cycles renders)."""

import math

import numpy as np
import pytest

from cinepregen_addon.core import camera_geometry as geometry


def blender_matrix_world(location, rotation_euler, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Blender's matrix_world for an XYZ Euler rotation: R = Rz @ Ry @ Rx."""
    rx, ry, rz = rotation_euler
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = Rz @ Ry @ Rx @ np.diag(scale)
    m[:3, 3] = location
    return m


POSE = blender_matrix_world((3.0, -7.0, 2.0), (1.2, 0.1, 0.6))


def test_camera_at_origin_looks_down_world_minus_z():
    w2c = geometry.world_to_camera_from_matrix_world(np.eye(4))
    np.testing.assert_allclose(w2c[:3, :3] @ [0, 0, -1], [0, 0, 1])   # forward
    np.testing.assert_allclose(w2c[:3, :3] @ [0, 1, 0], [0, -1, 0])   # Blender up is image up (-y)
    np.testing.assert_allclose(w2c[:3, :3] @ [1, 0, 0], [1, 0, 0])    # right stays right


def test_world_to_camera_ignores_object_scale_and_inverts():
    scaled = blender_matrix_world((3.0, -7.0, 2.0), (1.2, 0.1, 0.6), scale=(2.0, 0.5, 3.0))
    w2c = geometry.world_to_camera_from_matrix_world(scaled)
    np.testing.assert_allclose(w2c, geometry.world_to_camera_from_matrix_world(POSE), atol=1e-12)
    np.testing.assert_allclose(geometry.camera_to_world(w2c) @ w2c, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(geometry.camera_to_world(w2c)[:3, 3], POSE[:3, 3])


def test_point_on_optical_axis_lands_on_principal_point():
    K = geometry.intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", 64, 48, shift_x=0.1, shift_y=-0.05)
    forward = -POSE[:3, 2]
    uv, z = geometry.project_points(K, geometry.world_to_camera_from_matrix_world(POSE),
                                    POSE[:3, 3] + 4.0 * forward)
    np.testing.assert_allclose(uv[0], K[:2, 2], atol=1e-9)
    assert z[0] == pytest.approx(4.0)
    assert K[0, 2] == pytest.approx(32 - 0.5 - 0.1 * 64)
    assert K[1, 2] == pytest.approx(24 - 0.5 - 0.05 * 64)


@pytest.mark.parametrize("fit, width, height, sensor", [
    ("HORIZONTAL", 64, 48, 36.0), ("AUTO", 64, 48, 36.0), ("HORIZONTAL", 48, 64, 36.0),
])
def test_edge_of_horizontal_fov_lands_on_image_border(fit, width, height, sensor):
    lens = 50.0
    K = geometry.intrinsics_from_blender(lens, sensor, 24.0, fit, width, height)
    w2c = geometry.world_to_camera_from_matrix_world(np.eye(4))
    half = sensor / 2 / lens   # tan(hfov / 2): the sensor width spans the image width
    uv, _ = geometry.project_points(K, w2c, np.array([[-half * 5, 0, -5.0], [half * 5, 0, -5.0]]))
    np.testing.assert_allclose(uv[:, 0], [-0.5, width - 0.5], atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], height / 2 - 0.5, atol=1e-9)


def test_vertical_fit_and_auto_portrait_span_the_height():
    w2c = geometry.world_to_camera_from_matrix_world(np.eye(4))
    top = np.array([[0.0, 12.0 / 50.0 * 2, -2.0]])   # tan = sensor_height / 2 / lens, at depth 2
    K = geometry.intrinsics_from_blender(50.0, 36.0, 24.0, "VERTICAL", 64, 48)
    assert geometry.project_points(K, w2c, top)[0][0, 1] == pytest.approx(-0.5)
    # AUTO on a portrait frame fits the height, but with the sensor *width*, as Blender does.
    K = geometry.intrinsics_from_blender(50.0, 36.0, 24.0, "AUTO", 48, 64)
    top = np.array([[0.0, 18.0 / 50.0 * 2, -2.0]])
    assert geometry.project_points(K, w2c, top)[0][0, 1] == pytest.approx(-0.5)
    assert K[0, 0] == pytest.approx(K[1, 1])


def test_shift_moves_the_frame_by_fractions_of_the_fit_dimension():
    lens, sensor, shift = 50.0, 36.0, 0.2
    K = geometry.intrinsics_from_blender(lens, sensor, 24.0, "HORIZONTAL", 64, 48, shift_x=shift, shift_y=shift)
    w2c = geometry.world_to_camera_from_matrix_world(np.eye(4))
    # Blender's view plane for a width fit, at unit distance: x in [(-0.5 + shift) s, (0.5 + shift) s], s = sensor/lens.
    s = sensor / lens
    right_top = np.array([[(0.5 + shift) * s, (48 / 64 * 0.5 + shift) * s, -1.0]])
    np.testing.assert_allclose(geometry.project_points(K, w2c, right_top)[0][0], [63.5, -0.5], atol=1e-9)


def test_pixel_aspect_stretches_the_other_axis():
    K = geometry.intrinsics_from_blender(50.0, 36.0, 24.0, "HORIZONTAL", 64, 48, pixel_aspect_x=2.0)
    assert K[1, 1] == pytest.approx(2.0 * K[0, 0])
    # AUTO compares the displayed sizes: 100 x (80 * 2) is taller than wide, so the height fits the sensor width.
    K = geometry.intrinsics_from_blender(50.0, 36.0, 24.0, "AUTO", 100, 80, pixel_aspect_y=2.0)
    assert K[1, 1] == pytest.approx(50.0 / 36.0 * 80)
    assert K[0, 0] == pytest.approx(2.0 * K[1, 1])


def test_bad_sensor_fit_is_rejected():
    with pytest.raises(ValueError, match="sensor_fit"):
        geometry.intrinsics_from_blender(50.0, 36.0, 24.0, "DIAGONAL", 64, 48)


def test_unproject_then_project_is_identity():
    K = geometry.intrinsics_from_blender(28.0, 36.0, 24.0, "AUTO", 20, 15, shift_x=0.05)
    w2c = geometry.world_to_camera_from_matrix_world(POSE)
    depth = np.random.default_rng(0).uniform(0.5, 30.0, (15, 20))
    points = geometry.unproject_depth(K, w2c, depth)
    uv, z = geometry.project_points(K, w2c, points.reshape(-1, 3))
    v, u = np.mgrid[0:15, 0:20]
    np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], 1), atol=1e-8)
    np.testing.assert_allclose(z, depth.ravel(), rtol=1e-12)


def test_flow_of_camera_truck_over_a_fronto_parallel_plane_is_uniform():
    K = geometry.intrinsics_from_blender(50.0, 36.0, 24.0, "AUTO", 32, 24)
    w2c0 = geometry.world_to_camera_from_matrix_world(np.eye(4))
    w2c1 = geometry.world_to_camera_from_matrix_world(blender_matrix_world((0.2, 0.1, 0.0), (0, 0, 0)))
    depth = np.full((24, 32), 5.0)
    flow, valid = geometry.flow_from_depth(depth, K, w2c0, K, w2c1)
    f = K[0, 0]
    # Camera moves right and up by (0.2, 0.1) m: the scene moves left by f*0.2/5 and down by f*0.1/5.
    np.testing.assert_allclose(flow[valid], np.broadcast_to([-f * 0.2 / 5, f * 0.1 / 5], flow[valid].shape),
                               atol=1e-4)
    v, u = np.mgrid[0:24, 0:32]
    np.testing.assert_array_equal(valid, (u - f * 0.2 / 5 >= -0.5) & (v + f * 0.1 / 5 < 23.5))
    assert not valid[:, 0].any() and not valid[-1].any() and valid[0, -1]   # left and bottom edges leave


def test_flow_between_identical_cameras_is_zero_and_background_is_invalid():
    K = geometry.intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", 16, 12)
    w2c = geometry.world_to_camera_from_matrix_world(POSE)
    depth = np.random.default_rng(1).uniform(1.0, 9.0, (12, 16))
    depth[:3] = 0.0
    flow, valid = geometry.flow_from_depth(depth, K, w2c, K, w2c)
    assert not valid[:3].any() and valid[3:].all()
    np.testing.assert_allclose(flow, 0.0, atol=1e-4)


def test_points_behind_the_next_camera_are_invalid():
    K = geometry.intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", 16, 12)
    w2c0 = geometry.world_to_camera_from_matrix_world(np.eye(4))
    w2c1 = geometry.world_to_camera_from_matrix_world(blender_matrix_world((0, 0, -10.0), (0, 0, 0)))
    _, valid = geometry.flow_from_depth(np.full((12, 16), 5.0), K, w2c0, K, w2c1)
    assert not valid.any()


def test_plucker_rays_are_unit_with_orthogonal_moments_and_centre_ray_is_forward():
    K = geometry.intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", 33, 25)  # odd sizes: principal point on a pixel
    w2c = geometry.world_to_camera_from_matrix_world(POSE)
    plucker = geometry.plucker_embedding(K, w2c, 25, 33)
    assert plucker.shape == (25, 33, 6)
    directions, moments = plucker[..., :3], plucker[..., 3:]
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(directions * moments, axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(directions[12, 16], -POSE[:3, 2], atol=1e-12)
    # The moment is the same for any point on the ray, so it really describes the ray, not its origin.
    origins, _ = geometry.pixel_rays(K, w2c, 25, 33)
    np.testing.assert_allclose(np.cross(origins + 3.0 * directions, directions), moments, atol=1e-12)
    np.testing.assert_allclose(origins[0, 0], POSE[:3, 3])


def test_rays_hit_the_unprojected_points():
    K = geometry.intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", 12, 9)
    w2c = geometry.world_to_camera_from_matrix_world(POSE)
    depth = np.random.default_rng(2).uniform(1.0, 9.0, (9, 12))
    origins, directions = geometry.pixel_rays(K, w2c, 9, 12)
    points = geometry.unproject_depth(K, w2c, depth)
    along = points - origins
    np.testing.assert_allclose(np.cross(along, directions), 0.0, atol=1e-9)
    assert np.all(np.sum(along * directions, axis=-1) > 0)


def test_intrinsics_match_blenders_own_view_frame():
    """Blender's camera frame corners, for every sensor fit, shift and pixel aspect, land on the image corners."""
    import itertools

    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location, camera.rotation_euler = (1.0, -6.0, 2.0), (1.2, 0.1, 0.5)
    data, render = camera.data, scene.render
    data.lens, data.sensor_width, data.sensor_height = 40.0, 36.0, 20.0
    bpy.context.view_layer.update()
    matrix_world = np.array(camera.matrix_world)
    w2c = geometry.world_to_camera_from_matrix_world(matrix_world)
    for fit, (width, height), aspect, shift in itertools.product(
            geometry.SENSOR_FITS, [(64, 48), (48, 64)], [(1.0, 1.0), (2.0, 1.0), (1.0, 3.0)], [(0, 0), (0.1, -0.2)]):
        data.sensor_fit, (data.shift_x, data.shift_y) = fit, shift
        render.resolution_x, render.resolution_y = width, height
        render.pixel_aspect_x, render.pixel_aspect_y = aspect
        K = geometry.intrinsics_from_blender(data.lens, data.sensor_width, data.sensor_height, fit, width, height,
                                             *shift, *aspect)
        corners = np.array([list(v) + [1.0] for v in data.view_frame(scene=scene)])   # camera-local, Blender
        uv, z = geometry.project_points(K, w2c, (corners @ matrix_world.T)[:, :3])
        # view_frame order: top right, bottom right, bottom left, top left.
        expected = [[width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5], [-0.5, -0.5]]
        np.testing.assert_allclose(uv, expected, atol=1e-4, err_msg=f"{fit} {width}x{height} {aspect} {shift}")
        assert np.all(z > 0)


def test_flow_from_depth_matches_cycles_vector_pass(tmp_path):
    """On a real render of a static scene under a camera truck, our flow is Blender's own motion vectors."""
    from backend.blender.scenes import build_test_scene
    from cinepregen_addon import render_passes
    from cinepregen_addon.core import shot_bundle

    scene = build_test_scene(n_objects=3, moving=False, camera_move="truck", frame_end=3, resolution=(64, 36))
    spec = render_passes.ShotRenderSpec(name="truck", camera_name=scene["camera"], frame_start=1, frame_end=3,
                                        resolution=(64, 36))
    bundle = shot_bundle.read_bundle(render_passes.render_shot_bundle(scene["scene"], spec, tmp_path / "truck"))
    first, second = bundle.cameras[0], bundle.cameras[1]
    flow, valid = geometry.flow_from_depth(bundle.passes[0].depth, first.K, first.world_to_camera, second.K,
                                           second.world_to_camera)
    vector = bundle.passes[0].vector
    blender_flow = np.stack([-vector[..., 2], vector[..., 3]], axis=-1)
    assert valid.mean() > 0.9 and np.abs(flow[valid]).max() > 1.0
    np.testing.assert_allclose(flow[valid], blender_flow[valid], atol=1e-3)
