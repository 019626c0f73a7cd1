"""Helpers shared by the engine's tests."""
from __future__ import annotations

import torch

from training import engine


def thread_spy(monkeypatch) -> list:
    """The torch thread count seen at each training step (``engine.Engine.step`` wrapped)."""
    seen = []
    step = engine.Engine.step

    def spy(self):
        seen.append(torch.get_num_threads())
        step(self)

    monkeypatch.setattr(engine.Engine, "step", spy)
    return seen
