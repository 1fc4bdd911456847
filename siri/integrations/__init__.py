"""SIRI's pieces inside other training frameworks.

``siri.integrations.trl``: siri's length schedules, capped reward and extremum checkpoints in
TRL's ``GRPOTrainer`` (needs ``pip install "siri[trl]"``). Nothing here is imported by
``import siri``; each integration imports its framework only when used.
"""
