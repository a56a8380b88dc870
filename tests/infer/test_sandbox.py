"""The python sandbox: each hostile snippet is contained and comes back as tool output."""

import os
import subprocess
import sys
import time

import pytest

from chatforge.infer.sandbox import best_isolation, run_python
from chatforge.infer.tools import Tool, ToolRegistry, default_tools

MODES = ["bare"] + (["ns"] if best_isolation() == "ns" else [])


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


def test_prints_and_shows_last_expression(mode):
    r = run_python("print('hi')\nx = 6\nx * 7", isolation=mode)
    assert r.output == "hi\n42\n" and r.exit_code == 0 and not r.timed_out


def test_exception_is_output_not_crash(mode):
    r = run_python("def f():\n    return 1/0\nf()", isolation=mode)
    assert "ZeroDivisionError" in r.output and 'File "<cell>", line 2' in r.output
    assert "sandbox_runner" not in r.output  # runner frames are hidden
    assert r.exit_code == 1 and "[exit code 1]" in r.as_tool_output()


def test_infinite_loop_times_out(mode):
    t = time.monotonic()
    r = run_python("print('start', flush=True)\nwhile True: pass", timeout=1.0, isolation=mode)
    assert r.timed_out and time.monotonic() - t < 4
    assert r.output.startswith("start") and "timed out" in r.as_tool_output()


def test_fork_bomb_contained(mode):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = run_python(code, timeout=1.5, isolation=mode)
    assert r.timed_out or r.exit_code != 0
    for _ in range(50):  # SIGKILLed processes may take a moment to be reaped
        try:
            os.killpg(r.pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("sandbox processes survived the fork bomb")


def test_huge_output_truncated(mode):
    r = run_python("while True: print('x' * 1000)", max_output=5000, timeout=5, isolation=mode)
    assert r.truncated and len(r.output) <= 5000 and "output truncated" in r.as_tool_output()


def test_memory_limit(mode):
    r = run_python("x = bytearray(4 * 1024**3)\nprint('allocated')", memory_mb=256, isolation=mode)
    assert "MemoryError" in r.output and "allocated" not in r.output


def test_env_secrets_not_readable(mode):
    env = dict(os.environ, CHATFORGE_TEST_SECRET="hunter2-secret")
    code = ("import os\nprint(os.environ.get('CHATFORGE_TEST_SECRET'))\n"
            "for p in [f'/proc/{os.getppid()}/environ', '/proc/1/environ']:\n"
            "    try:\n        print(open(p, 'rb').read())\n"
            "    except OSError as e:\n        print('denied', type(e).__name__)\n")
    # run from a child process that holds the secret in its real (/proc-visible) environment
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from chatforge.infer.sandbox import run_python as r; "
                          f"print(r(sys.stdin.read(), isolation={mode!r}).output)"],
                         input=code, env=env, capture_output=True, text=True, timeout=30).stdout
    assert "hunter2-secret" not in out
    assert out.startswith("None\n")


def test_cannot_write_outside_its_dir(mode, tmp_path):
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)  # even a world-writable directory outside the sandbox
    r = run_python(f"open({str(target)!r}, 'w').write('x')\nprint('wrote')", isolation=mode)
    assert not target.exists() and "wrote" not in r.output
    r = run_python("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())",
                   isolation=mode)
    assert r.output == "ok\n"


def test_no_network(mode):
    code = ("import socket\ns = socket.socket()\ns.settimeout(1)\n"
            "s.connect(('127.0.0.1', 9))\nprint('connected')")
    r = run_python(code, isolation=mode)
    assert "connected" not in r.output and r.exit_code != 0


def test_ns_mode_runs_as_nobody_in_private_tmp():
    if "ns" not in MODES:
        pytest.skip("namespaces unavailable here (needs root + unshare); 'bare' mode covers the rest")
    r = run_python("import os\nprint(os.getuid(), os.getcwd(), os.listdir('/tmp'))", isolation="ns")
    assert r.output == "65534 /tmp/work ['work']\n"


def test_registry_reports_tool_failures():
    def broken(text):
        raise RuntimeError("boom")
    reg = ToolRegistry([Tool("search", "<|search_start|>", "<|search_end|>", broken)])
    assert reg.call(reg.get("search"), "q") == "[tool search failed: RuntimeError: boom]"
    with pytest.raises(ValueError):
        reg.register(Tool("search", "<|search_start|>", "<|search_end|>", broken))
    assert default_tools().get("python").run("2 ** 10") == "1024\n"
