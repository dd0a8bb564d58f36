"""The `index:` folder: numpy arrays and JSON (loadable without pickle), each file replaced atomically."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from .base import Origin


def save_arrays(path: Path, settings: dict[str, Any], origins: list[Origin], **arrays: np.ndarray) -> None:
    def strings(values: list[str]) -> np.ndarray:  # fixed-width unicode: loads without pickle
        return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")

    payload: dict[str, Any] = {"settings": np.array(json.dumps(settings)), **arrays,
                               "runs": strings([origin.run for origin in origins]),
                               "ids": strings([origin.record_id for origin in origins])}
    write_atomically(path, lambda handle: np.savez(handle, **payload))


def load_arrays(path: Path, settings: dict[str, Any]) -> tuple[list[Origin], dict[str, np.ndarray]] | None:
    """The origins and arrays saved at `path` (None if there is no file); refuses an index built with
    other settings."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        saved = json.loads(str(data["settings"]))
        if saved != settings:
            differing = ", ".join(f"{key} {saved.get(key)!r}" for key in settings if saved.get(key) != settings[key])
            raise ValueError(f"it was built with {differing}; use the same settings or a new index folder")
        origins = [Origin(str(run), str(record_id)) for run, record_id in zip(data["runs"], data["ids"], strict=True)]
        return origins, {key: data[key] for key in data.files}


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write to a temporary file and rename it over `path`, so a crash never leaves half an index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        write(handle)
    os.replace(temporary, path)
