"""The per-panorama chain behind ``cim panoramas`` (the ``panoramas.publish`` stage runs it, one task per image).

Per panorama: decode → detect and obscure faces/plates → anonymized equirectangular JPEG + report → Marzipano
tiles → depth map from the point cloud (when given). The original image is only ever read, never copied.
Before: the drive's poses placed in the job CRS (:func:`georeference_drive`); after: ``panoramas.json``, the index
(FlatGeobuf) and a STAC collection (:func:`write_drive_index`).

Output layout (the stage's folder)::

    panoramas.json  index.fgb  stac-panoramas/collection.json
    panoramas/<name>/image.jpg  anonymization.json  tiles/{z}/{f}/{y}/{x}.jpg  tiles/preview.jpg  depth.tif
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cim.errors import CimWarning, InputError
from cim.fileutil import write_bytes_atomic
from cim.panoramas.privacy import AnonymizeOptions, anonymize, centerface_path, report, write_report
from cim.panoramas.depth import depth_buffer, fill_holes, write_depth_cog
from cim.panoramas.georef import Panorama, check_complete, georeference, write_index, write_panoramas_json
from cim.panoramas.poses import read_poses, read_trajectory
from cim.panoramas.tiles import encode_jpeg, write_marzipano

if TYPE_CHECKING:
    from cim.runner.fingerprints import ContentHashes

__all__ = ["ChainOptions", "chain_code_parts", "find_images", "georeference_drive", "process_panorama", "read_image",
           "write_drive_index"]

log = logging.getLogger("cim.panoramas")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
PANO_DIR = "panoramas"
#: the STAC collection of the panoramas; not ``stac/``, which is the job catalog :mod:`cim.catalog` rewrites whole
STAC_FOLDER = "stac-panoramas"


@dataclass(frozen=True)
class ChainOptions:
    """Settings of the per-panorama chain."""

    anonymize: AnonymizeOptions = field(default_factory=AnonymizeOptions)
    face_size: int | None = None  # top level cube face size; default: tile size * 2^k <= W / π
    tile_size: int = 512
    tile_quality: int = 85
    image_quality: int = 90
    north_up: bool = True  # yaw 0 of the tiles = grid north (an exact column roll; pitch/roll stay in the image)
    depth_width: int = 2048
    depth_max: float = 100.0
    depth_fill: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChainOptions:
        d = dict(d)
        a = dict(d.pop("anonymize", {}))
        if "band" in a:  # JSON turns tuples into lists
            a["band"] = tuple(a["band"])
        if "strips" in a:
            a["strips"] = tuple(tuple(s) for s in a["strips"])
        return cls(anonymize=AnonymizeOptions(**a), **d)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an equirectangular image (BGR u8); an :class:`InputError` when unreadable or not 2:1."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # pixels as stored
    if image is None:
        raise InputError(path, "not a readable image")
    h, w = image.shape[:2]
    if w != 2 * h:
        raise InputError(path, f"not an equirectangular panorama: {w} x {h} is not 2:1")
    return image


def _points_near(paths: list[str], crs_label: str, centre: np.ndarray, radius: float) -> np.ndarray:
    from cim import crs as cimcrs
    from cim.io import las
    from cim.points import Bounds

    box = Bounds(centre[0] - radius, centre[1] - radius, -1e9, centre[0] + radius, centre[1] + radius, 1e9)
    parts = [las.read(p, crs=cimcrs.resolve(crs_label), bounds=box).xyz for p in paths]
    return np.concatenate(parts) if parts else np.empty((0, 3))


def process_panorama(pano_dict: dict, root: str, out_dir: str, points: list[str], options: dict) -> dict[str, Any]:
    """Run the chain for one panorama into ``root/panoramas/<name>``; returns its products (relative to ``root``),
    the files written (relative to ``out_dir``), detection counts and timings."""
    pano = Panorama.from_dict(pano_dict)
    opts = ChainOptions.from_dict(options)
    folder = Path(root) / PANO_DIR / pano.name
    rel = f"{PANO_DIR}/{pano.name}"
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    image = read_image(pano.image)
    seconds["decode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    clean, regions = anonymize(image, opts.anonymize)
    del image  # from here on only the anonymized pixels exist in this process
    write_report(folder / "anonymization.json", report(pano.name, clean.shape, regions, opts.anonymize))
    seconds["anonymize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    write_bytes_atomic(folder / "image.jpg", encode_jpeg(clean, opts.image_quality))
    heading = pano.angles[0] if opts.north_up else 0.0
    write_marzipano(clean, folder / "tiles", face_size=opts.face_size, tile_size=opts.tile_size,
                    quality=opts.tile_quality, yaw_shift_deg=heading,
                    metadata={"panorama": pano.name, "heading": round(heading, 6)})
    seconds["publish"] = time.perf_counter() - t0
    products = {"image": f"{rel}/image.jpg", "report": f"{rel}/anonymization.json",
                "tiles": f"{rel}/tiles/marzipano.json", "preview": f"{rel}/tiles/preview.jpg"}

    if points:
        t0 = time.perf_counter()
        centre = np.asarray(pano.position)
        xyz = _points_near(points, pano.crs, centre, opts.depth_max)
        depth = fill_holes(depth_buffer(xyz, pano.pose, opts.depth_width, max_range=opts.depth_max), opts.depth_fill)
        write_depth_cog(folder / "depth.tif", depth, max_depth=opts.depth_max,
                        tags={"PANORAMA_NAME": pano.name})
        products["depth"] = f"{rel}/depth.tif"
        seconds["depth"] = time.perf_counter() - t0
    counts = {k: sum(r.kind == k for r in regions) for k in ("face", "plate")}
    outputs = sorted(p.relative_to(out_dir).as_posix() for p in folder.rglob("*") if p.is_file())  # every tile too
    return {"panorama": pano.with_products(**products).to_dict(), "outputs": outputs,
            "stats": {"counts": counts, "seconds": {k: round(v, 3) for k, v in seconds.items()}}}


def find_images(images_dir: str | Path, names: list[str]) -> dict[str, Path]:
    """Image file per panorama name (``name`` + a known suffix, any case) inside ``images_dir``."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise InputError(folder, "images folder not found")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, path)
    return {n: by_stem[n] for n in names if n in by_stem}


def georeference_drive(poses: str | Path, images: str | Path, out_dir: str | Path, crs: str, *,
                       trajectory: str | Path | None = None, pose_options: dict[str, Any] | None = None
                       ) -> list[Panorama]:
    """Read the pose file (and trajectory), find each panorama's image and place it in ``crs``; every check that
    can refuse the drive before any work (images folder, missing or truncated images, poses) runs here."""
    out = Path(out_dir).resolve()
    images_dir = Path(images).resolve()
    if out == images_dir or images_dir in out.parents:
        raise InputError(out, "the output folder must not be the images folder or inside it")
    pose_options = pose_options or {}
    table = read_poses(poses, **pose_options)
    traj = read_trajectory(trajectory, **pose_options) if trajectory else None
    found = find_images(images_dir, table.names)
    missing = [n for n in table.names if n not in found]
    if not found:
        raise InputError(images_dir, f"none of the {len(table)} panoramas of {Path(poses).name} has an image here")
    if missing:
        warnings.warn(f"{len(missing)} panoramas have no image in {images_dir} and are skipped "
                      f"(first: {missing[0]})", CimWarning, stacklevel=2)
        table = table.subset([i for i, n in enumerate(table.names) if n in found])
    _orientation_from_gpano(table, found)
    if traj is not None:
        uncovered = ~traj.covers(table.gps_time)
        if uncovered.any() and (table.has_position & table.has_orientation).all():
            warnings.warn(f"the trajectory {Path(trajectory).name} does not cover {int(uncovered.sum())} of "
                          f"{len(table)} panoramas; their poses come from the pose file alone", CimWarning,
                          stacklevel=2)
            traj = None if uncovered.all() else traj
    for image in found.values():  # a truncated image would be published as a grey panorama: refuse before work
        check_complete(image)
    return georeference(table, crs, trajectory=traj, images=found, strict_images=False)  # bad images fail alone


def write_drive_index(panos: list[Panorama], root: Path) -> list[str]:
    """``panoramas.json``, the index (FlatGeobuf) and the STAC collection of ``panos`` in ``root``; returns their
    paths relative to ``root``. The source images are named by file name only (the index does not depend on where
    the delivery lies)."""
    from cim.panoramas.stac import write_collection

    named = [replace(p, image=Path(p.image).name if p.image else None) for p in panos]
    write_panoramas_json(named, root / "panoramas.json")
    write_index(named, root / "index.fgb")
    write_collection(named, root / STAC_FOLDER)
    return ["panoramas.json", "index.fgb", f"{STAC_FOLDER}/collection.json"]


def chain_code_parts(hashes: ContentHashes) -> list[str]:
    """What the chain's results depend on besides its inputs, options and the cim modules it runs: the face model
    it ships and the OpenCV and onnxruntime versions (JPEG coding, the plate cascade, the face detector)."""
    from importlib.metadata import version

    return [hashes.digest(centerface_path()), cv2.__version__, version("onnxruntime")]


def _orientation_from_gpano(table, images: dict[str, Path]) -> None:
    """Fill missing orientations from the images' GPano XMP pose angles (true north), where present."""
    from cim.panoramas.poses import gpano_quaternion, read_gpano

    if table.north != "true":
        return  # GPano headings are compass (true-north) headings; a grid-north table cannot mix them in
    for i in np.flatnonzero(~table.has_orientation):
        q = gpano_quaternion(read_gpano(images[table.names[i]]))
        if q is not None:
            table.quaternion[i] = q


class ImageCache:
    """A few decoded anonymized panoramas (each 8000x4000 image is ~96 MB; memory stays bounded)."""

    def __init__(self, root: Path, size: int = 2) -> None:
        self.root, self.size, self.items = root, size, OrderedDict()

    def __call__(self, pano: Panorama) -> np.ndarray:
        if pano.name not in self.items:
            self.items[pano.name] = read_image(self.root / pano.products["image"])
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        self.items.move_to_end(pano.name)
        return self.items[pano.name]


def apply_colours(cloud, rgb: np.ndarray, source: np.ndarray) -> None:
    """Write u16 red/green/blue (value * 257) for the coloured points; others keep theirs (or get 0)."""
    seen = source >= 0
    for k, name in enumerate(("red", "green", "blue")):
        values = cloud[name].astype(np.uint16) if cloud.has(name) else np.zeros(len(cloud), np.uint16)
        values[seen] = rgb[seen, k].astype(np.uint16) * 257
        cloud.set(name, values)
