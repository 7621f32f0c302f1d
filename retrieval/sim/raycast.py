"""One instant frame of every row: exact ray casting of the procedural objects, and shading.

Rays are parallel (a weak-perspective camera: depth only changes the scale), so for one instant
frame every plane or quadric term of the ray test is an affine or quadratic function of the pixel
coordinates: per pixel only those polynomials, a square root and a few min/max are evaluated, in
a small window around the object. Only exactly rounded operations touch pixels and no reduction
mixes rows, so a row renders to the same bits alone or in any batch. `retrieval.sim.render`
accumulates these frames into motion-blurred exposures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from retrieval.sim.objects import ObjectSpec
from retrieval.sim.photos import PhotoRows, photo_texture
from retrieval.sim.trajectory import Trajectory

_EPS = 1e-7
_INF = float("inf")


def _stack(values: Sequence, device: torch.device, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)


class ObjectBatch:
    """Per-row object and motion parameters as tensors (rows = trajectories)."""

    def __init__(self, objects: list[ObjectSpec], motions: list[Trajectory], device: torch.device,
                 photos: PhotoRows | None = None):
        f32 = torch.float32
        self.photos = photos  # None: every row wears its procedural texture
        self.active = _stack([o.part_active for o in objects], device, torch.bool)
        self.quadric = _stack([o.quadric for o in objects], device, f32)
        self.normals = _stack([o.plane_normals for o in objects], device, f32)
        self.offsets = _stack([o.plane_offsets for o in objects], device, f32)
        self.centers = _stack([o.part_centers for o in objects], device)
        self.colors = _stack([o.colors for o in objects], device, f32)
        self.pattern = _stack([o.pattern for o in objects], device, f32)
        self.specular = _stack([o.specular for o in objects], device, f32)
        self.start = _stack([m.start for m in motions], device)
        self.velocity = _stack([m.velocity for m in motions], device)
        self.radius = _stack([m.radius for m in motions], device)
        self.scale_rate = _stack([m.scale_rate for m in motions], device)
        self.quat0 = _stack([m.quat_start for m in motions], device)
        self.quat1 = _stack([m.quat_end for m in motions], device)
        self.light = _stack([m.light for m in motions], device)
        self.ambient = _stack([m.ambient for m in motions], device, f32)
        self.curve = _stack([m.camera_curve for m in motions], device, torch.int64)

    def rows(self, start: int, stop: int) -> ObjectBatch:
        """Rows start..stop-1 (rows are sorted by how many frames they need)."""
        view = object.__new__(ObjectBatch)
        for name, value in vars(self).items():
            setattr(view, name, None if value is None else value.rows(start, stop) if name == "photos"
                    else value[start:stop])
        return view


def _rotation(quat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [B, 3, 3] (object -> world) from unit quaternions [B, 4]."""
    w, x, y, z = quat.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over the last axis (size 3), summed in a fixed order.

    Used instead of einsum/matmul, whose BLAS kernels may round differently with the
    batch size, and instead of reductions, so every row is computed the same way alone
    or in a batch.
    """
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / _dot(v, v).sqrt()[..., None].clamp(min=1e-12)


def _solid_texture(batch: ObjectBatch, point: torch.Tensor) -> torch.Tensor:
    """Linear RGB [B, 3, C, C] of the object's solid texture at object-frame `point` [B,C,C,3]."""
    pattern = batch.pattern[:, None, None, :]
    along = _dot(point, pattern[..., 0:3])
    across = _dot(point, pattern[..., 3:6])
    stripe_f, duty, cross_f = pattern[..., 6], pattern[..., 7], pattern[..., 8]
    dot_f, dot_r, split = pattern[..., 9], pattern[..., 10], pattern[..., 11]
    stripe_phase = along * stripe_f + pattern[..., 12]
    stripes = (stripe_phase - stripe_phase.floor()) < duty
    cross_phase = across * cross_f + pattern[..., 13]
    crosses = (cross_phase - cross_phase.floor()) < 0.5
    marked = ((stripe_f > 0) & (stripes ^ ((cross_f > 0) & crosses))) | ((split > 0) & (along > 0))
    cell = point * dot_f[..., None] + pattern[..., 14:15]
    offset = cell - cell.floor() - 0.5
    dots = (dot_f > 0) & (_dot(offset, offset) < dot_r * dot_r)
    colors = batch.colors[:, :, None, None, :]  # [B, 3 colours, 1, 1, rgb]
    color = torch.where(marked[..., None], colors[:, 1], colors[:, 0])
    color = torch.where(dots[..., None], colors[:, 2], color)
    return color.permute(0, 3, 1, 2)


class RayHits(NamedTuple):
    """What the rays of one instant frame see, per pixel of each row's C x C window."""

    hit: torch.Tensor  # bool [B, C, C]
    point: torch.Tensor  # float32 [B, C, C, 3] object-frame surface point (meaningless where not hit)
    normal: torch.Tensor  # float32 [B, C, C, 3] object-frame unit normal
    rotation: torch.Tensor  # float64 [B, 3, 3] object -> world at this instant
    origin: torch.Tensor  # int64 [B, 2] (x0, y0) image position of each window


def cast_rays(batch: ObjectBatch, tau: float, steps: int, crop: int) -> RayHits:
    """Ray cast one instant frame; the geometry alone, shared by shading and correspondences."""
    device = batch.start.device
    fraction = tau / steps
    quat = batch.quat0 + (batch.quat1 - batch.quat0) * fraction
    quat = quat / (_dot(quat[..., :3], quat[..., :3]) + quat[..., 3] * quat[..., 3]).sqrt()[:, None]
    rot = _rotation(quat)  # float64 [B, 3, 3]
    scale = batch.radius * (1 + batch.scale_rate * tau)
    center = batch.start + batch.velocity * tau
    origin = center.floor().long() - crop // 2  # [B, 2] (x0, y0) of the window
    # Object-frame ray origin o = px*ex + py*ey + o0, direction d (constant per frame).
    ex = rot[:, 0, :] / scale[:, None]
    ey = rot[:, 1, :] / scale[:, None]
    o0 = -(center[:, 0:1] * rot[:, 0, :] + center[:, 1:2] * rot[:, 1, :]) / scale[:, None]
    d = rot[:, 2, :]

    # Per part: subtract the part centre; per plane: affine coefficients of t.
    o0_part = o0[:, None, :] - batch.centers  # [B, P, 3]
    normals = batch.normals.double()
    denom = _dot(normals, d[:, None, None, :])
    denom = torch.where(denom.abs() < _EPS, torch.full_like(denom, _EPS), denom)
    a_plane = -_dot(normals, ex[:, None, None, :]) / denom
    b_plane = -_dot(normals, ey[:, None, None, :]) / denom
    c_plane = (batch.offsets.double() - _dot(normals, o0_part[:, :, None, :])) / denom
    entering = (denom < 0)[..., None, None]

    coords = torch.arange(crop, device=device, dtype=torch.float32) + 0.5
    px = (origin[:, 0, None].float() + coords)[:, None, None, None, :]  # [B,1,1,1,C]
    py = (origin[:, 1, None].float() + coords)[:, None, None, :, None]  # [B,1,1,C,1]
    f32 = torch.float32
    t_planes = a_plane.to(f32)[..., None, None] * px + b_plane.to(f32)[..., None, None] * py
    t_planes = t_planes + c_plane.to(f32)[..., None, None]  # [B, P, K, C, C]
    plane_in, plane_index = torch.where(entering, t_planes, -_INF).max(dim=2)
    plane_out = torch.where(entering, _INF, t_planes).amin(dim=2)  # [B, P, C, C]

    # Quadric sum_i q_i (o_i + t d_i)^2 <= 1, o affine in (px, py).
    q = batch.quadric.double()
    px2, py2 = px[:, 0], py[:, 0]  # [B, 1, 1, C], [B, 1, C, 1]
    o_part = [
        ex[:, None, i, None, None].to(f32) * px2
        + ey[:, None, i, None, None].to(f32) * py2
        + o0_part[:, :, i, None, None].to(f32)
        for i in range(3)
    ]  # 3 x [B, P, C, C]
    quad_a = _dot(q, d[:, None, :] * d[:, None, :]).to(f32)[..., None, None]  # [B, P, 1, 1]
    qd = (q * d[:, None, :]).to(f32)
    quad_b = 2 * (o_part[0] * qd[..., 0, None, None] + o_part[1] * qd[..., 1, None, None]
                  + o_part[2] * qd[..., 2, None, None])
    qf = batch.quadric
    quad_c = (o_part[0] * o_part[0] * qf[..., 0, None, None] + o_part[1] * o_part[1]
              * qf[..., 1, None, None] + o_part[2] * o_part[2] * qf[..., 2, None, None]) - 1
    curved = quad_a > 1e-6
    disc = quad_b * quad_b - 4 * quad_a * quad_c
    root = disc.clamp(min=0).sqrt()
    two_a = torch.where(curved, 2 * quad_a, torch.ones_like(quad_a))
    quad_in = torch.where(curved, (-quad_b - root) / two_a, -_INF)
    quad_out = torch.where(curved, (-quad_b + root) / two_a, _INF)
    quad_ok = torch.where(curved, disc >= 0, quad_c <= 0)

    t_in = torch.maximum(plane_in, quad_in)
    t_out = torch.minimum(plane_out, quad_out)
    hit_part = quad_ok & (t_in <= t_out) & batch.active[..., None, None]
    t_part = torch.where(hit_part, t_in, _INF)
    t_hit, part = t_part.min(dim=1)  # [B, C, C]
    hit = torch.isfinite(t_hit)
    t_hit = torch.where(hit, t_hit, torch.zeros_like(t_hit))

    # Surface point (object frame) and normal.
    part_index = part[:, None]
    from_quadric = torch.gather(quad_in >= plane_in, 1, part_index)[:, 0]
    plane_k = torch.gather(plane_index, 1, part_index)[:, 0]
    flat_normals = batch.normals.flatten(1, 2)  # [B, P*K, 3]
    k_index = (part * batch.normals.shape[2] + plane_k).flatten(1)
    plane_normal = torch.gather(flat_normals, 1, k_index[..., None].expand(-1, -1, 3))
    plane_normal = plane_normal.view(*part.shape, 3)
    point_part = torch.stack(
        [torch.gather(o_part[i], 1, part_index)[:, 0] + t_hit * d[:, i, None, None].to(f32)
         for i in range(3)], -1
    )  # [B, C, C, 3]
    q_at = torch.gather(batch.quadric, 1, part[..., None].flatten(1, 2).expand(-1, -1, 3))
    gradient = point_part * q_at.view(*part.shape, 3)
    gradient = _unit(gradient)
    normal = torch.where(from_quadric[..., None], gradient, plane_normal)
    center_at = torch.gather(batch.centers.to(f32), 1, part[..., None].flatten(1, 2).expand(-1, -1, 3))
    point = point_part + center_at.view(*part.shape, 3)
    return RayHits(hit, point, normal, rot, origin)


def render_frame(batch: ObjectBatch, tau: float, steps: int, crop: int):
    """Object layer of one instant frame: premultiplied RGB + coverage [B, 4, C, C], origins."""
    hit, point, normal, rot, origin = cast_rays(batch, tau, steps, crop)
    device = batch.start.device
    f32 = torch.float32
    # Lambert + Blinn specular, light and view direction moved into the object frame.
    rot_t = rot.transpose(1, 2)
    light = _dot(rot_t, batch.light[:, None, :]).to(f32)  # world -> object frame
    view = torch.tensor([0.0, 0.0, -1.0], device=device, dtype=torch.float64)
    halfway = _dot(rot_t, _unit(batch.light + view)[:, None, :]).to(f32)
    lambert = _dot(normal, light[:, None, None, :]).clamp(min=0)
    shine = _dot(normal, halfway[:, None, None, :]).clamp(min=0)
    for _ in range(4):  # shine ** 16 by squaring
        shine = shine * shine
    ambient = batch.ambient[:, None, None]
    shade = ambient + (1 - ambient) * lambert
    texture = _solid_texture(batch, point)
    if batch.photos is not None:
        texture = photo_texture(batch.photos, point, normal, texture)
    color = texture * shade[:, None] + (batch.specular[:, None, None] * shine)[:, None]
    coverage = hit.to(f32)[:, None]
    return torch.cat([color * coverage, coverage], dim=1), origin


_FRAME_CHUNK_ELEMENTS = 4_000_000  # ray-test temporaries per chunk (16 MB of float32)


def render_frame_chunked(batch: ObjectBatch, tau: float, steps: int, crop: int):
    """`render_frame` over row chunks, keeping temporaries small enough to be reused."""
    per_row = batch.normals.shape[1] * batch.normals.shape[2] * crop * crop
    chunk = max(1, _FRAME_CHUNK_ELEMENTS // per_row)
    rows = batch.start.shape[0]
    if rows <= chunk:
        return render_frame(batch, tau, steps, crop)
    parts = [render_frame(batch.rows(start, start + chunk), tau, steps, crop)
             for start in range(0, rows, chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
