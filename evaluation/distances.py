"""Exact surface distances of binary masks (hd95, asd), batched on any torch device.

Why not scipy's distance transform, as medpy does: it runs on the CPU, one slice at a time,
and needs a device-to-host copy per slice. Here the distances are exact Euclidean distances
computed for all slices of a batch at once on the tensors' device. The caller
(:mod:`evaluation.metrics`) first crops the batch to the bounding box of its foreground (exact).
A row pass then gives, for every pixel, the horizontal distance to the nearest surface pixel of
the other mask in its row (cumulative max/min, O(HW)), and the squared distance of a surface
pixel is the minimum over rows of ``dy² + dx²`` (the exact separable decomposition of the
Euclidean distance transform), evaluated only at surface pixels, first over nearby rows and
over all rows only where a nearby minimum cannot be exact (O(surface · window), in bounded
chunks). Integer
arithmetic keeps every squared distance exact; there are a handful of host synchronisations
per call (the crop, ``nonzero``, the window levels), never one per slice, and no Python loop
over slices. On a GPU this is a few dozen kernels per batch; on 2 shared CPU cores, 300 slices
of 384x384 take about 1.5 s for good predictions of a disk-like organ and up to ~7 s for
independent noisy masks, against 4-7 s for medpy there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Upper bound on the elements of one (surface pixels x rows) block of the nearest-distance
# search: temporaries stay near 2**23 elements (32-64 MB) whatever the surface sizes.
_CHUNK_ELEMENTS = 2**23
# Half-widths of the row windows searched before all rows (see _nearest_sq_distance).
_WINDOWS = (1, 4, 16, 64)
# Cost of one gathered element of the windowed search in dense elementwise operations (measured
# on the CPU: ~20; the choice only affects speed, both searches are exact).
_GATHER_COST = 16
# numpy.percentile(..., 95) as medpy's hd95 calls it.
_HD_QUANTILE = 95 / 100


def surface(mask: Tensor) -> Tensor:
    """Surface pixels of (N, H, W) slices or (N, D, H, W) volumes (bool, same shape): ``mask``
    XOR its erosion by the cross of connectivity 1 (4 neighbours in 2-D, 6 in 3-D).

    Pixels outside the slice (volume) count as background (scipy's ``border_value=0``).
    """
    spatial = mask.dim() - 1
    p = F.pad(mask, (1, 1) * spatial)
    inner = tuple(slice(1, -1) for _ in range(spatial))
    eroded = p[(slice(None), *inner)].clone()
    for d in range(spatial):
        for shift in (slice(None, -2), slice(2, None)):
            index = list(inner)
            index[d] = shift
            eroded &= p[(slice(None), *index)]
    return mask & ~eroded


def _row_distance(border: Tensor) -> Tensor:
    """Horizontal distance to the nearest border pixel of the same row.

    Args:
        border: (M, D, H, W) bool.

    Returns:
        (M, D, H, W) int32 ``min |x - x'|`` over border pixels (z, y, x') of row (z, y);
        ``D + H + W`` (more than any in-volume distance) where the row has no border pixel.
    """
    d, h, w = border.shape[1:]
    far = d + h + w
    # Scans run along the contiguous last dimension: several times faster on the CPU.
    cols = torch.arange(w, device=border.device, dtype=torch.int32)
    left = torch.where(border, cols, cols.new_tensor(-far)).cummax(dim=3).values
    right = torch.where(border, cols, cols.new_tensor(w + far)).flip(3).cummin(dim=3).values
    return torch.minimum(cols - left, right.flip(3) - cols).clamp_max(far)


def _nearest_sq_distance(points: Tensor, row_dist: Tensor) -> Tensor:
    """Exact squared Euclidean distance from each point to the nearest border pixel.

    Args:
        points: (Q, 4) int64 (volume m, slice z, row y, column x).
        row_dist: (M, D, H, W) int32 from :func:`_row_distance` of the border searched.

    Returns:
        (Q,) int32 ``min over rows (z', y') of (z - z')^2 + (y - y')^2 + row_dist[m, z', y', x]^2``.
    """
    d, h = row_dist.shape[1:3]
    best = torch.empty(points.shape[0], dtype=torch.int32, device=points.device)
    todo = torch.arange(points.shape[0], device=points.device)
    # Most surface pixels have a near partner: search rows within +-k (in y and z) first. A
    # minimum d^2 <= (k+1)^2 found there is exact, since every row outside has dy^2 or dz^2 >=
    # (k+1)^2; only the remaining points move on to a wider search (one host sync per level).
    # Elements of the dense transform over every volume (an upper bound of its cost); a gathered
    # element of the windowed search costs about _GATHER_COST dense ones (2 CPU cores).
    dense_cost = row_dist.numel() * (h + d)
    for k in _WINDOWS:
        kz = min(k, d - 1)
        width = (2 * kz + 1) * (2 * k + 1)
        if 2 * k + 1 >= max(h, d) or todo.numel() * width * _GATHER_COST > dense_cost:
            break
        dz, dy = torch.meshgrid(
            torch.arange(-kz, kz + 1, device=points.device),
            torch.arange(-k, k + 1, device=points.device),
            indexing="ij",
        )
        sq = _min_over_rows(points[todo], row_dist, torch.stack([dz.flatten(), dy.flatten()]))
        best[todo] = sq
        todo = todo[sq > (k + 1) ** 2]
        if todo.numel() == 0:
            return best
    best[todo] = _far_sq_distance(points[todo], row_dist)
    return best


def _far_sq_distance(points: Tensor, row_dist: Tensor) -> Tensor:
    """:func:`_nearest_sq_distance` for points beyond every window: a search over all rows per
    point, or, when that is costlier (many far points, e.g. a whole-volume false positive), the
    dense separable transform of the volumes holding them (min over y, then over z)."""
    d, h, w = row_dist.shape[1:]
    volumes, local = points[:, 0].unique(return_inverse=True)
    if points.shape[0] * d * h * _GATHER_COST <= volumes.numel() * d * h * w * (h + d):
        return _min_over_rows(points, row_dist, None)
    far = (d + h + w) ** 2  # above every in-volume squared distance; keeps int32 from overflowing
    dense = row_dist[volumes].square()
    for dim in (2, 1):  # rows, then slices
        dense = _min_plus_square(dense, dim).clamp_max_(far)
    return dense[local, points[:, 1], points[:, 2], points[:, 3]]


def _min_plus_square(values: Tensor, dim: int) -> Tensor:
    """``out[..., i, ...] = min over j of (i - j)^2 + values[..., j, ...]`` along ``dim`` of an
    (M, D, H, W) int32 tensor, in chunks of output indices of bounded size."""
    n = values.shape[dim]
    moved = values.movedim(dim, -1).unsqueeze(-2)  # (..., 1, n): j last
    index = torch.arange(n, device=values.device, dtype=torch.int32)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, values.numel()))
    out = []
    for start in range(0, n, chunk):
        i = index[start : start + chunk, None]  # (c, 1)
        out.append((moved + (i - index).square()).amin(dim=-1))  # (..., c)
    return torch.cat(out, dim=-1).movedim(-1, dim)


def _min_over_rows(points: Tensor, row_dist: Tensor, offsets: Tensor | None) -> Tensor:
    """min of dz^2 + dy^2 + dx^2 over the rows ``(z, y) + offsets`` ((2, K) int64, clamped to
    the volume), or over every row when ``offsets`` is None; computed in chunks of bounded size."""
    d, h = row_dist.shape[1:3]
    if offsets is None:
        zs, ys = torch.meshgrid(
            torch.arange(d, device=points.device),
            torch.arange(h, device=points.device),
            indexing="ij",
        )
        rows = torch.stack([zs.flatten(), ys.flatten()])
    width = (d * h) if offsets is None else offsets.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // width)
    out = [torch.empty(0, dtype=torch.int32, device=points.device)]
    for start in range(0, points.shape[0], chunk):
        m, z, y, x = points[start : start + chunk, :, None].unbind(1)
        if offsets is None:
            rz, ry = rows[0], rows[1]
        else:
            rz, ry = (z + offsets[0]).clamp(0, d - 1), (y + offsets[1]).clamp(0, h - 1)
        dx = row_dist[m, rz, ry, x]
        dz, dy = (rz - z).to(torch.int32), (ry - y).to(torch.int32)
        out.append((dz * dz + dy * dy + dx * dx).amin(dim=1))
    return torch.cat(out)


def surface_metrics(
    pred: Tensor, target: Tensor, valid: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """hd95 and asd (N,) of ``dtype`` for the ``valid`` slices (volumes; both masks non-empty)
    of (N, H, W) or (N, D, H, W) masks; the other values are meaningless, replaced by the caller."""
    n = pred.shape[0]
    keep = valid.view(n, *[1] * (pred.dim() - 1))
    # Slices 0..N-1: prediction surfaces (searched against target surfaces); N..2N-1: targets.
    borders = torch.cat([surface(pred) & keep, surface(target) & keep])
    if borders.dim() == 3:  # slices: one plane per volume
        borders = borders.unsqueeze(1)
    row_dist = _row_distance(torch.cat([borders[n:], borders[:n]]))
    points = borders.nonzero()
    if points.shape[0] == 0:
        nan = torch.full((n,), float("nan"), dtype=dtype, device=pred.device)
        return nan, nan
    sq = _nearest_sq_distance(points, row_dist)
    dist = sq.to(dtype).sqrt()
    slice_id = points[:, 0] % n
    from_pred = (points[:, 0] < n).to(dtype)
    zeros = torch.zeros(n, dtype=dtype, device=pred.device)
    asd = zeros.index_add(0, slice_id, dist * from_pred) / zeros.index_add(0, slice_id, from_pred)
    # Every squared distance inside a D x H x W volume is below D^2 + H^2 + W^2.
    span = sum(size**2 for size in borders.shape[1:])
    return _grouped_percentile(sq, slice_id, n, span, dtype), asd


def _grouped_percentile(
    sq: Tensor, group: Tensor, n: int, span: int, dtype: torch.dtype, q: float = _HD_QUANTILE
) -> Tensor:
    """numpy.percentile (linear method, quantile ``q``) of the distances ``sqrt(sq)`` per group.

    Args:
        sq: (Q,) int32 squared distances in [0, span); group: (Q,) int64 in [0, n).

    Returns:
        (n,) ``dtype``; groups without values get an arbitrary finite value.
    """
    count = torch.zeros(n, dtype=torch.int64, device=sq.device).index_add(
        0, group, torch.ones_like(group)
    )
    offset = count.cumsum(0) - count
    # One sort orders the values within every group: groups occupy disjoint key ranges.
    ordered = (group * span + sq.long()).sort().values % span
    last = (count - 1).clamp_min(0)
    virtual = last.to(dtype) * q
    lower = virtual.floor().long()
    upper = (lower + 1).minimum(last)
    gamma = virtual - lower.to(dtype)
    top = sq.shape[0] - 1
    a = ordered[(offset + lower).clamp_max(top)].to(dtype).sqrt()
    b = ordered[(offset + upper).clamp_max(top)].to(dtype).sqrt()
    # numpy's _lerp: interpolate from the nearer end for numerical symmetry.
    diff = b - a
    return torch.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
