"""Reading a network from a file, without running the file's code or exhausting the machine.

:func:`load_model` reads two formats:

* ``.npz``: the interchange format, arrays ``W1, b1, ..., WL, bL`` (layer i: x -> Wi x + bi, ReLU
  between layers, one output). Names, shapes and dtypes are checked from the zip directory and the
  ``.npy`` headers before any array is read, and at most :data:`MAX_ELEMENTS` numbers are read.
* ``.pt`` / ``.pth``: a ``torch.save``'d Sequential of Linear layers and activations (any robustlaw
  :class:`~robustlaw.models.Network` or CNN; also Conv1d/2d, AvgPool1d/2d, BatchNorm1d/2d, Flatten,
  Unflatten and Dropout, read by :func:`~robustlaw.lipschitz.network.from_torch`), or a plain
  ``state_dict`` of a Sequential of Linear layers
  (keys ``0.weight, 0.bias, 2.weight, ...``), read as ReLU between consecutive Linear layers. The file
  is unpickled with ``weights_only=True``: only tensors, containers and the module classes in
  :data:`SAFE_MODULES` can be built, so a file that needs anything else (``os.system``, ``exec``, ...)
  is refused before any of its code runs.

Every problem is one :class:`~robustlaw.errors.RobustlawError` line naming the file and the problem.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustlaw.errors import RobustlawError
from robustlaw.lipschitz.network import RELU, Net, from_torch, select_head
from robustlaw.activations import activation_of
from robustlaw.conv import ConvNet
from robustlaw.models import Network, Power

MAX_LAYERS = 9999
"""Layers an .npz may declare (names W1 ... W9999)."""

MAX_ELEMENTS = 200_000_000
"""Numbers a model file may declare in all (about 1.6 GB as float64); larger files are refused unread."""

SAFE_MODULES = (nn.Sequential, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Softplus, nn.Sigmoid, nn.Identity,
                nn.Flatten, nn.Dropout, Network, Power, nn.Conv1d, nn.Conv2d, nn.AvgPool1d, nn.AvgPool2d,
                nn.BatchNorm1d, nn.BatchNorm2d, nn.Unflatten, torch.Size, ConvNet)
"""The module classes a .pt file may contain; their unpickling only sets attributes."""

_MEMBER = re.compile(r"([Wb])([1-9][0-9]{0,3})\.npy")
_MAX_HEADER = 10_000  # numpy's own limit on an .npy header
_REFUSE_HINT = "save a state_dict or a Sequential of Linear layers and activations"


def load_model(path: str | Path, **reading) -> Net:
    """The network in an ``.npz`` interchange file or a ``.pt`` / ``.pth`` torch file (see the module doc);
    ``reading``: ``input_shape``, ``output``, ``margin`` of :func:`~robustlaw.lipschitz.network.from_torch`
    (torch files; ``output`` / ``margin`` also pick one output of an .npz's last layer)."""
    path = Path(path)
    if path.suffix == ".npz":
        return load_npz(path, reading.get("output"), reading.get("margin"))
    if path.suffix in (".pt", ".pth"):
        return load_torch(path, **reading)
    raise RobustlawError(f"{path}: unknown model format {_short(path.suffix or '(none)')!r} (expected .npz or .pt)")


def _short(text: str, limit: int = 40) -> str:
    """``text`` printable on one line and at most ``limit`` characters (its start and its end)."""
    text = repr(str(text))[1:-1]
    head = (limit - 3) // 2
    return text if len(text) <= limit else text[:head] + "..." + text[len(text) - (limit - 3 - head):]


def _names(names, limit: int = 5) -> str:
    """At most ``limit`` of ``names`` (a list), shortened, then how many more."""
    shown = ", ".join(_short(n, 24) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ---------------------------------------------------------------- .npz


def load_npz(path: str | Path, output: int | None = None, margin: tuple[int, int] | None = None) -> Net:
    """Read the interchange format: ``W1, b1, ..., WL, bL`` (layer i: x -> Wi x + bi, ReLU between layers,
    one output). Names, dtypes, shapes and sizes are validated from the zip directory and the .npy
    headers before any array is read; every problem is reported as one short line naming it."""
    path = Path(path)
    if not path.exists():
        raise RobustlawError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            members = _layer_members(path, zf)
            headers = {name: _header(path, zf, info) for name, info in members.items()}
            _check_layout(path, headers)
            arrays = {name: _read_array(path, zf, info) for name, info in members.items()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
            ValueError) as error:  # not a zip, truncated, encrypted, unknown compression, bad .npy
        raise RobustlawError(f"{path}: not a readable .npz file ({type(error).__name__}: {_short(error, 120)})") from None
    L = len(arrays) // 2
    layers = [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(1, L + 1)]
    return _net_from_arrays(path, layers, output, margin)


def _layer_members(path: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The zip members W1.npy, b1.npy, ..., WL.npy, bL.npy by array name; anything else is refused."""
    infos = zf.infolist()
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise RobustlawError(f"{path}: some arrays are stored twice")
    layered = {m.group(0)[:-4]: info for info in infos if (m := _MEMBER.fullmatch(info.filename))}
    others = sorted(n[:-4] if n.endswith(".npy") else n for n in names if not _MEMBER.fullmatch(n))
    if not layered:
        raise RobustlawError(f"{path}: no layers found: expected arrays named W1, b1, ..., WL, bL "
                             f"(L <= {MAX_LAYERS}), got {_names(others) or 'nothing'}")
    L = max(int(name[1:]) for name in layered)
    missing = [f"{c}{i}" for i in range(1, L + 1) for c in "Wb" if f"{c}{i}" not in layered]
    if missing:
        raise RobustlawError(f"{path}: missing {_names(missing)} (a network of {L} layers needs W1, b1, ..., "
                             f"W{L}, b{L})")
    if others:
        raise RobustlawError(f"{path}: unexpected arrays {_names(others)} (expected only W1, b1, ..., W{L}, b{L})")
    return layered


def _header(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one member from its .npy header, reading at most the header's bytes; the
    member's uncompressed size in the zip directory must be exactly header plus data."""
    with zf.open(info) as f:
        head = io.BytesIO(f.read(12 + _MAX_HEADER))
    version = np.lib.format.read_magic(head)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(head, max_header_size=_MAX_HEADER)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(head, max_header_size=_MAX_HEADER)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    name = info.filename[:-4]
    if dtype.kind == "c":
        raise RobustlawError(f"{path}: {name} holds complex numbers; robustlaw certifies real networks")
    if dtype.kind not in "fiu" or dtype.fields is not None:
        raise RobustlawError(f"{path}: {name} must be a real numeric array, got dtype {_short(dtype.str)}")
    count = int(np.prod(shape, dtype=object))
    if info.file_size != head.tell() + count * dtype.itemsize:
        raise RobustlawError(f"{path}: {name} declares shape {_short(shape)} but stores "
                             f"{info.file_size - head.tell()} bytes of data")
    return tuple(shape), dtype


def _check_layout(path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Shapes chain (Wi is (out, in), bi is (out,) or a row or column), nothing is empty, and the total
    declared size is at most MAX_ELEMENTS; all from the headers."""
    total = sum(int(np.prod(shape, dtype=object)) for shape, _ in headers.values())
    if total > MAX_ELEMENTS:
        raise RobustlawError(f"{path}: declares {total:.3g} numbers in all; robustlaw reads at most "
                             f"{MAX_ELEMENTS:.3g} (MAX_ELEMENTS)")
    previous = None
    for i in range(1, len(headers) // 2 + 1):
        W, b = headers[f"W{i}"][0], headers[f"b{i}"][0]
        if len(W) != 2:
            raise RobustlawError(f"{path}: W{i} must be a matrix, got shape {_short(W)}")
        if 0 in W:
            raise RobustlawError(f"{path}: W{i} is empty (shape {W})")
        if not (b == (W[0],) or b in ((W[0], 1), (1, W[0]))):
            raise RobustlawError(f"{path}: shape mismatch: b{i} has shape {_short(b)} but W{i} has {W[0]} rows")
        if previous is not None and W[1] != previous:
            raise RobustlawError(f"{path}: shape mismatch: W{i} has {W[1]} columns but layer {i - 1} has "
                                 f"{previous} outputs")
        previous = W[0]


def _read_array(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One validated member as a float64 array."""
    with zf.open(info) as f:
        array = np.lib.format.read_array(f, allow_pickle=False, max_header_size=_MAX_HEADER)
    return array.astype(float, copy=False)


def _net_from_arrays(path: Path, layers: list[tuple[np.ndarray, np.ndarray]], output: int | None = None,
                     margin: tuple[int, int] | None = None) -> Net:
    """A ReLU :class:`Net` from float64 (W, b) pairs whose shapes chain: finite values, one output."""
    for i, (W, b) in enumerate(layers, start=1):
        for name, array in ((f"W{i}", W), (f"b{i}", b)):
            if not np.isfinite(array).all():
                raise RobustlawError(f"{path}: {name} contains NaN or infinite values")
    L = len(layers)
    if output is not None or margin is not None:
        try:
            layers[-1] = select_head(layers[-1][0], layers[-1][1].reshape(-1), output, margin)
        except RobustlawError as error:
            raise RobustlawError(f"{path}: {error}") from None
    if layers[-1][0].shape[0] != 1:
        raise RobustlawError(f"{path}: the last layer must have one output, but W{L} has {layers[-1][0].shape[0]} rows")
    return Net(tuple(W for W, _ in layers), tuple(b.reshape(-1) for _, b in layers), tuple(RELU for _ in range(L - 1)))


# ---------------------------------------------------------------- .pt / .pth


def load_torch(path: str | Path, input_shape: tuple[int, ...] | None = None, output: int | None = None,
               margin: tuple[int, int] | None = None) -> Net:
    """A torch file's network without executing code: a Sequential of the :data:`SAFE_MODULES` or a
    ``state_dict`` of a Sequential of Linear layers (ReLU between consecutive Linear layers)."""
    path = Path(path)
    if not path.exists():
        raise RobustlawError(f"{path}: no such file")
    obj = _torch_load(path)
    if isinstance(obj, dict):
        return _from_state_dict(path, obj, output, margin)
    if not isinstance(obj, nn.Module):
        raise RobustlawError(f"{path}: expected a torch Sequential or a state_dict, got {_short(type(obj).__name__)}")
    try:
        _check_parameters(obj)
        return from_torch(obj, input_shape, output, margin)
    except RobustlawError as error:
        raise RobustlawError(f"{path}: {error}") from None
    except (AttributeError, TypeError, ValueError, RuntimeError, OverflowError) as error:  # crafted attributes
        raise RobustlawError(f"{path}: malformed module ({type(error).__name__}: {_short(error, 120)})") from None


def _check_parameters(model: nn.Module) -> None:
    """Activation parameters a file could set to anything are checked by the activations themselves."""
    for module in model.modules():
        activation_of(module)


def _torch_load(path: Path):
    """``torch.load`` with ``weights_only=True`` and only :data:`SAFE_MODULES` added to torch's allow-list
    (tensors, parameters, OrderedDict and other plain containers); refusals become one line."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(SAFE_MODULES)):
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # UnpicklingError, zip and storage errors, truncated files
        text = str(error)
        if found := re.search(r"GLOBAL (\S+)", text):
            raise RobustlawError(f"{path}: refused to load: it needs the global {_short(found.group(1), 60)}, which "
                                 f"is not on robustlaw's allow-list and could run code; {_REFUSE_HINT}") from None
        if found := re.search(r"Unsupported operand \S+", text):
            raise RobustlawError(f"{path}: refused to load: its pickle uses an instruction the safe loader does "
                                 f"not run ({found.group(0)}); {_REFUSE_HINT}") from None
        detail = next((line for line in text.splitlines()[::-1] if line.strip()), "")
        raise RobustlawError(f"{path}: not a readable torch file ({type(error).__name__}: {_short(detail, 120)})") from None


def _from_state_dict(path: Path, state: dict, output: int | None = None, margin: tuple[int, int] | None = None) -> Net:
    """Layers ``<index>.weight`` / ``<index>.bias`` in index order, ReLU between them."""
    layers: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        found = re.fullmatch(r"(\d+(?:\.\d+)*)\.(weight|bias)", str(key))
        if found is None or not isinstance(value, torch.Tensor):
            raise RobustlawError(f"{path}: not a state_dict of Linear layers: unexpected entry {_short(key)} "
                                 "(expected keys 0.weight, 0.bias, 2.weight, ...)")
        layers.setdefault(tuple(int(p) for p in found.group(1).split(".")), {})[found.group(2)] = value
    if not layers:
        raise RobustlawError(f"{path}: the state_dict is empty")
    total = sum(t.numel() for entry in layers.values() for t in entry.values())
    if total > MAX_ELEMENTS:
        raise RobustlawError(f"{path}: holds {total:.3g} numbers; robustlaw reads at most {MAX_ELEMENTS:.3g}")
    arrays = []
    for i, index in enumerate(sorted(layers), start=1):
        entry = layers[index]
        W, b = _real(path, f"W{i}", entry.get("weight")), _real(path, f"b{i}", entry.get("bias"))
        if W is None or W.ndim != 2 or 0 in W.shape:
            raise RobustlawError(f"{path}: layer {'.'.join(map(str, index))} needs a non-empty 2-d weight")
        b = np.zeros(W.shape[0]) if b is None else b
        if b.shape != (W.shape[0],):
            raise RobustlawError(f"{path}: shape mismatch: b{i} has shape {b.shape} but W{i} has {W.shape[0]} rows")
        if arrays and W.shape[1] != arrays[-1][0].shape[0]:
            raise RobustlawError(f"{path}: shape mismatch: W{i} has {W.shape[1]} columns but layer {i - 1} has "
                                 f"{arrays[-1][0].shape[0]} outputs")
        arrays.append((W, b))
    return _net_from_arrays(path, arrays, output, margin)


def _real(path: Path, name: str, tensor: torch.Tensor | None) -> np.ndarray | None:
    """A real tensor as a float64 array (None stays None); complex or non-numeric tensors are refused."""
    if tensor is None:
        return None
    if tensor.is_complex():
        raise RobustlawError(f"{path}: {name} holds complex numbers; robustlaw certifies real networks")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                            torch.uint8)):
        raise RobustlawError(f"{path}: {name} must be a real numeric tensor, got {tensor.dtype}")
    return tensor.detach().to(torch.float64).cpu().numpy().copy()


def as_net(model) -> Net:
    """A :class:`Net` from a Net, a torch Sequential, or a path to an ``.npz`` or ``.pt`` file
    (read by :func:`load_model`)."""
    if isinstance(model, Net):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model)
    return from_torch(model)
