"""CityGML: an AdV-profile CityGML 2.0 writer, a reader of AdV LoD2 files (CityGML 1.0 and 2.0), and the
comparison of cim's building models with official ones."""
