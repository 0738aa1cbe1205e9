"""CLIP encoder: texts and images to L2-normalised float32 vectors, loaded lazily once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.errors import ModelLoadError
from core.hub import hub_offline_reason, is_cached, is_hub_name
from core.records import ModelIdentity

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from core.config import Settings

log = logging.getLogger(__name__)

CLIP_MAX_TOKENS = 77
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


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


class ClipEncoder:
    """A transformers ``CLIPModel`` + ``CLIPProcessor``, loaded on first use; thread-safe."""

    def __init__(
        self,
        model: str,
        device: str = "auto",
        torch_threads: int | None = None,
        batch_size: int = 32,
        fingerprint_cache: Path | None = None,
    ) -> None:
        self.model_name = model
        self.fingerprint_cache = fingerprint_cache
        self._identity: ModelIdentity | None = None
        self.requested_device = device
        self.torch_threads = torch_threads
        self.batch_size = max(1, batch_size)
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None
        self._device = "cpu"
        self._dim: int | None = None
        self._max_tokens = CLIP_MAX_TOKENS
        self._options: dict[str, Any] | ModelLoadError | None = None  # found once, see _source_options

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipEncoder:
        """An encoder for ``VDX_CLIP_MODEL`` / ``VDX_DEVICE`` / ``VDX_TORCH_THREADS``."""
        return cls(
            settings.clip_model,
            device=settings.device,
            torch_threads=settings.torch_threads,
            fingerprint_cache=settings.data_dir / "model-fingerprints.json",
        )

    @property
    def identity(self) -> ModelIdentity:
        """Name, vector size and fingerprint, without loading the weights (hashed once, then cached)."""
        if self._identity is None:
            self._identity = ModelIdentity(
                self.model_name, self.dim, model_fingerprint(self.model_name, self.fingerprint_cache)
            )
        return self._identity

    @property
    def dim(self) -> int:
        """Embedding size: the model config's ``projection_dim`` (reads only the config when not loaded)."""
        if self._dim is None:
            options = self._source_options()  # before importing transformers: a bad source fails fast
            from transformers import CLIPConfig

            try:
                with _quiet_transformers():
                    config = CLIPConfig.from_pretrained(self.model_name, **options)
                    self._dim = _projection_dim(self.model_name, config)
            except (OSError, ValueError, KeyError) as e:
                raise ModelLoadError(self.model_name, _reason(e)) from e
        return self._dim

    @property
    def device(self) -> str:
        """Where the model runs (``cpu`` or ``cuda``); loads the model."""
        self._load()
        return self._device

    def _load(self) -> tuple[Any, Any]:
        if self._model is not None:
            return self._model, self._processor
        with self._lock:
            if self._model is None:
                self._model, self._processor = self._load_locked()
        return self._model, self._processor

    def _load_locked(self) -> tuple[Any, Any]:
        options = self._source_options()
        import torch
        from transformers import CLIPModel, CLIPProcessor

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        device = self.requested_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(self.model_name, "VDX_DEVICE=cuda but no CUDA device is available")
        try:
            with _quiet_transformers():
                model = CLIPModel.from_pretrained(self.model_name, **options)
                processor = CLIPProcessor.from_pretrained(self.model_name, **options)
        except Exception as e:  # any failure here means "this model cannot be used": say why
            raise ModelLoadError(self.model_name, _reason(e)) from e
        model.eval().to(device)
        self._device = device
        self._dim = _projection_dim(self.model_name, model.config)
        self._max_tokens = int(getattr(model.config.text_config, "max_position_embeddings", CLIP_MAX_TOKENS))
        log.info("loaded CLIP model %s on %s (dim %d)", self.model_name, device, self._dim)
        return model, processor

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
        """Unit vectors ``(n, dim)``; text longer than 77 tokens is cut, not rejected."""
        import torch

        model, processor = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tokens = processor.tokenizer(
                    list(texts[i : i + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self._max_tokens,
                    return_tensors="pt",
                ).to(self._device)
                parts.append(_normalised(_features(model.get_text_features(**tokens))))
        return np.concatenate(parts)

    def text_truncated(self, text: str) -> bool:
        """True when ``text`` has more tokens than the model reads (77 for CLIP) and so was cut."""
        _, processor = self._load()
        ids = processor.tokenizer(text, truncation=False, verbose=False)["input_ids"]
        return len(ids) > self._max_tokens

    def preprocess_images(self, images: Sequence[Image]) -> torch.Tensor:
        """Pixel tensor for ``images`` (resize, crop, normalise); safe to call from worker threads."""
        _, processor = self._load()
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    def embed_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Unit vectors ``(n, dim)`` for a tensor from :meth:`preprocess_images`."""
        import torch

        model, _ = self._load()
        if len(pixel_values) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with torch.inference_mode():
            for i in range(0, len(pixel_values), self.batch_size):
                chunk = pixel_values[i : i + self.batch_size].to(self._device)
                parts.append(_normalised(_features(model.get_image_features(pixel_values=chunk))))
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
        """Drop the model (and free GPU memory); a later call loads it again."""
        with self._lock:
            on_gpu = self._device == "cuda"
            self._model = self._processor = None
        if on_gpu:
            import torch

            torch.cuda.empty_cache()


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


def _check_local(model: str) -> None:
    """A name that looks like a path must be an existing directory (the hub error would confuse)."""
    if not is_hub_name(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelLoadError(model, f"no such directory: {path}")


def _source_options(model: str) -> dict[str, Any]:
    """``from_pretrained`` options for ``model``; fails fast when the hub is needed and unreachable.

    A hub model already in the local cache is loaded from there (``local_files_only``) when the
    hub cannot be reached, instead of retrying every file for a minute.
    """
    _check_local(model)
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
    )
