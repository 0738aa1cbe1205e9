"""A fast check of the Hugging Face hub before a model named by hub id is loaded.

Left alone, ``from_pretrained`` on a machine without the hub retries every file five times with
back-off (huggingface_hub's ``http_backoff``: 1, 2, 4, 8, 8 s, each try up to
``HF_HUB_ETAG_TIMEOUT`` = 10 s), which took 30-100 s before the model message; one short request
first tells "the hub is unreachable" in about a second. The endpoint and ``HF_HUB_OFFLINE`` are
read by huggingface_hub itself (``huggingface_hub.constants``), so ``HF_ENDPOINT`` works as usual.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.errors import innermost_reason

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


def hub_offline_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached now, or None (reachable, or ``HF_HUB_OFFLINE=1`` asks for no check).

    Any HTTP answer counts as reachable: only a refused connection, a failed name lookup or
    silence for ``timeout`` seconds means unreachable.
    """
    import httpx
    from huggingface_hub import constants
    from huggingface_hub.utils import logging as hub_logging

    # huggingface_hub prints its warnings through its own handler; propagated to the root logger
    # as well, each retry warning appeared twice.
    hub_logging.disable_propagation()
    if constants.HF_HUB_OFFLINE:
        return None
    try:
        httpx.head(constants.ENDPOINT, timeout=timeout)
    except httpx.TimeoutException:
        return f"{constants.ENDPOINT} did not answer within {timeout:g} s"
    except httpx.HTTPError as e:
        return f"{constants.ENDPOINT}: {innermost_reason(e)}"
    return None


def is_cached(model: str) -> bool:
    """Whether hub model ``model`` has a config in the local hub cache (``HF_HOME``/``HF_HUB_CACHE``)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


def is_hub_name(model: str) -> bool:
    """True when ``model`` names a hub repository rather than a local directory."""
    return not (model.startswith(("/", "./", "../", "~")) or Path(model).exists())
