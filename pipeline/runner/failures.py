"""Failures a person can read: what failed in a run, one entry per bad file, and the full list in a file.

A run's failures are frames (``subject/sequence/index``) and sequences (``subject/sequence``: a file that could not
be listed, or a subject whose shape could not be read), each with the file it came from and a reason. A real dataset
can fail thousands of frames of the same file for the same reason, so the output groups them: each file is named
once with what is wrong (its first reason; ``+N other reasons`` when its frames failed differently), how many of its
frames failed and the first one, or that its sequence could not be listed; then one summary line. The list is cut
between files, never inside one file's repeats; ``write_report`` keeps every failure, one per line, next to the
store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hipnet.pipeline.core.io import atomic_write_bytes
from hipnet.pipeline.core.location import as_path, remove

# files named in the output; the rest are counted in the summary line and listed in the report file
SHOWN_FILES = 20
_FRAME_PREFIX = re.compile(r"^frame \d+: ")


def failure_file(source: str, key: str, reason: str) -> str:
    """The file a failure is about: the path its reason starts with (readers name the file first; a frame's
    problem may be in another file than the one it is read from, its sequence's skeleton say), else its ``source``,
    else its sequence (``subject/sequence``)."""
    head = reason.split(": ", 1)[0]
    if "/" in head or Path(head).suffix:
        return head
    return source or "/".join(key.split("/")[:2])


def plain_reason(file: str, reason: str) -> str:
    """``reason`` without the file it names first and without a leading ``frame K:``: what two failures of one
    file have in common when they differ only in the frame."""
    text = reason[len(file) + 2:] if reason.startswith(f"{file}: ") else reason
    return _FRAME_PREFIX.sub("", text)


@dataclass
class FileFailures:
    """What failed of one file: frames and sequences (keys in the order they failed) and the distinct reasons."""

    file: str
    frames: list[str] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # distinct, without the frame they name
    first: str = ""  # the first failure's reason as it was, with the frame of the file it names

    def line(self) -> str:
        other = f" (+{len(self.reasons) - 1} other reasons)" if len(self.reasons) > 1 else ""
        parts = []
        if self.frames:
            first = min(self.frames, key=_frame_order)
            parts.append(f"{_count(len(self.frames), 'frame')} failed, first {first}")
        if self.sequences:
            names = ", ".join(self.sequences[:3]) + (" ..." if len(self.sequences) > 3 else "")
            parts.append(f"{'sequence' if len(self.sequences) == 1 else 'sequences'} {names}: nothing written")
        return f"{self.file}: {self.first}{other} ({'; '.join(parts)})"


def _frame_order(key: str) -> tuple:
    head, _, index = key.rpartition("/")
    return (head, int(index) if index.isdigit() else 0)


def group_failures(failures: Iterable) -> list[FileFailures]:
    """``FrameFailure``-like items (``key``, ``source``, ``reason``) grouped by file, files in name order."""
    groups: dict[str, FileFailures] = {}
    for f in failures:
        file = failure_file(f.source, f.key, f.reason)
        g = groups.setdefault(file, FileFailures(file))
        (g.frames if f.key.count("/") >= 2 else g.sequences).append(f.key)
        reason = plain_reason(file, f.reason)
        if not g.reasons:
            g.first = f.reason[len(file) + 2:] if f.reason.startswith(f"{file}: ") else f.reason
        if reason not in g.reasons:
            g.reasons.append(reason)
    return [groups[k] for k in sorted(groups)]


def summary_lines(failures: Sequence, verb: str = "failed", report: Path | None = None,
                  shown: int = SHOWN_FILES) -> list[str]:
    """The lines a run prints: one per file (at most ``shown``), then one summary line naming ``report``."""
    groups = group_failures(failures)
    if not groups:
        return []
    lines = [f"  {verb}: {g.line()}" for g in groups[:shown]]
    frames = sum(len(g.frames) for g in groups)
    sequences = sum(len(g.sequences) for g in groups)
    if len(groups) > shown:
        rest = groups[shown:]
        lines.append(f"  ... and {_count(len(rest), 'more file')} ({_count(sum(len(g.frames) for g in rest), 'frame')}, "
                     f"{_count(sum(len(g.sequences) for g in rest), 'sequence')})")
    what = ([_count(frames, "frame")] if frames else []) + \
        ([f"{_count(sequences, 'sequence')} with nothing written"] if sequences else [])
    where = f"; every one is listed in {report}" if report is not None else ""
    lines.append(f"{verb}: {_count(len(groups), 'file')}, {' and '.join(what)}{where}")
    return lines


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def report_path(store: Path) -> Path:
    """The report file of a store: ``OUT/<split>.failures.txt`` next to ``OUT/<split>.zarr``."""
    store = as_path(store)
    return store.with_name(f"{store.stem}.failures.txt")


def write_report(store: Path, failures: Sequence, verb: str = "failed") -> Path | None:
    """Every failure of the run, one per line (``verb<TAB>key<TAB>file<TAB>reason``), next to ``store``; a report
    left by an earlier run is removed when this one has none. Returns the file, or None."""
    path = report_path(store)
    if not failures:
        remove(path)
        return None
    rows = [f"{verb}\t{f.key}\t{failure_file(f.source, f.key, f.reason)}\t{' '.join(f.reason.split())}"
            for f in sorted(failures, key=lambda f: _frame_order(f.key))]
    atomic_write_bytes(path, (f"# what\tkey\tfile\treason ({len(rows)} entries)\n" + "\n".join(rows) + "\n").encode())
    return path
