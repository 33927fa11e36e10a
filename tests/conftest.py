"""Shared pytest set-up: offline environment, the ``--runslow`` switch, small helpers."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# dataset caches (derived labels, verification stamps) default to the user cache directory:
# keep the tests' out of the real one
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="densemtl-test-cache-")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module single-threaded, restoring the thread count afterwards: its tensors are tiny,
    and intra-op threads on a shared 2-core machine only add synchronisation (measured under
    load: one adversarial toy game 85 s with 2 threads, 5 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
