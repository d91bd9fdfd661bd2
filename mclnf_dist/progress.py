"""Progress that people can see: tqdm bars on a terminal, periodic log lines otherwise.

Under ``ray job submit``, CI or a pipe, a redrawn bar is unreadable; there every bar prints a plain
line at most every ``interval_s`` seconds, and only once another 5 % is done (so a slow machine
gets no more lines than a fast one: at most ~21 a bar), with its rate and ETA.
"""

import logging
import os
import sys
import time


class ProgressLog:
    """Timestamped log lines with a prefix, and bars."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.start = time.perf_counter()

    def info(self, message: str) -> None:
        elapsed = time.perf_counter() - self.start
        print(f"[{self.prefix} {elapsed:7.1f}s] {message}", flush=True)

    def bar(
        self, description: str, total: int, unit: str = "step", rays_per_unit: int = 0
    ) -> "Bar":
        return Bar(self, description, total, unit, rays_per_unit=rays_per_unit)


class Bar:
    """A tqdm bar on a TTY; periodic ``n/total, rate, ETA`` lines elsewhere."""

    def __init__(
        self,
        log: ProgressLog,
        description: str,
        total: int,
        unit: str,
        interval_s: float = 10.0,
        rays_per_unit: int = 0,
    ) -> None:
        self.log, self.description, self.total, self.unit = log, description, total, unit
        self.rays_per_unit = rays_per_unit
        """Rays each unit processes: the lines then show rays/s."""
        self.count, self.start, self.last_print, self.interval_s = (
            0,
            time.perf_counter(),
            0.0,
            interval_s,
        )
        self.printed_count = 0
        self.first = 0
        """Count the bar started at (a resumed loop starts late): rates count from there."""
        self.tqdm = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, desc=description, unit=unit)

    def start_at(self, count: int) -> None:
        """Begin at ``count`` (a resumed loop): rates and ETA count only the work done now."""
        self.count = self.first = self.printed_count = count
        if self.tqdm is not None:
            self.tqdm.update(count)

    def goto(self, count: int, **postfix: str) -> None:
        """Advance to ``count`` (a loop that knows its position)."""
        self.update(count - self.count, **postfix)

    def update(self, n: int = 1, **postfix: str) -> None:
        self.count += n
        if self.tqdm is not None:
            self.tqdm.update(n)
            if postfix:
                self.tqdm.set_postfix(postfix, refresh=False)
            return
        now = time.perf_counter()
        due = now - self.last_print >= self.interval_s
        due = due and self.count - self.printed_count >= max(1, self.total // 20)
        if due or self.count >= self.total:
            self.last_print, self.printed_count = now, self.count
            rate = (self.count - self.first) / max(now - self.start, 1e-9)
            eta = (self.total - self.count) / max(rate, 1e-9)
            rays = f", {rate * self.rays_per_unit:,.0f} rays/s" if self.rays_per_unit else ""
            extra = " ".join(f"{k}={v}" for k, v in postfix.items())
            self.log.info(
                f"{self.description}: {self.count}/{self.total} {self.unit}s, "
                f"{rate:,.{2 if rate < 100 else 0}f} {self.unit}/s{rays}, ETA {eta:.0f}s "
                f"{extra}".rstrip()
            )

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()


def quiet_logs(verbose: bool, own_info: bool = False) -> None:
    """The one logging set-up of every entry point: the package's own ``logging`` lines on stderr
    as ``[name] message`` (its INFO lines, such as the ingest's rays/s, only when ``own_info`` or
    ``verbose``: a job prints them in its own progress lines already); libraries' INFO chatter
    (MLflow's database set-up, Ray's start) off unless ``verbose``."""
    own = logging.getLogger("mclnf_dist")
    if not own.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        own.addHandler(handler)
    own.setLevel(logging.INFO if verbose or own_info else logging.WARNING)
    level = "INFO" if verbose else "WARNING"
    os.environ["MLFLOW_LOGGING_LEVEL"] = level  # MLflow resets its logger when first imported
    for name in ("mlflow", "ray", "alembic"):
        logging.getLogger(name).setLevel(level)
