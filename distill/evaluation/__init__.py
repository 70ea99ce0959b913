"""Evaluation: accuracy, calibration and fidelity metrics (metrics.py), latency and size (latency.py), and the
report's pictures (plots.py, report_figures.py, report_html.py).

No re-exports here: the painter process (distill/painter.py) imports the picture modules, which need numpy
and matplotlib only, and importing this package must not import torch for them.
"""
