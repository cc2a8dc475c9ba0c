"""The files a study reads, pinned by content: its data file and its users' model files.

A study's run ids and fingerprint hash its spec, which names these files by path only; an edited data file or
model under the same name would silently mix two datasets (or two models) in one study on resume. So a new study
records the SHA-256 of each (`meta["inputs"]`), and resuming refuses, in one line naming the file, when one has
changed. A model given as `package.module:NAME` is pinned by its module's source file; files it imports in turn
are not pinned.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from batchlab.errors import BatchlabError
from batchlab.spec import data_file_kind, split_model_reference, text_file
from batchlab.sweep import Sweep

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def input_files(sweep: Sweep) -> dict[str, Path]:
    """What the study reads besides its spec: {"dataset": data file, "model <reference>": its source file}."""
    files: dict[str, Path] = {}
    if data_file_kind(sweep.base.dataset) or text_file(sweep.base.dataset):
        files["dataset"] = Path(sweep.base.dataset)
    for model in sorted({p.model for p in sweep.points()}):
        path = model_source(model)
        if path is not None:
            files[f"model {model}"] = path
    return files


def model_source(model: str) -> Path | None:
    """The source file of a user's model reference (None for built-ins, or a module that is not a file)."""
    try:
        _, target, _ = split_model_reference(model)
    except ValueError:
        return None
    if target.endswith(".py"):
        return Path(target)
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def pin_inputs(sweep: Sweep) -> dict[str, Any]:
    """{name: {"path", "sha256", "bytes"}} for every input file (after the study loaded them, so they exist)."""
    return {name: {"path": str(path.resolve()), "sha256": file_sha256(path), "bytes": path.stat().st_size}
            for name, path in input_files(sweep).items() if path.is_file()}


def check_inputs(pinned: dict[str, Any] | None, sweep: Sweep, directory: Path) -> None:
    """Raise BatchlabError naming the first input file that is missing or differs from what the study in
    `directory` pinned (studies made before pinning pinned nothing and pass)."""
    for name, was in (pinned or {}).items():
        path = input_files(sweep).get(name)
        if path is None:
            continue
        field = name.split(" ")[0]
        if not path.is_file():
            raise BatchlabError(f"{field}: {path} is not found from here (the study in {directory} read it from "
                                f"{was['path']}); allowed: resume where that path is valid")
        digest = file_sha256(path)
        if digest != was["sha256"]:
            raise BatchlabError(f"{field}: {path} changed since the study in {directory} was created (SHA-256 "
                                f"{was['sha256'][:12]}... then, {digest[:12]}... now); allowed: the same file to "
                                "resume, or a new --out directory for the new one")
