"""The base of the driver's Tune callbacks (the ledger, the live record, the progress).

Tune pickles its callbacks into the experiment folder. What cannot travel (an output
stream, a storage's connection pool, a progress bar) is left behind, and a restored copy
prints to stdout.
"""

from __future__ import annotations

import sys

from ray.tune import Callback


class DriverCallback(Callback):
    _stream_attr = "stream"  # where the callback keeps its output stream
    _left_behind: tuple[str, ...] = ()  # what else is dropped when pickled

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(dict.fromkeys((self._stream_attr, *self._left_behind)))
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        setattr(self, self._stream_attr, sys.stdout)
