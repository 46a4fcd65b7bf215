#!/usr/bin/env python3
"""Lays out a Debian package tree from Cargo.toml's [package.metadata.deb].

usage: deb-layout.py Cargo.toml ROOT ARCH  -> prints the .deb path to build

The subset of cargo-deb's table this project uses: maintainer, section,
priority, extended-description, assets ([source, dest, mode]; a dest ending in
"/" is a directory), conf-files, systemd-units (unit-name, unit-scripts,
enable). As cargo-deb does, binaries are stripped of debug info, man pages are gzipped, the unit goes to
lib/systemd/system/, and the maintainer scripts enable it on install (and
start it where systemd runs), stop it on removal and forget it on purge.
"""

import gzip
import os
import shutil
import subprocess
import sys
import tomllib

cargo, root, arch = sys.argv[1:4]
with open(cargo, "rb") as f:
    manifest = tomllib.load(f)
pkg = manifest["package"]
meta = pkg["metadata"]["deb"]
name = pkg["name"]
version = f"{pkg['version']}-1"


def install(src, dest, mode):
    if dest.endswith("/"):
        dest += os.path.basename(src)
    target = os.path.join(root, dest.lstrip("/"))
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if "/share/man/" in dest and not dest.endswith(".gz"):
        target += ".gz"
        with open(src, "rb") as i, gzip.GzipFile(target, "wb", mtime=0) as o:
            shutil.copyfileobj(i, o)
    else:
        shutil.copyfile(src, target)
        if dest.startswith("usr/bin/") and shutil.which("strip"):
            # The release profile keeps line tables (debug = 1) for perf;
            # the package ships without them, as cargo-deb does.
            subprocess.run(["strip", "--strip-debug", target], check=True)
    os.chmod(target, mode)
    return target


size = 0
for src, dest, mode in meta["assets"]:
    if not os.path.isfile(src):
        sys.exit(f"deb-layout: asset {src} is missing (build it first)")
    size += os.path.getsize(install(src, dest, int(mode, 8)))

units = meta.get("systemd-units") or {}
unit = None
if units:
    unit = units["unit-name"] + ".service"
    src = os.path.join(units.get("unit-scripts", "."), unit)
    size += os.path.getsize(install(src, f"lib/systemd/system/{unit}", 0o644))

debian = os.path.join(root, "DEBIAN")
os.makedirs(debian, mode=0o755, exist_ok=True)
for d, _, _ in os.walk(root):
    os.chmod(d, 0o755)

description = pkg["description"]
extended = meta.get("extended-description", "")
with open(os.path.join(debian, "control"), "w") as f:
    f.write(
        f"Package: {name}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {meta['maintainer']}\n"
        f"Section: {meta.get('section', 'misc')}\n"
        f"Priority: {meta.get('priority', 'optional')}\n"
        f"Installed-Size: {(size + 1023) // 1024}\n"
        "Depends: libc6\n"
        f"Description: {description}\n"
    )
    if extended:
        f.write(f" {extended}\n")

conf = meta.get("conf-files", [])
if conf:
    with open(os.path.join(debian, "conffiles"), "w") as f:
        f.writelines(c + "\n" for c in conf)
    os.chmod(os.path.join(debian, "conffiles"), 0o644)


def script(name_, body):
    path = os.path.join(debian, name_)
    with open(path, "w") as f:
        f.write("#!/bin/sh\nset -e\n" + body)
    os.chmod(path, 0o755)


if unit:
    enable = units.get("enable", True)
    # deb-systemd-helper records the enablement even where systemd is not
    # running (a container, a chroot); starting needs a running systemd.
    script(
        "postinst",
        f"""if [ "$1" = configure ] || [ "$1" = abort-upgrade ]; then
    if [ -x /usr/bin/deb-systemd-helper ]; then
        {"deb-systemd-helper enable" if enable else "deb-systemd-helper update-state"} {unit} >/dev/null || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        {f"deb-systemd-invoke start {unit} >/dev/null || true" if enable else ":"}
    fi
fi
""",
    )
    script(
        "prerm",
        f"""if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    deb-systemd-invoke stop {unit} >/dev/null || true
fi
""",
    )
    script(
        "postrm",
        f"""if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = remove ] && [ -x /usr/bin/deb-systemd-helper ]; then
    deb-systemd-helper mask {unit} >/dev/null || true
fi
if [ "$1" = purge ] && [ -x /usr/bin/deb-systemd-helper ]; then
    deb-systemd-helper purge {unit} >/dev/null || true
    deb-systemd-helper unmask {unit} >/dev/null || true
fi
""",
    )

print(f"target/debian/{name}_{version}_{arch}.deb")
