"""Who draws the report's pictures (training_curves.png, comparison.png, report.html): this process, or a
second one that `python -m distill run` forks at launch.

Measured on the jobs of docs/BENCHMARKS.md: the pictures cost a third of the process's wall time after
training (matplotlib's import, ~0.3 s, and ~0.09 s a figure). The forked painter imports numpy and
matplotlib while this process imports torch (a single-threaded import, so the second core is idle), then
waits; once training ends it draws while this process exports the student: 0.3 s less wall time on the
MLP job at 2 threads on 2 cores, 0.3-0.7 s at 1 thread. It never imports torch (the figures are numpy
only), so it neither competes with the job's threads while they train nor inherits torch's thread pool
half-made (it is forked before this process imports torch). Arrays cross the pipe as numpy. When the
painter fails (it died, raised or hung), everything is drawn here again, so the files are the same either
way; library callers and tests draw inline.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPLY_TIMEOUT_S = 300.0  # a figure takes ~0.1 s; this only bounds a painter that hangs


class Drawing:
    """Carries out the requests, in order: `figures` first, then `report` (which embeds those figures)."""

    def __init__(self) -> None:
        self.figures: dict[str, bytes] = {}
        self.logits: tuple[Any, Any, Any] = (None, None, None)  # teacher, student, labels as numpy

    def handle(self, request: tuple[Any, ...]) -> None:
        from distill.evaluation.plots import plot_comparison
        from distill.evaluation.report_html import draw_figures, render_report_html

        kind, out_dir = request[0], Path(request[1])
        if kind == "figures":
            _, _, history, *logits = request
            self.logits = (logits[0], logits[1], logits[2])
            teacher, student, labels = self.logits
            self.figures = draw_figures(history, teacher_logits=teacher, student_logits=student, labels=labels)
            (out_dir / "training_curves.png").write_bytes(self.figures["Training curves"])
            return
        _, _, report, history = request
        teacher, student, labels = self.logits
        assert student is not None, "the figures request comes first"
        plot_comparison(report, str(out_dir / "comparison.png"))
        page = render_report_html(
            report, history, teacher_logits=teacher, student_logits=student, labels=labels, figures=self.figures
        )
        (out_dir / "report.html").write_text(page, encoding="utf-8")


class InlinePainter:
    """Draws each picture when asked, in this process."""

    def __init__(self) -> None:
        self._drawing = Drawing()

    def figures(
        self, out_dir: Path, history: list[dict[str, Any]], *, teacher_logits: Any, student_logits: Any, labels: Any
    ) -> None:
        """training_curves.png and the page's figures: they need the curves and validation logits only."""
        self._request(
            ("figures", str(out_dir), history, _numpy(teacher_logits), _numpy(student_logits), _numpy(labels))
        )

    def report(self, out_dir: Path, report: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """comparison.png and report.html, once the report is built."""
        self._request(("report", str(out_dir), report, history))

    def finish(self) -> None:
        """Return once every picture asked for is on disk."""

    def _request(self, request: tuple[Any, ...]) -> None:
        self._drawing.handle(request)


class ForkedPainter(InlinePainter):
    """Sends each request to the painter process; `finish` waits for its answers."""

    def __init__(self, connection: Connection, process: Any) -> None:
        super().__init__()
        self._connection, self._process = connection, process
        self._sent: list[tuple[Any, ...]] = []
        self._failed = False

    @classmethod
    def start(cls) -> InlinePainter:
        """Fork the painter now (call it before torch is imported); an inline painter where that fails."""
        try:
            context = multiprocessing.get_context("fork")
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, ours), name="distill-painter", daemon=True)
            sys.stdout.flush()
            sys.stderr.flush()
            process.start()
            theirs.close()
            return cls(ours, process)
        except (OSError, ValueError):
            return InlinePainter()

    def finish(self) -> None:
        sent, self._sent = self._sent, []
        if not self._failed:
            self._failed = not all(self._answered() for _ in sent)
        if self._failed:  # draw everything here, in order, as an inline painter would have
            for request in sent:
                self._drawing.handle(request)
        with contextlib.suppress(OSError, ValueError):
            self._connection.send(None)
        self._connection.close()
        self._process.join(timeout=5)

    def _request(self, request: tuple[Any, ...]) -> None:
        self._sent.append(request)
        if self._failed:
            return
        try:
            self._connection.send(request)
        except (OSError, ValueError):  # the painter is gone
            self._failed = True

    def _answered(self) -> bool:
        try:
            if not self._connection.poll(REPLY_TIMEOUT_S):
                self._process.kill()
                return False
            reply = self._connection.recv()
        except (OSError, EOFError):
            return False
        if reply != "ok":
            print(f"distill-painter failed ({reply}); drawing here instead", file=sys.stderr)
        return bool(reply == "ok")


def _serve(connection: Connection, job_end: Connection) -> None:
    """The painter process: import what drawing needs while the job runs, then draw what it is sent."""
    # The fork copied the job's end of the pipe and its stdout (the event stream): without closing them the
    # painter would never see the job end, and a reader of the job's stdout would wait for the painter too.
    job_end.close()
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    _name_process(b"distill-painter")  # in ps and /proc/PID/comm: not to be taken for the job's engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the job; the painter ends with its pipe
    with contextlib.suppress(OSError):
        os.nice(10)  # while it imports, the job's own start-up comes first
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (the slow imports, done early)
    from matplotlib.figure import Figure  # noqa: F401

    import distill.evaluation.report_html  # noqa: F401  (numpy and matplotlib: no torch in this process)

    drawing = Drawing()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):  # the job ended (or died) without a last request
            return
        if request is None:
            return
        try:
            drawing.handle(request)
            connection.send("ok")
        except Exception:
            connection.send(traceback.format_exc(limit=3)[-1000:])


def _name_process(name: bytes) -> None:
    """Linux's prctl(PR_SET_NAME): the fork shares the engine's command line, so its name tells them apart."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name[:15], 0, 0, 0)  # 15 = PR_SET_NAME; 15 bytes at most


def _numpy(tensor: Any) -> Any:
    return None if tensor is None else tensor.detach().cpu().numpy()
