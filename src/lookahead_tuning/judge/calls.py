"""Judging many pairs: each pending one asked once, ``concurrency`` at a time, yielded as it finishes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any


def completed(todo: dict[str, Any], ask: Callable[[Any], Any], *, concurrency: int, desc: str = "judging",
              progress: bool = False) -> Iterator[tuple[str, Any]]:
    """``(key, ask(item))`` for every item of ``todo`` as it finishes, behind a progress bar. With
    ``concurrency`` above 1 the calls run in threads (a server answers several at once); a failure or an
    interruption cancels the calls not yet started, so a caller that logs each result as it comes loses at
    most the calls in flight."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=desc, unit="pair", disable=not progress)
    try:
        if concurrency <= 1:
            for key, item in todo.items():
                yield key, ask(item)
                bar.update(1)
            return
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = {pool.submit(ask, item): key for key, item in todo.items()}
            try:
                for fut in as_completed(futures):
                    yield futures[fut], fut.result()
                    bar.update(1)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        bar.close()
