"""The ResNet50 fixture run by torch: its avgpool hook output on torchvision-preprocessed images.

Usage: python torch_resnet_oracle.py SPEC.json
SPEC: {"fixture": DIR (model.onnx, manifest.json, input_K.bin, avgpool_K.bin), "images": [...], "out": FILE}.
torchvision's resnet50 gets the fixture's weights from model.onnx (its exporter folded each BatchNorm into the
Conv before it, so convolutions get those weights and biases and BatchNorms become identities). Checks that this
torch model reproduces the fixture's own hook outputs on its stored inputs, and that torchvision's transform
reproduces those inputs; then writes the avgpool output for each image (float32, N × 2048) to "out".
Prints JSON with the checks' max abs differences.
"""
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from PIL import Image

from torchvision_cpu import models, transforms

spec = json.load(open(sys.argv[1], encoding="utf-8"))
fixture = spec["fixture"]
graph = onnx.load(os.path.join(fixture, "model.onnx")).graph
weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

model = models.resnet50(weights=None)


def module_at(scope):
    """Module of an exporter scope like /layer1/layer1.0/downsample/downsample.0 (each segment ends in its name)."""
    m = model
    for segment in scope.strip("/").split("/"):
        m = getattr(m, segment.split(".")[-1]) if not segment.split(".")[-1].isdigit() else m[int(segment.split(".")[-1])]
    return m


loaded = set()
for node in graph.node:
    if node.op_type == "Conv":
        conv = module_at(node.name.rsplit("/", 1)[0])
        conv.weight = torch.nn.Parameter(torch.from_numpy(weights[node.input[1]].copy()))
        conv.bias = torch.nn.Parameter(torch.from_numpy(weights[node.input[2]].copy()))
        loaded.add(id(conv))
    elif node.op_type == "Gemm":
        model.fc.weight = torch.nn.Parameter(torch.from_numpy(weights[node.input[1]].copy()))
        model.fc.bias = torch.nn.Parameter(torch.from_numpy(weights[node.input[2]].copy()))
convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
assert len(convs) == 53 and all(id(c) in loaded for c in convs), "every Conv2d got the fixture's weights"


def drop_batchnorm(parent):
    for name, child in parent.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(parent, name, torch.nn.Identity())
        else:
            drop_batchnorm(child)


drop_batchnorm(model)
model.eval()
hooked = []
model.avgpool.register_forward_hook(lambda module, inputs, output: hooked.append(output.flatten(1).detach()))

transform = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]
)
manifest = json.load(open(os.path.join(fixture, "manifest.json"), encoding="utf-8"))
data_root = os.path.join(fixture, manifest["imagesRelativeTo"].split(" ")[0])
fixture_hook, fixture_input = 0.0, 0.0
with torch.no_grad():
    for k, item in enumerate(manifest["items"]):
        stored = np.fromfile(os.path.join(fixture, item["input"]["file"]), dtype="<f4").reshape(1, 3, 224, 224)
        hooked.clear()
        model(torch.from_numpy(stored))
        expected = np.fromfile(os.path.join(fixture, item["avgpool"]["file"]), dtype="<f4")
        fixture_hook = max(fixture_hook, float(np.abs(hooked[0].numpy()[0] - expected).max()))
        ours = transform(Image.open(os.path.join(data_root, item["image"])).convert("RGB")).numpy()
        fixture_input = max(fixture_input, float(np.abs(ours - stored[0]).max()))

    features = []
    images = spec["images"]
    for start in range(0, len(images), 16):
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images[start : start + 16]])
        hooked.clear()
        model(batch)
        features.append(hooked[0].numpy())
np.concatenate(features).astype("<f4").tofile(spec["out"])
print(json.dumps({"fixtureHookMaxAbs": fixture_hook, "fixtureInputMaxAbs": fixture_input, "count": len(images)}))
