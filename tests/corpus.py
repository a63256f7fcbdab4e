"""Locating and loading the shared corpus of real recordings (``../shared/recordings``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "recordings").resolve()
SKIP_REASON = f"the shared corpus is absent (looked for {CORPUS}); it sits beside the clone in CI"


@dataclass(frozen=True)
class Recording:
    """One corpus recording: its name, raw SSE body and metadata (with ``expected``)."""

    name: str
    body: bytes
    meta: dict[str, Any]

    @property
    def dialect(self) -> str:
        return str(self.meta["dialect"])

    @property
    def expected(self) -> dict[str, Any]:
        return dict(self.meta["expected"])


def corpus_names() -> list[str]:
    """Stems of every ``.sse`` in the corpus, or [] when it is absent."""
    if not CORPUS.is_dir():
        return []
    return sorted(path.stem for path in CORPUS.glob("*.sse"))


def load(name: str) -> Recording:
    """Load one recording, skipping the test when the corpus is absent."""
    if not CORPUS.is_dir():
        pytest.skip(SKIP_REASON)
    body = (CORPUS / f"{name}.sse").read_bytes()
    meta = json.loads((CORPUS / f"{name}.json").read_text())
    return Recording(name, body, meta)


def corpus_params() -> list[Any]:
    """``pytest.param`` per recording, or one skipping param when the corpus is absent."""
    names = corpus_names()
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(reason=SKIP_REASON), id="no-corpus")]
    return [pytest.param(name, id=name) for name in names]
