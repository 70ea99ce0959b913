"""torchdistill side of `bench/torchdistill_compare.py`: glue (models, data) and a driver, run in its own venv.

Nothing here is imported by Distillery, and nothing here imports Distillery: these files run under the
torchdistill virtual environment, which has torch, torchvision and torchdistill but not our engine.
"""
