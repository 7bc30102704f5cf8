"""3D Tiles 1.1 output: placement on the globe, glTF content writers, tileset writing and point-cloud LOD."""
