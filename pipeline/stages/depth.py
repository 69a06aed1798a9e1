"""Virtual depth cameras (the depth frames PINA, seed 004, learns from): render a mesh frame with open3d
ray casting, apply a sensor model, back-project to oriented points whose normals come from the depth image.

The rig, in the frame's canonical frame (pelvis at the origin, facing +Z, Y up): ``views`` cameras at ``distance``
from the pelvis, evenly spaced in azimuth about +Y starting in front of the body (``views=1`` is the front view
only), raised by ``elevation_deg``, looking at the pelvis; pinhole, square pixels, vertical field of view
``fov_y_deg``. With ``rig="world"`` the same rig keeps the world's orientation instead of the body's (its first
camera on the world's +Z side of the pelvis, ``pipeline.runner.depthstores.depth_frame``): a static sensor in front of the
capture space, which sees the side of the body that each frame's heading turns to it.

The sensor model, per camera (``apply_sensor``), in this order:

1. depth ``z`` is the distance along the optical axis to the first surface hit; no hit or ``z > max_depth`` is
   background;
2. noise along the ray: ``z += sigma(z) * e``, ``sigma(z) = noise_a + noise_b (z - 0.4)^2`` (the axial noise of a
   structured-light sensor, Nguyen, Izadi and Lovell 2012: 1.2 mm + 1.9 mm/m^2), ``e`` standard normal truncated at
   ``noise_clip``, so no point is farther than ``noise_clip * sigma(z)`` from the surface along its ray;
3. quantisation of depth to multiples of ``quantum``;
4. depth discontinuities: a pixel is lost when a 4-neighbour is background or differs in depth by more than
   ``edge_jump`` (mixed pixels at silhouettes and occlusion boundaries);
5. grazing angles: with incidence angle ``theta`` between the ray and the true surface normal, a pixel is kept with
   probability 1 below ``grazing_start_deg``, 0 beyond ``grazing_end_deg`` and linearly (in cos theta) between;
6. independent random dropout at rate ``dropout``.

Normals come from the depth image, never the mesh: the cross product of the back-projected points ``normal_step``
pixels to either side horizontally and vertically (one-sided where a neighbour is missing or across a jump larger
than ``edge_jump``; a pixel with no neighbour in a direction is dropped), turned towards the camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hipnet.pipeline.core.fields import doc


@dataclass(frozen=True)
class DepthSensor:
    """A rig of virtual depth cameras and its sensor model (module docstring). Field help is the CLI's help
    (``pipeline.core.fields``)."""

    views: int = doc(4, "Cameras evenly spaced in azimuth about the body, the first in front; 1 = the front view only.")
    rig: str = doc("body", "Where the rig stands: body (it turns with the body, so the first camera always faces its "
                          "front) or world (fixed in the world, the first camera on the world's +Z side of the pelvis: "
                          "a static sensor, which sees whatever side each frame's heading turns to it).")
    width: int = doc(640, "Image width (pixels).")
    height: int = doc(480, "Image height (pixels).")
    fov_y_deg: float = doc(60.0, "Vertical field of view (degrees).")
    distance: float = doc(2.5, "Camera distance from the pelvis (m).")
    elevation_deg: float = doc(0.0, "Camera elevation above the pelvis' horizontal plane (degrees).")
    noise_a: float = doc(0.0012, "Depth noise sigma(z) = a + b (z - 0.4)^2: a (m).")
    noise_b: float = doc(0.0019, "Depth noise sigma(z) = a + b (z - 0.4)^2: b (1/m).")
    noise_clip: float = doc(3.0, "Depth noise truncated at this many sigmas.")
    quantum: float = doc(0.001, "Depth quantisation step (m).")
    grazing_start_deg: float = doc(60.0, "Incidence angle where grazing dropouts start (degrees).")
    grazing_end_deg: float = doc(80.0, "Incidence angle beyond which every pixel drops out (degrees).")
    edge_jump: float = doc(0.03, "Depth jump to a 4-neighbour (or background) that loses a pixel (m).")
    dropout: float = doc(0.0, "Independent random dropout rate.")
    max_depth: float = doc(6.0, "Farthest depth measured (m).")
    normal_step: int = doc(2, "Pixels to either side that image normals are differenced over.")
    seed: int = doc(0, "Seed of the sensor noise (per frame: seed + frame name).")

    def __post_init__(self) -> None:
        for name in ("views", "width", "height", "normal_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"depth sensor: {name} must be positive, got {getattr(self, name)}")
        if self.rig not in ("body", "world"):
            raise ValueError(f"depth sensor: rig must be body or world, got {self.rig!r}")
        if not 0 < self.grazing_start_deg < self.grazing_end_deg <= 90:
            raise ValueError("depth sensor: need 0 < grazing_start_deg < grazing_end_deg <= 90, got "
                             f"{self.grazing_start_deg} and {self.grazing_end_deg}")
        if not 0 <= self.dropout < 1 or self.quantum < 0 or self.noise_a < 0 or self.noise_b < 0:
            raise ValueError("depth sensor: dropout must be in [0, 1), quantum and noise non-negative")

    def sigma(self, z: np.ndarray) -> np.ndarray:
        """Depth noise standard deviation at depth ``z`` (m)."""
        return self.noise_a + self.noise_b * (np.asarray(z) - 0.4) ** 2


class Camera(NamedTuple):
    centre: np.ndarray  # (3,)
    axes: np.ndarray  # (3, 3) columns: right, up, forward (world = centre + axes @ x_camera)
    rays: np.ndarray  # (H, W, 3) camera-frame ray directions with unit forward component (t along them = depth)


class DepthView(NamedTuple):
    points: np.ndarray  # (P, 3) back-projected points, world frame of the mesh
    normals: np.ndarray  # (P, 3) unit normals from the depth image, towards the camera
    incidence_cos: np.ndarray  # (P,) cos of the ray's angle to the true surface normal (for tests and reports)


def rig(sensor: DepthSensor) -> list[Camera]:
    """The cameras of ``sensor`` about the origin (canonical frame: the body faces +Z)."""
    t = np.tan(np.radians(sensor.fov_y_deg) / 2)
    half_h, half_w = sensor.height / 2, sensor.width / 2
    x = (np.arange(sensor.width) + 0.5 - half_w) / half_h * t
    y = -(np.arange(sensor.height) + 0.5 - half_h) / half_h * t
    rays = np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.ones((1, 1))), axis=-1)
    e = np.radians(sensor.elevation_deg)
    cameras = []
    for k in range(sensor.views):
        phi = 2 * np.pi * k / sensor.views
        centre = sensor.distance * np.array([np.sin(phi) * np.cos(e), np.sin(e), np.cos(phi) * np.cos(e)])
        forward = -centre / np.linalg.norm(centre)
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        cameras.append(Camera(centre, np.stack([right, np.cross(right, forward), forward], axis=1), rays))
    return cameras


def cast(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(depth (H, W), inf where nothing is hit; true surface normals (H, W, 3)) of a mesh seen by ``camera``."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.asarray(faces, dtype=np.uint32)))
    h, w, _ = camera.rays.shape
    d = camera.rays.reshape(-1, 3) @ camera.axes.T
    rays = np.concatenate([np.broadcast_to(camera.centre, d.shape), d], axis=1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    depth = hit["t_hit"].numpy().astype(np.float64).reshape(h, w)
    return depth, hit["primitive_normals"].numpy().astype(np.float64).reshape(h, w, 3)


def _neighbour_jump(z: np.ndarray, valid: np.ndarray, limit: float) -> np.ndarray:
    """(H, W) True where a 4-neighbour is background or differs by more than ``limit`` (the image border is
    neither: a pixel there is compared with the neighbours it has)."""
    zp = np.pad(np.where(valid, z, np.inf), 1, mode="edge")
    centre = zp[1:-1, 1:-1]
    out = np.zeros(z.shape, dtype=bool)
    for nb in (zp[:-2, 1:-1], zp[2:, 1:-1], zp[1:-1, :-2], zp[1:-1, 2:]):
        with np.errstate(invalid="ignore"):
            out |= ~np.isfinite(nb) | (np.abs(nb - centre) > limit)
    return out


def apply_sensor(depth: np.ndarray, incidence_cos: np.ndarray, sensor: DepthSensor,
                 rng: np.random.Generator) -> np.ndarray:
    """The measured depth image (H, W), NaN where nothing is measured, from the true depth (inf = background) and
    the cosine of each pixel's incidence angle (module docstring, steps 1-6). Draws ``rng`` in a fixed order."""
    hit = np.isfinite(depth) & (depth <= sensor.max_depth)
    z = np.where(hit, depth, 0.0)
    e = rng.standard_normal(z.shape)
    e = np.clip(e, -sensor.noise_clip, sensor.noise_clip)
    z = z + sensor.sigma(z) * e
    if sensor.quantum > 0:
        z = np.round(z / sensor.quantum) * sensor.quantum
    keep = hit & ~_neighbour_jump(z, hit, sensor.edge_jump)
    c0, c1 = np.cos(np.radians(sensor.grazing_start_deg)), np.cos(np.radians(sensor.grazing_end_deg))
    p_keep = np.clip((np.abs(incidence_cos) - c1) / (c0 - c1), 0.0, 1.0)
    keep &= rng.random(z.shape) < p_keep
    keep &= rng.random(z.shape) >= sensor.dropout
    return np.where(keep, z, np.nan)


def image_normals(z: np.ndarray, rays: np.ndarray, step: int, jump: float) -> np.ndarray:
    """(H, W, 3) camera-frame unit normals of a depth image (NaN = no measurement), towards the camera; NaN where
    a direction has no neighbour ``step`` pixels away on the same surface."""
    x = z[..., None] * rays  # H x W x 3 camera-frame points

    def diff(axis: int) -> np.ndarray:
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[axis] = (step, step)
        xp = np.pad(x, pad, constant_values=np.nan)
        zp = np.pad(z, pad[:2], constant_values=np.nan)
        n = z.shape[axis]
        ahead = np.take(xp, np.arange(2 * step, n + 2 * step), axis=axis)
        behind = np.take(xp, np.arange(0, n), axis=axis)
        z_ahead = np.take(zp, np.arange(2 * step, n + 2 * step), axis=axis)
        z_behind = np.take(zp, np.arange(0, n), axis=axis)
        with np.errstate(invalid="ignore"):
            ok_a = np.isfinite(z_ahead) & (np.abs(z_ahead - z) <= jump)
            ok_b = np.isfinite(z_behind) & (np.abs(z_behind - z) <= jump)
        d = np.where((ok_a & ok_b)[..., None], ahead - behind,
                     np.where(ok_a[..., None], ahead - x, np.where(ok_b[..., None], x - behind, np.nan)))
        return d

    n = np.cross(diff(1), diff(0))  # along the columns x along the rows; turned to face the camera below
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    towards = np.einsum("hwi,hwi->hw", n, x) > 0
    return np.where(towards[..., None], -n, n)


def render_view(vertices: np.ndarray, faces: np.ndarray, camera: Camera, sensor: DepthSensor,
                rng: np.random.Generator) -> DepthView:
    """One camera's measured, back-projected and oriented points of a mesh (V, 3), (F, 3)."""
    depth, true_normals = cast(vertices, faces, camera)
    d = camera.rays / np.linalg.norm(camera.rays, axis=-1, keepdims=True)
    incidence = np.abs(np.einsum("hwi,hwi->hw", true_normals, d @ camera.axes.T))
    z = apply_sensor(depth, incidence, sensor, rng)
    n_cam = image_normals(z, camera.rays, sensor.normal_step, sensor.edge_jump)
    ok = np.isfinite(z) & np.isfinite(n_cam).all(axis=-1)
    points = camera.centre + (z[ok][:, None] * camera.rays[ok]) @ camera.axes.T
    return DepthView(points, n_cam[ok] @ camera.axes.T, incidence[ok])


def render_depth(vertices: np.ndarray, faces: np.ndarray, sensor: DepthSensor,
                 rng: np.random.Generator) -> DepthView:
    """Every camera of the rig on a mesh in the canonical frame: the merged oriented points (view by view)."""
    views = [render_view(vertices, faces, cam, sensor, rng) for cam in rig(sensor)]
    return DepthView(*(np.concatenate([getattr(v, f) for v in views]) for f in DepthView._fields))
