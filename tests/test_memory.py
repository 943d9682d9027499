"""Peak memory of a device that personalizes with the embedded default bundle (issue 11).

The figure itself (goal: <= 250 MB in a runtime-only install) is measured by `benchmarks/latency.py`
and reported in BENCHMARKS.md §10.4: it moves by a few MB with the installed wheels (251.3 MB in the
[train] venv failed CI once, issue 20), so a test cannot pin it. The test keeps headroom up to the
300 MB bound every refusal is judged by, and asserts what does not move: generating a model adds
almost nothing to the peak of loading the bundle.
"""

import subprocess
import sys

import onnx
import pytest

from tina_edge.export.portable.weight_only import dynamic_int8_to_weight_only
from tina_edge.runtime.bundle import default_bundle_path, open_bundle
from tina_edge.runtime.sessions import return_freed_memory

CEILING_BYTES = 300e6  # the hard bound (300e6 bytes = 286 MiB); the 250 MB goal is benchmarked
PERSONALIZE_EXTRA_MIB = 24  # measured +2 MiB over from_bundle's peak for 2 x 10 classes

# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child forked from a large pytest process
# reports the parent's size (measured: 1.9 GB in the full suite vs 217 MiB alone); VmHWM starts
# afresh with the new program's memory map.
_CHILD = """
def hwm():
    return [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
from tina_edge.runtime import Personalizer
p = Personalizer.from_bundle()
loaded = hwm()
names = list(p.manifest.vocabulary[:20]) or ["class %d" % i for i in range(20)]
for part in (names[:10], names[10:]):
    p.personalize(part).to_bytes()
print(loaded, hwm())
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM from /proc is Linux only")
def test_default_bundle_personalizes_within_the_memory_budget():
    b = open_bundle(None)
    try:
        model = onnx.load_from_string(b.data(b.manifest.text_encoder.model))
    finally:
        b.close()
    if dynamic_int8_to_weight_only(model):
        pytest.skip(f"{default_bundle_path()} still holds a text encoder in the old weight-only form (its session "
                    "creation peaks ~55 MiB higher): re-export it, or `tina-edge convert` it (BENCHMARKS.md §10.4)")
    del model
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    loaded_kib, peak_kib = map(int, r.stdout.strip().splitlines()[-1].split())
    peak_bytes = peak_kib * 1024
    print(f"peak RSS {peak_bytes / 2**20:.1f} MiB = {peak_bytes / 1e6:.1f} MB (from_bundle {loaded_kib / 1024:.1f} MiB)")
    assert peak_bytes <= CEILING_BYTES
    assert (peak_kib - loaded_kib) / 1024 <= PERSONALIZE_EXTRA_MIB


_FRAGMENTED = """
import sys
from tina_edge.runtime.sessions import return_freed_memory
def rss():
    return [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")][0] / 1024
blocks = [(bytes(100_000), bytes(1000)) for _ in range(1500)]  # 143 MiB below glibc's mmap threshold
keep = [small for _, small in blocks]  # live blocks between the freed ones: the heap cannot shrink from its top
del blocks
before = rss()
return_freed_memory()
print(before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim; VmRSS from /proc")
def test_return_freed_memory_gives_freed_heap_back():
    """What make_session calls around every session creation: freed heap pages go back to the OS."""
    r = subprocess.run([sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True, check=True)
    assert float(r.stdout.strip().splitlines()[-1]) >= 64  # MiB returned of the 143 freed (96 measured)
    return_freed_memory()  # and in this process: callable twice, no error
