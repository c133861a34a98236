"""A folder that fills: `edge-run DIR OUT --follow` processes each new frame once it is complete.

Downlinked products, a camera dump, another program's output: files appear in DIR over time, and
are written in pieces. A file is taken when it is complete, which from outside the writer means:
its size and modification time have not changed for `--settle` seconds (and it is not empty). It
is then read once and never again in this run, whatever happens to it later (a frame that was
still broken when it settled is a failed frame, recorded like any other). The folder is listed
every `poll` seconds with the listing rule of every other folder input (`frames.scan_frames`:
frame suffixes only, so `.part` or hidden temporary names are never taken before their rename).

Resumable: with `--resume`, frames that OUTPUT's frames.jsonl already records as complete are not
read again (`Source.items`' skip), so a watcher restarted after a crash or a power cut goes on
where it stopped. The watch ends on SIGINT/SIGTERM (or a fatal error): the source stops listing
as soon as the run's stop flag is set, and edge-run writes summary.json as it does for every run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from marsedge.data import frames
from marsedge.data.inputs import Item, Request, Source, register_source
from marsedge.edge.bags import is_bag
from marsedge.errors import ConfigError

DEFAULT_SETTLE = 1.0  # seconds a file's size and time must hold still before it is read
POLL = 0.2  # seconds between two listings of the folder


def follow_passes(folder: Path, stop: threading.Event, exclude: Path | None = None,
                  settle: float = DEFAULT_SETTLE, poll: float = POLL):
    """A `passes()` callable for a `Source`: one endless pass over the folder's frames, each
    yielded once it has settled, until `stop` is set."""
    out = exclude.resolve() if exclude is not None else None

    def passes() -> Iterator[Item]:
        taken: set[str] = set()
        watched: dict[str, tuple[tuple[int, int], float]] = {}  # name -> ((size, mtime), since)
        while not stop.is_set():
            scan = frames.scan_frames(folder)
            now = time.monotonic()
            for path in scan.files:
                name = scan.name(path)
                if name in taken or (out is not None and out in path.resolve().parents):
                    continue
                try:
                    info = path.stat()
                except OSError:  # gone between the listing and now: it may come back
                    watched.pop(name, None)
                    continue
                state = (info.st_size, info.st_mtime_ns)
                if name not in watched or watched[name][0] != state:
                    watched[name] = (state, now)
                    continue
                if info.st_size > 0 and now - watched[name][1] >= settle:
                    taken.add(name)
                    del watched[name]
                    yield Item(name, path=path)
                    if stop.is_set():
                        return
            stop.wait(poll)

    return passes


@register_source("follow", resumable=True, matches=lambda request: request.follow, priority=1)
def followed_source(request: Request) -> Source:
    """A folder that fills (--follow): resumable, its frames are named by their paths."""
    text = request.uri
    if request.topic is not None or not Path(text).is_dir() or is_bag(text):
        raise ConfigError(f"INPUT {text}: --follow watches a folder of frames"
                          + (" (--topic reads a bag)" if request.topic is not None else ""))
    stop = threading.Event()
    return Source(text, follow_passes(Path(text), stop, request.exclude, request.settle), stop=stop)
