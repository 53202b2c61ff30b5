"""The baseline `make bench` compares Relay's serving with: what a user deploys without Relay.

TorchServe's own ``BaseHandler`` loads a TorchScript ``model.pt``; this subclass adds only the
preprocessing a user would write (Pillow decode, resize, normalize, one tensor per request) and
returns the top class. It is served with TorchServe's defaults: no batching, default workers.
"""

import io
import json
import os

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler


class StockImageClassifier(BaseHandler):
    def initialize(self, context):
        super().initialize(context)  # torch.jit.load of the serialized file
        with open(os.path.join(context.system_properties["model_dir"], "stock_config.json")) as handle:
            self.config = json.load(handle)

    def preprocess(self, data):
        config, tensors = self.config, []
        for row in data:
            body = row.get("data") or row.get("body")
            image = Image.open(io.BytesIO(body)).convert("L" if config["channels"] == 1 else "RGB")
            image = image.resize((config["width"], config["height"]), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32).reshape(config["height"], config["width"], -1) / 255
            pixels = (pixels - np.array(config["mean"], np.float32)) / np.array(config["std"], np.float32)
            tensors.append(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
        return torch.stack(tensors)

    def postprocess(self, logits):
        probabilities = torch.softmax(logits, dim=1)
        best = probabilities.argmax(dim=1)
        return [{"index": int(index), "probability": float(probabilities[row, index])}
                for row, index in enumerate(best)]
