"""Data: signals (image/audio/video), city scenes, block partition, Arrow ray store."""
