"""Deep checks of an untrusted model package before it is installed (``jointsrseg import-model``).

:func:`load_json_bounded` reads ``model.json`` with bounded size and nesting depth (no
``RecursionError``).  :func:`verify_package_contents` opens the safetensors header (offsets,
dtypes, shapes), bounds the config's numbers, builds the architecture on PyTorch's ``meta``
device (no memory is allocated, whatever the config asks for) and checks every tensor name,
shape and dtype against it, so a package that installs is a package that loads.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

from .errors import InputError

MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_SAFETENSORS_HEADER_BYTES = 16 * 1024 * 1024
MAX_PARAMETERS = 120_000_000  # every preset of this library fits (the largest base one has 104 M)
MAX_CONFIG_INT = 4096
MAX_CONFIG_LIST = 64
MAX_WINDOW = 64
SAFETENSORS_DTYPES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def load_json_bounded(raw: bytes, source: str) -> Any:
    """Parse ``raw`` as JSON, refusing more than 1 MiB or nesting deeper than 64 levels."""
    if len(raw) > MAX_JSON_BYTES:
        raise InputError(source, f"is {len(raw)} bytes; a model.json is at most {MAX_JSON_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(source, f"not valid JSON ({error})") from None
    depth = _max_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InputError(source, f"JSON nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(source, f"not valid JSON ({str(error)[:120]})") from None


def _max_depth(text: str) -> int:
    """Deepest bracket nesting outside strings (cheap pre-scan; stops counting once far too deep)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def read_safetensors_header(data: bytes, source: str) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file declares (``name -> {dtype, shape, data_offsets}``), each checked:
    known dtype, non-negative integer shape, byte range inside the file and of the right length,
    ranges not overlapping and covering the whole data section."""
    if len(data) < 8:
        raise InputError(source, f"not a valid safetensors file ({len(data)} bytes; empty or truncated)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_SAFETENSORS_HEADER_BYTES or size > len(data) - 8:
        raise InputError(source, f"not a valid safetensors file (header of {size} bytes in a {len(data)}-byte file)")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InputError(source, f"not a valid safetensors file (header is not JSON: {str(error)[:80]})") from None
    if not isinstance(header, dict):
        raise InputError(source, "not a valid safetensors file (header is not a JSON object)")
    header.pop("__metadata__", None)
    if not header:
        raise InputError(source, "safetensors file holds no tensors")
    body = len(data) - 8 - size
    ranges = []
    for name, entry in header.items():
        where = f"tensor {name!r:.80}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise InputError(source, f"{where}: entry must have dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise InputError(source, f"{where}: unsupported dtype {dtype!r:.20}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(s) and s >= 0 for s in shape):
            raise InputError(source, f"{where}: shape {shape!r:.60} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise InputError(source, f"{where}: data_offsets {offsets!r:.60} must be two integers")
        begin, end = offsets
        expected = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
        if not 0 <= begin <= end <= body or end - begin != expected:
            raise InputError(
                source,
                f"{where}: data_offsets {offsets} do not hold {expected} bytes inside the {body}-byte data section",
            )
        ranges.append((begin, end))
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise InputError(source, "not a valid safetensors file (tensor data overlaps or leaves gaps)")
        position = end
    if position != body:
        raise InputError(source, f"not a valid safetensors file ({body - position} trailing bytes after the tensors)")
    return header


def check_config_values(config: Any, source: str, path: str = "config") -> None:
    """Bound the numbers a package's config can ask for: integers 0-4096 (sizes, depths, windows, channels),
    window/feature/embedding sizes and depths positive, finite floats, short lists."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            check_config_values(value, source, f"{path}.{key}")
        return
    if isinstance(config, list | tuple):
        if len(config) > MAX_CONFIG_LIST:
            raise InputError(source, f"{path} lists {len(config)} values; at most {MAX_CONFIG_LIST}")
        for i, value in enumerate(config):
            check_config_values(value, source, f"{path}[{i}]")
        return
    if isinstance(config, bool) or config is None or isinstance(config, str):
        return
    if isinstance(config, int):
        if not 0 <= config <= MAX_CONFIG_INT:
            raise InputError(source, f"{path} is {config}; config integers must be between 0 and {MAX_CONFIG_INT}")
        name = path.rsplit(".", 1)[-1].split("[")[0]
        sizes = ("window", "feature", "embed", "dim", "channels", "heads", "patch", "scale", "size")
        if config == 0 and any(word in name for word in sizes):
            raise InputError(source, f"{path} is 0; it must be positive")
        if any(word in name for word in ("window", "patch")) and config > MAX_WINDOW:
            raise InputError(source, f"{path} is {config}; window and patch sizes are at most {MAX_WINDOW}")
        return
    if isinstance(config, float):
        if not math.isfinite(config) or abs(config) > 1e6:
            raise InputError(source, f"{path} is {config}; config numbers must be finite and below 1e6")
        return
    raise InputError(source, f"{path} has an unsupported value type {type(config).__name__}")


def _meta_parameters_mode():
    """A torch function mode that creates tensors on the ``meta`` device (no memory), except the small
    index computations builders read back (``linspace(...).tolist()``, relative-position ``arange``)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors

    on_cpu = {torch.linspace, torch.logspace, torch.arange, torch.tensor, torch.as_tensor, torch.meshgrid}
    constructors = {f for f in _device_constructors() if f not in on_cpu}

    class MetaParameters(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in constructors and kwargs.get("device") is None:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    return MetaParameters()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify_package_contents(package) -> None:
    """Config bounded, architecture built on the meta device, every tensor of the weights checked
    against it (names, shapes, float vs integer dtypes), parameter count bounded."""
    from .models import build
    from .packaging import _as_tuples

    meta = package.metadata
    source = package.metadata_source
    check_config_values(meta["config"], source)
    header = read_safetensors_header(package.read_weights(), package.weights_source)
    arch, preset = meta["architecture"], meta["preset"]
    try:
        with _meta_parameters_mode():
            model = build(arch, preset, **_as_tuples(meta["config"]))
    except Exception as error:  # builders raise many types for configs that do not fit
        message = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InputError(source, f"config does not fit architecture {arch!r}: {message}") from None
    state = model.state_dict()
    parameters = sum(t.numel() for t in state.values())
    if parameters > MAX_PARAMETERS:
        raise InputError(source, f"config builds {parameters:,} parameters; a package holds at most {MAX_PARAMETERS:,}")
    weights = package.weights_source
    missing = [name for name in state if name not in header]
    unexpected = [name for name in header if name not in state]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]!r})")
        raise InputError(weights, f"weights do not fit {arch!r} preset {preset!r}: {'; '.join(parts)}")
    for name, tensor in state.items():
        entry = header[name]
        if tuple(entry["shape"]) != tuple(tensor.shape):
            raise InputError(
                weights, f"tensor {name!r} has shape {tuple(entry['shape'])}; {arch!r} needs {tuple(tensor.shape)}"
            )
        if (entry["dtype"] in _FLOAT_DTYPES) != tensor.dtype.is_floating_point:
            raise InputError(weights, f"tensor {name!r} has dtype {entry['dtype']}; {arch!r} needs {tensor.dtype}")


__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_PARAMETERS",
    "check_config_values",
    "load_json_bounded",
    "read_safetensors_header",
    "verify_package_contents",
]
