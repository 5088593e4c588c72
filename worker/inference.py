"""Predictions from a trained job's checkpoint: a model cache and one forward pass.

An inference worker keeps recently used models loaded, in `eval()` mode and without
gradients, keyed by checkpoint id: checkpoints never change, so a cached model is never
stale, and a warm prediction reads no weights from the database. The cache is bounded
by the bytes of the models' parameters and buffers (least recently used goes first).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import torch
from cachetools import LRUCache
from torch import nn

from shared.jsonvalues import json_safe_object
from shared.net.build import build_model
from shared.spec import JobSpec
from shared.tensors import bytes_to_state_dict
from worker.training.transforms import Transform, eval_transform


@dataclass
class LoadedModel:
    """A trained model ready to predict, with what its inputs need."""

    model: nn.Module
    spec: JobSpec  # the training job's spec: data (shapes, transforms) and task
    transform: Transform | None
    device: torch.device
    nbytes: int


def load_model(spec: JobSpec, state: bytes, device: torch.device) -> LoadedModel:
    """Build the training job's model, load the checkpoint's weights, switch to eval()."""
    torch.manual_seed(spec.train.seed)  # construction draws; the weights replace it all
    model = build_model(spec.model)
    model.load_state_dict(bytes_to_state_dict(state), strict=True)
    model.requires_grad_(False)
    model.eval()  # Dropout off, BatchNorm on its running statistics
    model.to(device)
    tensors = [*model.parameters(), *model.buffers()]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    return LoadedModel(model, spec, eval_transform(spec.data), device, nbytes)


class ModelCache:
    """Loaded models by checkpoint id, least recently used evicted past `max_bytes`
    (cachetools' LRUCache sized by each model's bytes, behind a lock)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._models: LRUCache[uuid.UUID, LoadedModel] = LRUCache(
            maxsize=max_bytes, getsizeof=_model_bytes
        )
        self._lock = threading.Lock()  # a threads pool may predict concurrently
        self.hits = 0
        self.misses = 0

    def get(self, key: uuid.UUID) -> LoadedModel | None:
        """The cached model (now the most recently used), or None."""
        with self._lock:
            loaded = self._models.get(key)
            if loaded is None:
                self.misses += 1
                return None
            self.hits += 1
            return loaded

    def put(self, key: uuid.UUID, loaded: LoadedModel) -> None:
        """Keep `loaded`, evicting the least recently used models until it fits.

        A model larger than the whole cache is used once and not kept.
        """
        if loaded.nbytes > self.max_bytes:
            return
        with self._lock:
            self._models[key] = loaded

    @property
    def used_bytes(self) -> int:
        """Bytes of the models held now."""
        return int(self._models.currsize)

    def __contains__(self, key: uuid.UUID) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)


def _model_bytes(loaded: LoadedModel) -> int:
    return loaded.nbytes


def predict(loaded: LoadedModel, inputs: torch.Tensor) -> dict[str, Any]:
    """One forward pass over the batch, as the seed's notes do it.

    Classification: logits, `nn.Softmax(dim=1)` probabilities and the predicted class
    (argmax) per sample; regression: the raw outputs.
    """
    x = inputs.to(loaded.device)
    if loaded.transform is not None and x.is_floating_point():
        x = loaded.transform(x)
    with torch.inference_mode():
        out = loaded.model(x).float()
    task = loaded.spec.data.task
    if task == "classification":
        probabilities = nn.Softmax(dim=1)(out)
        predicted = probabilities.argmax(dim=1)
        outputs = [
            {"predicted_class": int(c), "probabilities": p, "logits": z}
            for c, p, z in zip(
                predicted.tolist(), probabilities.tolist(), out.tolist(), strict=True
            )
        ]
    else:
        outputs = [{"output": row} for row in out.reshape(out.shape[0], -1).tolist()]
    return json_safe_object({"task": task, "samples": len(outputs), "outputs": outputs})
