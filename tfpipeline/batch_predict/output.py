"""The output file of a streamed prediction: where to resume it, and the report of a run.

Results are written in input order, so an output is always a prefix of the input's results: ``resume`` only needs
its last line to know where to go on (a partial last line from a killed run is dropped and redone).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Tuple

from tfpipeline.errors import DataError

RESUME_CHUNK = 1 << 16    # bytes read at a time from the end of an output being resumed


class ResumeMismatch(DataError):
    """The output to resume does not end on a row of this input."""


def resume_point(output: str) -> Tuple[int, int]:
    """(input line of the last result in ``output``, bytes of a partial last line dropped from it).

    The line is 0 for a missing or empty output. A partial last line (a run killed mid-write) is cut off here,
    so the resumed run appends whole lines only.
    """
    if not os.path.isfile(output) or os.path.getsize(output) == 0:
        return 0, 0
    size = os.path.getsize(output)
    with open(output, "rb+") as f:
        data, start = b"", size
        while start > 0:   # read back from the end until the last two newlines (or the file's start) are in
            start = max(0, start - RESUME_CHUNK)
            f.seek(start)
            data = f.read(size - start - len(data)) + data
            end = data.rfind(b"\n")
            if end >= 0 and (data.rfind(b"\n", 0, end) >= 0 or start == 0):
                break
        end = data.rfind(b"\n")
        complete = start + end + 1   # bytes of whole lines (0: none)
        if complete < size:
            f.truncate(complete)
    if end < 0:
        return 0, size
    last = data[data.rfind(b"\n", 0, end) + 1:end]
    try:
        line = json.loads(last)["line"]
        if not isinstance(line, int):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{output}: its last line is not a result of tfpipeline predict --input "
                        f"({last[:80]!r}); cannot resume it") from None
    return line, size - complete


@dataclass
class BatchPredictReport:
    input: str
    output: str
    written: int = 0              # results written by this run
    done_before: int = 0          # rows the resumed output already had
    dropped_bytes: int = 0        # partial last line removed before resuming
    bad_row_count: int = 0        # bad rows skipped (--on-bad-rows skip)
    bad_rows: str = ""            # their summary: count and the first few file:line messages
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        parts = [f"[tfpipeline] {self.written:,} row(s) predicted into {self.output} in {self.seconds:.1f} s "
                 f"({rate:,.0f} rows/s)"]
        if self.done_before:
            dropped = f", dropped a partial last line ({self.dropped_bytes} bytes)" if self.dropped_bytes else ""
            parts.append(f"resumed after the {self.done_before:,} row(s) already there{dropped}")
        if self.bad_rows:
            parts.append(self.bad_rows)
        return "; ".join(parts)
