"""Device checks before training, and which process may write results under distributed training."""

from __future__ import annotations

import os
from typing import Any

from ._arguments import ArgumentError

#: Strategies that launch one process per device; naming one is the explicit opt-in to several CPU processes.
_MULTI_PROCESS = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp", "deepspeed")


def _count(devices: Any) -> int | None:
    """How many devices ``devices`` asks for (``None`` for ``"auto"`` / ``-1``: whatever is there)."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return int(text) if text.isdigit() else None
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, int) and not isinstance(devices, bool):
        return None if devices == -1 else devices
    return None


def _resolved_accelerator(accelerator: Any) -> str:
    import torch

    name = str(accelerator).lower()
    if name in ("gpu", "cuda"):
        return "gpu"
    if name == "auto":
        if torch.cuda.is_available():
            return "gpu"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    return name


def check_devices(accelerator: Any, devices: Any, strategy: Any = None) -> None:
    """Refuse, before training, device settings that would start processes nobody asked for or devices that are absent.

    - ``devices`` > 1 on the CPU: Lightning would start one training process per "device", each running the whole
      script (and each writing its results). It is refused unless a multi-process ``strategy`` is named explicitly
      (``strategy="ddp_spawn"``), the opt-in for testing distributed training on a CPU machine.
    - more GPUs than the machine has.
    - ``devices`` 0 or negative (other than ``-1``, Lightning's "all").

    Examples
    --------
    >>> check_devices("cpu", 1)
    >>> check_devices("cpu", 2, strategy="ddp_spawn")
    >>> check_devices("cpu", 2)
    Traceback (most recent call last):
    ...
    sslspatial._arguments.ArgumentError: devices=2: devices must be 1 on the CPU ...
    """
    if isinstance(devices, bool) or (isinstance(devices, int) and devices < -1) or devices == 0:
        raise ArgumentError("devices", devices, 'a positive number of devices, a list of device ids, or "auto"', 1)
    count = _count(devices)
    if count is None or count <= 1:
        return
    kind = _resolved_accelerator(accelerator)
    name = getattr(strategy, "strategy_name", strategy)
    if kind == "cpu" and not (isinstance(name, str) and name.startswith(_MULTI_PROCESS)):
        raise ArgumentError(
            "devices",
            devices,
            f"1 on the CPU (one process already uses every core; {count} would start {count} training processes "
            "that each write the results)",
            1,
            'To test distributed training on a CPU machine anyway, name the strategy: strategy="ddp_spawn" '
            '(train_kwargs={"strategy": "ddp_spawn"}).',
        )
    if kind == "gpu":
        import torch

        available = torch.cuda.device_count()
        if count > available:
            raise ArgumentError(
                "devices", devices, f"at most the {available} GPU(s) of this machine", max(available, 1)
            )


def is_main_process() -> bool:
    """``True`` except in the extra processes of distributed training (Lightning's ``LOCAL_RANK`` / ``RANK`` > 0).

    Writers to disk (``ss.io.persist``, ``ss.io.write``, ``model.save``) and the command line's output act only in
    the main process, so that N training processes do not write the same store N times.

    Examples
    --------
    >>> is_main_process()
    True
    """
    for variable in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(variable)
        if value is not None and value.strip().isdigit() and int(value) > 0:
            return False
    return True
