"""Tiny random dual encoders of every supported family (and an M-CLIP text tower), built offline.

Each builder saves a model and its processor with ``save_pretrained`` into a directory, as a
published checkpoint is laid out, so the product loads it through its own ``from_pretrained(dir)``
path. The sentencepiece tokenizers (SigLIP, SigLIP 2's Gemma tokenizer, XLM-RoBERTa) are trained
on a few lines of text with the ``sentencepiece`` package; ChineseCLIP's BERT tokenizer gets a
small WordPiece vocabulary. Sizes default to tiny; the ``BASE`` dictionaries give each family's
published base architecture (random weights compute as much as trained ones).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.tiny_clip import VIT_B32, build_clip_dir

CORPUS = [
    "a photo of a cat",
    "a red car on the street",
    "a truck and a bus on a bridge",
    "a house by the lake at night",
    "a dog in the snow",
    "a cat wearing a hat",
    "mountains at dusk with clouds",
    "ein Hund im Schnee und eine Katze",
    "ein rotes Auto auf der Straße",
    "собака на снегу и кошка",
    "красная машина на улице",
    "一只猫在雪地里",
    "红色的汽车在街上",
    "un chat avec un chapeau",
    "una casa junto al lago de noche",
]


def train_sentencepiece(kind: str = "unigram", vocab_size: int = 400, **options: Any) -> bytes:
    """A sentencepiece model (serialised) trained on :data:`CORPUS`; ``kind`` is unigram or bpe."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 5),
        model_writer=out,
        vocab_size=vocab_size,
        model_type=kind,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    return out.getvalue()


def _xlmr_tokenizer(model_max_length: int = 512) -> Any:
    """An XLM-RoBERTa tokenizer (tokenizers backend) on a trained unigram vocabulary."""
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    sp = spm.SentencePieceProcessor(model_proto=train_sentencepiece("unigram"))
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(3, sp.get_piece_size())]
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]  # XLM-R's ids 0-3
    return XLMRobertaTokenizer(vocab=specials + pieces + [("<mask>", 0.0)], model_max_length=model_max_length)


def _save(out: Path, model: Any, processor: Any) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_siglip_dir(
    out: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    image_size: int = 32,
    patch_size: int = 8,
    max_tokens: int = 64,
    seed: int = 0,
) -> Path:
    """A random ``SiglipModel`` + ``SiglipProcessor`` (sentencepiece tokenizer, 64 tokens)."""
    import torch
    from transformers import (
        SiglipConfig,
        SiglipImageProcessorPil,
        SiglipModel,
        SiglipProcessor,
        SiglipTokenizer,
    )

    out.mkdir(parents=True, exist_ok=True)
    spiece = out / "spiece.model"
    spiece.write_bytes(train_sentencepiece("unigram"))
    tokenizer = SiglipTokenizer(str(spiece), model_max_length=max_tokens)
    size = dict(
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
    )
    cfg = SiglipConfig(
        text_config=dict(size, vocab_size=len(tokenizer), max_position_embeddings=max_tokens),
        vision_config=dict(size, image_size=image_size, patch_size=patch_size),
    )
    torch.manual_seed(seed)
    model = SiglipModel(cfg)
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    return _save(out, model, SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer))


def build_siglip2_dir(
    out: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    patch_size: int = 8,
    max_num_patches: int = 16,
    max_tokens: int = 64,
    seed: int = 0,
) -> Path:
    """A random ``Siglip2Model`` (NaFlex: variable resolution) + ``Siglip2Processor`` (Gemma tokenizer)."""
    import torch
    from transformers import (
        GemmaTokenizer,
        Siglip2Config,
        Siglip2ImageProcessorPil,
        Siglip2Model,
        Siglip2Processor,
    )

    spm_dir = out / "_spm"
    spm_dir.mkdir(parents=True, exist_ok=True)
    (spm_dir / "tokenizer.model").write_bytes(
        train_sentencepiece("bpe", 300, user_defined_symbols=["<pad>", "<bos>", "<eos>", "<mask>"])
    )
    tokenizer = GemmaTokenizer.from_pretrained(spm_dir, model_max_length=max_tokens)  # converts the model
    size = dict(
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
    )
    cfg = Siglip2Config(
        text_config=dict(size, vocab_size=len(tokenizer), max_position_embeddings=max_tokens),
        vision_config=dict(size, patch_size=patch_size, num_patches=max_num_patches),
    )
    torch.manual_seed(seed)
    model = Siglip2Model(cfg)
    image_processor = Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=max_num_patches)
    _save(out, model, Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer))
    for f in spm_dir.iterdir():
        f.unlink()
    spm_dir.rmdir()
    return out


def _wordpiece_vocab() -> list[str]:
    """A small BERT vocabulary: specials, every character of the corpus, its words and '##' pieces."""
    chars = sorted({c for line in CORPUS for c in line if not c.isspace()})
    words = sorted({w for line in CORPUS for w in line.lower().split()})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]


def build_chinese_clip_dir(
    out: Path,
    *,
    projection_dim: int = 16,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    vision_hidden: int | None = None,
    image_size: int = 32,
    patch_size: int = 8,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """A random ``ChineseCLIPModel`` (BERT text tower) + ``ChineseCLIPProcessor`` (WordPiece)."""
    import torch
    from transformers import (
        BertTokenizer,
        ChineseCLIPConfig,
        ChineseCLIPImageProcessorPil,
        ChineseCLIPModel,
        ChineseCLIPProcessor,
    )

    out.mkdir(parents=True, exist_ok=True)
    vocab = out / "_vocab.txt"
    vocab.write_text("\n".join(_wordpiece_vocab()) + "\n")
    tokenizer = BertTokenizer(str(vocab), model_max_length=512)
    vh = vision_hidden or hidden
    cfg = ChineseCLIPConfig(
        text_config=dict(
            vocab_size=max(vocab_size or 0, len(tokenizer)),
            hidden_size=hidden,
            intermediate_size=intermediate or hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=512,
        ),
        vision_config=dict(
            hidden_size=vh,
            intermediate_size=(intermediate * vh // hidden) if intermediate else vh * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = ChineseCLIPModel(cfg)
    image_processor = ChineseCLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    _save(out, model, ChineseCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer))
    vocab.unlink()
    return out


def build_altclip_dir(
    out: Path,
    *,
    projection_dim: int = 16,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    vision_hidden: int | None = None,
    vision_layers: int | None = None,
    image_size: int = 32,
    patch_size: int = 8,
    vocab_size: int | None = None,
    seed: int = 0,
) -> Path:
    """A random ``AltCLIPModel`` (XLM-RoBERTa text tower, CLIP vision) + ``AltCLIPProcessor``."""
    import torch
    from transformers import AltCLIPConfig, AltCLIPModel, AltCLIPProcessor, CLIPImageProcessorPil

    tokenizer = _xlmr_tokenizer()
    vh = vision_hidden or hidden
    cfg = AltCLIPConfig(
        text_config=dict(
            vocab_size=max(vocab_size or 0, len(tokenizer)),
            hidden_size=hidden,
            intermediate_size=intermediate or hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            project_dim=projection_dim,
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
    model = AltCLIPModel(cfg)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return _save(out, model, AltCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer))


def build_mclip_dir(
    out: Path,
    *,
    num_dims: int = 16,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    vocab_size: int | None = None,
    image_model: str | None = "tiny-clip",
    model_base: str = "base",
    seed: int = 0,
) -> Path:
    """A random M-CLIP text tower laid out as ``multilingual-clip`` saves one (see ``core.text_tower``).

    The base transformer's config is written to ``out/<model_base>/config.json`` (a real checkpoint
    names a hub model such as ``xlm-roberta-large`` instead); ``image_model`` becomes the config's
    ``"image_model"`` key, which pairs the tower with a collection (None leaves it out).
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tokenizer = _xlmr_tokenizer()
    base = XLMRobertaConfig(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
    )
    torch.manual_seed(seed)
    transformer = XLMRobertaModel(base)
    projection = torch.nn.Linear(hidden, num_dims)
    out.mkdir(parents=True, exist_ok=True)
    if model_base not in ("xlm-roberta-large", "xlm-roberta-base"):
        (out / model_base).mkdir(exist_ok=True)
        base.save_pretrained(out / model_base)
    config: dict[str, Any] = {
        "architectures": ["MultilingualCLIP"],
        "model_type": "M-CLIP",
        "modelBase": model_base,
        "transformerDimensions": hidden,
        "numDims": num_dims,
    }
    if image_model is not None:
        config["image_model"] = image_model
    (out / "config.json").write_text(json.dumps(config, indent=2))
    state = {f"transformer.{k}": v for k, v in transformer.state_dict().items()}
    state |= {f"LinearTransformation.{k}": v for k, v in projection.state_dict().items()}
    torch.save(state, out / "pytorch_model.bin")
    tokenizer.save_pretrained(out)
    return out


# Each family's published base architecture (random weights), for the benchmarks.
BASE: dict[str, tuple[Callable[..., Path], dict[str, Any]]] = {
    "CLIP ViT-B/32 (openai/clip-vit-base-patch32)": (build_clip_dir, VIT_B32),
    "SigLIP B/16-224 (google/siglip-base-patch16-224)": (
        build_siglip_dir,
        dict(hidden=768, layers=12, heads=12, intermediate=3072, image_size=224, patch_size=16),
    ),
    "SigLIP 2 B/16 NaFlex (google/siglip2-base-patch16-naflex)": (
        build_siglip2_dir,
        dict(hidden=768, layers=12, heads=12, intermediate=3072, patch_size=16, max_num_patches=256),
    ),
    "ChineseCLIP B/16 (OFA-Sys/chinese-clip-vit-base-patch16)": (
        build_chinese_clip_dir,
        dict(
            projection_dim=512,
            hidden=768,
            layers=12,
            heads=12,
            intermediate=3072,
            image_size=224,
            patch_size=16,
        ),
    ),
}
