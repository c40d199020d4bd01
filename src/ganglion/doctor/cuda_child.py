"""The CUDA check's child process: load libcuda with ctypes, initialise CUDA, print one JSON line.

:mod:`ganglion.doctor.cuda` runs this file as a script, by its path, in a child process with
a timeout: a driver that hangs in ``cuInit`` or crashes the process that loads it cannot take
the doctor with it. It imports only the standard library, so it runs wherever Python does::

    python cuda_child.py libcuda.so.1 libcuda.so

It tries each library name in turn and prints ``{"library": null, "error": ...}`` when none
loads, ``{"library", "init": CODE, "init_error"}`` when ``cuInit`` fails, and otherwise
``{"library", "file", "init": 0, "driver_version", "devices": [...]}`` with each device's
name, PCI address, memory, compute capability and peak memory bandwidth.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

# CUdevice_attribute values (cuda.h).
MEMORY_CLOCK_KHZ = 36
MEMORY_BUS_BITS = 37
CC_MAJOR = 75
CC_MINOR = 76


def _load(names: list[str]) -> tuple[ctypes.CDLL | None, str | None, str]:
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name), name, ""
        except OSError as error:
            errors.append(str(error))
    return None, None, "; ".join(errors) or "no library named"


def _error_name(cuda: ctypes.CDLL, code: int) -> str:
    name = ctypes.c_char_p()
    if cuda.cuGetErrorName(code, ctypes.byref(name)) == 0 and name.value:
        return name.value.decode(errors="replace")
    return f"CUDA error {code}"


def _int_attribute(cuda: ctypes.CDLL, attribute: int, device: int) -> int | None:
    value = ctypes.c_int()
    code = cuda.cuDeviceGetAttribute(ctypes.byref(value), attribute, device)
    return value.value if code == 0 else None


def _device(cuda: ctypes.CDLL, ordinal: int) -> dict[str, Any]:
    device = ctypes.c_int()
    if cuda.cuDeviceGet(ctypes.byref(device), ordinal) != 0:
        return {"ordinal": ordinal}
    handle = device.value
    name, bus_id = ctypes.create_string_buffer(256), ctypes.create_string_buffer(32)
    memory = ctypes.c_size_t()
    cuda.cuDeviceGetName(name, len(name), handle)
    cuda.cuDeviceGetPCIBusId(bus_id, len(bus_id), handle)
    cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), handle)
    clock = _int_attribute(cuda, MEMORY_CLOCK_KHZ, handle)
    bus = _int_attribute(cuda, MEMORY_BUS_BITS, handle)
    major, minor = (_int_attribute(cuda, a, handle) for a in (CC_MAJOR, CC_MINOR))
    return {
        "ordinal": ordinal,
        "name": name.value.decode(errors="replace"),
        "bus_id": bus_id.value.decode(errors="replace"),
        "memory_mib": memory.value // (1024 * 1024),
        "compute_capability": f"{major}.{minor}" if major is not None else None,
        # DDR: two transfers per memory clock, over the bus width in bytes.
        "bandwidth_gbps": round(2 * clock * 1000 * bus / 8 / 1e9, 1) if clock and bus else None,
    }


def _loaded_file(fragment: str = "libcuda") -> str | None:
    """The file the loader actually mapped (``libcuda.so.580.159.04``), from /proc/self/maps."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if fragment in line}
    except OSError:
        return None
    found = sorted(p for p in paths if os.path.basename(p).startswith(fragment))
    return os.path.realpath(found[0]) if found else None


def check(names: list[str]) -> dict[str, Any]:
    """What loading and initialising CUDA through the first loadable of ``names`` gives."""
    cuda, name, error = _load(names)
    if cuda is None:
        return {"library": None, "error": error}
    answer: dict[str, Any] = {"library": name, "file": _loaded_file()}
    code = cuda.cuInit(0)
    answer["init"] = code
    if code != 0:
        return answer | {"init_error": _error_name(cuda, code)}
    version, count = ctypes.c_int(), ctypes.c_int()
    if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
        answer["driver_version"] = version.value
    code = cuda.cuDeviceGetCount(ctypes.byref(count))
    if code != 0:
        return answer | {"count_error": _error_name(cuda, code), "devices": []}
    return answer | {"devices": [_device(cuda, ordinal) for ordinal in range(count.value)]}


def main(argv: list[str]) -> int:
    print(json.dumps(check(argv or ["libcuda.so.1", "libcuda.so"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
