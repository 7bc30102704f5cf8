"""Panoramic drive imagery: ingest poses, georeference, anonymize, publish for the web, depth maps, measuring,
and colouring the point cloud. See ``docs/panoramas.md``.

Numpy-first entry points::

    from cim.panoramas import read_poses, georeference, anonymize, cube_faces, measure
    panos = georeference(read_poses("panorama1.csv"), "EPSG:25832+7837")
    clean, regions = anonymize(image)            # BGR u8 equirectangular
    xyz = measure(panos[0], u=4000.5, v=2100.0)   # a click -> a 3D point (needs the depth map)
"""

from __future__ import annotations

from cim.panoramas.privacy import AnonymizeOptions, Region, anonymize, blur_regions, detect
from cim.panoramas.colorize import ColorizeOptions, colorize_points
from cim.panoramas.depth import depth_buffer, fill_holes, read_depth, write_depth_cog
from cim.panoramas.measure import measure
from cim.panoramas.georef import Panorama, georeference, load_panoramas, write_index, write_panoramas_json
from cim.panoramas.poses import PoseTable, Trajectory, read_gpano, read_poses, read_trajectory
from cim.panoramas.projection import cube_faces, perspective_view
from cim.panoramas.tiles import write_marzipano

__all__ = [
    "AnonymizeOptions",
    "ColorizeOptions",
    "Panorama",
    "PoseTable",
    "Region",
    "Trajectory",
    "anonymize",
    "blur_regions",
    "colorize_points",
    "cube_faces",
    "depth_buffer",
    "detect",
    "fill_holes",
    "georeference",
    "load_panoramas",
    "measure",
    "perspective_view",
    "read_depth",
    "read_gpano",
    "read_poses",
    "read_trajectory",
    "write_depth_cog",
    "write_index",
    "write_marzipano",
    "write_panoramas_json",
]
