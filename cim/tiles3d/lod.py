"""Level-of-detail hierarchy of a point cloud: an octree with even grid sampling at every level.

Every point lands in exactly one node (no loss, no duplicate). A node at level ``l`` of a cube of side ``S`` keeps,
among the points not taken by its ancestors, the one closest to the centre of each occupied voxel of size
``S / (G * 2**l)`` (``G = 2**grid_bits``, 128 by default): a spatially even, Poisson-disk-like sample without the
holes of random thinning. A node whose remaining points are at most ``leaf_points`` keeps them all and is a leaf.

All work is vectorised: points are sorted once by their 63-bit Morton code, so every node and every voxel at every
level is a contiguous run of the sorted points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MORTON_BITS = 21
_MAX = (1 << MORTON_BITS) - 1


_SPREAD = tuple((np.uint64(shift), np.uint64(mask)) for shift, mask in (
    (32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F), (4, 0x10C30C30C30C30C3),
    (2, 0x1249249249249249)))
#: Points per chunk of the Morton encoding (its temporaries stay in cache).
_MORTON_CHUNK = 16_384


def _spread(v: np.ndarray, tmp: np.ndarray) -> None:
    """Moves the bits of ``v`` (uint64, each < 2**21) to every third bit position, in place."""
    for shift, mask in _SPREAD:
        np.left_shift(v, shift, out=tmp)
        v |= tmp
        v &= mask


def _cells(values: np.ndarray, lo: float, scale: float) -> np.ndarray:
    """Cell indices ``floor((values - lo) * scale)`` (values >= lo), clipped to the Morton range."""
    t = values - lo
    t *= scale
    np.minimum(t, _MAX, out=t)
    return t.astype(np.uint32)  # truncation = floor for non-negative values


def morton(q: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """63-bit Morton codes of integer cell coordinates (each < 2**21): three arrays, or an (n,3) array."""
    cols = [q[:, a] for a in range(3)] if isinstance(q, np.ndarray) else q
    n = len(cols[0])
    codes = np.empty(n, np.uint64)
    v = np.empty(min(n, _MORTON_CHUNK), np.uint64)
    tmp = np.empty_like(v)
    for start in range(0, n, _MORTON_CHUNK):
        stop = min(start + _MORTON_CHUNK, n)
        out, vv, tt = codes[start:stop], v[: stop - start], tmp[: stop - start]
        for a in range(3):
            vv[:] = cols[a][start:stop]
            _spread(vv, tt)
            if a == 0:
                out[:] = vv
            else:
                vv <<= np.uint64(a)
                out |= vv
    return codes


def sort_codes(codes: np.ndarray) -> np.ndarray:
    """Indices sorting 63-bit ``codes``; equal codes keep their input order (deterministic on every machine).

    Sorts values, not indices (several times faster than an argsort): each code's high bits with its index in
    the low bits. Runs of equal high bits are then ordered by (code, index); where such runs are common
    (very dense data), a plain argsort with the same tie rule is used instead.
    """
    n = len(codes)
    bits = max(n - 1, 1).bit_length()
    key = codes >> np.uint64(bits + 1)
    key <<= np.uint64(bits)
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    high = key >> np.uint64(bits)
    if np.count_nonzero(high[1:] == high[:-1]) > n // 8:
        order = np.argsort(codes, kind="quicksort")
        return _order_ties(order, codes, codes[order])
    key &= np.uint64((1 << bits) - 1)
    return _order_ties(key.astype(np.int64), codes, high)


def _order_ties(order: np.ndarray, codes: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``order`` with every run of equal ``sorted_keys`` (``order``'s keys) reordered by (code, index)."""
    tied = sorted_keys[1:] == sorted_keys[:-1]
    if tied.any():
        member = np.zeros(len(order), bool)
        member[1:] |= tied
        member[:-1] |= tied
        sub = np.flatnonzero(member)
        order[sub] = order[sub][np.lexsort((order[sub], codes[order[sub]]))]
    return order


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of every run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64)
    change = np.empty(len(sorted_keys), bool)
    change[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=change[1:])
    return np.flatnonzero(change)


def pick_per_group(starts: np.ndarray, dist: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """Of every run ``[starts[i], starts[i+1])``, the id of the element with the smallest ``dist``.

    ``dist``: non-negative integers; ``ids``: distinct integers in ``[0, n)`` (default: the positions), which
    also break ties (smallest id wins), so the choice does not depend on how equal keys were sorted. One
    ``minimum.reduceat`` over ``dist * n + id``; distances too large for that key lose low bits (only ties
    among nearly equal distances change).
    """
    n = len(dist)
    if len(starts) == 0:
        return np.zeros(0, np.int64)
    top = int(dist.max())
    shift = max(0, top.bit_length() + max(n - 1, 1).bit_length() - 62)
    key = dist.astype(np.int64)
    if shift:
        key >>= shift
    key *= n
    if ids is not None:
        key += ids
    else:  # the positions, added in chunks (no second full-length int64 array)
        for start in range(0, n, 1 << 16):
            key[start: start + (1 << 16)] += np.arange(start, min(start + (1 << 16), n), dtype=np.int64)
    return np.minimum.reduceat(key, starts) % n


def centre_distance(lows: list[np.ndarray], bits: int) -> np.ndarray:
    """Squared distance (in units of half a fine cell) of fine cells to the centre of their voxel.

    ``lows``: per axis, the fine cell index inside its voxel (``bits`` low bits of the fine cell coordinate,
    non-negative integers); they are overwritten.
    """
    dtype = np.int32 if bits <= 14 else np.int64  # 3 * (2**bits)**2 must fit
    dist = None
    for low in lows:
        d = low.view(dtype) if low.dtype.itemsize == np.dtype(dtype).itemsize else low.astype(dtype)
        d *= 2
        d += 1 - (1 << bits)
        d *= d
        if dist is None:
            dist = d
        else:
            dist += d
    return dist


#: Fine cells per voxel edge (log2) with which :func:`grid_sample` finds the point closest to a voxel centre.
_SUB_BITS = 10


def grid_sample(local: np.ndarray, origin: np.ndarray, spacing: float) -> np.ndarray:
    """Indices of one point per occupied voxel of ``spacing`` (the one closest to the voxel centre)."""
    if len(local) == 0:
        return np.zeros(0, np.int64)
    scale = (1 << _SUB_BITS) / spacing
    fine = [np.floor((local[:, a] - origin[a]) * scale).astype(np.int64) for a in range(3)]
    voxel = [f >> _SUB_BITS for f in fine]
    voxel = [np.clip(v - v.min(), 0, _MAX) for v in voxel]
    keys = morton(voxel)
    order = np.argsort(keys)  # ties in any order: the pick breaks them by index
    lows = [(f[order] & ((1 << _SUB_BITS) - 1)) for f in fine]
    return pick_per_group(group_starts(keys[order]), centre_distance(lows, _SUB_BITS), order)


@dataclass
class OctreeNode:
    level: int
    index: tuple[int, int, int]  # cell indices at this level
    start: int  # range of this node's points in Octree.order
    count: int
    children: list[int] = field(default_factory=list)
    parent: int = -1
    box_min: np.ndarray | None = None  # AABB of the whole subtree (local coordinates)
    box_max: np.ndarray | None = None
    own_min: np.ndarray | None = None  # AABB of the node's own points
    own_max: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"{self.level}-{self.index[0]}-{self.index[1]}-{self.index[2]}"


@dataclass
class Octree:
    """Nodes (0 = root) and ``order``: point indices grouped by node (node i owns ``order[start:start+count]``).

    ``points`` are the input coordinates in that order ((n,3), contiguous columns): node i's own points are the
    slice ``points[start:start+count]``, so contents are written without gathering again.
    """

    origin: np.ndarray
    side: float
    grid_bits: int
    nodes: list[OctreeNode]
    order: np.ndarray
    points: np.ndarray

    def spacing(self, level: int) -> float:
        """Sampling voxel size of a node at ``level``: the gap its children fill."""
        return self.side / (2 ** (level + self.grid_bits))

    def points_of(self, node: int) -> np.ndarray:
        nd = self.nodes[node]
        return self.order[nd.start: nd.start + nd.count]

    def slice_of(self, node: int) -> slice:
        """Range of ``node``'s own points in :attr:`points` (and in any array gathered by :attr:`order`)."""
        nd = self.nodes[node]
        return slice(nd.start, nd.start + nd.count)


def build_octree(local: np.ndarray, *, leaf_points: int = 60_000, grid_bits: int = 7) -> Octree:
    """The LOD octree of ``local`` ((n,3) float64 coordinates in a metric frame; column-major is fastest)."""
    local = np.asarray(local, float)
    n = len(local)
    if n == 0:
        raise ValueError("cannot build an octree of no points")
    cols = [local[:, a] for a in range(3)]
    lo = np.array([c.min() for c in cols])
    side = float(max(max(float(c.max()) - float(lo[a]) for a, c in enumerate(cols)), 1e-3)) * (1 + 1e-9)
    scale = (1 << MORTON_BITS) / side
    q = [_cells(c, lo[a], scale) for a, c in enumerate(cols)]
    codes = morton(q)
    index_type = np.int32 if n < 2**31 else np.int64
    sorted_idx = sort_codes(codes).astype(index_type)
    codes = codes[sorted_idx]
    qs = [axis[sorted_idx] for axis in q]  # cell coordinates per axis, in Morton order
    del q
    level_of = _levels(codes, qs, leaf_points, grid_bits)
    # points are in Morton order, so a stable sort by level groups them by node, parents before children
    order = np.argsort(level_of, kind="stable")
    nodes = _nodes(order, np.bincount(level_of).tolist(), codes, qs)
    point_order = sorted_idx[order]
    del codes, qs, order, sorted_idx, level_of  # before the positions are gathered: lower peak memory
    points = np.empty((3, n))
    for a, c in enumerate(cols):
        np.take(c, point_order, out=points[a], mode="clip")  # indices are valid
    _set_boxes(nodes, points)
    return Octree(lo, side, grid_bits, nodes, point_order, points.T)


def _levels(codes: np.ndarray, qs: list[np.ndarray], leaf_points: int, grid_bits: int) -> np.ndarray:
    """Level of every point (Morton-sorted): each level takes the point closest to each voxel's centre."""
    n = len(codes)
    level_of = np.empty(n, np.int8)
    remaining = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)  # positions in the sorted arrays
    rem_codes = codes
    last_level = MORTON_BITS - grid_bits
    for level in range(last_level + 1):
        vshift = MORTON_BITS - level - grid_bits
        vstarts = group_starts(rem_codes >> np.uint64(3 * vshift))
        # nodes are runs of voxels: their starts come from the (far fewer) voxel starts
        nstarts = vstarts[group_starts(rem_codes[vstarts] >> np.uint64(3 * (grid_bits + vshift)))]
        counts = np.diff(np.append(nstarts, len(rem_codes)))
        big = counts > leaf_points
        if level == last_level or not big.any():
            level_of[remaining] = level
            break
        in_big = np.repeat(big, counts)
        if not in_big.all():
            level_of[remaining[~in_big]] = level
            remaining = remaining[in_big]
            rem_codes = rem_codes[in_big]
            vstarts = group_starts(rem_codes >> np.uint64(3 * vshift))
        lows = [axis[remaining] for axis in qs]
        for low in lows:
            low &= np.uint32((1 << vshift) - 1)
        dist = centre_distance(lows, vshift)
        del lows  # the other axes' low bits, before the pick allocates its keys
        picks = pick_per_group(vstarts, dist)
        level_of[remaining[picks]] = level
        keep = np.ones(len(remaining), bool)
        keep[picks] = False
        remaining = remaining[keep]
        rem_codes = rem_codes[keep]
        if len(remaining) == 0:
            break
    return level_of


def _set_boxes(nodes: list[OctreeNode], points: np.ndarray) -> None:
    """Own and subtree boxes of every node from the (3, n) node-ordered points."""
    starts = np.array([nd.start for nd in nodes])
    own_min = np.minimum.reduceat(points, starts, axis=1).T
    own_max = np.maximum.reduceat(points, starts, axis=1).T
    for nd, mn, mx in zip(nodes, own_min, own_max):
        nd.own_min, nd.own_max = mn, mx
        nd.box_min, nd.box_max = mn.copy(), mx.copy()
    for nd in reversed(nodes):
        if nd.parent >= 0:
            par = nodes[nd.parent]
            np.minimum(par.box_min, nd.box_min, out=par.box_min)
            np.maximum(par.box_max, nd.box_max, out=par.box_max)


def _nodes(order: np.ndarray, per_level: list[int], codes: np.ndarray, qs: list[np.ndarray]) -> list[OctreeNode]:
    """The nodes, level by level: runs of equal node keys among ``order``'s points of each level."""
    nodes: list[OctreeNode] = []
    lookup: dict[tuple[int, int], int] = {}
    first = 0
    for level, count in enumerate(per_level):  # every level up to the deepest one has points
        keys = codes[order[first: first + count]] >> np.uint64(3 * (MORTON_BITS - level))
        starts = group_starts(keys)
        for s, c in zip(starts.tolist(), np.diff(np.append(starts, count)).tolist()):
            p = order[first + s]
            cell = [int(axis[p]) >> (MORTON_BITS - level) for axis in qs]
            node = OctreeNode(level, (cell[0], cell[1], cell[2]), first + s, c)
            key = int(keys[s])
            lookup[(level, key)] = len(nodes)
            if level > 0:
                node.parent = lookup[(level - 1, key >> 3)]
                nodes[node.parent].children.append(len(nodes))
            nodes.append(node)
        first += count
    return nodes
