"""Prune the lake's raw and stage zones: the files loads download and convert before Iceberg.

They are not Iceberg files (no snapshot references them; the tables hold their own copy), and
every run adds a folder (about 430 MB raw after 8 runs of a 100k-row dataset), so ``maintain``
removes the old ones. The unit is a *load folder*: a folder directly holding files (``run=ID``
of a B&T fetch, a Socrata run, a TLC month); its *series* is the folder above it (a dataset of a
portal, a TLC color). A load folder is removed whole when

- all its files are older than the retention (a running load is writing its files now, and a
  load's files are written within its run: a run shorter than the retention keeps them), and
- it is not the newest load folder of its series (the latest load's files stay, whatever their
  age: what the tables were last loaded from), and
- nothing in it is a hidden file (an atomic write in progress) or has no readable time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from civiclake.lake import RAW_ZONE, STAGE_ZONE
from civiclake.tables.maintenance import _mtime, _remove

if TYPE_CHECKING:
    from civiclake.lake import Lake

DEFAULT_RETAIN_DAYS = 7
ZONES = (RAW_ZONE, STAGE_ZONE)


@dataclass(frozen=True)
class ZoneFile:
    url: str
    size: int
    zone: str


@dataclass
class ZoneReport:
    """What a prune removed (or would remove) and what it kept."""

    retain_days: int
    dry_run: bool
    removed: list[ZoneFile] = field(default_factory=list)
    folders_removed: int = 0
    folders_kept_latest: int = 0
    folders_kept_young: int = 0

    @property
    def bytes_removed(self) -> int:
        return sum(f.size for f in self.removed)

    def as_json(self) -> dict[str, Any]:
        return {
            "zones": list(ZONES),
            "retain_days": self.retain_days,
            "dry_run": self.dry_run,
            "files_removed": len(self.removed),
            "bytes_removed": self.bytes_removed,
            "folders_removed": self.folders_removed,
            "folders_kept_latest": self.folders_kept_latest,
            "folders_kept_young": self.folders_kept_young,
        }


@dataclass
class _Folder:
    files: dict[str, int] = field(default_factory=dict)  # path -> size
    newest: datetime | None = None
    pinned: bool = False  # a hidden file or a file without a time: never removed


def _folders(lake: Lake, root: str) -> dict[str, _Folder]:
    if not lake.fs.exists(root):
        return {}
    folders: dict[str, _Folder] = defaultdict(_Folder)
    for path, info in lake.fs.find(root, detail=True).items():
        if info.get("type", "file") == "directory":
            continue
        parent, _, name = path.rstrip("/").rpartition("/")
        folder = folders[parent]
        when = _mtime(info)
        if name.startswith(".") or when is None:
            folder.pinned = True
            continue
        folder.files[path.rstrip("/")] = int(info.get("size") or 0)
        folder.newest = when if folder.newest is None else max(folder.newest, when)
    return folders


def prune_zones(
    lake: Lake, retain_days: int, *, dry_run: bool = False, now: datetime | None = None
) -> ZoneReport:
    """Remove (or with ``dry_run`` list) the raw and stage load folders described above."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retain_days)
    report = ZoneReport(retain_days, dry_run)
    doomed: list[str] = []
    for zone in ZONES:
        root = str(lake.fs._strip_protocol(lake.join(zone))).rstrip("/")
        series: dict[str, list[tuple[str, _Folder]]] = defaultdict(list)
        for path, folder in _folders(lake, root).items():
            series[path.rpartition("/")[0]].append((path, folder))
        for members in series.values():
            dated = [(f.newest, path) for path, f in members if f.newest is not None]
            latest = max(dated)[1] if dated else None
            for path, folder in members:
                if path == latest:
                    report.folders_kept_latest += 1
                elif folder.pinned or folder.newest is None or folder.newest >= cutoff:
                    report.folders_kept_young += 1
                else:
                    report.folders_removed += 1
                    for file, size in sorted(folder.files.items()):
                        report.removed.append(ZoneFile(_url(lake, file), size, zone))
                        doomed.append(file)
    if doomed and not dry_run:
        _remove(lake, doomed)
        _remove_empty_folders(lake, doomed)
    return report


def _url(lake: Lake, path: str) -> str:
    root = str(lake.fs._strip_protocol(lake.url)).rstrip("/")
    return lake.url + path[len(root) :] if path.startswith(root) else path


def _remove_empty_folders(lake: Lake, files: list[str]) -> None:
    """Local lakes keep folders: remove those the prune emptied (object stores have none)."""
    if lake.local_path(lake.url) is None:
        return
    for folder in sorted({f.rpartition("/")[0] for f in files}, key=len, reverse=True):
        try:
            if not lake.fs.ls(folder):
                lake.fs.rmdir(folder)
        except OSError:
            continue
