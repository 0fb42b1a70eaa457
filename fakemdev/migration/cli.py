"""``fakemdev migrate check|run SRC_HOST:UUID DST_HOST``: every layer that decides a migration.

Thin click wrappers over :mod:`fakemdev.migration.manager`. The source is
``HOST:UUID``, ``HOST:UUID,UUID`` (one VM with several devices) or
``HOST:PCI_ADDRESS`` (an SR-IOV VF with a vGPU); ``--policy`` picks the
manager's rules (``none``, ``nova``, ``kubevirt``). The hosts live in a
running mount (``--mountpoint``, or the one live mount holding both host
names) and the decision is made by the daemon through its control socket,
on the very attribute objects the mount serves, so the reason is the
driver's own words rather than a bare errno. ``--scenario FILE`` builds the
scenario's hosts in this process instead (no mount needed).

Exit status: 0 compatible (check) or moved (run); 1 refused; 2 usage or
setup errors (no mount, unknown host).
"""
from __future__ import annotations

import json
import re
import sys
from typing import Any

import click

REFUSED, USAGE = 1, 2


def _fail(message: str, code: int = USAGE) -> None:
    click.echo(f"fakemdev: {message}", err=True)
    sys.exit(code)


def _split_source(source: str) -> tuple[str, str]:
    host, sep, uuid = source.partition(":")   # host names have no ':', VF addresses do
    if not sep or not host or not uuid or not all(_UUID.fullmatch(u) for u in uuid.split(",")) \
            and not _PCI_ADDRESS.fullmatch(uuid):
        _fail(f"source must be HOST:UUID (or HOST:UUID,UUID, or HOST:PCI_ADDRESS of a VF), got {source!r}")
    return host, uuid


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PCI_ADDRESS = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")


def _find_mount(mountpoint: str | None, hosts: tuple[str, str]) -> str:
    """The control socket of the mount holding both hosts."""
    from ..fuse.daemon import list_mounts, mount_state, read_state
    if mountpoint is not None:
        info = read_state(mountpoint)
        if info is None:
            _fail(f"{mountpoint}: no fakemdev mount here (see 'fakemdev status')")
        return info.socket  # type: ignore[union-attr]
    live = [i for i in list_mounts() if mount_state(i) == "live" and set(hosts) <= set(i.hosts)]
    if len(live) != 1:
        where = "no live mount" if not live else f"{len(live)} live mounts"
        _fail(f"{where} with hosts {' and '.join(sorted(set(hosts)))}: pass --mountpoint or --scenario")
    return live[0].socket


def _decide(op: str, source: str, dst: str, type_id: str | None, parent: str | None,
            new_uuid: str | None, mountpoint: str | None, scenario: str | None, policy: str) -> dict[str, Any]:
    src, uuid = _split_source(source)
    args: dict[str, Any] = dict(src=src, uuid=uuid, dst=dst, type=type_id, parent=parent, new_uuid=new_uuid)
    if policy != "none":   # an older daemon knows no policy argument
        args["policy"] = policy
    if scenario is not None:
        return _decide_local(op, scenario, args)
    from ..control import ControlError, call
    sock = _find_mount(mountpoint, (src, dst))
    try:
        verdict: dict[str, Any] = call(sock, op, **args)
        return verdict
    except ControlError as e:
        if e.errno == "EINVAL" and "unknown op" in str(e):
            _fail("this mount's daemon has no migration support (restart it with this fakemdev)")
        _fail(f"{e.errno + ': ' if e.errno else ''}{e}")
    raise AssertionError("unreachable")


def _decide_local(op: str, scenario: str, args: dict[str, Any]) -> dict[str, Any]:
    from ..control import Controller
    from ..errors import KernelError
    from ..scenario import ScenarioError, load
    from .ops import register_control
    try:
        hosts = load(scenario).build_hosts()
    except (ScenarioError, OSError) as e:
        _fail(str(e))
    controller = Controller(hosts, {})
    register_control(controller)
    try:
        verdict: dict[str, Any] = controller.ops[op](**args)
        return verdict
    except KernelError as e:
        _fail(f"{e.errno_name}: {e.reason}")
    raise AssertionError("unreachable")


def _print(verdict: dict[str, Any], as_json: bool, ran: bool) -> None:
    if as_json:
        click.echo(json.dumps(verdict, indent=2))
        return
    ok = verdict.get("moved") if ran else verdict.get("compatible")
    if ran:
        head = f"moved: {verdict['source']} -> {verdict['target']} as {verdict.get('uuid')}" if ok else \
            f"not moved ({verdict.get('errno')}): {verdict.get('source')} -> {verdict.get('target') or '?'}"
    else:
        head = f"compatible: {verdict['source']} -> {verdict['target']}" if ok else \
            f"incompatible ({verdict.get('errno')}): {verdict.get('source')} -> {verdict.get('target') or '?'}"
    click.echo(head)
    click.echo(f"reason: {verdict.get('reason')}")
    if verdict.get("source_string"):
        click.echo(f"source migration_version: {verdict['source_string']}")
    for note in verdict.get("notes") or []:
        click.echo(f"note: {note}")
    if ran:
        for line in verdict.get("transcript") or []:
            click.echo(f"phase {line}")
        return
    for layer in verdict.get("layers") or []:
        click.echo(f"layer {layer['layer']}: {'ok' if layer['compatible'] else 'refused'}: {layer['reason']}")


_common = [
    click.argument("source", metavar="SRC_HOST:UUID"),
    click.argument("dst", metavar="DST_HOST"),
    click.option("--type", "type_id", default=None, metavar="TYPE",
                 help="Target type dir name (default: the source's)."),
    click.option("--parent", default=None, help="Target parent device (default: the first with that type)."),
    click.option("--new-uuid", default=None, metavar="UUID|random", help="UUID on the target (default: the same)."),
    click.option("--mountpoint", "-m", default=None, help="The mount holding both hosts."),
    click.option("--scenario", default=None, type=click.Path(dir_okay=False),
                 help="Build the hosts from this scenario file instead of asking a mount."),
    click.option("--policy", type=click.Choice(["none", "nova", "kubevirt"]), default="none", show_default=True,
                 help="The manager's rules on top of libvirt and QEMU."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable verdict."),
]


def _with_common(fn: Any) -> Any:
    for deco in reversed(_common):
        fn = deco(fn)
    return fn


@click.group()
def migrate() -> None:
    """Migration checks and moves between simulated hosts, across every layer."""


@migrate.command("check")
@_with_common
def migrate_check(source: str, dst: str, type_id: str | None, parent: str | None, new_uuid: str | None,
                  mountpoint: str | None, scenario: str | None, policy: str, as_json: bool) -> None:
    """Could SRC_HOST's device UUID move to DST_HOST? Changes nothing.

    Checks every layer in order, the first refusal deciding: sysfs
    migration_version (where the driver publishes it), the kernel/driver's
    VFIO migration v2, QEMU's blockers, the device stream header, the
    manager policy; then that the target has room. Exit 0 compatible, 1
    incompatible."""
    verdict = _decide("migrate_check", source, dst, type_id, parent, new_uuid, mountpoint, scenario, policy)
    _print(verdict, as_json, ran=False)
    sys.exit(0 if verdict.get("compatible") else REFUSED)


@migrate.command("run")
@_with_common
def migrate_run(source: str, dst: str, type_id: str | None, parent: str | None, new_uuid: str | None,
                mountpoint: str | None, scenario: str | None, policy: str, as_json: bool) -> None:
    """Move the device through libvirt's v3 phases: Begin, Prepare (check,
    claim the target), Perform (VFIO v2 states), Finish, Confirm.

    Any failing step undoes the earlier ones: both hosts end as they were.
    Exit 0 moved, 1 refused or failed."""
    verdict = _decide("migrate_run", source, dst, type_id, parent, new_uuid, mountpoint, scenario, policy)
    _print(verdict, as_json, ran=True)
    sys.exit(0 if verdict.get("moved") else REFUSED)
