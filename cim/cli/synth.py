"""``cim synth``: generate the synthetic city with its simulated sensor data and exact ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def synth(
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    extent: Annotated[float, typer.Option("--extent", help="side of the square block (m)")] = 400.0,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed -> byte-identical files)")] = 7,
    als_density: Annotated[float, typer.Option("--als-density", help="ALS pulses per m²")] = 10.0,
    drive_length: Annotated[float, typer.Option("--drive-length", help="length of the MLS drive (m)")] = 1000.0,
    panoramas: Annotated[Optional[int], typer.Option("--panoramas", help="maximum number of panoramas")] = 50,
    panorama_width: Annotated[int, typer.Option("--panorama-width", help="panorama width (px, height = "
                                                                         "width / 2)")] = 2048,
    panorama_spacing: Annotated[float, typer.Option("--panorama-spacing", help="metres between panoramas")] = 20.0,
    no_als: Annotated[bool, typer.Option("--no-als", help="skip the aerial LiDAR")] = False,
    no_mls: Annotated[bool, typer.Option("--no-mls", help="skip the drive (MLS, trajectory, panoramas)")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="any other SynthConfig parameter as "
                                                                     "NAME=VALUE (repeatable)")] = None,
) -> None:
    """Generate a synthetic city block near Kaiserslautern (EPSG:25832 + DHHN2016) with ALS and MLS LiDAR,
    panoramas with their pose file and depth maps, true LoD2.2 buildings, footprints, a true DTM and truth.json."""
    from cim.synth import SynthConfig, generate

    changes = {
        "extent": extent, "seed": seed, "als_density": als_density, "drive_length": drive_length,
        "panorama_count": panoramas, "panorama_width": panorama_width, "panorama_spacing": panorama_spacing,
        "als": not no_als, "mls": not no_mls,
    }
    changes.update(_parse_sets(set_ or []))
    config = SynthConfig().with_(**changes)
    city = generate(out, config)
    console.print(f"synthetic city ({config.extent:g} m, seed {config.seed}, {len(city.scene.buildings)} buildings) "
                  f"-> {out}")
    for name, seconds in city.timings.items():
        console.print(f"  {name:<14} {seconds:8.2f} s")


def _parse_sets(items: list[str]) -> dict[str, object]:
    """``NAME=VALUE`` pairs typed after the SynthConfig field's default (bool, int, float, tuple or str)."""
    from dataclasses import fields

    from cim.errors import ConfigError
    from cim.synth import SynthConfig

    defaults = {f.name: getattr(SynthConfig(), f.name) for f in fields(SynthConfig)}
    out: dict[str, object] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in defaults:
            raise ConfigError(name or item, "expected NAME=VALUE with NAME a SynthConfig parameter")
        default = defaults[name]
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value: object = raw.lower() in ("true", "1", "yes")
            elif isinstance(default, tuple):
                value = tuple(float(v) for v in raw.split(","))
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            elif default is None:
                value = None if raw.lower() == "none" else int(raw)
            else:
                value = raw
        except ValueError:
            raise ConfigError(name, f"cannot read {raw!r} as {type(default).__name__}") from None
        out[name] = value
    return out


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
