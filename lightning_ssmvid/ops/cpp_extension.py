"""Building the C++ CPU kernels of ``ops/csrc/`` on first use.

``torch.utils.cpp_extension.load`` builds a kernel with the machine's gcc (and ninja) into the torch extensions
cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), once per source, flags and CPU: the build
name carries a hash of all three, because ``-march=native`` code must not run on another CPU model (clusters share
home folders). A failed build is logged in one line and returns None, so callers fall back to their PyTorch path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]


def _cpu_fingerprint() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "".join(lines)


def build_once(state: dict, lock: threading.Lock, name: str, source: Path, what: str, fallback: str):
    """The module built from ``source`` (cached in ``state["module"]``), or None when it cannot be built: then one
    warning says ``what`` failed and that ``fallback`` is used."""
    if "module" in state:
        return state["module"]
    with lock:
        if "module" in state:
            return state["module"]
        module = None
        digest = hashlib.sha256(source.read_bytes() + " ".join(FLAGS).encode() + _cpu_fingerprint().encode())
        try:
            from torch.utils.cpp_extension import is_ninja_available, load

            if not is_ninja_available():  # the `ninja` wheel sits beside this interpreter, maybe not on PATH
                os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

            module = load(name=f"{name}_{digest.hexdigest()[:12]}", sources=[str(source)], extra_cflags=FLAGS,
                          extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as err:  # noqa: BLE001 - no compiler, no ninja, a failed build: fall back
            text = str(err).strip() or type(err).__name__
            first = next((ln.strip() for ln in text.splitlines() if "error:" in ln), text.splitlines()[0])[:200]
            log.warning("%s could not be built (%s): using %s", what, first, fallback)
        state["module"] = module
        return module
