"""Can a trial load its pretrained weights? Checked once by the search plan, in a child process (torch, timm).

    python -m trainable.weights_check < checks.json > answers.json

Input: a JSON list of {"backbone", "weights_file" ("" = timm's own pretrained weights), "num_classes"};
output, in the same order: {"ok": "<where the weights are>"} or {"error": "<what is wrong and how to fix it>"}.

A weights_file is loaded the way a trial loads it (trainable/model.py: timm's pretrained mechanism pointed
at the file), so a file that is not a state dict or does not fit the backbone fails here, not in every trial.
timm's hub weights are only looked up, never downloaded: found in the Hugging Face (or torch hub) cache, or
the hub answers a metadata request within a few seconds.
"""
from __future__ import annotations

import json
import os
import sys

HUB_TIMEOUT_S = 5.0


def check(checks: list[dict]) -> list[dict]:
    return [_check_file(c) if c["weights_file"] else _check_hub(c["backbone"]) for c in checks]


def _check_file(c: dict) -> dict:
    from timm.models import load_state_dict

    from core.config import TrialConfig
    from trainable.model import create_classifier

    path, backbone = c["weights_file"], c["backbone"]
    try:
        state = load_state_dict(path)
        if not isinstance(state, dict) or not state:
            raise TypeError(f"it holds a {type(state).__name__}, not a dict of tensors")
    except Exception as err:
        return {"error": f"weights_file {path} is not a state dict that torch or safetensors can read ({_why(err)}). "
                         "Save one with torch.save(model.state_dict(), path), or drop weights_file."}
    try:  # exactly what a trial does: timm's pretrained loading pointed at the file (shapes must match)
        model = create_classifier(TrialConfig(backbone=backbone, weights_file=path, pretrained=True), c["num_classes"],
                        pretrained=True)
    except Exception as err:
        return {"error": f"weights_file {path} does not fit backbone {backbone!r} ({_why(err.__cause__ or err)}). "
                         "Give weights saved from this backbone, or a backbone that matches the file."}
    # timm loads non-strictly when the head is replaced (always, here): a file missing the backbone's keys
    # would load without a word and the trial would silently train from random weights.
    wanted = [k for k in model.backbone.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in state]
    if missing:
        return {"error": f"weights_file {path} lacks {len(missing)} of the {len(wanted)} weights of backbone "
                         f"{backbone!r} (e.g. {', '.join(missing[:3])}), so trials would start from random weights "
                         "there. Give weights saved from this backbone (torch.save(model.state_dict(), path)), "
                         "or drop weights_file."}
    return {"ok": path}


def _why(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def weights_source(backbone: str) -> tuple[str, object]:
    """Where timm fetches the backbone's pretrained weights, from its public PretrainedCfg: ("hf-hub", (repo id,
    file name or None)) as timm prefers when huggingface_hub is installed (it is: timm needs it), ("url", URL),
    or ("", "") when it has none."""
    import timm

    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None:
        return "", ""
    if cfg.hf_hub_id:
        return "hf-hub", (cfg.hf_hub_id, cfg.hf_hub_filename)
    if cfg.url:
        return "url", cfg.url
    return "", ""


def _check_hub(backbone: str) -> dict:
    from huggingface_hub import constants

    source, location = weights_source(backbone)
    filenames = []
    if source == "hf-hub":
        repo, filename = location
        filenames = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
        cached = _hf_cached(repo, filenames)
        where, cache = f"the Hugging Face hub ({repo})", constants.HF_HUB_CACHE
    elif source == "url":
        cached = _url_cached(location)
        where, cache = location, os.path.join(_torch_hub_dir(), "checkpoints")
    else:
        return {"error": f"timm has no pretrained weights for backbone {backbone!r}. Set pretrained: False, "
                         "or weights_file to a local state dict."}
    if cached:
        return {"ok": cached}
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    else:
        reason = _unreachable(source, location[0] if source == "hf-hub" else location,
                              filenames[0] if source == "hf-hub" else "")
        if reason is None:
            return {"ok": where}  # not cached, but the hub answers: each trial downloads them
    return {"error": f"pretrained weights for backbone {backbone!r} are not in this machine's cache ({cache}) and "
                     f"cannot be downloaded from {where}: {reason}. Download them once where there is internet "
                     f"(python -c \"import timm; timm.create_model('{backbone}', pretrained=True)\") and copy the "
                     "cache here (HF_HUB_CACHE), or set weights_file to a local file (--weights-file), or pretrained: "
                     "False (--no-pretrained).", "unavailable": True}


def _hf_cached(repo_id: str, filenames: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo, revision = hf_split(repo_id)
    for name in filenames:
        path = try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(path, str):
            return path
    return None


def hf_split(hf_id: str) -> tuple[str, str | None]:
    """timm's model ids name a hub revision after '@' (repo@revision)."""
    repo, _, revision = hf_id.partition("@")
    return repo, revision or None


def _torch_hub_dir() -> str:
    import torch

    return torch.hub.get_dir()


def _url_cached(url: str) -> str | None:
    path = os.path.join(_torch_hub_dir(), "checkpoints", os.path.basename(url.split("?")[0]))
    return path if os.path.isfile(path) else None


def _unreachable(source: str, location, filename: str) -> str | None:
    """None when the hub (or the URL's server) answers at all; else why not, in a few words."""
    try:
        if source == "hf-hub":
            from huggingface_hub import get_hf_file_metadata, hf_hub_url
            from huggingface_hub.errors import HfHubHTTPError

            repo, revision = hf_split(location)
            try:
                get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision), timeout=HUB_TIMEOUT_S)
            except HfHubHTTPError:
                return None  # the hub answered (e.g. this file name is absent): the trial's download decides
        else:
            import urllib.error
            import urllib.request

            try:
                urllib.request.urlopen(urllib.request.Request(location, method="HEAD"), timeout=HUB_TIMEOUT_S).close()
            except urllib.error.HTTPError:
                return None  # the server answered
    except Exception as err:
        return f"unreachable ({_why(err, 150)})"
    return None


if __name__ == "__main__":
    json.dump(check(json.load(sys.stdin)), sys.stdout)
