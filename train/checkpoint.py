"""Checkpoint folders: config.json, model.safetensors, tokenizer.json, metrics.json.

No pickles: weights are safetensors, everything else JSON. A checkpoint rebuilds its
model from config.json alone (a pretrained BERT's architecture is saved there; its
weights come from model.safetensors).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from nere.engine.core.featurize import Featurizer
from nere.train.models.encoders import encoder_spec
from nere.train.registry import get_model_class

CONFIG, WEIGHTS, TOKENIZER, METRICS = "config.json", "model.safetensors", "tokenizer.json", "metrics.json"


def featurizer_from(config: dict[str, Any], tokenizer: Tokenizer) -> Featurizer:
    f = config["featurizer"]
    return Featurizer(tokenizer, max_length=f["max_length"], cls_token=f["cls_token"],
                      sep_token=f["sep_token"], pad_token=f["pad_token"])


def save_checkpoint(model, tokenizer: Tokenizer, out_dir: str | Path, metrics: dict[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(model.config)
    config["task"], config["model"] = model.task, model.kind
    config["encoder"] = encoder_spec(model.encoder, config["encoder"])
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    tokenizer.save(str(out / TOKENIZER))
    model.save_extras(out)  # feature data (bigram vocabulary, lexicon) named in config.json
    (out / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / METRICS).write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    return out


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """(model in eval mode, featurizer, config) from a checkpoint folder."""
    path = Path(path)
    missing = [n for n in (CONFIG, WEIGHTS, TOKENIZER) if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a NERE checkpoint (missing {', '.join(missing)})")
    config = json.loads((path / CONFIG).read_text())
    cls = get_model_class(config["task"], config["model"])
    model = cls(config)
    model.load_state_dict(load_file(str(path / WEIGHTS)))
    model.load_extras(path)
    model.to(device).eval()
    tokenizer = Tokenizer.from_file(str(path / TOKENIZER))
    return model, featurizer_from(config, tokenizer), config
