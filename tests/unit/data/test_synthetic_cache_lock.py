"""Two processes asking for the same synthetic cache at once: one renders, the other waits."""

import multiprocessing as mp

import numpy as np
import pytest

from densemtl.data import synthetic
from densemtl.data.synthetic import cache


def _make(root, log, barrier, queue):
    """Child process: count every rendered image in ``log``, then ask for the cache."""
    render = cache.render_scene

    def counted(*args, **kwargs):
        with open(log, "a") as f:
            f.write("x\n")
        return render(*args, **kwargs)

    cache.render_scene = counted  # what the cache module renders with
    barrier.wait()  # both ask at the same moment
    queue.put(str(synthetic.write_cache(root, n=6, size=16, seed=3, workers=1, progress=False)))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_concurrent_requests_render_the_cache_once(tmp_path):
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    log = tmp_path / "renders.log"
    procs = [ctx.Process(target=_make, args=(tmp_path / "cache", log, barrier, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    paths = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(paths) == 1
    assert len(log.read_text().splitlines()) == 6  # six images, rendered once, not twice
    arrays = synthetic.load_cache(paths.pop())
    expected = synthetic.render_scene(synthetic.image_seed(3, 5), 16)
    np.testing.assert_array_equal(arrays["image"][5], expected["image"])
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name]
    assert not leftovers


N_POOLED = cache.IN_PROCESS_MAX + 3  # large enough for a render pool


def _render_in_worker(root):
    return str(synthetic.write_cache(root, n=N_POOLED, size=8, seed=1, workers=2,
                                     progress=False))


def test_a_parallel_sweep_worker_renders_the_cache(tmp_path):
    """Inside the parallel launcher's loky worker a spawned render pool cannot start (it asks
    for the ``loky`` method) and used to hang the sweep; the worker renders in-process."""
    joblib = pytest.importorskip("joblib")
    root, name = tmp_path / "cache", cache.cache_name(N_POOLED, 8, 1)
    (root / f".{name}.tmp-1-dead").mkdir(parents=True)  # what a renderer killed mid-write leaves
    (path,) = joblib.Parallel(n_jobs=2, backend="loky", timeout=120)(
        [joblib.delayed(_render_in_worker)(root)])
    arrays = synthetic.load_cache(path)
    expected = synthetic.render_scene(synthetic.image_seed(1, N_POOLED - 1), 8)
    for key, value in expected.items():
        np.testing.assert_array_equal(arrays[key][N_POOLED - 1], value)
    assert [p.name for p in root.iterdir()] == [name]
