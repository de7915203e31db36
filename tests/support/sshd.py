"""A real OpenSSH server for the tests: kernel "hosts" that are loopback addresses.

One `sshd -D -e` (foreground, log on stderr, its own process group) listens on the same free
port of each address (Enterprise Gateway has one `EG_SSH_PORT` for all its hosts), with its
own config, a host key and an authorized client key made here. Only public-key login for the
user running the tests; no PAM, no password. As root, sshd needs its privilege-separation
directory (`/run/sshd`, which the Debian service creates when it starts; created here if
missing); as another user it runs unprivileged and accepts only that user.

`client_home` is a HOME for the SSH client (paramiko in Enterprise Gateway):
`.ssh/id_ed25519` is the client key and `.ssh/known_hosts` names the host key for
`[address]:port` of each address, so that strict host key checking passes.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import descendants, kill_survivors

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")


def sshd_unavailable(addresses: list[str]) -> str | None:
    """Why an SSH server on `addresses` cannot be started here, or None."""
    for address in addresses:
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
            except OSError as e:
                # Linux routes all of 127.0.0.0/8 to lo; macOS needs `ifconfig lo0 alias ...`.
                return f"{address} is not an address of this machine ({e.strerror})"
    if not SSHD.exists():
        return f"{SSHD} not found: run scripts/setup.sh (it installs Debian's openssh-server)"
    for tool in ("ssh-keygen", "ssh"):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian's openssh-client)"
    return None


def port_free_on_all(addresses: list[str]) -> int:
    """A port that is free on each of `addresses` (probed, then released)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port = int(first.getsockname()[1])
            try:
                for address in addresses[1:]:
                    with socket.socket() as other:
                        other.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free on all of {addresses}")


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name,
                    "-f", str(path)], check=True, timeout=30)


@dataclass
class SshHosts:
    workdir: Path
    addresses: list[str]
    user: str = field(default_factory=getpass.getuser)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def client_home(self) -> Path:
        return self.workdir / "client-home"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _prepare(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        host_key = self.workdir / "host_ed25519"
        client_key = self.workdir / "client_ed25519"
        for key in (host_key, client_key):
            if not key.exists():
                _keygen(key)
        ssh_dir = self.client_home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy(client_key, ssh_dir / "id_ed25519")
        (ssh_dir / "id_ed25519").chmod(0o600)
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755)
        return host_key

    def _write_config(self, host_key: Path) -> Path:
        config = self.workdir / "sshd_config"
        config.write_text("\n".join([
            *(f"ListenAddress {address}:{self.port}" for address in self.addresses),
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {self.workdir / 'client_ed25519.pub'}",
            f"AllowUsers {self.user}",
            "PidFile none",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            # The key files live under the test's temporary directory, not a home directory.
            "StrictModes no",
            # "Connection from ... on <address> port ...": which host each login reached.
            "LogLevel VERBOSE",
            "",
        ]))
        host_public = (host_key.with_suffix(".pub")).read_text().split()
        (self.client_home / ".ssh" / "known_hosts").write_text("".join(
            f"[{address}]:{self.port} {host_public[0]} {host_public[1]}\n"
            for address in self.addresses))
        return config

    def start(self, timeout: float = 30) -> SshHosts:
        host_key = self._prepare()
        for _ in range(3):  # a probed port can be taken before sshd binds it
            self.port = port_free_on_all(self.addresses)
            config = self._write_config(host_key)
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            if self._wait_listening(timeout):
                return self
            if "Address already in use" not in self.log():
                break
        raise RuntimeError(f"sshd did not start:\n{self.log()[-4000:]}")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        wanted = [f"Server listening on {address} port {self.port}." for address in
                  self.addresses]
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                self.process = None
                return False
            log = self.log()
            if all(line in log for line in wanted):
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def login_refused(self) -> str | None:
        """Why sshd refuses the test's key login on each address (its log lines), or None.
        Unprivileged, sshd logs in only its own user, and only an unlocked account with a
        shell (with `UsePAM no` it refuses accounts whose password field is locked)."""
        ssh_dir = self.client_home / ".ssh"
        for address in self.addresses:
            before = len(self.log())
            probe = subprocess.run(
                ["ssh", "-F", "none", "-p", str(self.port), "-i", str(ssh_dir / "id_ed25519"),
                 "-o", f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
                 "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                 "-o", "ConnectTimeout=10", f"{self.user}@{address}", "true"],
                capture_output=True, timeout=30)
            if probe.returncode != 0:
                return (f"sshd refused {self.user}@{address}: {probe.stderr.decode().strip()}; "
                        f"sshd log: {self.log()[before:].strip()}")
        return None

    def connections_on(self, address: str) -> int:
        """How many SSH connections reached `address` (from sshd's log)."""
        return self.log().count(f" on {address} port {self.port} ")

    def stop(self, timeout: float = 10) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # Each connection is served by a child of the listener in a session of its own: note
        # them now, end those still there once the listener is gone.
        children = descendants(process.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        kill_survivors(children)
