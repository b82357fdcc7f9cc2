"""Read an offline W&B run back from its `.wandb` file, the way `wandb sync` does, for the tests.

The file (wandb 0.30-0.31, pinned in pyproject.toml) is a 7-byte header (`:W&B`, 0xBEE1, version 0) followed by
32 KiB blocks of records, each `crc32 (4) | length (2) | type (1) | data`, the CRC over type and data; a record
that does not fit a block is split FIRST/MIDDLE/LAST. Each whole record is a protobuf
`wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Yield the file's protobuf records in order, checking each chunk's CRC."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0), f"{path}: not a .wandb file"
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is zero padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:
            break
        assert zlib.crc32(bytes([kind]) + chunk) == crc, f"{path}: bad CRC at byte {pos}"
        parts.append(chunk)
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def _update(target: dict, items) -> dict:
    """Apply protobuf items (`key`, or a `nested_key` path, and `value_json`) to a nested dict."""
    for item in items:
        *parents, last = list(item.nested_key) or [item.key]
        node = target
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = json.loads(item.value_json)
    return target


@dataclass
class OfflineRun:
    """What a finished offline run recorded: identity, config, every history row, the final summary."""

    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    artifacts: list[tuple[str, list[str]]] = field(default_factory=list)  # (type, aliases)
    exit_code: int | None = None

    def logged(self, key: str) -> list:
        """Every value logged under `key`, in order."""
        return [row[key] for row in self.history if key in row]


def read_run(path: Path) -> OfflineRun:
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group, run.project = r.run_id, r.display_name, r.run_group, r.project
            run.job_type = r.job_type
            run.tags = list(r.tags)
            _update(run.config, r.config.update)
        elif kind == "config":
            _update(run.config, record.config.update)
        elif kind == "history":
            run.history.append(_update({}, record.history.item))
        elif kind == "summary":
            _update(run.summary, record.summary.update)
        elif kind == "artifact":
            run.artifacts.append((record.artifact.type, list(record.artifact.aliases)))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """The offline W&B runs under a run dir (`<run dir>/wandb/offline-run-*/run-*.wandb`)."""
    return [read_run(path) for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))]
