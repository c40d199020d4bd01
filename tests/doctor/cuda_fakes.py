"""Fake NVIDIA user space for the CUDA check: a libcuda built from C with the functions the
check calls, and an ``nvidia-smi`` shell script. Both are real parts: the check loads the
library with ctypes in its child process, and runs the script from PATH."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from ganglion.doctor.cuda import CudaCheck, CudaDevice
from tests.conftest import need

H200_CUDA = CudaCheck(
    True,
    "CUDA 13.0, 1 GPU initialised",
    "libcuda",
    13000,
    (CudaDevice("NVIDIA H200", "0000:00:06.0", 143771, "9.0", 4022.8),),
    "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04",
)
"""What the CUDA check says on the working H200 guest."""
NO_LIBCUDA = CudaCheck(False, "no libcuda (libcuda.so.1 not found)", error="no libcuda")
"""What it says where the driver's user space is missing."""
H200_LIVE: dict[str, Any] = {
    "driver": "nvidia",
    "flavour": "open",
    "version": "580.159.04",
    "cuda_driver_version": "13.0",
    "cuda_ok": True,
    "why": "working: nvidia-open 580.159.04, CUDA 13.0, 1 GPU initialised",
}
"""The ``live`` section's named fields on the working H200 guest."""

LIBCUDA_C = r"""
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stddef.h>

int cuInit(unsigned flags) {
#ifdef HANG
  for (;;) sleep(1);
#endif
#ifdef CRASH
  abort();
#endif
  return INIT_RESULT;
}
int cuGetErrorName(int code, const char **name) {
  *name = code == 100 ? "CUDA_ERROR_NO_DEVICE"
        : code == 803 ? "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH" : "CUDA_ERROR_UNKNOWN";
  return 0;
}
int cuDriverGetVersion(int *version) { *version = CUDA_VERSION; return 0; }
int cuDeviceGetCount(int *count) { *count = 1; return 0; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return 0; }
int cuDeviceGetName(char *name, int size, int device) {
  strncpy(name, "NVIDIA H200", size); return 0;
}
int cuDeviceGetPCIBusId(char *bus, int size, int device) {
  strncpy(bus, BUS_ID, size); return 0;
}
int cuDeviceTotalMem_v2(size_t *bytes, int device) {
  *bytes = (size_t)143771 * 1024 * 1024; return 0;
}
int cuDeviceGetAttribute(int *value, int attribute, int device) {
  switch (attribute) {
    case 36: *value = 2619000; return 0;  /* memory clock, kHz */
    case 37: *value = 6144; return 0;     /* memory bus, bits */
    case 75: *value = 9; return 0;
    case 76: *value = 0; return 0;
  }
  return 1;
}
"""


def build_libcuda(
    folder: Path,
    *,
    version: str = "580.159.04",
    init: int = 0,
    cuda: int = 13000,
    bus_id: str = "0000:00:06.0",
    hang: bool = False,
    crash: bool = False,
) -> Path:
    """Compile a fake ``libcuda.so.VERSION`` into ``folder``; its ``cuInit`` returns ``init``
    (or never returns, or aborts)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    need(compiler is not None, "a C compiler builds the fake libcuda")
    assert compiler is not None
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "libcuda.c"
    source.write_text(LIBCUDA_C)
    library = folder / f"libcuda.so.{version}"
    defines = [f"-DINIT_RESULT={init}", f"-DCUDA_VERSION={cuda}", f'-DBUS_ID="{bus_id}"']
    defines += ["-DHANG"] * hang + ["-DCRASH"] * crash
    command = [compiler, "-shared", "-fPIC", *defines, "-o", str(library), str(source)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return library


H200_SMI = """
==============NVSMI LOG==============

Timestamp                                 : Sat Nov 29 10:00:00 2025
Driver Version                            : 580.159.04
CUDA Version                              : 13.0

Attached GPUs                             : 1
GPU 00000000:00:06.0
    Product Name                          : NVIDIA H200
    Product Brand                         : NVIDIA
    FB Memory Usage
        Total                             : 143771 MiB
        Reserved                          : 0 MiB
"""

NO_DRIVER_SMI = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


def nvidia_smi(
    folder: Path, output: str = H200_SMI, *, status: int = 0, hang: bool = False
) -> Path:
    """Write an executable ``nvidia-smi`` into ``folder`` that prints ``output`` and exits
    with ``status``, or sleeps (through a child process, as a stuck tool would) when ``hang``."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    (folder / "output.txt").write_text(output)
    body = "sleep 600\n" if hang else f'cat "{folder / "output.txt"}"\nexit {status}\n'
    script.write_text(f"#!/bin/sh\n{body}")
    script.chmod(0o755)
    return script
