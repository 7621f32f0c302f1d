"""Stop a run between steps, not in the middle of one.

Ctrl-C (SIGINT) or SIGTERM only sets a flag; the trainer checks it between steps, saves its
state and returns, so the saved state is never half-updated. A second Ctrl-C raises
KeyboardInterrupt at once, for a user who does not want to wait for the step to finish.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class StopRequests:
    """Context manager that turns SIGINT/SIGTERM into `requested` (the signal's name)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        # Python only lets the main thread install handlers; elsewhere signals keep their
        # default behaviour.
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
