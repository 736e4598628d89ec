"""Sweep files -> Ray Tune runs: validation, stage expansion, trainables, resume.

``sweep`` (validation and expansion) imports neither Ray nor MLflow, so a bad sweep file
is refused before either starts; ``runner`` and ``trainable`` hold the Ray side.
"""
