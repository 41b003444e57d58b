"""What a network is: parameters, multiply-accumulates, stage shapes, layer count."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


@torch.no_grad()
def describe_network(model: nn.Module, image_size: int = 224) -> dict[str, Any]:
    macs = 0
    shapes: dict[str, list[int]] = {}
    ran: set[int] = set()  # modules the forward used (GoogLeNet's auxiliary classifiers are not)

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal macs
        ran.add(id(module))
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
            macs += output.numel() * k
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features

    def shape_of(name: str):
        return lambda module, inputs, output: shapes.__setitem__(name, list(output.shape[1:]))

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks += [m.register_forward_hook(lambda module, i, o: ran.add(id(module))) for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks += [m.register_forward_hook(shape_of(n)) for n, m in model.stages().items()]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and id(m) in ran]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) in ran]
    # the main path: not a ResNet projection shortcut, not a squeeze-and-excitation gate
    main_path = [n for n in convs if "downsample" not in n and ".se." not in n]
    used = {id(p) for m in model.modules() if id(m) in ran for p in m.parameters(recurse=False)}
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        # what the deployed graph holds (GoogLeNet's auxiliary classifiers are in the state_dict only)
        "inference_parameters": sum(p.numel() for p in model.parameters() if id(p) in used),
        "macs": macs,
        "gmacs": round(macs / 1e9, 3),
        "image_size": image_size,
        "stages": shapes,
        # The depth in a ResNet's (DenseNet's, VGG's) name counts the weighted layers on the main path (convs + Linear).
        "layers": len(main_path) + len(linears),
        "conv_layers": len(convs),
        "projection_convs": sum("downsample" in n for n in convs),
        "se_convs": sum(".se." in n for n in convs),
        "blocks": [len(m) for name, m in model.stages().items() if name.startswith("layer")],
    }
