"""`python -m search.cli ...` as a separate process, for tests that kill or interrupt it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class CliProcess:
    """The CLI in its own session (process group), its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "search.cli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def ended(self) -> dict[str, int]:
        """Trial id -> rounds, of the trials the progress lines reported as completed or pruned."""
        out = {}
        for line in list(self.lines):
            for outcome in ("] completed ", "] pruned "):
                if outcome in line:
                    words = line.split(outcome, 1)[1].split()  # "<id> after <n>/<total> rounds, ..."
                    out[words[0]] = int(words[2].split("/")[0])
        return out

    def paused(self) -> set[str]:
        """Trials the progress lines reported as paused at a rung (ASHA with promotions)."""
        return {line.split("] pause ", 1)[1].split()[0] for line in list(self.lines) if "] pause " in line}

    def wait_for(self, ended: int, timeout: float = 300, *, paused: int = 0) -> None:
        """Until `ended` trials have ended and `paused` have paused; fails with the output if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while len(self.ended()) < ended or len(self.paused()) < paused:
            assert self.proc.poll() is None, self.tail()
            assert time.monotonic() < deadline, self.tail()
            time.sleep(0.2)

    def finish(self, timeout: float = 600) -> int:
        """The exit code; on timeout the whole process group is killed first."""
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """SIGKILL the driver process only (a cluster it joined stays up)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def kill_hard(self) -> None:
        """SIGKILL the driver, then everything it started (its local Ray), as a dead machine would."""
        self.kill()
        time.sleep(1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
