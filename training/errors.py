"""Errors of the training package that its CLI reports in its own way."""

from __future__ import annotations


class TrainingInterruptedError(Exception):
    """Ctrl-C (or SIGTERM) during training: the message says what was kept and how to go on."""
