"""Building models (LoD1.2 and LoD2.2) from point clouds and footprints."""
