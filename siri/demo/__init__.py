"""``siri demo``: SIRI's effect in miniature on a synthetic task (see ``siri.demo.run``)."""
from siri.demo.run import DemoSettings, run_demo

__all__ = ["DemoSettings", "run_demo"]
