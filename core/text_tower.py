"""A separate text tower for concepts (``VDX_TEXT_MODEL``): M-CLIP's multilingual encoders.

M-CLIP (FreddeFrallan/Multilingual-CLIP) trained a multilingual transformer plus one linear layer
to land on a CLIP model's embeddings, so a collection embedded with that CLIP image model answers
concepts in ~50 languages without re-embedding. A checkpoint such as
``M-CLIP/XLM-Roberta-Large-Vit-B-32`` is laid out as the ``multilingual-clip`` package saves it:

* ``config.json``: ``{"model_type": "M-CLIP", "modelBase": "xlm-roberta-large",
  "transformerDimensions": 1024, "numDims": 512}`` (``MCLIPConfig``) — the base transformer is
  named, not described;
* ``pytorch_model.bin`` (or ``model.safetensors``): the base transformer under ``transformer.*``
  and the projection as ``LinearTransformation.weight`` / ``.bias``;
* the base model's tokenizer files.

Its forward pass (``MultilingualCLIP.forward``): tokenise with padding, take the last hidden state,
average it over the attention mask, apply the linear layer.

This module loads that layout with transformers directly instead of through the package: the
package's ``MultilingualCLIP.__init__`` calls ``AutoModel.from_pretrained(config.modelBase)``, which
downloads the 2 GB ``xlm-roberta-large`` from the hub only to overwrite it with the checkpoint's own
weights (impossible offline), and it overrides the private transformers 4.x hook
``_load_state_dict_into_model``; it has not been released since 2022. Here the base architecture
comes from a built-in copy of the few well-known base configs (or a local directory, or the
transformers cache), the weights from the checkpoint alone.

Which image model a tower belongs to is not in its config: it is known for the published
checkpoints (:data:`TRAINED_FOR`) and can be declared with an ``"image_model"`` key in
``config.json`` (what the tests' tiny towers do).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.encoder import load_pretrained
from core.errors import ModelLoadError, TextModelMismatch

log = logging.getLogger(__name__)

# The published M-CLIP checkpoints and the CLIP image model each was trained against
# (the README of FreddeFrallan/Multilingual-CLIP; clip-as-service's mclip_model.py keeps the same map).
TRAINED_FOR = {
    "xlm-roberta-large-vit-b-32": "openai/clip-vit-base-patch32",
    "xlm-roberta-large-vit-l-14": "openai/clip-vit-large-patch14",
    "labse-vit-l-14": "openai/clip-vit-large-patch14",
    # open_clip's ViT-B-16-plus-240 (laion400m_e31): not a transformers model, so no collection here has it.
    "xlm-roberta-large-vit-b-16plus": "open_clip ViT-B-16-plus-240 laion400m_e31",
}

# Architectures of the bases M-CLIP names in ``modelBase`` (their hub config.json files), so that a
# checkpoint directory alone is enough offline.
_XLM_ROBERTA: dict[str, Any] = dict(
    model_type="xlm-roberta",
    vocab_size=250002,
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
BASE_CONFIGS: dict[str, dict[str, Any]] = {
    "xlm-roberta-large": dict(
        _XLM_ROBERTA, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
    "xlm-roberta-base": dict(
        _XLM_ROBERTA, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
}


@dataclass
class TextTower:
    """A loaded text tower: ``transformer`` -> masked mean -> ``projection``, unit vectors out."""

    name: str
    tokenizer: Any
    transformer: Any
    projection: Any
    trained_for: str | None
    max_tokens: int
    device: str = "cpu"

    @property
    def dim(self) -> int:
        """Length of the vectors (the projection's output, ``numDims``)."""
        return int(self.projection.out_features)

    def to(self, device: str) -> None:
        """Move the tower to ``device``."""
        self.transformer.eval().to(device)
        self.projection.eval().to(device)
        self.device = device

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit vectors ``(n, dim)`` of ``texts`` (cut at :attr:`max_tokens`)."""
        import torch

        parts = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(
                    list(texts[i : i + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.transformer(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                )[0]
                mask = tokens["attention_mask"].unsqueeze(2).to(hidden.dtype)
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
                out = torch.nn.functional.normalize(self.projection(mean).float(), dim=-1)
                parts.append(out.cpu().numpy().astype(np.float32, copy=False))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def truncated(self, text: str) -> bool:
        """Whether ``text`` has more tokens than the tower reads."""
        return len(self.tokenizer(text, truncation=False, verbose=False)["input_ids"]) > self.max_tokens

    def check_pair(self, image_model: str) -> None:
        """Raise :class:`TextModelMismatch` unless this tower was trained for ``image_model``.

        Names are compared by their last path part, case-insensitively, so a local copy saved under
        the hub name (``/models/clip-vit-base-patch32``) matches ``openai/clip-vit-base-patch32``.
        """
        if self.trained_for is None or _short(self.trained_for) != _short(image_model):
            raise TextModelMismatch(self.name, self.trained_for, image_model)


def _short(name: str) -> str:
    return name.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1].lower()


def load_text_tower(name: str) -> TextTower:
    """Load the M-CLIP checkpoint ``name`` (a local directory, or a hub name in the HF cache)."""
    return load_pretrained(name, "VDX_TEXT_MODEL", _load_mclip)


def _load_mclip(name: str, options: dict[str, Any]) -> TextTower:
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import cached_file

    config_path = cached_file(name, "config.json", **options)
    if config_path is None:
        raise ModelLoadError(name, "it has no config.json", "VDX_TEXT_MODEL")
    config = json.loads(Path(config_path).read_text())
    if config.get("model_type") != "M-CLIP":
        raise ModelLoadError(
            name,
            f"its config.json has model_type {config.get('model_type')!r}, not 'M-CLIP' "
            "(a multilingual-clip text tower)",
            "VDX_TEXT_MODEL",
        )
    base_name = str(config.get("modelBase", "xlm-roberta-large"))
    base_dir = Path(config_path).parent / base_name
    if base_name in BASE_CONFIGS:
        spec = dict(BASE_CONFIGS[base_name])
        base_config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    elif (base_dir / "config.json").is_file():  # a base described next to the checkpoint
        base_config = AutoConfig.from_pretrained(base_dir)
    else:
        base_config = AutoConfig.from_pretrained(base_name)
    transformer = AutoModel.from_config(base_config)
    projection = torch.nn.Linear(int(config["transformerDimensions"]), int(config["numDims"]))
    state = _state_dict(name, options)
    inner = {k[len("transformer.") :]: v for k, v in state.items() if k.startswith("transformer.")}
    missing, _ = transformer.load_state_dict(inner, strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]  # the pooler is never used
    if missing:
        raise ModelLoadError(
            name,
            f"its weights lack {len(missing)} tensors of {base_name}, e.g. {missing[0]}",
            "VDX_TEXT_MODEL",
        )
    projection.load_state_dict(
        {
            "weight": state["LinearTransformation.weight"],
            "bias": state["LinearTransformation.bias"],
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(name, **options)
    positions = int(getattr(base_config, "max_position_embeddings", 514))
    offset = 2 if getattr(base_config, "model_type", "") in ("xlm-roberta", "roberta") else 0
    declared = getattr(tokenizer, "model_max_length", None)
    max_tokens = positions - offset
    if isinstance(declared, int) and 0 < declared < 100_000:
        max_tokens = min(max_tokens, declared)
    trained_for = config.get("image_model") or TRAINED_FOR.get(_short(name))
    log.info(
        "loaded M-CLIP text tower %s (%s, for %s)", name, base_name, trained_for or "an unknown image model"
    )
    return TextTower(name, tokenizer, transformer, projection, trained_for, max_tokens)


def _state_dict(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's tensors: ``model.safetensors`` if present, else ``pytorch_model.bin``."""
    import torch
    from transformers.utils import cached_file

    path = cached_file(name, "model.safetensors", _raise_exceptions_for_missing_entries=False, **options)
    if path is not None:
        from safetensors.torch import load_file

        return dict(load_file(path))
    path = cached_file(name, "pytorch_model.bin", _raise_exceptions_for_missing_entries=False, **options)
    if path is None:
        raise ModelLoadError(name, "it has neither model.safetensors nor pytorch_model.bin", "VDX_TEXT_MODEL")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "LinearTransformation.weight" not in state:
        raise ModelLoadError(
            name, "its weights have no LinearTransformation (projection) layer", "VDX_TEXT_MODEL"
        )
    return dict(state)
