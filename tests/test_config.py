"""The plugin's options as load_config validates them: each refusal names its option, and
what is accepted comes out typed and normalised (the command-line cases are in test_startup)."""

from __future__ import annotations

from typing import Any

import pytest

from fps_remote_kernels.config import load_config

pytestmark = pytest.mark.fast

URL = "http://h:1"


def refusal(options: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as refused:
        load_config(options)
    return str(refused.value)


@pytest.mark.parametrize(("url", "complaint"), [
    ("ws://h:1/", "remote_kernels.url must start with http:// or https://"),
    ("http:///path", "remote_kernels.url must start with http:// or https:// and name a host"),
    ("http://h:1/?token=x", "remote_kernels.url must not carry a query or fragment"),
    ("http://h:1/#frag", "remote_kernels.url must not carry a query or fragment"),
])
def test_a_url_that_is_not_a_plain_http_base_url_is_refused(url: str, complaint: str) -> None:
    """A url with another scheme, no host, a query or a fragment is refused, naming url."""
    assert complaint in refusal({"url": url})


def test_a_url_gets_a_trailing_slash_and_a_matching_ws_url() -> None:
    """http://h:1/base becomes http://h:1/base/, and its WebSocket URL ws://h:1/base/."""
    config = load_config({"url": "http://h:1/base"})
    assert config.url == "http://h:1/base/"
    assert config.resolved_ws_url() == "ws://h:1/base/"


def test_an_explicit_ws_url_wins_over_the_derived_one() -> None:
    """ws_url, when given, is the WebSocket base URL (normalised the same way)."""
    config = load_config({"url": URL, "ws_url": "wss://w/x"})
    assert config.resolved_ws_url() == "wss://w/x/"


@pytest.mark.parametrize("option", ["connect_timeout", "request_timeout",
                                    "kernel_start_timeout", "ping_interval", "ping_timeout"])
@pytest.mark.parametrize("value", [0, -1])
def test_timeouts_must_be_positive(option: str, value: int) -> None:
    """Zero or a negative number of seconds is refused for every timeout, naming it."""
    assert f"remote_kernels.{option} must be greater than 0" in refusal(
        {"url": URL, option: value})


@pytest.mark.parametrize("option", ["kernelspecs_cache_ttl", "replay_grace_period"])
def test_durations_that_may_be_off_take_zero_but_not_less(option: str) -> None:
    """0 turns the cache or the grace period off; a negative value is refused."""
    assert getattr(load_config({"url": URL, option: 0}), option) == 0
    assert f"remote_kernels.{option} must be greater than or equal to 0" in refusal(
        {"url": URL, option: -1})


def test_every_problem_is_reported_at_once() -> None:
    """Two bad options give one error that names both, in one line."""
    message = refusal({"url": URL, "request_timeout": -1, "connect_timeout": 0})
    assert "remote_kernels.connect_timeout" in message
    assert "remote_kernels.request_timeout" in message
    assert "\n" not in message


def test_an_unknown_kind_is_refused_with_the_known_ones() -> None:
    """kind must be auto or one of the four kinds; the message lists them."""
    message = refusal({"url": URL, "kind": "nope"})
    assert "remote_kernels.kind must be 'auto', 'jupyverse', 'jupyter_server', " \
           "'kernel_gateway' or 'enterprise_gateway'" in message


@pytest.mark.parametrize("kind", ["auto", "jupyverse", "jupyter_server", "kernel_gateway",
                                  "enterprise_gateway"])
def test_each_known_kind_is_accepted(kind: str) -> None:
    """Every kind name (and auto) is a valid kind."""
    assert load_config({"url": URL, "kind": kind}).kind == kind


def test_an_unknown_key_is_refused_with_the_option_it_resembles() -> None:
    """A misspelt option fails start-up instead of being ignored, and says what was meant."""
    assert "remote_kernels.request_timout is not an option; did you mean " \
           "remote_kernels.request_timeout?" in refusal({"url": URL, "request_timout": 5})


def test_an_unknown_key_inside_a_remote_is_refused() -> None:
    """A misspelt key in one entry of remotes names the entry's index."""
    assert "remote_kernels.remotes.0.tokn is not an option" in refusal(
        {"remotes": [{"name": "a", "url": URL, "tokn": "x"}]})


def test_remotes_from_a_json_string_come_after_the_inline_url() -> None:
    """remotes given as a JSON string are parsed; the inline url is the first remote."""
    config = load_config({"url": URL, "remote_name": "main",
                          "remotes": '[{"name": "gpu", "url": "http://gpu:8002"}]'})
    assert [(r.name, r.url) for r in config.all_remotes()] == [
        ("main", "http://h:1/"), ("gpu", "http://gpu:8002/")]


def test_remotes_must_be_a_list() -> None:
    """A JSON object where a list of remotes is expected is refused."""
    assert "remote_kernels.remotes must be a JSON list of remote objects" in refusal(
        {"remotes": '{"name": "a"}'})


def test_a_remote_needs_a_url() -> None:
    """An entry of remotes without url is refused, naming it."""
    assert "remote_kernels.remotes: remote 'a' has no url" in refusal(
        {"remotes": [{"name": "a"}]})


def test_remote_names_must_be_unique_including_the_inline_one() -> None:
    """Two remotes of one name, or one named like the inline remote, are refused."""
    assert "each remote needs its own name" in refusal(
        {"remotes": [{"name": "a", "url": URL}, {"name": "a", "url": "http://b:1"}]})
    assert "each remote needs its own name" in refusal(
        {"url": URL, "remotes": [{"name": "remote", "url": "http://b:1"}]})


def test_a_remote_name_is_a_short_word() -> None:
    """A remote name with a space (it prefixes kernelspec names) is refused."""
    assert "remote_kernels.remotes.0.name must be 1-32 letters" in refusal(
        {"remotes": [{"name": "bad name", "url": URL}]})


def test_a_remote_url_is_checked_as_the_inline_one() -> None:
    """An entry's url with credentials in it is refused, naming the entry."""
    assert "remote_kernels.remotes.0.url must not carry credentials" in refusal(
        {"remotes": [{"name": "a", "url": "http://u:p@h:1/"}]})


def test_env_allowlist_takes_only_variable_names() -> None:
    """A JSON list of names is accepted; a name starting with a digit is refused."""
    assert load_config({"url": URL, "env_allowlist": '["KERNEL_NS", "_X1"]'}
                       ).env_allowlist == ["KERNEL_NS", "_X1"]
    assert "remote_kernels.env_allowlist '1BAD' is not an environment variable name" in \
        refusal({"url": URL, "env_allowlist": '["OK", "1BAD"]'})


def test_the_auth_header_cannot_be_one_the_front_manages() -> None:
    """auth_header=Cookie is refused: the front sends the remote's cookies itself."""
    assert "remote_kernels.auth_header header 'Cookie' is managed by the front" in refusal(
        {"url": URL, "auth_header": "Cookie"})


def test_the_auth_scheme_is_one_word() -> None:
    """auth_scheme with a space is refused; Bearer and empty (bare token) are accepted."""
    assert "remote_kernels.auth_scheme must be a single word" in refusal(
        {"url": URL, "auth_scheme": "two words"})
    assert load_config({"url": URL, "auth_scheme": "Bearer"}).auth_scheme == "Bearer"
    assert load_config({"url": URL, "auth_scheme": ""}).auth_scheme == ""


def test_the_kernel_working_dir_root_is_absolute() -> None:
    """A relative kernel_working_dir_root is refused; a POSIX or Windows absolute path is not."""
    assert "remote_kernels.kernel_working_dir_root must be an absolute path" in refusal(
        {"url": URL, "kernel_working_dir_root": "rel/dir"})
    for root in ("/srv/notebooks", "C:\\notebooks"):
        assert load_config({"url": URL, "kernel_working_dir_root": root}
                           ).kernel_working_dir_root == root


def test_kernelspecs_patterns_must_be_a_json_list() -> None:
    """A bare name where a JSON list of patterns is expected is refused."""
    assert "remote_kernels.kernelspecs must be a JSON list" in refusal(
        {"url": URL, "kernelspecs": "python3"})
    assert load_config({"url": URL, "kernelspecs": '["python3", "gpu-*"]'}).kernelspecs == [
        "python3", "gpu-*"]


@pytest.mark.parametrize(("option", "value", "complaint"), [
    ("event_loop", "trio", "remote_kernels.event_loop must be 'asyncio' or 'uvloop'"),
    ("server", "gunicorn", "remote_kernels.server must be 'anycorn' or 'uvicorn'"),
    ("local_port", 70000, "remote_kernels.local_port must be less than or equal to 65535"),
    ("replay_buffer_bytes", 0,
     "remote_kernels.replay_buffer_bytes must be greater than or equal to 1"),
    ("execution_queue_limit", 0,
     "remote_kernels.execution_queue_limit must be greater than or equal to 1"),
])
def test_other_bounded_options_are_checked(option: str, value: Any, complaint: str) -> None:
    """Choices and bounded numbers outside their range are refused, naming the option."""
    assert complaint in refusal({"url": URL, option: value})


def test_the_local_remote_needs_a_name_of_its_own() -> None:
    """local_kernels with local_name equal to a remote's name is refused."""
    assert "remote_kernels.local_name 'remote' is already the name of a remote" in refusal(
        {"url": URL, "local_kernels": True, "local_name": "remote"})


def test_the_token_never_appears_in_a_refusal() -> None:
    """A refused configuration that carries a token does not repeat the token."""
    message = refusal({"url": URL, "token": "s3cret-token", "request_timeout": -1,
                       "remotes": [{"name": "a", "url": "http://a:1", "token": "s3cret-token",
                                    "kind": "nope"}]})
    assert "remote_kernels.remotes.0.kind" in message
    assert "s3cret-token" not in message


@pytest.mark.parametrize("options", [
    {"url": "http://user:hunter2@h:1/"},
    {"url": "ftp://user:hunter2@h:1/"},
    {"url": "user:hunter2@gpu-box"},
    {"url": "http://h:1/?token=hunter2"},
    {"remotes": [{"name": "a", "url": "https://u:hunter2@h/"}]},
    {"url": URL, "ws_url": "ws://u:hunter2@h/"},
])
def test_a_refused_url_does_not_repeat_its_credentials(options: dict[str, Any]) -> None:
    """A URL refused for carrying a password or token: the error does not repeat the secret."""
    assert "hunter2" not in refusal(options)
