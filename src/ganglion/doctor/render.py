"""Rich output of the doctor for people: a table per GPU, the verdicts, the plan."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from ganglion.doctor.cpu import CpuCheck
from ganglion.doctor.facts import ARCHITECTURES
from ganglion.doctor.iommu import describe
from ganglion.doctor.live import InUse, Live
from ganglion.doctor.report import GpuReport, Report
from ganglion.doctor.verdicts import guest_line
from ganglion.doctor.vfio import VfioPlan


def _mark(works: bool | None) -> str:
    return {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[works]


def _host_line(report: Report) -> str:
    host = report.host
    iommu = f"on ({host.iommu_groups} groups)" if host.iommu_enabled else "off"
    driver = f" · NVIDIA driver {host.nvidia_driver}" if host.nvidia_driver else ""
    guest = f" · VM guest ({host.guest.name})" if host.guest else ""
    return (
        f"kernel {host.kernel or 'unknown'} · {host.distribution or 'unknown distribution'}"
        f" · IOMMU {iommu}{driver}{guest}"
    )


IN_USE_MARKS = {"working": True, "loaded": None, "passthrough": None, "display": None}


def _in_use(in_use: InUse) -> str:
    return f"{_mark(IN_USE_MARKS.get(in_use.state, False))} {escape(in_use.why)}"


def _live(console: Console, report: Report, live: Live) -> None:
    if report.host.guest and report.gpus:
        console.print(f"[bold]{escape(guest_line(report.host.guest))}[/]")
    mark = _mark(live.cuda.ok) if live.cuda.ok is not None else "-"
    how = f" [dim](checked with {live.cuda.how})[/]" if live.cuda.how else ""
    console.print(f"{mark} {escape(live.why)}{how}\n")


def _gpu(console: Console, gpu: GpuReport) -> None:
    d, model = gpu.diagnosis, gpu.model
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    cc = model.compute_capability or "none (pre-CUDA)"
    for label, value in (
        ("PCI id", str(model.pci_id)),
        ("address", d.bdf or "-"),
        ("chip", model.chip),
        ("architecture", ARCHITECTURES[model.arch].title if model.arch else "unknown"),
        ("compute capability", cc),
        ("driver in use", gpu.driver_in_use or "-"),
        ("CUDA", f"{d.cuda_major} at most" if d.cuda_major else "none"),
        ("engines", ", ".join(d.engines.names()) or "none"),
        ("PyTorch wheels", d.engines.pytorch or "none"),
    ):
        facts.add_row(label, escape(value))
    if gpu.in_use:
        facts.add_row("now", _in_use(gpu.in_use))
    if model.note:
        facts.add_row("[yellow]guess[/]", escape(model.note))
    paths = Table(show_header=True, header_style="bold", expand=True)
    paths.add_column("path")
    paths.add_column("", width=2)
    paths.add_column("why")
    rows = (
        ("nouveau", gpu.nouveau.works, gpu.nouveau.why),
        ("nvidia open", d.open.works, d.open.why),
        (f"nvidia {model.last_branch}", d.proprietary.works, d.proprietary.why),
        ("vfio passthrough", d.vfio.works, d.vfio.why),
    )
    for name, works, why in rows:
        paths.add_row(name, _mark(works), escape(why))
    console.print(Panel(facts, title=f"[bold]{escape(model.name)}[/]", expand=True))
    console.print(paths)
    console.print(f"[bold]→[/] {escape(gpu.recommendation.text)}\n")


VERDICT_MARKS = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "error": "[red]✗[/]", "absent": "-"}


def _cpu(console: Console, cpu: CpuCheck) -> None:
    build = cpu.build
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("CPU", escape(cpu.model or "unknown"))
    facts.add_row("it has", " ".join(cpu.features) or "none of llama.cpp's features")
    if build.installed:
        uses = " ".join(sorted(build.features)) or ("?" if build.error else "no extensions")
        facts.add_row("llama.cpp", f"llama-cpp-python {build.version} uses {uses}")
    verdict, message = cpu.verdict
    console.print(facts)
    console.print(f"{VERDICT_MARKS[verdict]} {escape(message)}\n")


def print_report(console: Console, report: Report) -> None:
    console.print(f"[dim]{escape(_host_line(report))}[/]\n")
    if report.live:
        _live(console, report, report.live)
    if report.cpu:
        _cpu(console, report.cpu)
    for gpu in report.gpus:
        _gpu(console, gpu)
    for unknown in report.unknown:
        console.print(f"[yellow]unknown GPU[/] {escape(unknown)}")
    if report.message:
        console.print(escape(report.message))


def _block(console: Console, title: str, text: str) -> None:
    console.print(f"[bold]{escape(title)}[/]")
    console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
    console.print()


def print_plan(console: Console, plan: VfioPlan) -> None:
    iommu = "on" if plan.iommu_enabled else "off"
    console.print(f"[bold]VFIO plan[/] for {', '.join(plan.gpus)} (IOMMU {iommu})\n")
    for check in plan.checks:
        mark = _mark(check.clean)
        console.print(f"{mark} IOMMU {escape(check.why)}")
        for other in check.others:
            console.print(f"    shares with {escape(describe(other))}")
    for warning in plan.warnings:
        console.print(f"[yellow]![/] {escape(warning)}")
    console.print()
    binding = (
        f"vfio-pci.ids={','.join(plan.ids)}"
        if plan.binding == "ids"
        else "driver_override by address (the host keeps a card with the same id)"
    )
    _block(console, "Binding", binding)
    _block(console, "Kernel command line (add)", plan.kernel_cmdline)
    for plan_file in plan.files:
        verb = "append to" if plan_file.action == "append" else "write"
        _block(console, f"{verb} {plan_file.path}", plan_file.content)
    _block(console, "Then run", "\n".join(plan.commands))
    console.print(
        f"[bold]Hugepages[/]: {plan.hugepages} x 2 MiB back the VM's {plan.memory_gib} GiB "
        f"and {plan.cpus} vCPUs\n"
    )
    _block(console, "QEMU", plan.qemu)
    _block(console, "libvirt domain (virsh define)", plan.libvirt_xml)
    guest = plan.guest
    engines = ", ".join(guest.engines) or "none"
    console.print(
        f"[bold]In the guest[/] ({escape(guest.os)}): NVIDIA {guest.driver_branch} driver with "
        f"{guest.kernel_modules} kernel modules, CUDA {guest.cuda_major}; engines: "
        f"{escape(engines)}; PyTorch {guest.pytorch or 'none'}. Then join it to K3s and run "
        "`ganglion enlist k3s --node <the VM's node name>`."
    )
