"""Configuration and start-up: what users run, what they get when they get it wrong."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fps_remote_kernels.config import RemoteKernelsConfig, load_config
from tests.support.servers import (
    FRONT_API_PLUGINS,
    Server,
    disabled_except,
    free_port,
    front_server,
    remote_server,
)

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent
JUPYVERSE = str(Path(sys.executable).parent / "jupyverse")


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("url", "gpu-box:8002", "remote_kernels.url must start with http:// or https://"),
        ("url", "ftp://host/", "remote_kernels.url must start with http:// or https://"),
        ("url", "http://user:pw@host/", "remote_kernels.url must not carry credentials"),
        ("ws_url", "http://host/", "remote_kernels.ws_url must start with ws:// or wss://"),
        ("request_timeout", "-1", "remote_kernels.request_timeout must be greater than 0"),
        ("connect_timeout", "0", "remote_kernels.connect_timeout must be greater than 0"),
        ("kernel_start_timeout", "soon", "remote_kernels.kernel_start_timeout"),
        ("verify", "/no/such/ca.pem", "remote_kernels.verify must be true, false or the path"),
        ("client_cert", "/no/such/cert.pem", "remote_kernels.client_cert no such file"),
        ("headers", "{not json", "remote_kernels.headers must be a JSON object"),
        ("headers", '{"Cookie": "x"}', "remote_kernels.headers header 'Cookie' is managed"),
        ("no_such_option", "1", "remote_kernels.no_such_option"),
    ],
)
@pytest.mark.fast
def test_bad_option_values_fail_naming_the_option(option: str, value: str, complaint: str
                                                  ) -> None:
    """Each invalid value is refused with a message that names `remote_kernels.<option>`."""
    with pytest.raises(ValueError) as refused:
        load_config({"url": "http://host:8002", option: value})
    assert complaint in str(refused.value)


@pytest.mark.fast
def test_option_values_from_the_command_line_are_parsed() -> None:
    """String values as `--set` passes them become typed, normalised options."""
    config = load_config({
        "url": "https://host:8443/base/path", "headers": '{"X-Team": "gpu"}',
        "verify": "false", "request_timeout": "7.5",
    })
    assert config.url == "https://host:8443/base/path/"
    assert config.resolved_ws_url() == "wss://host:8443/base/path/"
    assert config.headers == {"X-Team": "gpu"}
    assert config.verify is False and config.request_timeout == 7.5


@pytest.mark.fast
def test_token_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `token`, the token comes from the variable named by `token_env`."""
    monkeypatch.setenv("MY_REMOTE_TOKEN", "s3cret")
    config = RemoteKernelsConfig(url="http://host/", token_env="MY_REMOTE_TOKEN")
    assert config.resolved_token() == "s3cret"
    assert "s3cret" not in repr(config)
    assert RemoteKernelsConfig(url="http://host/", token="t", token_env="MY_REMOTE_TOKEN"
                               ).resolved_token() == "t"


def run_until_exit(args: list[str], cwd: Path, timeout: float = 60, expected_status: int = 0
                   ) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            start_new_session=True)
    output = result.stdout + result.stderr
    assert result.returncode == expected_status, f"exit status {result.returncode}:\n{output}"
    return output


def words(output: str) -> str:
    """The output with its line wrapping undone (fps's console wraps at 80 columns)."""
    return " ".join(output.split())


def test_front_with_fps_kernels_still_enabled_says_to_disable_it(tmp_path: Path) -> None:
    """Enabling fps-kernels next to this plugin stops start-up with `--disable kernels` advice
    and exit status 1."""
    wanted = FRONT_API_PLUGINS | {"kernels", "kernel_subprocess", "file_watcher"}
    output = run_until_exit([
        JUPYVERSE, "--port", str(free_port()), *disabled_except(wanted),
        "--set", f"auth.directory={tmp_path / 'auth'}",
        "--set", "remote_kernels.url=http://127.0.0.1:9/",
    ], tmp_path, expected_status=1)
    assert "add --disable kernels" in words(output)
    assert "remote_kernels.local_kernels=true" in words(output)
    assert "Traceback" not in output and "Server running" not in output, output


def test_front_without_url_says_url_is_required(tmp_path: Path) -> None:
    """A front started without `remote_kernels.url` stops, says the option is required and
    exits with status 1."""
    output = run_until_exit([
        JUPYVERSE, "--port", str(free_port()), *disabled_except(FRONT_API_PLUGINS),
        "--set", f"auth.directory={tmp_path / 'auth'}",
    ], tmp_path, expected_status=1)
    assert "remote_kernels.url is required" in words(output)
    assert "Traceback" not in output and "Server running" not in output, output


def test_uvicorn_front_next_to_jupyverse_own_server_says_to_turn_it_off(tmp_path: Path
                                                                         ) -> None:
    """server=uvicorn while Jupyverse starts its own server (on the same port) stops start-up
    saying to add start_server=false, with exit status 1."""
    output = run_until_exit([
        JUPYVERSE, "--port", str(free_port()), *disabled_except(FRONT_API_PLUGINS),
        "--set", f"auth.directory={tmp_path / 'auth'}",
        "--set", "remote_kernels.url=http://127.0.0.1:9/",
        "--set", "remote_kernels.server=uvicorn",
    ], tmp_path, expected_status=1)
    assert "add --set start_server=false" in words(output)
    assert "Traceback" not in output, output


def test_front_whose_port_is_taken_exits_with_status_1(tmp_path: Path) -> None:
    """Any module failing at start-up (here the HTTP server: port taken) gives exit status 1,
    which fps alone turns into 0."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        output = run_until_exit([
            JUPYVERSE, "--port", str(taken.getsockname()[1]),
            *disabled_except(FRONT_API_PLUGINS),
            "--set", f"auth.directory={tmp_path / 'auth'}",
            "--set", "remote_kernels.url=http://127.0.0.1:9/",
        ], tmp_path, expected_status=1)
    assert "Address already in use" in output


def test_help_all_describes_every_option() -> None:
    """`jupyverse --help-all` explains each remote_kernels option."""
    output = run_until_exit([JUPYVERSE, "--help-all", "--disable", "kernels"], REPO)
    for option in RemoteKernelsConfig.model_fields:
        assert f"remote_kernels.{option}:" in output
    assert "Description: None" not in output.split("remote_kernels.url:")[1].split("\n\n")[0]
    assert "PydanticUndefined" not in output


@pytest.mark.parametrize(("option", "said"), [
    ("remote_kernels.ulr=http://gpu-box:8002",
     "remote_kernels.ulr is not an option; did you mean remote_kernels.url?"),
    ("remote_kernels.request_timeout=-1",
     "remote_kernels.request_timeout must be greater than 0 (got '-1')"),
    ("remote_kernels.kind=foo", "remote_kernels.kind must be 'auto', 'jupyverse'"),
])
def test_a_configuration_mistake_is_said_in_one_line(option: str, said: str, tmp_path: Path
                                                     ) -> None:
    """A typo or a bad value stops the front with exit status 1 and one line that names the
    option, the value and what is allowed (a close known name for a typo), no traceback."""
    output = run_until_exit([
        JUPYVERSE, "--port", str(free_port()), *disabled_except(FRONT_API_PLUGINS),
        "--set", f"auth.directory={tmp_path / 'auth'}",
        "--set", "remote_kernels.url=http://127.0.0.1:9/", "--set", option,
    ], tmp_path, expected_status=1)
    assert output.strip().splitlines() == [output.strip()], output
    assert said in output


async def test_example_config_starts_with_the_fps_cli(remote: Server, tmp_path: Path) -> None:
    """`fps --config examples/front.json` starts a front that serves the remote's kernelspecs."""
    front = front_server(tmp_path, remote.url, remote.token)
    front.args = ["--set", f"remote_kernels.url={remote.url}"]
    front.config_file = REPO / "examples" / "front.json"
    front.start()
    try:
        async with httpx.AsyncClient(base_url=front.url) as client:
            response = await client.get("/api/kernelspecs", params={"token": front.token})
            assert response.status_code == 200
            assert "python3" in response.json()["kernelspecs"]
            assert (await client.get("/lab")).status_code == 200  # JupyterLab is served too
    finally:
        front.stop()


async def test_front_starts_with_remote_down_and_recovers_when_it_comes_up(tmp_path: Path
                                                                            ) -> None:
    """Remote down: the front starts, says so, answers 503; remote up: all works, no restart."""
    remote = remote_server(tmp_path / "remote")
    front = front_server(tmp_path / "front", remote.url, remote.token).start()
    try:
        async with httpx.AsyncClient(base_url=front.url, timeout=30) as client:
            await client.get("/api/status", params={"token": front.token})
            status = (await client.get("/api/status")).json()
            assert status["remote"]["reachable"] is False
            assert "unreachable" in status["remote"]["message"]
            for path in ("/api/kernels", "/api/kernelspecs", "/api/sessions"):
                response = await client.get(path)
                assert response.status_code == 503, path
                assert remote.url in response.json()["message"]
                assert remote.token not in response.text
            remote.start()
            try:
                assert (await client.get("/api/kernels")).status_code == 200
                assert (await client.get("/api/status")).json()["remote"]["reachable"] is True
            finally:
                remote.stop()
            assert (await client.get("/api/kernels")).status_code == 503
    finally:
        front.stop()


async def test_remote_restart_is_survived_by_re_authenticating(tmp_path: Path) -> None:
    """After the remote restarts (new cookie secret, kernels gone) the front logs in again:
    a vanished kernel answers `dead` (what JupyterLab reads as gone) until deleted, then 404,
    and new sessions work."""
    from tests.support.kernel_client import KernelConnection

    remote = remote_server(tmp_path / "remote").start()
    front = front_server(tmp_path / "front", remote.url, remote.token).start()
    try:
        async with httpx.AsyncClient(base_url=front.url, timeout=60) as client:
            await client.get("/api/status", params={"token": front.token})
            before = await client.post("/api/kernels", json={"name": "python3"})
            assert before.status_code == 201
            remote.stop()
            remote.start()
            old_id = before.json()["id"]
            vanished = await client.get(f"/api/kernels/{old_id}")
            assert vanished.status_code == 200, vanished.text
            assert vanished.json()["execution_state"] == "dead"
            assert old_id not in {k["id"] for k in (await client.get("/api/kernels")).json()}
            assert (await client.delete(f"/api/kernels/{old_id}")).status_code == 204
            assert (await client.get(f"/api/kernels/{old_id}")).status_code == 404
            created = await client.post("/api/sessions", json={
                "path": "after.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
            assert created.status_code == 201, created.text
            kernel_id = created.json()["kernel"]["id"]
            cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
            conn = await KernelConnection.open(
                f"ws://127.0.0.1:{front.port}/api/kernels/{kernel_id}/channels", cookie=cookie)
            try:
                assert (await conn.execute("print(6*7)")).stdout == "42\n"
            finally:
                await conn.close()
    finally:
        front.stop()
        remote.stop()
