"""The driver's lines on its terminal: one function, `say`, for every line the sweep prints
while a progress bar may be live (the ledger's per-cycle lines, the live record's, the
progress line).

On a terminal the bar (oracle.sweep.live.Progress, tqdm on the same stream) is cleared, the
line written, and the bar drawn again below it (tqdm.write), so no line is glued to a bar;
anywhere else (a log file, a pipe, a Ray job) the line is written as it is.
"""

from __future__ import annotations

import sys
from typing import TextIO


def say(line: str, stream: TextIO) -> None:
    if isatty(stream) and "tqdm" in sys.modules:  # a bar can only be live once tqdm is imported
        from tqdm import tqdm

        tqdm.write(line, file=stream)
        stream.flush()
    else:
        print(line, file=stream, flush=True)


def isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
