"""The app and the dashboards leave nothing behind: `reid-workbench app` stopped with SIGTERM or Ctrl-C ends its voila
server and every kernel, prints its URL only once the server answers, fails to start with one line (exit 2), culls the
idle kernel of a page nobody looks at; a plain script that uses a dashboard exits cleanly while a strip is computed."""
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import toy_methods  # noqa: F401  (registers toy_stripes; the app's processes import it from the run's config)
from reid_workbench.cli import main

TESTS = Path(__file__).resolve().parent
MARK = "REID_APP_LIFECYCLE_TEST"
pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the app's processes in /proc")


def marked(token: str) -> dict[int, str]:
    "pid -> command line of every process whose environment holds MARK=token (whoever its parent is now)."
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"{MARK}={token}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            pass
    return found


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate(): return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def token():
    "A marker for the processes a test starts; whatever of them is still running afterwards is killed."
    token = uuid.uuid4().hex
    yield token
    for pid in marked(token):
        try: os.kill(pid, signal.SIGKILL)
        except OSError: pass


def env_with(token: str) -> dict:
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, **{MARK: token})


def free_port() -> int:
    from reid_workbench.app import free_port
    return free_port()


def fetch(url: str, timeout: float):
    "GET `url` in the background (a page request starts a kernel); errors are ignored."
    def get():
        try: urllib.request.urlopen(url, timeout=timeout).read()
        except OSError: pass
    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    return thread


def first_line(stream, timeout: float) -> str:
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline() or "(no output)"), daemon=True).start()
    return lines.get(timeout=timeout)


def answers(url: str) -> bool:
    try: urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5)
    except urllib.error.HTTPError: pass                       # any status: the server answered
    except OSError: return False
    return True


def kernels(token: str) -> list[int]:
    return [pid for pid, cmd in marked(token).items() if "ipykernel" in cmd]


@pytest.mark.parametrize("sig, whole_page", [(signal.SIGTERM, True), (signal.SIGINT, False)],
                         ids=["SIGTERM-after-the-page", "SIGINT-while-the-kernel-starts"])
def test_stopped_app_leaves_no_voila_and_no_kernel(toy_run, token, sig, whole_page):
    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "reid_workbench.cli", "app", str(toy_run), "--port", str(port)],
                           env=env_with(token), cwd=toy_run.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)   # as in a terminal of its own: the signal goes to the app alone
    url, line = f"http://127.0.0.1:{port}/", first_line(app.stdout, timeout=120)
    assert url in line, f"{line}{app.stderr.read() if app.poll() is not None else ''}"
    assert answers(url)                                       # printed only once the server answers
    page = fetch(url, timeout=300)
    if whole_page: page.join(300)                            # the kernel ran the notebook: the dashboards are loaded
    wait_for(lambda: kernels(token), 120, "the page's kernel")
    assert len(marked(token)) >= 3                            # the app, voila and a kernel

    app.send_signal(sig)
    assert app.wait(60) == 0, app.stderr.read()
    left = marked(token)
    assert not left, f"still running after the app ended: {left}"


def test_app_fails_to_start_with_one_line(toy_run, capsys, monkeypatch):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["app", str(toy_run), "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not free" in err and "--port" in err, err

    monkeypatch.setitem(sys.modules, "voila", None)          # as if voila were not installed
    assert main(["app", str(toy_run), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install voila" in err, err


def test_idle_kernel_of_a_closed_page_is_culled(toy_run, token, monkeypatch):
    from reid_workbench.app import start_app
    for name, value in env_with(token).items(): monkeypatch.setenv(name, value)
    with start_app(toy_run, port=free_port(), cull_idle_timeout=2, cull_interval=1) as app:
        app.wait_ready(120)
        page = fetch(app.url, timeout=300)
        wait_for(lambda: kernels(token), 120, "the page's kernel")
        page.join(300)                                        # the page is served; nobody opens its websocket
        wait_for(lambda: not kernels(token), 60, "voila to cull the idle kernel")
        assert app.process.poll() is None                     # voila itself keeps serving
    assert not marked(token)


SCRIPT = """
import sys, time, torch
from reid_workbench.codes import StripeColourToy
from reid_workbench.dashboards.core import ImageBank
from reid_workbench.dashboards.interpolation import InterpolationDashboard

class SlowToy(StripeColourToy):
    "Decodes like StripeColourToy after a second of matrix products (a big generator's work, inside torch)."
    def decode(self, codes):
        x, end = torch.randn(256, 256), time.monotonic() + 1.0
        while time.monotonic() < end: x = torch.tanh(x @ x)
        return super().decode(codes)

dash = InterpolationDashboard(SlowToy(), ImageBank.from_dataset(sys.argv[1], max_images=8, per_identity=1), steps=3)
assert dash.wait() and dash.ok, dash.error_message
dash.steps.value = 4                      # a new strip is computed in a background thread; the script ends at once
print("strip thread running at exit:", dash.strip_job.thread.is_alive(), flush=True)
"""


def test_script_using_a_dashboard_exits_cleanly(synth, tmp_path):
    script = tmp_path / "dashboard_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result = subprocess.run([sys.executable, str(script), str(synth)], capture_output=True, text=True, timeout=300)
    assert "strip thread running at exit: True" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, f"exit status {result.returncode} (-6 is SIGABRT):\n{result.stderr[-3000:]}"
