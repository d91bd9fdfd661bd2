"""Scenes: transforms.json formats, the block partition, the procedural city."""
