"""Ctrl-C and SIGTERM: one way to stop a job, in any phase, within seconds.

Why this exists: Ray Train installs its own SIGINT handler in ``trainer.fit()`` and leaves it
installed, so after meta-training a Ctrl-C was swallowed (or, the third time, exited with status
0). Here a fit runs in a helper thread (Ray Train then installs no handler) and the previous
handlers are restored after it anyway; SIGTERM is turned into the same ``KeyboardInterrupt``;
the entry point (:func:`mclnf_dist.cli.run_with_clean_errors`) prints one line saying how to
resume and exits 130 (143 for SIGTERM). Everything a job writes is atomic and a run is marked
complete last, so an interrupted run is never taken for a finished one.
"""

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_hint = {"text": "interrupted"}


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or ``kill``), handled like Ctrl-C."""


def on_interrupt(text: str) -> None:
    """What the one line printed on Ctrl-C says (the run and how to resume it)."""
    _hint["text"] = text


def interrupt_message() -> str:
    return _hint["text"]


def install_signal_handlers() -> None:
    """SIGTERM -> :class:`Terminated` in the main thread (call after ``ray.init``, which sets its
    own SIGTERM handler). SIGINT keeps Python's default (``KeyboardInterrupt``)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_interruptibly(work: Callable[[], T], poll_s: float = 0.2) -> T:
    """``work()`` in a daemon thread while the main thread stays free to take Ctrl-C.

    For ``trainer.fit()``: off the main thread Ray Train installs no SIGINT handler; the handlers
    in place before are restored afterwards in any case. On Ctrl-C the exception propagates at
    once; the fit's Ray actors go when the driver exits (they are owned by it).
    """
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # handed to the caller, whatever it is
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True, name="interruptible-work")
    thread.start()
    try:
        while thread.is_alive():
            thread.join(poll_s)
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in saved.items():
                if signal.getsignal(sig) is not handler and handler is not None:
                    signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
