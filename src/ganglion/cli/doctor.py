"""``ganglion doctor`` (which driver path works for each NVIDIA GPU), ``ganglion doctor vfio``
(the passthrough plan) and ``ganglion enlist k3s`` (the manifests for a GPU node)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ganglion.cli.options import DEFAULT_GATEWAY, ApiKeyOption, GatewayOption, gateway_client
from ganglion.doctor import DoctorError, defaults

if TYPE_CHECKING:
    from ganglion.doctor.cuda import CudaProbe
    from ganglion.doctor.sysfs import HostPaths

doctor_app = typer.Typer(
    name="doctor",
    help="Which driver path works for each NVIDIA GPU, and the plan to enlist it.",
    short_help="Which driver path works for each NVIDIA GPU, and how to enlist it.",
    invoke_without_command=True,
)
enlist_app = typer.Typer(name="enlist", help="Enlist a node in the fleet.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
SysfsOption = Annotated[
    Path, typer.Option("--sysfs", metavar="ROOT", help="Read this sysfs tree instead of /sys.")
]
ProcOption = Annotated[
    Path, typer.Option("--proc", metavar="ROOT", help="Read this procfs tree instead of /proc.")
]
PciIdsOption = Annotated[
    list[Path] | None,
    typer.Option("--pci-ids", metavar="FILE", help="pci.ids database to name devices by."),
]
KernelOption = Annotated[
    str | None,
    typer.Option("--kernel", metavar="RELEASE", help="Judge against this kernel release."),
]


def _paths(sysfs: Path, proc: Path, pci_ids: list[Path] | None) -> HostPaths:
    from ganglion.doctor.sysfs import HostPaths

    defaults = HostPaths()
    return HostPaths(
        sysfs=sysfs, procfs=proc, pci_ids=tuple(pci_ids) if pci_ids else defaults.pci_ids
    )


def _cuda_probe(libcuda: list[str] | None) -> CudaProbe:
    from functools import partial

    from ganglion.doctor.cuda import LIBCUDA_NAMES, check_cuda

    return partial(check_cuda, tuple(libcuda) if libcuda else LIBCUDA_NAMES)


def _print_json(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2))


PciIdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--pci-id", metavar="VVVV:DDDD", help="Judge this GPU instead of scanning (repeat)."
    ),
]
CudaCheckOption = Annotated[
    bool | None,
    typer.Option(
        "--cuda-check/--no-cuda-check",
        help="Check that CUDA initialises here (libcuda, else nvidia-smi, in a child process "
        "with a timeout). [default: when reading this machine's /sys]",
        show_default=False,
    ),
]
LibcudaOption = Annotated[
    list[str] | None,
    typer.Option(
        "--libcuda",
        metavar="FILE",
        help="The libcuda to check CUDA with (repeat to try several). "
        "[default: libcuda.so.1, then libcuda.so, from the loader's path]",
        show_default=False,
    ),
]
SendOption = Annotated[
    bool,
    typer.Option(
        "--send",
        help="Send the report to the gateway, which then marks this node's neurons whose "
        "GPU contributes nothing (a model on the CPU).",
    ),
]
NodeOption = Annotated[
    str | None,
    typer.Option(
        "--node",
        metavar="NAME",
        help="This machine's node name in the fleet, as its neurons give it. [default: host]",
        show_default=False,
    ),
]


@doctor_app.callback()
def doctor(
    ctx: typer.Context,
    as_json: JsonOption = False,
    sysfs: SysfsOption = Path("/sys"),
    proc: ProcOption = Path("/proc"),
    pci_id: PciIdOption = None,
    pci_ids: PciIdsOption = None,
    kernel: KernelOption = None,
    cuda_check: CudaCheckOption = None,
    libcuda: LibcudaOption = None,
    send: SendOption = False,
    node: NodeOption = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    api_key: ApiKeyOption = None,
) -> None:
    """Find the NVIDIA GPUs and say which driver path works for each, and why; what is loaded
    now and whether CUDA initialises; whether this machine is a VM guest; and the CPU against
    the installed llama.cpp build (a build using features this CPU lacks crashes)."""
    if ctx.invoked_subcommand is not None:
        return
    from ganglion.doctor.report import doctor as run_doctor
    from ganglion.llamacpp import read_build

    if send and pci_id:
        raise DoctorError("--send tells the gateway about this machine: leave out --pci-id")
    check = sysfs == Path("/sys") and not pci_id if cuda_check is None else cuda_check
    report = run_doctor(
        _paths(sysfs, proc, pci_ids),
        pci_id or (),
        kernel,
        llama=read_build,
        cuda=_cuda_probe(libcuda) if check else None,
    )
    if as_json:
        _print_json(report.as_json())
    else:
        from rich.console import Console

        from ganglion.doctor import render

        render.print_report(Console(), report)
    if send:
        _send(report.as_json(), node or socket.gethostname().lower(), gateway, api_key)


def _send(report: dict[str, Any], node: str, gateway: str, api_key: str | None) -> None:
    from urllib.parse import quote

    with gateway_client(gateway, api_key) as client:
        kept = client.request(
            "PUT", f"/fleet/nodes/{quote(node, safe='')}/doctor", json_body=report
        )
    verdict = kept["trouble"] or "nothing against its GPUs"
    typer.echo(f"sent to {gateway} as node {node}: {verdict}", err=True)


@doctor_app.command("vfio")
def vfio(
    pci: Annotated[
        list[str] | None,
        typer.Option("--pci", metavar="BDF", help="The GPU to pass through (repeat for more)."),
    ] = None,
    as_json: JsonOption = False,
    sysfs: SysfsOption = Path("/sys"),
    proc: ProcOption = Path("/proc"),
    memory: Annotated[
        int, typer.Option("--memory", metavar="GIB", help="The VM's memory, on hugepages.")
    ] = defaults.DEFAULT_MEMORY_GIB,
    cpus: Annotated[
        int, typer.Option("--cpus", help="The VM's virtual CPUs.")
    ] = defaults.DEFAULT_CPUS,
    pci_ids: PciIdsOption = None,
    kernel: KernelOption = None,
) -> None:
    """Plan VFIO passthrough of a GPU to a VM: IOMMU groups, binding, boot files, the VM."""
    from ganglion.doctor.vfio import plan

    result = plan(_paths(sysfs, proc, pci_ids), pci or (), memory, cpus, kernel)
    if as_json:
        _print_json(result.as_json())
    else:
        from rich.console import Console

        from ganglion.doctor import render

        render.print_plan(Console(), result)


@enlist_app.command("k3s")
def enlist_k3s(
    node: Annotated[
        str | None,
        typer.Option("--node", metavar="NAME", help="The node to pin Ollama to [this host]."),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", metavar="MODEL", help="The model Ollama pulls.")
    ] = defaults.DEFAULT_MODEL,
    namespace: Annotated[
        str, typer.Option("--namespace", help="Namespace for Ollama.")
    ] = defaults.DEFAULT_NAMESPACE,
    image: Annotated[
        str, typer.Option("--image", help="The Ollama image.")
    ] = defaults.OLLAMA_IMAGE,
) -> None:
    """Print Kubernetes manifests that serve Ollama on a K3s GPU node, labelled for discovery."""
    from ganglion.doctor import k3s

    enlistment = k3s.Enlistment(node or socket.gethostname().lower(), model, namespace, image)
    typer.echo(k3s.render(enlistment), nl=False)


def register(app: typer.Typer) -> None:
    """Add ``doctor`` and ``enlist`` to ``app``."""
    app.add_typer(doctor_app)
    app.add_typer(enlist_app)
