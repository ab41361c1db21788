"""Process settings: made by what imageclf runs (the command line, before torch loads), never
by importing the package; a value the user set is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from imageclf.core import runtime

SETTINGS = (*runtime.PROCESS_DEFAULTS, *runtime.THREAD_NAMES)


def _python(code: str, *argv: str, **env: str) -> dict:
    """Run ``code`` (with ``argv``) in a fresh interpreter whose environment has none of the
    settings (plus ``env``); what it prints last, as JSON."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS} | env
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *argv], env=clean,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_configure_process_sets_only_what_the_environment_does_not(monkeypatch):
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(runtime, "_MADE", {})
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    changed = runtime.configure_process()
    assert "THP_MEM_ALLOC_ENABLE" not in changed and os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    assert changed == {k: v for k, v in runtime.PROCESS_DEFAULTS.items() if k != "THP_MEM_ALLOC_ENABLE"}
    assert all(os.environ[k] == v for k, v in changed.items())
    assert runtime.configure_process() == {}


def test_threads_are_all_the_cores_when_free_else_the_free_ones_sleeping_when_idle():
    assert runtime.thread_settings(2, 0.1) == {}  # libgomp's default, as plain PyTorch runs
    assert runtime.thread_settings(2, 1.0) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    assert runtime.thread_settings(2, 3.5) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    assert runtime.thread_settings(16, 4.4) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "12"}
    assert runtime.thread_settings(16, 0.6) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "15"}


def _clear_threads(monkeypatch, others: float | None):
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(runtime, "_MADE", {})
    monkeypatch.setattr(runtime, "mallopt", lambda param, value: True)
    monkeypatch.setattr(runtime, "others_cpu_load", lambda: others)
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as the command line finds the process


def test_the_threads_follow_the_cores_load_before_torch_loads(monkeypatch):
    _clear_threads(monkeypatch, others=len(runtime._cores()))  # every core taken
    changed = runtime.configure_process()
    assert changed["OMP_WAIT_POLICY"] == "PASSIVE" and runtime.made("OMP_WAIT_POLICY") == "PASSIVE"
    assert os.environ.get("OMP_NUM_THREADS") == changed.get("OMP_NUM_THREADS")
    if len(runtime._cores()) > 1:
        assert changed["OMP_NUM_THREADS"] == "1"
    _clear_threads(monkeypatch, others=0.0)
    assert not runtime.configure_process().keys() & set(runtime.THREAD_NAMES)
    assert "OMP_WAIT_POLICY" not in os.environ


def test_a_users_thread_setting_or_a_loaded_torch_leaves_the_threads_alone(monkeypatch):
    _clear_threads(monkeypatch, others=64.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert not runtime.configure_process().keys() & set(runtime.THREAD_NAMES)
    assert os.environ["OMP_NUM_THREADS"] == "3" and "OMP_WAIT_POLICY" not in os.environ
    _clear_threads(monkeypatch, others=64.0)
    monkeypatch.setitem(sys.modules, "torch", object())  # too late: libgomp has read them
    assert not runtime.configure_process().keys() & set(runtime.THREAD_NAMES)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="/proc/stat: Linux")
def test_the_load_probe_sees_a_busy_core():
    assert runtime.others_cpu_load(0.01) is not None  # Linux: /proc/stat
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        assert runtime.others_cpu_load(0.2) >= 0.7
    finally:
        hog.kill()
        hog.wait()


def test_importing_the_package_leaves_the_process_alone():
    seen = _python("""
        import json, os, sys
        before = dict(os.environ)
        import imageclf
        names = [imageclf.ImageclfError.__name__, imageclf.__version__]
        print(json.dumps({"changed": sorted(set(os.environ.items()) ^ set(before.items())),
                          "torch": "torch" in sys.modules, "names": names}))
    """)
    assert seen == {"changed": [], "torch": False, "names": ["ImageclfError", seen["names"][1]]}


def test_the_public_names_load_on_first_use():
    import imageclf
    from imageclf import load  # a from-import goes through the module's __getattr__ too
    from imageclf.api import load as api_load
    from imageclf.recipes.schema import Recipe

    assert load is api_load and imageclf.Recipe is Recipe
    assert all(getattr(imageclf, name) is not None for name in imageclf.__all__)
    assert set(imageclf.__all__) <= set(dir(imageclf))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        imageclf.nope  # noqa: B018


def test_the_command_line_configures_the_process_before_torch_loads():
    seen = _python("""
        import json, os, sys
        from imageclf.core import runtime
        configure, at_call = runtime.configure_process, {}

        def spy(**kw):
            at_call.setdefault("torch", "torch" in sys.modules)  # at the first call
            at_call["probe"] = kw.get("probe_load")
            return configure(**kw)

        runtime.configure_process = spy  # before imageclf.cli binds it
        from imageclf.cli import main
        try:
            main(["models"])  # a command that loads torch (--help does not: cli/startup_test.py)
        except SystemExit:
            pass
        try:
            main(["--help"])  # nothing to compute: no look at the cores' load
        except SystemExit:
            pass
        print(json.dumps({"torch_at_call": at_call.get("torch"), "torch_after": "torch" in sys.modules,
                          "help_probed": at_call["probe"],
                          "env": {k: os.environ.get(k) for k in SETTINGS}}))
    """.replace("SETTINGS", repr(SETTINGS)), OMP_WAIT_POLICY="ACTIVE")
    assert seen["torch_at_call"] is False and seen["torch_after"] is True and seen["help_probed"] is False
    # the user's value kept, and with it imageclf leaves the thread count alone
    assert seen["env"] == {**runtime.PROCESS_DEFAULTS, "OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": None}


@pytest.mark.skipif("MALLOC_MMAP_THRESHOLD_" not in runtime.PROCESS_DEFAULTS, reason="glibc settings: Linux")
def test_configured_process_reuses_freed_memory_without_page_faults():
    code = """
        import json, resource, sys
        from imageclf.core import runtime
        if sys.argv[-1] == "configure":
            runtime.configure_process()

        def faults_of_alloc_cycles():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(5):  # as a training step does: a large block written, freed, again
                block = bytearray(48 << 20)
                block[::4096] = b"x" * len(block[::4096])
                del block
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

        faults_of_alloc_cycles()  # the first cycle maps the memory in either case
        print(json.dumps({"faults": faults_of_alloc_cycles()}))
    """
    plain = _python(code, "plain")["faults"]
    configured = _python(code, "configure")["faults"]
    assert plain > 5 * (48 << 20) // 4096 // 2  # glibc maps and unmaps the block each time
    assert configured < plain / 20



@pytest.mark.skipif(not runtime.SERVING_DEFAULTS, reason="glibc settings: Linux")
def test_a_server_replaces_the_command_lines_malloc_settings_but_not_the_users(monkeypatch):
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(runtime, "_MADE", {})
    monkeypatch.setattr(runtime, "mallopt", lambda param, value: True)
    runtime.configure_process()  # the command line, before it knows the command is serve
    changed = runtime.configure_process(serving=True)
    assert changed == runtime.SERVING_DEFAULTS
    assert runtime.configure_process() == {}  # create_app's own call keeps the server's
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == runtime.SERVING_DEFAULTS["MALLOC_MMAP_THRESHOLD_"]
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # the user's own value
    monkeypatch.setattr(runtime, "_MADE", {})
    for key in runtime.MALLOPT_PARAMS.keys() - {"MALLOC_TRIM_THRESHOLD_"}:
        monkeypatch.delenv(key)
    runtime.configure_process()
    assert "MALLOC_TRIM_THRESHOLD_" not in runtime.configure_process(serving=True)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"


EXITING = """
    import atexit, sys, threading, time, types
    from imageclf.core.runtime import exit_process
    if sys.argv[1] == "torch":
        sys.modules["torch"] = types.ModuleType("torch")  # exit_process only asks whether it is loaded
    def late():
        time.sleep(0.2)
        print("thread done")
    threading.Thread(target=late).start()
    atexit.register(lambda: print("handler ran"))
    print("work done")
    exit_process(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])
    print("not reached")
"""


@pytest.mark.parametrize("loaded", ["torch", "none"])
@pytest.mark.parametrize("code, status", [("0", 0), ("3", 3), ("bad input", 1)])
def test_the_command_exits_with_its_status_after_its_threads_and_exit_handlers(loaded, code, status):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(EXITING), loaded, code],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == status, proc.stderr
    # Buffered output (a pipe), the non-daemon thread's and the exit handler's, in the
    # interpreter's own order; nothing after the exit.
    assert proc.stdout.splitlines() == ["work done", "thread done", "handler ran"]
    assert ("bad input" in proc.stderr) == (status == 1)

