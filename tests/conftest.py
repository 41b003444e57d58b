import os

import pytest
import torch

# CI has 2 cores; keep torch from oversubscribing them alongside ONNX Runtime.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export each architecture once per session: {arch: manifest}."""
    import resnet_deploy as rd

    root = tmp_path_factory.mktemp("engines")
    cache: dict[str, dict] = {}

    def get(arch: str) -> dict:
        if arch not in cache:
            cache[arch] = rd.export(arch, out_dir=root)
        return cache[arch]

    get.root = root
    return get
