"""Run by ``test_sqlite.py`` as separate processes that race on one state store.

``python -m tests.state.racer URL GO_FILE KEYS``: opens the store, prints ``ready``, waits
for GO_FILE to exist, claims ``key-0`` .. ``key-{KEYS-1}`` all at once, then prints one JSON
line: the keys it won and the store's secret (hex).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from streamproxy.proxy.state import open_state_store

GO_TIMEOUT = 60.0


async def race(url: str, go_file: Path, keys: int) -> dict[str, object]:
    store = open_state_store(url)
    try:
        print("ready", flush=True)
        deadline = time.monotonic() + GO_TIMEOUT
        while not go_file.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the go file never appeared")
            await asyncio.sleep(0.001)
        names = [f"key-{number}" for number in range(keys)]
        results = await asyncio.gather(*(store.claim("client", name, 600) for name in names))
        secret = await store.secret()
    finally:
        await store.aclose()
    won = [name for name, result in zip(names, results, strict=True) if result.is_claimed]
    return {"won": won, "secret": secret.hex()}


if __name__ == "__main__":
    url, go_file, keys = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(race(url, go_file, keys))), flush=True)
