"""`garo simulate`: replay job history through the real planner on a virtual clock.

This package holds what the simulation consumes: the latency and failure
models and the price table (models.py, data/). The history it replays is
scaler.history's format.
"""
