"""DFAUST raw-scan route (the data IGR trains on): ``scans/<subject>/<seq>/<seq>.<frame>.ply``, the scanner's
per-frame meshes (dense, open, noisy, with holes and stray pieces), with no joints. The skeleton of frame ``t``
comes from registration frame ``t`` of ``registrations_{m,f}.hdf5`` (``DfaustRegistrationsReader``: regressor
joints and per-part rotations); the scan's frame number is the registration's column. Scans are in the
registrations' frame (turned Y up the same way) and in metres (manifest ``scan_scale`` multiplies otherwise, e.g.
0.001 for millimetres).

The frames are observations (``Reader.observed``): the point-cloud path samples the scan's surface, orients by its
winding and labels by point-cloud heat geodesics from per-frame proxies, so open, multi-piece scans are processed,
not refused. Every frame the manifest's selection picks is a row; a missing or unreadable scan fails that frame,
naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from hipnet.pipeline.core.frames import Frame, FrameRef, Subject
from hipnet.pipeline.readers.common import FRAME_ERRORS, CheckReport, frame_error
from hipnet.pipeline.readers.dfaust import DfaustRegistrationsReader
from hipnet.pipeline.readers.generic import read_observation
from hipnet.pipeline.sources.selection import select_frames


class DfaustScansReader(DfaustRegistrationsReader):
    """DFAUST raw scans posed by the registrations (module docstring). Reader protocol of ``readers.base``."""

    @property
    def observed(self) -> bool:
        return True

    def scan_dir(self, subject: str, sequence: str) -> Path:
        """``scans/<subject>/<sequence>`` under the root (or under one folder below it)."""
        for base in (self.root / "scans", *sorted(self.root.glob("*/scans"))):
            if (base / subject / sequence).is_dir():
                return base / subject / sequence
        return self.root / "scans" / subject / sequence

    def scans(self, subject: str, sequence: str) -> dict[int, Path]:
        """Frame number -> scan file of one sequence (``<sequence>.<frame>.ply``)."""
        folder = self.scan_dir(subject, sequence)
        pattern = re.compile(rf"{re.escape(sequence)}\.(\d+)\.ply$")
        found = {}
        for p in sorted(folder.glob("*.ply")) if folder.is_dir() else []:
            m = pattern.match(p.name)
            if m:
                found[int(m.group(1))] = p
        return found

    def _frame_refs_of(self, seq: dict) -> list[FrameRef]:
        subject, name = seq["subject"], seq["name"]
        found = self.scans(subject, name)
        if not found:
            raise FileNotFoundError(f"{self.scan_dir(subject, name)}: no scans {name}.<frame>.ply")
        path, key = self.source(subject, name)
        src = f"{path}:{key}"
        if src not in self._lengths:
            self._lengths[src] = self.sequence_length(subject, name)
        idx = select_frames(self._lengths[src], self.manifest.get("frames"), key=f"{subject}/{name}")
        folder = self.scan_dir(subject, name)
        return [FrameRef(subject, name, int(i), str(found.get(int(i), folder / f"{name}.{int(i):06d}.ply")))
                for i in idx]

    def subject(self, name: str) -> Subject:
        """Rest joints only: the frames are observations of no fixed topology."""
        return Subject(name, self.registration_subject(name).rest_joints)

    def load(self, refs: Iterable[FrameRef]) -> Iterator[tuple[FrameRef, Frame | Exception]]:
        """One result per ref, in order: the scan with the registration frame's skeleton, or the error naming the
        scan (or the registrations file, when the skeleton cannot be had)."""
        refs = list(refs)
        reg_refs = []
        for r in refs:
            try:
                path, key = self.source(r.subject, r.sequence)
                reg_refs.append(FrameRef(r.subject, r.sequence, r.index, f"{path}:{key}"))
            except FileNotFoundError as e:
                reg_refs.append(FrameRef(r.subject, r.sequence, r.index, str(e)))
        to_y_up = self._to_y_up()
        scale = float(self.manifest.get("scan_scale", 1.0))
        for ref, (_, posed) in zip(refs, super().load(reg_refs), strict=True):
            if isinstance(posed, Exception):
                yield ref, posed
                continue
            try:
                points, faces, normals = read_observation(Path(ref.source))
                frame = Frame(ref.subject, ref.sequence, ref.index, scale * points @ to_y_up.T, faces,
                              posed.joint_transforms, posed.rest_joints,
                              normals=None if normals is None else normals @ to_y_up.T)
            except FRAME_ERRORS as e:
                yield ref, frame_error(ref.source, e)
                continue
            yield ref, frame

    def check(self, read_files: bool = True) -> CheckReport:
        """The registrations' check, then every selected frame's scan: missing, unreadable, or extra (a scan beyond
        its registration's frames)."""
        report = super().check(read_files)
        for seq in self.sequences():
            try:
                refs = self._frame_refs_of(seq)
            except (OSError, ValueError) as e:
                report.missing.append(str(e))
                continue
            path, key = self.source(seq["subject"], seq["name"])
            report.missing += [r.source for r in refs if not Path(r.source).is_file()]
            report.extra += [f"{p} (the registration has {self._lengths[f'{path}:{key}']} frames)"
                             for i, p in self.scans(seq["subject"], seq["name"]).items()
                             if i >= self._lengths[f"{path}:{key}"]]
            for r in refs if read_files else []:
                if Path(r.source).is_file():
                    try:
                        read_observation(Path(r.source))
                    except ValueError as e:
                        report.corrupt.append(str(e))
        return report
