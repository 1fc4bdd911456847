"""A stand-in for the ``wandb`` package (an optional extra, not installed for the tests) that
records what siri asks of it: ``install(monkeypatch)`` puts it into ``sys.modules``."""
import sys
import types


class FakeRun:
    """What ``wandb.init`` returns: ``logged`` holds ``(data, step)`` per ``log`` call."""

    def __init__(self):
        self.logged = []
        self.finished = False

    def log(self, data, step):
        self.logged.append((dict(data), step))

    def finish(self):
        self.finished = True


class FakeTable:
    def __init__(self, columns, data):
        self.columns, self.data = columns, data


def install(monkeypatch):
    """The fake module, installed for the test: ``init`` records its keyword arguments in
    ``init_calls`` and its runs in ``runs``; ``Table`` keeps columns and data;
    ``util.generate_id`` hands out ``id-1``, ``id-2``, ..."""
    module = types.ModuleType("wandb")
    module.init_calls = []
    module.runs = []
    ids = iter(range(1, 1000))

    def init(**kwargs):
        module.init_calls.append(kwargs)
        run = FakeRun()
        module.runs.append(run)
        return run

    module.init = init
    module.Table = FakeTable
    module.util = types.SimpleNamespace(generate_id=lambda: f"id-{next(ids)}")
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module
