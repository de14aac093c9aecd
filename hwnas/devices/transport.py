"""Transports: how files and commands reach the place a model runs.

Three kinds, one interface (push, run with a timeout, pull, cleanup):

* :class:`LocalTransport`: this machine, a scratch directory, argument lists.
* :class:`AdbTransport`: an Android phone through ``adb -s SERIAL``.
* :class:`SshTransport`: a Linux board through the OpenSSH client.

Why the care with quoting: ``adb shell`` and ``ssh`` both hand the remote
side ONE string that a shell parses again. A command is therefore always
built from an argument list and joined with :func:`shlex.join` (every
argument single-quoted when it needs to be), so a model called
``my model'; rm -rf ~.tflite`` is a file name on the far side, never a
command. Only fixed snippets written in this package go through
:meth:`Transport.run_script` unquoted.

Why the return-code marker: old ``adb`` versions exit 0 whatever the remote
command did, and a phone that drops mid-run can leave ``adb`` exiting 0 with
half an output. Every remote command ends by printing a marker with its exit
status; no marker means the connection was lost (:class:`TransportLost`),
which the devices retry with back-off.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from hwnas.errors import ConfigError, DeviceError

RC_MARKER = "__HWNAS_RC__="
_MARKER_TAIL = re.compile(r"\r?\n" + re.escape(RC_MARKER) + r"(-?\d+)\r?\n?$")

T = TypeVar("T")


class TransportLost(DeviceError):
    """The connection to the device dropped (cable, Wi-Fi, reboot): retrying later may work."""


class TransportTimeout(DeviceError):
    """A command on the device did not finish within its time limit."""


@dataclass(frozen=True)
class CommandResult:
    """What one command printed and returned.

    Attributes:
        command: the command as run (for error messages).
        returncode: its exit status on the far side.
        stdout / stderr: its output, decoded as UTF-8 (invalid bytes replaced).
        seconds: wall time of the whole round trip.
    """

    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self, what: str) -> CommandResult:
        """Raise :class:`DeviceError` naming ``what`` failed, with the output's tail."""
        if self.returncode != 0:
            tail = (self.stderr.strip() or self.stdout.strip())[-600:]
            raise DeviceError(
                f"{what} failed (exit {self.returncode}): {tail or 'no output'}; "
                f"command: {self.command[:300]}"
            )
        return self


def retry_lost(
    fn: Callable[[int], T],
    *,
    retries: int,
    backoff_s: float,
    on_retry: Callable[[int, float, TransportLost], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn(attempt)``; when the device drops, wait and try again.

    The wait doubles after every failure (``backoff_s``, 2x, 4x...): a phone
    that re-enumerates on USB or a board that reboots needs seconds, and
    hammering it does not help. Other errors are not retried: they need a
    person (unauthorized phone, missing runtime) and retrying would only
    delay the message.

    Raises:
        TransportLost: still lost after ``retries`` retries.
    """
    for attempt in range(retries + 1):
        try:
            return fn(attempt)
        except TransportLost as exc:
            if attempt >= retries:
                raise
            delay = backoff_s * (2**attempt)
            if on_retry is not None:
                on_retry(attempt, delay, exc)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def measure_with_retries(
    name: str,
    once: Callable[[int], T],
    *,
    retries: int,
    backoff_s: float,
    lost: str,
    fix: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """The retry loop of every remote device: :func:`retry_lost` with a warning per retry.

    Args:
        name: the device's name, first word of every message.
        once: one measurement attempt, given its 0-based attempt number.
        lost: how the device failed, e.g. ``dropped and did not come back``.
        fix: what the user should do when it stays away.

    Raises:
        DeviceError: still lost after ``retries`` retries (``name lost after N
            retries (why); fix``).
    """

    def on_retry(attempt: int, delay: float, exc: TransportLost) -> None:
        warnings.warn(
            f"{name}: {exc}; retrying in {delay:.0f} s (attempt {attempt + 2} of {retries + 1})",
            RuntimeWarning,
            stacklevel=5,
        )

    try:
        return retry_lost(
            once, retries=retries, backoff_s=backoff_s, on_retry=on_retry, sleep=sleep
        )
    except TransportLost as exc:
        raise DeviceError(f"{name} {lost} after {retries} retries ({exc}); {fix}") from exc


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")


class Transport(ABC):
    """Push files to a scratch directory on the device, run commands there, clean up.

    Everything pushed lands in one scratch directory (:meth:`workdir`) that
    :meth:`cleanup` removes, so a device is left as it was found.
    """

    kind: str = ""

    def __init__(self) -> None:
        self._workdir: str | None = None

    @property
    @abstractmethod
    def where(self) -> str:
        """Human-readable destination, for messages (``adb:SERIAL``, ``ssh:pi@board``)."""

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        stdin_path: str | Path | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the device; each element reaches the program as one argument."""

    @abstractmethod
    def run_script(self, script: str, timeout: float = 60.0) -> CommandResult:
        """Run a fixed shell snippet written in hwnas (globs, loops), never user input."""

    @abstractmethod
    def _make_workdir(self) -> str: ...

    @abstractmethod
    def push(self, local: str | Path, name: str | None = None) -> str:
        """Copy ``local`` into the scratch directory; returns the path on the device."""

    @abstractmethod
    def pull(self, remote: str, local: str | Path) -> Path:
        """Copy ``remote`` from the device to ``local``."""

    def workdir(self) -> str:
        """The scratch directory on the device, created on first use."""
        if self._workdir is None:
            self._workdir = self._make_workdir()
        return self._workdir

    def remote_path(self, name: str) -> str:
        if "/" in name or name in ("", ".", ".."):
            raise ConfigError(f"a pushed file name must be a plain name, got {name!r}")
        return str(PurePosixPath(self.workdir()) / name)

    def remove(self, remote: str, timeout: float = 60.0) -> None:
        self.run(["rm", "-f", "--", remote], timeout=timeout).check(f"removing {remote}")

    def has_command(self, name: str, timeout: float = 30.0) -> bool:
        res = self.run_script(f"command -v {shlex.quote(name)} >/dev/null 2>&1", timeout)
        return res.returncode == 0

    def cleanup(self) -> None:
        """Remove the scratch directory and everything in it."""
        if self._workdir is None:
            return
        wd, self._workdir = self._workdir, None
        self.run(["rm", "-rf", "--", wd], timeout=60.0)

    def close(self) -> None:
        self.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalTransport(Transport):
    """This machine: a temporary directory and plain argument lists, no shell."""

    kind = "local"

    def __init__(self, base_dir: str | Path | None = None):
        super().__init__()
        self.base_dir = str(base_dir) if base_dir is not None else None

    @property
    def where(self) -> str:
        return "local"

    def _make_workdir(self) -> str:
        return tempfile.mkdtemp(prefix="hwnas-", dir=self.base_dir)

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        stdin_path: str | Path | None = None,
    ) -> CommandResult:
        argv = [str(a) for a in argv]
        t0 = time.perf_counter()
        proc = _run_client(
            argv,
            timeout,
            stdin_path,
            timed_out=f"{shlex.join(argv)[:200]} did not finish within {timeout:.0f} s; "
            "raise the timeout or check that the model runs at all",
            not_found=f"cannot run {argv[0]}: not found; install it or fix PATH",
        )
        return CommandResult(
            shlex.join(argv),
            proc.returncode,
            _decode(proc.stdout),
            _decode(proc.stderr),
            time.perf_counter() - t0,
        )

    def run_script(self, script: str, timeout: float = 60.0) -> CommandResult:
        return self.run(["sh", "-c", script], timeout=timeout)

    def push(self, local: str | Path, name: str | None = None) -> str:
        dest = self.remote_path(name or Path(local).name)
        shutil.copyfile(local, dest)
        shutil.copymode(local, dest)
        return dest

    def pull(self, remote: str, local: str | Path) -> Path:
        shutil.copyfile(remote, local)
        return Path(local)

    def cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _devnull():
    return open(os.devnull, "rb")


def _run_client(
    argv: list[str],
    timeout: float,
    stdin_path: str | Path | None,
    timed_out: str,
    not_found: str,
) -> subprocess.CompletedProcess[bytes]:
    """Run a local program (the command itself, or the client that reaches the device).

    Its stdin is ``stdin_path`` or nothing (never the caller's terminal); a
    timeout becomes :class:`TransportTimeout` saying ``timed_out``, a missing
    program a :class:`DeviceError` saying ``not_found``.
    """
    try:
        with open(stdin_path, "rb") if stdin_path else _devnull() as stdin:
            return subprocess.run(
                argv, stdin=stdin, capture_output=True, timeout=timeout, check=False
            )
    except subprocess.TimeoutExpired as exc:
        raise TransportTimeout(timed_out) from exc
    except FileNotFoundError as exc:
        raise DeviceError(not_found) from exc


class RemoteShellTransport(Transport):
    """A device reached by a client that hands one command string to a remote shell."""

    #: stderr/stdout fragments meaning the link itself broke (retry may help).
    lost_patterns: tuple[str, ...] = ()
    #: turn CRLF into LF (old adb runs commands under a PTY that adds CRs).
    normalize_crlf: bool = False

    @abstractmethod
    def _client_argv(self, remote_command: str) -> list[str]:
        """The local argument list that runs ``remote_command`` on the device."""

    def _fail(self, proc_rc: int, out: str, err: str, command: str) -> DeviceError:
        """The error for a command whose marker is missing (the link broke)."""
        text = f"{err}\n{out}".strip()
        return TransportLost(
            f"lost the connection to {self.where} while running {command[:120]!r}"
            f" (client exit {proc_rc}: {text[-300:] or 'no output'})"
        )

    def _invoke(
        self, remote_command: str, timeout: float, stdin_path: str | Path | None
    ) -> CommandResult:
        wrapped = f"{remote_command}\nprintf '\\n{RC_MARKER}%s\\n' \"$?\""
        argv = self._client_argv(wrapped)
        t0 = time.perf_counter()
        proc = _run_client(
            argv,
            timeout,
            stdin_path,
            timed_out=f"{remote_command[:200]} on {self.where} did not finish within "
            f"{timeout:.0f} s; raise the timeout (MeasureSettings.timeout_s) or check the device",
            not_found=f"cannot run {argv[0]}: not found on this machine; install it or fix PATH",
        )
        out, err = _decode(proc.stdout), _decode(proc.stderr)
        if self.normalize_crlf:
            out = out.replace("\r\n", "\n")
        m = _MARKER_TAIL.search(out)
        if m is None:
            raise self._fail(proc.returncode, out, err, remote_command)
        return CommandResult(
            remote_command,
            int(m.group(1)),
            out[: m.start()],
            err,
            time.perf_counter() - t0,
        )

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        stdin_path: str | Path | None = None,
    ) -> CommandResult:
        return self._invoke(shlex.join(str(a) for a in argv), timeout, stdin_path)

    def run_script(self, script: str, timeout: float = 60.0) -> CommandResult:
        return self._invoke(script, timeout, None)

    def cleanup(self) -> None:
        try:
            super().cleanup()
        except DeviceError:
            # The device is gone: nothing can be removed now, and raising here
            # would hide the error that made the caller clean up.
            self._workdir = None


_SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-\[\]]*$")


class AdbTransport(RemoteShellTransport):
    """An Android device through ``adb -s SERIAL`` (push/pull use adb's file protocol).

    Args:
        serial: the device's serial (``adb devices -l``).
        adb: the adb executable.
        remote_dir: where the scratch directory is made (``/data/local/tmp``
            is the one place shell users may write and execute on Android).
    """

    kind = "adb"
    normalize_crlf = True
    lost_patterns = (
        "not found",
        "offline",
        "no devices",
        "closed",
        "protocol fault",
        "connection reset",
        "broken pipe",
        "device still",
        "failed to get feature set",
    )

    def __init__(self, serial: str, adb: str = "adb", remote_dir: str = "/data/local/tmp"):
        super().__init__()
        if not _SERIAL_RE.match(serial):
            raise ConfigError(
                f"bad adb serial {serial!r}: use the serial shown by `adb devices -l`"
            )
        self.serial = serial
        self.adb = adb
        self.remote_dir = remote_dir

    @property
    def where(self) -> str:
        return f"adb:{self.serial}"

    def _client_argv(self, remote_command: str) -> list[str]:
        # adb joins the words after `shell` with spaces; one pre-quoted word
        # reaches the device's shell exactly as built.
        return [self.adb, "-s", self.serial, "shell", remote_command]

    def _adb(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [self.adb, "-s", self.serial, *args],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TransportTimeout(
                f"adb {' '.join(args[:1])} to {self.serial} did not finish within {timeout:.0f} s"
            ) from exc
        except FileNotFoundError as exc:
            raise DeviceError(
                f"adb not found ({self.adb}); install Android platform-tools "
                "(Debian/Ubuntu: apt install adb) or pass adb=PATH"
            ) from exc

    def _classify(self, what: str, proc: subprocess.CompletedProcess) -> DeviceError:
        text = (_decode(proc.stderr) + "\n" + _decode(proc.stdout)).strip()
        low = text.lower()
        if "unauthorized" in low:
            return DeviceError(
                f"{what}: phone {self.serial} is unauthorized; unlock it and accept the "
                "'Allow USB debugging' prompt, then retry"
            )
        if any(p in low for p in self.lost_patterns):
            return TransportLost(f"{what}: lost phone {self.serial} ({text[-200:]})")
        return DeviceError(f"{what} failed (exit {proc.returncode}): {text[-400:] or 'no output'}")

    def _fail(self, proc_rc: int, out: str, err: str, command: str) -> DeviceError:
        if "unauthorized" in (err + out).lower():
            return DeviceError(
                f"phone {self.serial} is unauthorized; unlock it and accept the "
                "'Allow USB debugging' prompt, then retry"
            )
        return super()._fail(proc_rc, out, err, command)

    def get_state(self, timeout: float = 30.0) -> str:
        """``device``, ``offline``, ``unauthorized``, ``no permissions`` or ``absent``."""
        proc = self._adb(["get-state"], timeout)
        out = _decode(proc.stdout).strip()
        if proc.returncode == 0 and out:
            return out.splitlines()[-1].strip()
        text = (_decode(proc.stderr) + " " + out).lower()
        for state in ("unauthorized", "offline", "no permissions", "authorizing"):
            if state in text:
                return state
        return "absent"

    def _make_workdir(self) -> str:
        wd = str(PurePosixPath(self.remote_dir) / f"hwnas-{uuid.uuid4().hex[:10]}")
        self.run(["mkdir", "-p", "--", wd]).check(f"creating {wd} on {self.where}")
        return wd

    def push(self, local: str | Path, name: str | None = None) -> str:
        dest = self.remote_path(name or Path(local).name)
        proc = self._adb(["push", str(local), dest], timeout=600.0)
        if proc.returncode != 0:
            raise self._classify(f"adb push {Path(local).name}", proc)
        return dest

    def pull(self, remote: str, local: str | Path) -> Path:
        proc = self._adb(["pull", remote, str(local)], timeout=600.0)
        if proc.returncode != 0:
            raise self._classify(f"adb pull {remote}", proc)
        return Path(local)


_HOST_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)(?::(?P<port>\d{1,5}))?$"
)


def parse_ssh_target(target: str) -> tuple[str | None, str, int | None]:
    """``user@host[:port]`` (``[v6addr]:port`` too) -> (user, host, port).

    A target may not start with ``-``: ssh would read it as an option
    (``-oProxyCommand=...`` runs a local command).

    Raises:
        ConfigError: malformed target.
    """
    m = _HOST_RE.match(target or "")
    if not m:
        raise ConfigError(
            f"bad ssh target {target!r}: use user@host or user@host:port (e.g. ssh:pi@raspberrypi.local)"
        )
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"bad ssh port {port} in {target!r}: use 1-65535")
    host = m.group("host").strip("[]")
    return m.group("user"), host, port


class SshTransport(RemoteShellTransport):
    """A Linux board through the OpenSSH client, one shared connection per transport.

    Args:
        target: ``user@host[:port]``.
        identity_file: private key to use (``ssh -i``); default: ssh's own choice.
        known_hosts_file: a known_hosts file to check the board's key against.
        options: extra ``-o`` options (``["StrictHostKeyChecking=accept-new"]``).
        ssh: the ssh executable.
        connect_timeout: seconds before an unreachable board is reported.
        config_file: an ssh_config to use instead of ~/.ssh/config (``ssh -F``).

    ``BatchMode=yes`` makes ssh fail instead of prompting for a password or a
    host key, which would hang a campaign; the error then says what to fix.
    A control master keeps one TCP/SSH session open so each command costs a
    round trip, not a handshake.
    """

    kind = "ssh"

    def __init__(
        self,
        target: str,
        identity_file: str | Path | None = None,
        known_hosts_file: str | Path | None = None,
        options: Sequence[str] = (),
        ssh: str = "ssh",
        connect_timeout: float = 10.0,
        port: int | None = None,
        config_file: str | Path | None = None,
    ):
        super().__init__()
        self.user, self.host, parsed_port = parse_ssh_target(target)
        self.port = port or parsed_port
        self.target = target
        self.identity_file = str(identity_file) if identity_file else None
        self.known_hosts_file = str(known_hosts_file) if known_hosts_file else None
        for opt in options:
            if not re.match(r"^[A-Za-z][A-Za-z0-9]*=", opt):
                raise ConfigError(f"bad ssh option {opt!r}: give Name=value, as for ssh -o")
        self.options = list(options)
        self.ssh = ssh
        self.connect_timeout = connect_timeout
        self.config_file = str(config_file) if config_file else None
        self._control_dir: str | None = None

    @property
    def where(self) -> str:
        return f"ssh:{self.target}"

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _base_argv(self) -> list[str]:
        if self._control_dir is None:
            # Short path: a unix socket path must fit in ~100 bytes.
            self._control_dir = tempfile.mkdtemp(prefix="hwnas-ssh-", dir="/tmp")
        argv = [self.ssh] + (["-F", self.config_file] if self.config_file else [])
        argv += [
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={int(self.connect_timeout)}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self._control_dir}/%C",
            "-o", "ControlPersist=120",
        ]  # fmt: skip
        if self.port:
            argv += ["-p", str(self.port)]
        if self.identity_file:
            argv += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts_file:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts_file}"]
        for opt in self.options:
            argv += ["-o", opt]
        return argv

    def _client_argv(self, remote_command: str) -> list[str]:
        return [*self._base_argv(), "--", self.destination, remote_command]

    def _fail(self, proc_rc: int, out: str, err: str, command: str) -> DeviceError:
        low = err.lower()
        where = self.where
        if "permission denied" in low:
            return DeviceError(
                f"{where}: the board refused our key ({err.strip()[-160:]}); install your public "
                f"key there (ssh-copy-id {self.destination}) or pass identity_file=PATH"
            )
        if "host key verification failed" in low or "remote host identification has changed" in low:
            return DeviceError(
                f"{where}: the board's host key is unknown or changed; connect once by hand "
                f"(ssh {self.destination}) to check and accept it, or pass known_hosts_file=PATH"
            )
        if "could not resolve hostname" in low:
            return DeviceError(
                f"{where}: cannot resolve host {self.host!r}; check the name or use its IP address"
            )
        if "connection refused" in low:
            return DeviceError(
                f"{where}: nothing listens for ssh on {self.host}:{self.port or 22}; "
                "start sshd on the board or give the right port (user@host:port)"
            )
        return super()._fail(proc_rc, out, err, command)

    def _make_workdir(self) -> str:
        res = self.run_script('mktemp -d "${TMPDIR:-/tmp}/hwnas.XXXXXXXX"')
        res.check(f"creating a scratch directory on {self.where}")
        wd = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if not wd.startswith("/"):
            raise DeviceError(f"{self.where}: mktemp printed {wd!r}, not a directory")
        return wd

    def push(self, local: str | Path, name: str | None = None) -> str:
        dest = self.remote_path(name or Path(local).name)
        res = self._invoke(f"cat > {shlex.quote(dest)}", 600.0, local)
        res.check(f"copying {Path(local).name} to {self.where}")
        return dest

    def pull(self, remote: str, local: str | Path) -> Path:
        argv = [*self._base_argv(), "--", self.destination, f"cat -- {shlex.quote(remote)}"]
        with open(local, "wb") as f:
            try:
                proc = subprocess.run(
                    argv, stdout=f, stderr=subprocess.PIPE, timeout=600.0, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise TransportTimeout(f"pulling {remote} from {self.where} timed out") from exc
        if proc.returncode == 255:
            raise self._fail(proc.returncode, "", _decode(proc.stderr), f"cat {remote}")
        if proc.returncode != 0:
            raise DeviceError(
                f"cannot read {remote} on {self.where}: {_decode(proc.stderr).strip()[-200:]}"
            )
        return Path(local)

    def close(self) -> None:
        try:
            self.cleanup()
        finally:
            if self._control_dir is not None:
                subprocess.run(
                    [*self._base_argv(), "-O", "exit", "--", self.destination],
                    capture_output=True,
                    timeout=15,
                    check=False,
                )
                shutil.rmtree(self._control_dir, ignore_errors=True)
                self._control_dir = None
