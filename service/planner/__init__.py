"""Capacity planning: the HPA and KEDA loops simulated on a traffic profile (pure, no I/O).

`rill plan` (service/planner/cli.py) is the command; docs/planning.md explains the model.
"""
