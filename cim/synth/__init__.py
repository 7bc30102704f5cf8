"""Synthetic city and mobile-mapping simulator with exact ground truth.

``generate(out_dir, SynthConfig(extent=400, seed=7))`` builds a deterministic city block near Kaiserslautern
(EPSG:25832 + DHHN2016) and writes aerial and mobile LiDAR, panoramas with their pose file, true depth maps,
true LoD2.2 buildings, footprints, a true DTM and ``truth.json``. See ``docs/synth.md``.
"""

from __future__ import annotations

from cim.synth.config import SynthConfig
from cim.synth.generate import SyntheticCity, generate
from cim.synth.scene import Building, Scene

__all__ = ["Building", "Scene", "SynthConfig", "SyntheticCity", "generate"]
