"""Dual encoder: texts and images to L2-normalised float32 vectors, loaded lazily once.

Any model transformers loads with ``AutoModel`` that has the ``get_text_features`` /
``get_image_features`` contract works: CLIP, SigLIP, SigLIP 2 (fixed-resolution and NaFlex),
ChineseCLIP, AltCLIP. Each comes with its own processor; what differs between families (how text
is padded, how many tokens it reads, where the embedding size is in the config) is decided in
:class:`Family`, from the config's ``model_type``.

An optional separate text tower (``VDX_TEXT_MODEL``, see :mod:`core.text_tower`) embeds concepts
instead of the image model's own text encoder, e.g. a multilingual one trained to land on the
image model's embeddings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from core.errors import ModelLoadError
from core.hub import hub_offline_reason, is_cached, is_hub_name
from core.records import ModelIdentity

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from core.config import Settings
    from core.text_tower import TextTower

log = logging.getLogger(__name__)

CLIP_MAX_TOKENS = 77
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
T = TypeVar("T")

# What the image processor returns for a batch: ``pixel_values`` and, for SigLIP 2's NaFlex
# variant, ``pixel_attention_mask`` and ``spatial_shapes``; every tensor has the batch first.
Pixels = Mapping[str, "torch.Tensor"]


class Encoder(Protocol):
    """What the explorer and the bot need from a text/image encoder."""

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors ``(n, dim)`` of ``texts``."""
        ...

    def embed_images(self, images: Sequence[Image]) -> np.ndarray:
        """Unit vectors ``(n, dim)`` of ``images``."""
        ...

    def text_truncated(self, text: str) -> bool:
        """Whether ``text`` is longer than the model reads."""
        ...

    @property
    def identity(self) -> ModelIdentity:
        """Name, vector size and fingerprint of the model (recorded with the vectors it makes)."""
        ...


@dataclass(frozen=True)
class Family:
    """How one model family tokenises text; chosen by the config's ``model_type``."""

    name: str
    # SigLIP pools the *last* token, so it was trained (and must be used) with every text padded to
    # the full length; padding to the batch's longest text would change a text's vector with its batch.
    padding: bool | str = True
    # BERT/RoBERTa-style positions start after the padding index: 514 positions read 512 tokens.
    position_offset: int = 0


FAMILIES = {
    "clip": Family("CLIP"),
    "siglip": Family("SigLIP", padding="max_length"),
    "siglip2": Family("SigLIP 2", padding="max_length"),
    "chinese_clip": Family("ChineseCLIP"),
    "altclip": Family("AltCLIP", position_offset=2),
}


def family_of(config: Any) -> Family:
    """The :class:`Family` of a model config; unknown dual encoders get CLIP's rules."""
    model_type = str(getattr(config, "model_type", ""))
    return FAMILIES.get(model_type, Family(model_type or "dual encoder"))


def embedding_dim(config: Any) -> int:
    """Length of the model's joint embedding, from its config (no weights needed).

    CLIP, ChineseCLIP and AltCLIP project both towers to ``projection_dim``; SigLIP has no separate
    projection: the image embedding is the vision tower's width and the text head maps to it.
    """
    dim = getattr(config, "projection_dim", None)
    if dim:
        return int(dim)
    text, vision = getattr(config, "text_config", None), getattr(config, "vision_config", None)
    if text is not None and vision is not None:
        t = getattr(text, "projection_size", None) or getattr(text, "hidden_size", None)
        v = getattr(vision, "hidden_size", None)
        if t and v and int(t) == int(v):
            return int(t)
        if t and v:
            raise ValueError(f"its text ({t}-d) and image ({v}-d) embeddings differ in size")
    raise ValueError("its config names no embedding size: is it a dual (text and image) encoder?")


def load_pretrained(
    name: str,
    setting: str,
    load: Callable[[str, dict[str, Any]], T],
    options: dict[str, Any] | None = None,
) -> T:
    """Every model load goes through here: a local path must exist, an unreachable hub fails fast
    (``options`` from :func:`_source_options`, found here when not given), chatter is silenced, and
    any failure becomes one :class:`ModelLoadError` naming the model and the setting it came from."""
    if options is None:
        options = _source_options(name, setting)
    try:
        with _quiet_transformers():
            return load(name, options)
    except ModelLoadError:
        raise
    except Exception as e:  # any failure here means "this model cannot be used": say why
        log.debug("loading %s failed", name, exc_info=True)
        raise ModelLoadError(name, _reason(e), setting) from e


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence load-time chatter (weight-loading bars, the PIL image-processor fallback notice)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _features(out: Any) -> torch.Tensor:
    """Projected embeddings: a tensor in transformers 4.x, ``pooler_output`` of an output object in 5.x."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


def _normalised(x: torch.Tensor) -> np.ndarray:
    import torch

    x = torch.nn.functional.normalize(x.float(), dim=-1)
    return x.cpu().numpy().astype(np.float32, copy=False)


def _load_dual_encoder(name: str, options: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(name, **options)
    for method in ("get_text_features", "get_image_features"):
        if not callable(getattr(model, method, None)):
            raise ModelLoadError(
                name, f"{type(model).__name__} has no {method}(): it is not a text and image encoder"
            )
    processor = AutoProcessor.from_pretrained(name, **options)
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(name, "its processor lacks a tokenizer or an image processor")
    return model, processor


class ClipEncoder:
    """A transformers dual encoder (CLIP family) + its processor, loaded on first use; thread-safe.

    With ``text_model`` set, concepts are embedded by that separate text tower instead of the
    model's own text encoder; images always go through ``model``.
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        torch_threads: int | None = None,
        batch_size: int = 32,
        text_model: str = "",
        fingerprint_cache: Path | None = None,
    ) -> None:
        self.model_name = model
        self.text_model_name = text_model
        self.fingerprint_cache = fingerprint_cache
        self._identity: ModelIdentity | None = None
        self.requested_device = device
        self.torch_threads = torch_threads
        self.batch_size = max(1, batch_size)
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None
        self._tower: TextTower | None = None
        self._device = "cpu"
        self._dim: int | None = None
        self._family = FAMILIES["clip"]
        self._max_tokens = CLIP_MAX_TOKENS
        self._options: dict[str, Any] | ModelLoadError | None = None  # found once, see _source_options

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipEncoder:
        """An encoder for ``VDX_CLIP_MODEL`` / ``VDX_TEXT_MODEL`` / ``VDX_DEVICE`` / ``VDX_TORCH_THREADS``."""
        return cls(
            settings.clip_model,
            device=settings.device,
            torch_threads=settings.torch_threads,
            text_model=settings.text_model,
            fingerprint_cache=settings.data_dir / "model-fingerprints.json",
        )

    @property
    def identity(self) -> ModelIdentity:
        """Name, vector size and fingerprint of the image model, without loading the weights (hashed
        once, then cached). A separate text model (``VDX_TEXT_MODEL``) is not part of it: the vectors
        stored are the image model's."""
        if self._identity is None:
            self._identity = ModelIdentity(
                self.model_name, self.dim, model_fingerprint(self.model_name, self.fingerprint_cache)
            )
        return self._identity

    @property
    def dim(self) -> int:
        """Embedding size from the model config (reads only the config when not loaded)."""
        if self._dim is None:
            options = self._source_options()  # before importing transformers: a bad source fails fast
            from transformers import AutoConfig

            def read(name: str, opts: dict[str, Any]) -> int:
                try:
                    return embedding_dim(AutoConfig.from_pretrained(name, **opts))
                except ValueError as e:
                    raise ModelLoadError(name, _reason(e)) from e

            self._dim = load_pretrained(self.model_name, "VDX_CLIP_MODEL", read, options)
        return self._dim

    @property
    def family(self) -> str:
        """The model family (``CLIP``, ``SigLIP``, ``SigLIP 2``, ``ChineseCLIP``, ``AltCLIP``); loads the model."""
        self._load()
        return self._family.name

    @property
    def device(self) -> str:
        """Where the model runs (``cpu`` or ``cuda``); loads the model."""
        self._load()
        return self._device

    @property
    def text_tower(self) -> TextTower | None:
        """The separate text tower, when ``text_model`` is set; loads the models."""
        self._load()
        return self._tower

    def _load(self) -> tuple[Any, Any]:
        if self._model is not None:
            return self._model, self._processor
        with self._lock:
            if self._model is None:
                self._load_locked()
        return self._model, self._processor

    def _load_locked(self) -> None:
        options = self._source_options()
        import torch

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        device = self.requested_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(self.model_name, "VDX_DEVICE=cuda but no CUDA device is available")
        model, processor = load_pretrained(self.model_name, "VDX_CLIP_MODEL", _load_dual_encoder, options)
        try:
            dim = embedding_dim(model.config)
        except ValueError as e:
            raise ModelLoadError(self.model_name, _reason(e)) from e
        tower = None
        if self.text_model_name:
            from core.text_tower import load_text_tower

            tower = load_text_tower(self.text_model_name)
            tower.check_pair(self.model_name)
            if tower.dim != dim:
                raise ModelLoadError(
                    self.text_model_name,
                    f"it gives {tower.dim}-d vectors but the image model {self.model_name!r} gives {dim}-d",
                    "VDX_TEXT_MODEL",
                )
            tower.to(device)
        model.eval().to(device)
        self._family = family_of(model.config)
        self._max_tokens = _max_tokens(model.config, processor.tokenizer, self._family)
        self._device, self._dim, self._tower = device, dim, tower
        self._processor, self._model = processor, model  # last: _load() tests _model without the lock
        log.info(
            "loaded %s model %s on %s (dim %d)%s",
            self._family.name,
            self.model_name,
            device,
            dim,
            f", concepts by {self.text_model_name}" if tower else "",
        )

    def _source_options(self) -> dict[str, Any]:
        """``from_pretrained`` options, found once: every worker thread gets the same answer or error."""
        if self._options is None:
            try:
                self._options = _source_options(self.model_name)
            except ModelLoadError as e:
                self._options = e
        if isinstance(self._options, ModelLoadError):
            raise self._options
        return self._options

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors ``(n, dim)``; text longer than the model reads is cut, not rejected."""
        import torch

        model, processor = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._tower is not None:
            return self._tower.embed(texts, self.batch_size)
        parts = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tokens = processor.tokenizer(
                    list(texts[i : i + self.batch_size]),
                    padding=self._family.padding,
                    truncation=True,
                    max_length=self._max_tokens,
                    return_tensors="pt",
                ).to(self._device)
                # Only what every text tower takes: BERT-style tokenizers add token_type_ids.
                inputs = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
                parts.append(_normalised(_features(model.get_text_features(**inputs))))
        return np.concatenate(parts)

    def text_truncated(self, text: str) -> bool:
        """True when ``text`` has more tokens than the model reads (77 for CLIP, 64 for SigLIP) and so was cut."""
        _, processor = self._load()
        if self._tower is not None:
            return self._tower.truncated(text)
        ids = processor.tokenizer(text, truncation=False, verbose=False)["input_ids"]
        return len(ids) > self._max_tokens

    def preprocess_images(self, images: Sequence[Image]) -> dict[str, torch.Tensor]:
        """The model's inputs for ``images`` (resize, crop, normalise); safe to call from worker threads."""
        _, processor = self._load()
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        out = processor.image_processor(images=rgb, return_tensors="pt")
        return {
            k: v for k, v in out.items() if k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")
        }

    def embed_pixels(self, pixels: Pixels | Sequence[Pixels]) -> np.ndarray:
        """Unit vectors ``(n, dim)`` for what :meth:`preprocess_images` returned (one batch or several)."""
        import torch

        model, _ = self._load()
        batch = _joined(pixels)
        n = len(batch["pixel_values"]) if batch else 0
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with torch.inference_mode():
            for i in range(0, n, self.batch_size):
                chunk = {k: v[i : i + self.batch_size].to(self._device) for k, v in batch.items()}
                parts.append(_normalised(_features(model.get_image_features(**chunk))))
        return np.concatenate(parts)

    def embed_images(self, images: Sequence[Image]) -> np.ndarray:
        """Unit vectors ``(n, dim)`` of ``images`` (converted to RGB)."""
        self._load()
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            self.embed_pixels(self.preprocess_images(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(parts)

    async def aembed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed_texts` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_texts, texts)

    async def aembed_images(self, images: Sequence[Image]) -> np.ndarray:
        """:meth:`embed_images` in a worker thread."""
        return await asyncio.to_thread(self.embed_images, images)

    async def atext_truncated(self, text: str) -> bool:
        """:meth:`text_truncated` in a worker thread (the first call may load the model)."""
        return await asyncio.to_thread(self.text_truncated, text)

    def close(self) -> None:
        """Drop the models (and free GPU memory); a later call loads them again."""
        with self._lock:
            on_gpu = self._device == "cuda"
            self._model = self._processor = self._tower = None
        if on_gpu:
            import torch

            torch.cuda.empty_cache()


def _joined(pixels: Pixels | Sequence[Pixels]) -> dict[str, torch.Tensor]:
    """One batch from one or several :meth:`ClipEncoder.preprocess_images` results."""
    import torch

    if isinstance(pixels, Mapping):
        return dict(pixels)
    if isinstance(pixels, torch.Tensor):  # a bare pixel tensor (fixed-resolution models)
        return {"pixel_values": pixels}
    parts = [p if isinstance(p, Mapping) else {"pixel_values": p} for p in pixels]
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _max_tokens(config: Any, tokenizer: Any, family: Family) -> int:
    """Tokens the text tower reads: its position table (less any offset), or the tokenizer's limit."""
    text = getattr(config, "text_config", config)
    positions = getattr(text, "max_position_embeddings", None)
    limit = int(positions) - family.position_offset if positions else CLIP_MAX_TOKENS
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 100_000:
        limit = min(limit, declared)
    return limit


def model_fingerprint(model: str, cache: Path | None = None) -> str:
    """``sha256:<digest>`` of a local model directory's weight files, or ``rev:<commit>`` of a hub model.

    Hashing a 600 MB checkpoint takes a few seconds, so the digest is kept in ``cache`` (a JSON file)
    under the files' paths, sizes and modification times and only taken again when they change.
    Empty when neither is known (a hub model missing from the local cache).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if not files:
            return ""
        key = json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
        known = _read_json(cache)
        if key in known:
            return str(known[key])
        digest = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
        fingerprint = f"sha256:{digest.hexdigest()}"
        if cache is not None:
            known[key] = fingerprint
            _write_json(cache, known)
        return fingerprint
    from huggingface_hub import try_to_load_from_cache

    # The local hub cache keeps each revision under snapshots/<commit>/: no network needed.
    cached = try_to_load_from_cache(model, "config.json")
    return f"rev:{Path(cached).parent.name}" if isinstance(cached, str) else ""


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as e:  # only a cache: the next run hashes again
        log.info("could not write %s: %s", path, e)


def _projection_dim(model: str, config: Any) -> int:
    dim = getattr(config, "projection_dim", None)
    if not dim:
        raise ModelLoadError(model, "its config has no projection_dim: is it a CLIP model?")
    return int(dim)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300].rstrip(". ")


def _check_local(model: str, setting: str = "VDX_CLIP_MODEL") -> None:
    """A name that looks like a path must be an existing directory (the hub error would confuse)."""
    if not is_hub_name(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelLoadError(model, f"no such directory: {path}", setting)


def _source_options(model: str, setting: str = "VDX_CLIP_MODEL") -> dict[str, Any]:
    """``from_pretrained`` options for ``model``; fails fast when the hub is needed and unreachable.

    A hub model already in the local cache is loaded from there (``local_files_only``) when the
    hub cannot be reached, instead of retrying every file for a minute.
    """
    _check_local(model, setting)
    if not is_hub_name(model):
        return {}
    reason = hub_offline_reason()
    if reason is None:
        return {}
    if is_cached(model):
        log.warning(
            "the Hugging Face hub is unreachable (%s): using the cached copy of %s; "
            "set HF_HUB_OFFLINE=1 to skip this check",
            reason,
            model,
        )
        return {"local_files_only": True}
    raise ModelLoadError(
        model,
        f"the Hugging Face hub is unreachable ({reason}) and the model is not cached",
        setting,
    )
