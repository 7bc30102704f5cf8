"""3D Tiles 1.1 terrain: the job's DTM as glTF triangle meshes, one per DTM COG tile.

Vertices sit on the DTM's cell centres (every ``step``-th cell) with the DTM's height, so the mesh passes through
the raster exactly; each tile also takes the first row and column of its east and south neighbours' rasters,
so neighbouring meshes share their edge vertices (no seams). Cells without a height (nodata) leave holes.
Heights go through the same compound-CRS -> ECEF placement (:class:`cim.tiles3d.placement.LocalFrame`) as the
point-cloud and building tiles, so ground, points and buildings line up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from rasterio.windows import Window

from cim.errors import InputError
from cim.fileutil import atomic_dir, write_bytes_atomic
from cim.terrain.grid import GridSpec
from cim.threads import task_threads
from cim.tiles3d.glb import mesh_glb
from cim.tiles3d.placement import LocalFrame
from cim.tiles3d.tileset import Tile, aabb_of_box, box_from_aabb, write_tileset

log = logging.getLogger("cim.tiles3d.terrain")

#: base colour of the terrain mesh (linear RGBA): a muted earth tone that points and buildings stand out from
TERRAIN_COLOR = (0.42, 0.45, 0.36, 1.0)


def grid_mesh(heights: np.ndarray, grid: GridSpec, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (n,3) in the grid's CRS, triangles (m,3)) of a height grid sampled every ``step`` cells.

    The last two rows and columns are always kept (the last is the neighbour's first one, which may be missing).
    Two counter-clockwise (seen from above) triangles per quad of samples whose corners all have a height;
    vertices used by no triangle are dropped.
    """
    h, w = heights.shape
    rows = np.unique(np.r_[np.arange(0, h, step), max(h - 2, 0), h - 1])
    cols = np.unique(np.r_[np.arange(0, w, step), max(w - 2, 0), w - 1])
    z = heights[np.ix_(rows, cols)].astype(np.float64)
    nr, nc = z.shape
    if nr < 2 or nc < 2:
        return np.empty((0, 3)), np.empty((0, 3), np.int64)
    ids = np.arange(nr * nc).reshape(nr, nc)
    a, b, c, d = ids[:-1, :-1], ids[1:, :-1], ids[:-1, 1:], ids[1:, 1:]  # NW, SW, NE, SE corners of each quad
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([c, b, d], -1).reshape(-1, 3)])
    finite = np.isfinite(z).ravel()
    tris = tris[finite[tris].all(axis=1)]
    used = np.zeros(nr * nc, bool)
    used[tris.ravel()] = True
    new_id = np.cumsum(used) - 1
    x = grid.xmin + (cols + 0.5) * grid.resolution
    y = grid.ymax - (rows + 0.5) * grid.resolution
    xx, yy = np.meshgrid(x, y)
    vertices = np.column_stack([xx.ravel(), yy.ravel(), z.ravel()])[used]
    return vertices, new_id[tris]


def vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (unnormalised; :func:`cim.tiles3d.glb.mesh_glb` normalises them)."""
    p = positions[triangles]
    face = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normals = np.zeros_like(positions)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face)
    return normals


def read_padded(sources: list[tuple[Path, GridSpec]], grid: GridSpec) -> np.ndarray:
    """Heights of ``grid`` plus one more row (south) and column (east), read from the ``sources`` rasters that
    overlap it (same resolution, aligned cells); NaN where none has a height."""
    res = grid.resolution
    out = np.full((grid.height + 1, grid.width + 1), np.nan, np.float32)
    x0, y1 = grid.xmin, grid.ymax
    x1, y0 = x0 + (grid.width + 1) * res, y1 - (grid.height + 1) * res
    for path, src_grid in sources:
        lo_x, hi_x = max(x0, src_grid.xmin), min(x1, src_grid.xmax)
        lo_y, hi_y = max(y0, src_grid.ymin), min(y1, src_grid.ymax)
        if hi_x - lo_x < res / 2 or hi_y - lo_y < res / 2:
            continue
        width, height = round((hi_x - lo_x) / res), round((hi_y - lo_y) / res)
        col, row = round((lo_x - src_grid.xmin) / res), round((src_grid.ymax - hi_y) / res)
        with rasterio.open(path) as src:  # opened here: GDAL handles are not shared between threads
            block = src.read(1, window=Window(col, row, width, height), masked=True)
        r, c = round((y1 - hi_y) / res), round((lo_x - x0) / res)
        out[r:r + height, c:c + width] = block.astype(np.float32).filled(np.nan)
    return out


def _tile_grid(path: Path) -> GridSpec:
    with rasterio.open(path) as src:
        t = src.transform
        if t.b or t.d or not math.isclose(t.a, -t.e):
            raise InputError(path, "not a north-up raster of square cells")
        return GridSpec(t.c, t.f, src.width, src.height, t.a)


def terrain_tile(sources: list[tuple[Path, GridSpec]], grid: GridSpec, crs: pyproj.CRS, step: int,
                 allow_ballpark: bool = False) -> tuple[bytes, LocalFrame, np.ndarray, np.ndarray, tuple] | None:
    """(glb, its local frame, local box lo, hi, (lowest, highest) DTM height) of the mesh of ``grid`` (one DTM
    tile, its east and south edges closed from the neighbouring ``sources``); None when it has no triangle."""
    vertices, triangles = grid_mesh(read_padded(sources, grid), grid, step)
    if len(triangles) == 0:
        return None
    origin = ((grid.xmin + grid.xmax) / 2.0, (grid.ymin + grid.ymax) / 2.0,
              float(np.round(np.median(vertices[:, 2]))))
    frame = LocalFrame.from_crs(crs, origin, allow_ballpark=allow_ballpark)
    local = frame.to_local(vertices[:, 0], vertices[:, 1], vertices[:, 2])
    data = mesh_glb(local, triangles.astype(np.uint32), vertex_normals(local, triangles), color=TERRAIN_COLOR,
                    double_sided=False)
    heights = (float(vertices[:, 2].min()), float(vertices[:, 2].max()))
    return data, frame, local.min(axis=0), local.max(axis=0), heights


def _neighbours(grids: list[GridSpec]) -> list[list[int]]:
    """For each grid, the grids that touch or overlap it (itself included)."""
    box = np.array([[g.xmin, g.ymin, g.xmax, g.ymax] for g in grids])
    pad = np.array([g.resolution for g in grids])
    return [np.flatnonzero((box[:, 0] <= b[2] + p) & (box[:, 2] >= b[0] - p) & (box[:, 1] <= b[3] + p)
                           & (box[:, 3] >= b[1] - p)).tolist() for b, p in zip(box, pad)]


class _Lattice:
    """Where the DTM tiles sit on their common tile grid: tile (i, j) spans ``width`` x ``height`` cells from
    (x0 + i * width * res, y1 - j * height * res); j grows southwards. None when the tiles do not form one."""

    def __init__(self, grids: list[GridSpec], step: int) -> None:
        g0 = grids[0]
        self.res, self.width, self.height, self.step = g0.resolution, g0.width, g0.height, step
        self.x0, self.y1 = min(g.xmin for g in grids), max(g.ymax for g in grids)
        self.index = [(round((g.xmin - self.x0) / (self.width * self.res)),
                       round((self.y1 - g.ymax) / (self.height * self.res))) for g in grids]

    @classmethod
    def of(cls, grids: list[GridSpec], step: int) -> _Lattice | None:
        g0 = grids[0]
        if g0.width % step or g0.height % step or any((g.width, g.height) != (g0.width, g0.height) for g in grids):
            return None
        lattice = cls(grids, step)
        for g, (i, j) in zip(grids, lattice.index):
            if not (math.isclose(g.xmin, lattice.x0 + i * g.width * g.resolution, abs_tol=1e-6) and
                    math.isclose(g.ymax, lattice.y1 - j * g.height * g.resolution, abs_tol=1e-6)):
                return None
        return lattice

    def node_grid(self, level: int, i: int, j: int) -> GridSpec:
        """The grid whose cell centres are the fine cell centres a level-``level`` node samples (every
        ``step * 2**level`` cells), for :func:`grid_mesh` with step 1."""
        spacing = self.res * self.step * 2 ** level
        xmin = self.x0 + i * self.width * self.res * 2 ** level
        ymax = self.y1 - j * self.height * self.res * 2 ** level
        return GridSpec(xmin + (self.res - spacing) / 2, ymax - (self.res - spacing) / 2,
                        self.width // self.step, self.height // self.step, spacing)


def _coarser(keys: Iterable[tuple[int, int]], get: Callable[[tuple[int, int]], np.ndarray],
             shape: tuple[int, int]) -> dict[tuple[int, int], np.ndarray]:
    """The next level's sample arrays: each node stitches its 2 x 2 children (``get`` of those in ``keys``;
    called once each, so they need not all be in memory) and keeps every second sample."""
    h, w = shape
    keys = set(keys)
    out: dict[tuple[int, int], np.ndarray] = {}
    for i, j in sorted({(i // 2, j // 2) for i, j in keys}):
        stitched = np.full((2 * h, 2 * w), np.nan, np.float32)
        for di in (0, 1):
            for dj in (0, 1):
                if (2 * i + di, 2 * j + dj) in keys:
                    stitched[dj * h:(dj + 1) * h, di * w:(di + 1) * w] = get((2 * i + di, 2 * j + dj))
        out[(i, j)] = stitched[::2, ::2]
    return out


def _padded(arrays: dict[tuple[int, int], np.ndarray], i: int, j: int) -> np.ndarray:
    """A node's samples plus the first row of its south and the first column of its east neighbour."""
    own = arrays[(i, j)]
    h, w = own.shape
    out = np.full((h + 1, w + 1), np.nan, np.float32)
    out[:h, :w] = own
    east, south, corner = arrays.get((i + 1, j)), arrays.get((i, j + 1)), arrays.get((i + 1, j + 1))
    if east is not None:
        out[:h, w] = east[:, 0]
    if south is not None:
        out[h, :w] = south[0, :]
    if corner is not None:
        out[h, w] = corner[0, 0]
    return out


def write_terrain_tiles(
    out_dir: str | Path,
    rasters: list[Path],
    crs: pyproj.CRS,
    *,
    step: int = 2,
    allow_ballpark: bool = False,
    workers: int | None = None,
) -> dict:
    """Write ``out_dir/tileset.json``, ``out_dir/tiles/<stem>.glb`` (one full-detail mesh per DTM tile raster:
    aligned cells of one resolution, as ``raster.dtm`` writes them) and, when the rasters form a regular tile
    grid, ``out_dir/levels/<level>/<i>_<j>.glb``: coarser meshes of 2**level x 2**level tiles with one vertex
    every ``step * 2**level`` cells, so a whole city shows from afar and refines as the camera comes close.
    Returns the tile count, the tileset's origin and the bounds (minx, miny, minz, maxx, maxy, maxz) of the
    vertices in the source CRS."""
    if not rasters:
        raise InputError(out_dir, "no DTM tile rasters: run a raster.dtm stage before tiles.terrain")
    rasters = sorted(rasters)
    grids = [_tile_grid(p) for p in rasters]
    if len({g.resolution for g in grids}) > 1:
        raise InputError(rasters[0].parent, "the DTM tiles have different resolutions")
    near = _neighbours(grids)

    def one(i: int) -> tuple[str, GridSpec, tuple | None]:
        sources = [(rasters[j], grids[j]) for j in near[i]]
        return rasters[i].stem, grids[i], terrain_tile(sources, grids[i], crs, step, allow_ballpark)

    with ThreadPoolExecutor(max_workers=workers or min(8, task_threads())) as pool:
        built = [(stem, grid, res) for stem, grid, res in pool.map(one, range(len(grids))) if res is not None]
    if not built:
        raise InputError(rasters[0].parent, "the DTM has no heights: no terrain to tile")
    xs = [v for _, g, _ in built for v in (g.xmin, g.xmax)]
    ys = [v for _, g, _ in built for v in (g.ymin, g.ymax)]
    job = LocalFrame.from_crs(crs, ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2,
                                    float(np.median([r[1].origin[2] for _, _, r in built]))),
                              allow_ballpark=allow_ballpark)
    lattice = _Lattice.of([g for _, g, _ in built], step)
    with atomic_dir(Path(out_dir)) as tmp:
        leaves = {}
        for stem, grid, (data, frame, lo, hi, _) in built:
            uri = f"tiles/{stem}.glb"
            write_bytes_atomic(tmp / uri, data)
            leaves[stem] = Tile(lo, hi, 0.0, content_uri=uri, transform=job.local_from_ecef @ frame.ecef_from_local)
        if lattice is None or len(built) == 1:
            log.info("terrain: the DTM tiles do not form one regular grid: no coarser levels")
            root = _parent(list(leaves.values()), max(max(g.xmax - g.xmin, g.ymax - g.ymin) for _, g, _ in built) / 2)
        else:
            root = _levels(tmp, built, rasters, lattice, leaves, job, workers)
        root.transform = job.ecef_from_local
        write_tileset(tmp / "tileset.json", root, 2 * root.geometric_error)
    log.info("terrain: %d mesh tiles from %s", len(leaves), rasters[0].parent)
    lon, lat, _ = job.origin_geodetic
    heights = [r[4] for _, _, r in built]
    bounds = [min(xs), min(ys), min(h[0] for h in heights), max(xs), max(ys), max(h[1] for h in heights)]
    return {"tiles": len(leaves), "origin_lon_lat": [lon, lat], "bounds": bounds}


def _parent(children: list[Tile], error: float, content: tuple[str, np.ndarray, np.ndarray] | None = None,
            refine: str = "ADD") -> Tile:
    """A tile holding ``children`` (boxes in this tile's frame after their transforms) and an optional content
    (uri, lo, hi in this tile's frame); its box covers all."""
    boxes = [aabb_of_box(box_from_aabb(c.lo, c.hi), c.transform) for c in children]
    if content is not None:
        boxes.append(content[1:])
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return Tile(lo, hi, error, content_uri=content[0] if content else None, children=children, refine=refine)


def _levels(tmp: Path, built: list, rasters: list[Path], lattice: _Lattice, leaves: dict[str, Tile],
            job: LocalFrame, workers: int | None) -> Tile:
    """Write the coarser levels (meshes in the job frame) and return the root of the tile tree."""
    path_of = {p.stem: p for p in rasters}
    by_index = {idx: path_of[stem] for (stem, _, _), idx in zip(built, lattice.index)}
    tiles = {idx: leaves[stem] for (stem, _, _), idx in zip(built, lattice.index)}
    shape = (lattice.height // lattice.step, lattice.width // lattice.step)

    def samples(idx: tuple[int, int]) -> np.ndarray:
        with rasterio.open(by_index[idx]) as src:
            return src.read(1, masked=True).astype(np.float32).filled(np.nan)[::lattice.step, ::lattice.step]

    arrays = _coarser(tiles, samples, shape)  # level 1, reading the full-detail tiles one at a time
    level = 1
    while True:
        def mesh(idx: tuple[int, int], level: int = level, arrays: dict = arrays) -> tuple | None:
            vertices, triangles = grid_mesh(_padded(arrays, *idx), lattice.node_grid(level, *idx), 1)
            if len(triangles) == 0:
                return None
            local = job.to_local(vertices[:, 0], vertices[:, 1], vertices[:, 2])
            data = mesh_glb(local, triangles.astype(np.uint32), vertex_normals(local, triangles),
                            color=TERRAIN_COLOR, double_sided=False)
            return data, local.min(axis=0), local.max(axis=0)

        nodes = sorted(arrays)
        with ThreadPoolExecutor(max_workers=workers or min(8, task_threads())) as pool:
            meshes = list(pool.map(mesh, nodes))
        error = lattice.res * lattice.step * 2 ** level
        parents = {}
        for (i, j), made in zip(nodes, meshes):
            content = None
            if made is not None:
                uri = f"levels/{level}/{i}_{j}.glb"
                write_bytes_atomic(tmp / uri, made[0])
                content = (uri, made[1], made[2])
            children = [tiles[k] for k in sorted(tiles) if (k[0] // 2, k[1] // 2) == (i, j)]
            parents[(i, j)] = _parent(children, error, content, refine="REPLACE")
        if len(parents) == 1:
            return next(iter(parents.values()))
        tiles, arrays, level = parents, _coarser(arrays, arrays.__getitem__, shape), level + 1

