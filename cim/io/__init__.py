"""Readers and writers (LAS/LAZ/COPC)."""
