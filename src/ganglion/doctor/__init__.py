"""The doctor: which driver path works for each NVIDIA GPU, and the plan to enlist it.

pciid.py     PCI ids and addresses, and the system's pci.ids database
catalog.py   the project's GPU table (generated into ``data/``) and the codename fallback
facts.py     public facts as tables: architectures, driver branches, CUDA, engines
sysfs.py     reading this machine: PCI devices, IOMMU groups, kernel, distribution, VM guest
verdicts.py  one small rule per driver path, CUDA and engines, and the recommendation
cuda.py      whether CUDA really initialises: libcuda in a child process, else nvidia-smi
cuda_child.py  that child: libcuda through ctypes, one JSON line
live.py      what is loaded and working now, per GPU, and the recommendation it changes
report.py    the report for ``ganglion doctor`` (a dict for ``--json``)
iommu.py     whether a GPU's IOMMU group can be passed through
vfio.py      the passthrough plan for ``ganglion doctor vfio``
k3s.py       the manifests for ``ganglion enlist k3s``
labels.py    the labels and annotations fleet discovery reads
render.py    Rich output for people
"""

from __future__ import annotations

from ganglion.errors import GanglionError


class DoctorError(GanglionError):
    """Bad input to the doctor: a malformed PCI id, a non-NVIDIA device, an unreadable sysfs."""
