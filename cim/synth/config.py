"""Every knob of the synthetic city and the simulated sensors, each with a sane default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from cim.errors import ConfigError

#: GPS seconds (since 1980-01-06, no leap seconds) of 2026-05-12 08:00:00 UTC, plus the 18 leap seconds.
DEFAULT_MLS_GPS_START = 1462608018.0
#: GPS seconds of 2026-04-20 10:00:00 UTC: the aerial survey flew three weeks before the drive.
DEFAULT_ALS_GPS_START = 1460714418.0


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of :func:`cim.synth.generate`. Lengths in metres, angles in degrees, rates in Hz.

    Scene
    -----
    extent: side of the square block (m). The block is ``[origin, origin + extent]`` in x and y.
    seed: random seed; the same seed and parameters give byte-identical files.
    origin: south-west corner (easting, northing) in ``crs`` (default: Kaiserslautern, EPSG:25832).
    base_height: terrain height (DHHN2016, m) at the origin.
    crs: the CRS of every output (projected + vertical).
    slope: terrain gradient (dz/dx, dz/dy) of the gentle regional slope.
    undulation: amplitude (m) of the smooth terrain undulation (wavelengths 350 m and 460 m) on top of the slope.
    street_spacing: distance between parallel streets of the street grid (m).
    road_width: kerb-to-kerb width of a roadway (m).
    sidewalk_width: width of the raised sidewalk on each side (m).
    kerb_height: height of the kerb step between roadway and everything else (m): a breakline.
    embankment_height: height of the raised terrace (embankment) in the largest block interior (m); 0 = none.
    embankment_slope: horizontal run of its slopes per metre of height (1.5 = 1:1.5).
    terrain_resolution: grid spacing of the terrain mesh (m); breaklines get their own grid lines.
    tree_spacing: distance between street trees along a sidewalk (m).
    car_spacing: mean distance between parked cars along a kerb (m).
    pole_spacing: distance between street-light poles along a sidewalk (m).

    Aerial LiDAR (ALS)
    ------------------
    als: simulate ALS.
    als_density: mean pulse density on the ground over the whole block (pulses/m², overlaps included).
    als_altitude: flying height above the terrain (m).
    als_fov: full scan angle of the oscillating mirror (deg).
    als_speed: ground speed of the aircraft (m/s).
    als_overlap: side overlap of neighbouring strips (0..0.8).
    als_range_noise: 1-sigma range noise (m).
    als_outlier_fraction: fraction of pulses replaced by outliers (half low noise, class 7; half high noise, 18).
    als_strip_sigma: 1-sigma of a constant 3D offset per flight strip (m), a strip misalignment; 0 = none.
    als_gps_start: GPS seconds of the first pulse.
    point_ids: add an extra dimension ``object_id`` (u32) to both LAZ files: 0 terrain and noise, n building
        ``Bnnnn``, 100000 + k tree/hedge element k, 200000 + k car k, 300000 + k pole k.

    Mobile mapping (MLS, trajectory, panoramas)
    -------------------------------------------
    mls: simulate the mobile-mapping drive (trajectory, MLS points, panoramas).
    drive_length: length of the drive along the streets (m); it stops earlier when the route ends.
    drive_speed: vehicle speed (m/s).
    trajectory_rate: rate of the written trajectory (Hz, >= 10).
    sensor_height: height of the camera centre (the trajectory reference point) above the road (m).
    mls_pulse_rate: pulses per second of each scanner.
    mls_line_rate: rotations per second of each scanner.
    mls_scanners: number of rotating scanners (1 or 2; two are mounted in an X, ±45° from across-track).
    mls_max_range: maximum range (m); farther surfaces give no return.
    mls_range_noise: 1-sigma range noise (m).
    mls_outlier_fraction: fraction of pulses replaced by outliers (class 7 / 18).
    gnss_sigma_xy, gnss_sigma_z: 1-sigma of the smooth GNSS/INS position error of the measured trajectory (m).
    attitude_sigma: 1-sigma of the smooth roll/pitch error (deg); heading error is twice this.
    mls_gps_start: GPS seconds at the start of the drive.
    panorama_width: width of the equirectangular panoramas (px; height is half).
    panorama_spacing: distance between panoramas along the drive (m).
    panorama_count: maximum number of panoramas (None: as many as the drive allows).
    panorama_pose_noise: if True the pose file holds the measured (noisy) poses; by default the true ones.
    panorama_shadows: render cast shadows of the sun (one more ray per sunlit pixel).
    jpeg_quality: JPEG quality of the panoramas (1..100).
    dtm_resolution: cell size of the true DTM GeoTIFF (m).
    """

    extent: float = 400.0
    seed: int = 7
    origin: tuple[float, float] = (410600.0, 5479400.0)
    base_height: float = 235.0
    crs: str = "EPSG:25832+7837"
    slope: tuple[float, float] = (0.012, -0.006)
    undulation: float = 1.2
    street_spacing: float = 100.0
    road_width: float = 9.0
    sidewalk_width: float = 2.5
    kerb_height: float = 0.12
    embankment_height: float = 2.0
    embankment_slope: float = 1.5
    terrain_resolution: float = 1.0
    tree_spacing: float = 14.0
    car_spacing: float = 11.0
    pole_spacing: float = 25.0

    als: bool = True
    als_density: float = 10.0
    als_altitude: float = 500.0
    als_fov: float = 40.0
    als_speed: float = 60.0
    als_overlap: float = 0.3
    als_range_noise: float = 0.02
    als_outlier_fraction: float = 2e-4
    als_strip_sigma: float = 0.0
    als_gps_start: float = DEFAULT_ALS_GPS_START
    point_ids: bool = False

    mls: bool = True
    drive_length: float = 1000.0
    drive_speed: float = 8.0
    trajectory_rate: float = 20.0
    sensor_height: float = 2.6
    mls_pulse_rate: float = 50_000.0
    mls_line_rate: float = 50.0
    mls_scanners: int = 2
    mls_max_range: float = 80.0
    mls_range_noise: float = 0.008
    mls_outlier_fraction: float = 2e-4
    gnss_sigma_xy: float = 0.02
    gnss_sigma_z: float = 0.03
    attitude_sigma: float = 0.01
    mls_gps_start: float = DEFAULT_MLS_GPS_START
    panorama_width: int = 2048
    panorama_spacing: float = 20.0
    panorama_count: int | None = 50
    panorama_pose_noise: bool = False
    panorama_shadows: bool = False
    jpeg_quality: int = 92
    dtm_resolution: float = 0.5

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("extent", self.extent >= 60.0, "must be at least 60 m"),
            ("street_spacing", self.street_spacing >= 50.0, "must be at least 50 m"),
            ("road_width", 4.0 <= self.road_width <= 20.0, "must lie in [4, 20] m"),
            ("sidewalk_width", 1.0 <= self.sidewalk_width <= 6.0, "must lie in [1, 6] m"),
            ("kerb_height", 0.0 <= self.kerb_height <= 0.3, "must lie in [0, 0.3] m"),
            ("embankment_height", 0.0 <= self.embankment_height <= 10.0, "must lie in [0, 10] m"),
            ("embankment_slope", self.embankment_slope >= 0.5, "must be >= 0.5"),
            ("terrain_resolution", 0.1 <= self.terrain_resolution <= 5.0, "must lie in [0.1, 5] m"),
            ("als_density", 0.0 < self.als_density <= 200.0, "must lie in (0, 200] pulses/m²"),
            ("als_altitude", 50.0 <= self.als_altitude <= 5000.0, "must lie in [50, 5000] m"),
            ("als_fov", 5.0 <= self.als_fov <= 90.0, "must lie in [5, 90] degrees"),
            ("als_speed", self.als_speed > 0, "must be > 0"),
            ("als_overlap", 0.0 <= self.als_overlap <= 0.8, "must lie in [0, 0.8]"),
            ("als_range_noise", self.als_range_noise >= 0, "must be >= 0"),
            ("als_outlier_fraction", 0.0 <= self.als_outlier_fraction <= 0.1, "must lie in [0, 0.1]"),
            ("als_strip_sigma", 0.0 <= self.als_strip_sigma <= 5.0, "must lie in [0, 5] m"),
            ("mls_outlier_fraction", 0.0 <= self.mls_outlier_fraction <= 0.1, "must lie in [0, 0.1]"),
            ("drive_length", self.drive_length > 0, "must be > 0"),
            ("drive_speed", 0.5 <= self.drive_speed <= 30.0, "must lie in [0.5, 30] m/s"),
            ("trajectory_rate", self.trajectory_rate >= 10.0, "must be >= 10 Hz"),
            ("sensor_height", 0.5 <= self.sensor_height <= 5.0, "must lie in [0.5, 5] m"),
            ("mls_pulse_rate", self.mls_pulse_rate > 0, "must be > 0"),
            ("mls_line_rate", self.mls_line_rate > 0, "must be > 0"),
            ("mls_scanners", self.mls_scanners in (1, 2), "must be 1 or 2"),
            ("mls_max_range", self.mls_max_range > 2.0, "must be > 2 m"),
            ("mls_range_noise", self.mls_range_noise >= 0, "must be >= 0"),
            ("panorama_width", self.panorama_width >= 16 and self.panorama_width % 2 == 0, "must be even, >= 16"),
            ("panorama_spacing", self.panorama_spacing > 0, "must be > 0"),
            ("jpeg_quality", 1 <= self.jpeg_quality <= 100, "must lie in [1, 100]"),
            ("dtm_resolution", 0.05 <= self.dtm_resolution <= 10.0, "must lie in [0.05, 10] m"),
        ]
        for key, ok, problem in checks:
            if not ok:
                raise ConfigError(key, f"{problem} (got {getattr(self, key)!r})")
        if self.panorama_count is not None and self.panorama_count < 0:
            raise ConfigError("panorama_count", "must be >= 0 or None")

    @property
    def panorama_height(self) -> int:
        """Height of the panoramas (px)."""
        return self.panorama_width // 2

    def to_dict(self) -> dict[str, Any]:
        """All parameters as a JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def with_(self, **changes: Any) -> SynthConfig:
        """A copy with some parameters changed (unknown names raise :class:`ConfigError`)."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ConfigError(key, "unknown synth parameter")
        return replace(self, **changes)
