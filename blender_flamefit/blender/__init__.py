"""Blender data from a read bundle, one module per data kind (mesh + shape keys, material,
camera, lights + world, scene settings); importer.py puts them together."""
