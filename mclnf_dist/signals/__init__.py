"""Signals: real image, audio and video loaders, segments, builtin offline datasets."""
