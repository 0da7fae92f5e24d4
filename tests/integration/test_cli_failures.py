"""Every command's failure paths, as users meet them: one clear error, a non-zero exit code,
never a traceback. The commands are enumerated from the parser, so a new one is covered."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import build_parser, main
from gateway.devcloud import MosquittoBroker

pytestmark = pytest.mark.integration
GATEWAY = [sys.executable, "-m", "gateway"]
# A path that can neither be read nor created, even by root (sysfs refuses new entries).
UNUSABLE = "/sys/edge-gateway-missing/file"


def leaf_commands() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable command (``run``, ``mock set``, ``certs ca create``, ...)."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            found[path] = parser
        for group in groups:
            for name, child in group.choices.items():
                walk(child, (*path, name))

    walk(build_parser(), ())
    return found


def unusable_argv(parser: argparse.ArgumentParser) -> list[str]:
    """Arguments for every option and positional, each a file or folder that cannot be used
    (numbers where a number is expected), so the command gets past parsing and fails."""
    argv: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.nargs == 0:
            continue
        value = "1" if action.type in (int, float) else UNUSABLE
        if action.dest == "assignments":
            value = "led=true"
        if action.option_strings:
            argv += [action.option_strings[-1], value]
        else:
            argv.append(value)
    return argv


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def assert_failed_cleanly(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode in (1, 2), (result.returncode, output)
    assert result.stderr.strip(), "a failure says why on stderr"


COMMANDS = leaf_commands()


def test_the_parser_enumeration_finds_the_nested_commands() -> None:
    assert {("run",), ("mock", "set"), ("desired",), ("ota", "sign")} <= set(COMMANDS)
    assert len(COMMANDS) >= 10


WITH_INPUTS = sorted(command for command, parser in COMMANDS.items() if unusable_argv(parser))


@pytest.mark.parametrize("command", WITH_INPUTS, ids=" ".join)
def test_unusable_files_and_folders_fail_cleanly(command: tuple[str, ...], tmp_path: Path) -> None:
    assert_failed_cleanly(cli(*command, *unusable_argv(COMMANDS[command]), cwd=tmp_path))


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - set(WITH_INPUTS)), ids=" ".join)
def test_a_command_without_inputs_writing_into_a_closed_pipe_ends_quietly(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as after '| head -1'
    try:
        result = subprocess.run(
            [*GATEWAY, *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_an_unknown_option_is_a_usage_error(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process: argparse refuses it before any handler runs, so nothing else differs.
    with pytest.raises(SystemExit) as caught:
        main([*command, "--no-such-option"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err  # unrecognized arguments, or a required one missing first
    assert "Traceback" not in err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def discovery(folder: Path, broker: MosquittoBroker, **extra: object) -> Path:
    """A dev cloud's discovery file with real admin credentials and a port nobody serves."""
    folder.mkdir(parents=True, exist_ok=True)
    creds = broker.credentials(broker.admin_identities[0])
    info = {"host": "127.0.0.1", "port": free_port(), "ca": str(creds.ca), "cert": str(creds.cert)}
    (folder / "devcloud.json").write_text(json.dumps({**info, "key": str(creds.key), **extra}))
    return folder


@pytest.mark.parametrize("args", [["led=true"], ["--show"], []], ids=["set", "show", "bare"])
def test_desired_after_the_demo_stopped_says_the_broker_is_unreachable(
    args: list[str], broker: MosquittoBroker, tmp_path: Path
) -> None:
    workdir = discovery(tmp_path / "demo", broker, thing="demo-pi", shadow=None)
    result = cli("desired", "--workdir", str(workdir), *args, cwd=tmp_path)
    assert_failed_cleanly(result)
    assert "cannot reach the dev cloud's broker" in result.stderr


def test_desired_in_a_devcloud_folder_asks_which_thing(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    workdir = discovery(tmp_path / "devcloud", broker)
    (workdir / "things" / "thing-001").mkdir(parents=True)
    result = cli("desired", "--workdir", str(workdir), "led=true", cwd=tmp_path)
    assert_failed_cleanly(result)
    assert "--thing NAME (thing-001)" in result.stderr


def test_desired_with_a_damaged_discovery_file_says_to_restart(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "devcloud.json").write_text('{"host": "127.0.0.1"}')
    result = cli("desired", "--workdir", str(workdir), "led=true", cwd=tmp_path)
    assert_failed_cleanly(result)
    assert "restart the dev cloud" in result.stderr


def test_status_with_a_stale_socket_file_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # the file stays, nobody listens
    assert_failed_cleanly(cli("status", "--socket", str(path), cwd=tmp_path))


def test_run_in_a_folder_it_cannot_write_names_it_and_what_to_do(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("placeholder")
    config.write_text(
        "thing: pi\nmqtt: {host: h, ca: ca.pem, cert: cert.pem, key: key.pem}\n"
        f"state_dir: {Path(UNUSABLE).parent}\n"
    )
    result = cli("run", "-c", str(config), cwd=tmp_path)
    assert_failed_cleanly(result)
    assert f"state_dir: cannot use {Path(UNUSABLE).parent}" in result.stderr
    assert "state_dir: ~/.local/state/edge-gateway" in result.stderr


def test_desired_with_the_broker_up_but_no_shadow_service_fails_cleanly(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    workdir = discovery(tmp_path / "demo", broker, thing="demo-pi", shadow=None)
    info = json.loads((workdir / "devcloud.json").read_text())
    (workdir / "devcloud.json").write_text(json.dumps({**info, "port": broker.port}))
    result = cli("desired", "--workdir", str(workdir), "--show", cwd=tmp_path)
    assert_failed_cleanly(result)
    assert "did not answer" in result.stderr
