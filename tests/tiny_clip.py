"""Build a tiny random CLIP model (no download) saved the way the product loads it.

The tokenizer uses the real CLIP BPE vocabulary that ships inside the open_clip_torch wheel
(``bpe_simple_vocab_16e6.txt.gz``), so token counts and truncation behave as with real CLIP.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path


def _bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed: pip install --no-deps open_clip_torch")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_tokenizer_files(out: Path) -> tuple[Path, Path]:
    """Write CLIP's ``vocab.json`` and ``merges.txt`` (49,408 tokens) from the BPE file."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    lines = gzip.decompress(_bpe_path().read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out / "vocab.json", out / "merges.txt"
    vocab_file.write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_file, merges_file


# The openai/clip-vit-base-patch32 architecture: with random weights it computes exactly as much.
VIT_B32 = dict(
    projection_dim=512,
    hidden=512,
    layers=12,
    vision_hidden=768,
    intermediate=2048,
    heads=8,
    image_size=224,
    patch_size=32,
)


def build_clip_dir(
    out: Path,
    *,
    projection_dim: int = 16,
    hidden: int = 32,
    layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int | None = None,
    vision_layers: int | None = None,
    intermediate: int | None = None,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """Save a random ``CLIPModel`` + ``CLIPProcessor`` to ``out``; defaults give a tiny, fast model.

    ``build_clip_dir(d, **VIT_B32)`` gives the ViT-B/32 architecture (random weights).
    """
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor  # transformers 5 without torchvision
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as ImageProcessor

    tok_dir = out / "_tok"
    vocab_file, merges_file = write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file))
    vh = vision_hidden or hidden
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=intermediate or hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=vh,
            intermediate_size=(intermediate * vh // hidden) if intermediate else vh * 2,
            num_hidden_layers=vision_layers or layers,
            num_attention_heads=heads if vh == hidden else max(heads, vh // 64),
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg)
    processor = CLIPProcessor(
        image_processor=ImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    return out
