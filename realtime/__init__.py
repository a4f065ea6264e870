"""Real-time face gender classification: detect faces, crop, classify, track, draw."""

__version__ = "0.2.0"
