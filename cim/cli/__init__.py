"""Command-line interface modules (``cim ...``)."""
