"""`lbctl validate`: exit codes, stdin, multi-document files, both formats, golden output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lbctl.cli.main import main

DATA = Path(__file__).parents[1] / "data"
MANIFESTS = DATA / "manifests"
GOLDEN = DATA / "golden"
LBCTL_BIN = Path(sys.executable).parent / "lbctl"
PASSWORD = "hunter2-s3cret"  # the inline password in the MetalLB manifests


def check_golden(name: str, text: str) -> None:
    """Compare with tests/data/golden/NAME; LBCTL_UPDATE_GOLDEN=1 rewrites it instead."""
    path = GOLDEN / name
    if os.environ.get("LBCTL_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with LBCTL_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def in_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the manifests folder so output names files as `name.yaml`, the same everywhere."""
    monkeypatch.chdir(MANIFESTS)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


# --- exit 0 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["metallb-configmap.yaml", "lbctl-configmap.yaml", "multi.yaml"], ids=str
)
def test_valid_files_exit_0_and_json_matches_golden(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, out, _ = run(capsys, "--output", "json", name)
    assert code == 0
    check_golden(f"validate-{name.removesuffix('.yaml')}.json", out)
    assert PASSWORD not in out


def test_warnings_are_printed_prefixed_and_still_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "metallb-configmap.yaml")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(
        'metallb-configmap.yaml: warning: configmap metallb-system/config: data["config"]: '
        "bfd-profiles: "
    )
    assert lines[-1] == "valid: 1 document in 1 file; 0 errors, 1 warning"


def test_multi_document_issues_name_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "multi.yaml")
    assert code == 0
    assert all(line.startswith("multi.yaml: doc 2: warning: ") for line in out.splitlines()[:-1])
    assert out.splitlines()[-1].startswith("valid: 2 documents in 1 file; 0 errors")


def test_json_for_several_documents_is_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-o", "json", "multi.yaml", "lbctl-configmap.yaml")
    assert code == 0
    documents = json.loads(out)
    assert [d["source"] for d in documents] == [
        "multi.yaml: doc 1",
        "multi.yaml: doc 2",
        "lbctl-configmap.yaml",
    ]
    assert [d["config"]["format"] for d in documents] == ["metallb", "lbctl", "lbctl"]


def test_stdin_is_read_for_dash(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_stdin(monkeypatch, (MANIFESTS / "lbctl-configmap.yaml").read_bytes())
    code, out, _ = run(capsys, "-o", "json", "-")
    assert code == 0
    assert json.loads(out)["source"] == "<stdin>"


# --- exit 1 --------------------------------------------------------------------------------------


def test_bad_config_lists_every_error_and_matches_golden(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "bad-metallb.yaml")
    assert code == 1
    check_golden("validate-bad-metallb.txt", out)
    lines = out.splitlines()
    assert len(lines) >= 5  # several errors, all reported at once
    assert all(
        line.startswith("bad-metallb.yaml: configmap metallb-system/config: ")
        for line in lines[:-1]
    )
    assert lines[-1].startswith("invalid: 1 of 1 document in 1 file; ")
    assert err == ""


@pytest.mark.parametrize("output", ["text", "json"])
@pytest.mark.parametrize("name", ["bad-metallb.yaml", "metallb-configmap.yaml"])
def test_passwords_are_never_printed(
    capsys: pytest.CaptureFixture[str], output: str, name: str
) -> None:
    assert PASSWORD in (MANIFESTS / name).read_text()
    _, out, err = run(capsys, "--output", output, name)
    assert PASSWORD not in out + err


INVALID = [
    pytest.param(
        "bad-yaml.yaml", "bad-yaml.yaml: line 4, column 13: invalid YAML: ", id="yaml-syntax"
    ),
    pytest.param(
        "not-mapping.yaml",
        "not-mapping.yaml: the document is a list, not a mapping",
        id="not-a-mapping",
    ),
    pytest.param(
        "unknown-format.yaml", 'unknown-format.yaml: apiVersion: "apps/v1": ', id="unknown-format"
    ),
    pytest.param(
        "configmap-no-key.yaml",
        "configmap-no-key.yaml: configmap lbctl-system/lbctl-config: neither ",
        id="configmap-without-either-key",
    ),
    pytest.param(
        "configmap-both-keys.yaml",
        "configmap-both-keys.yaml: configmap lbctl-system/lbctl-config: both ",
        id="configmap-with-both-keys",
    ),
]


@pytest.mark.parametrize(("name", "first_line"), INVALID)
def test_unusable_documents_exit_1(
    capsys: pytest.CaptureFixture[str], name: str, first_line: str
) -> None:
    code, out, _ = run(capsys, name)
    assert code == 1
    assert out.splitlines()[0].startswith(first_line)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "<stdin>: no configuration: ", id="empty-input"),
        pytest.param(b"pools: [\xff]\n", "<stdin>: not UTF-8 text (byte 8)", id="not-utf8"),
    ],
)
def test_empty_or_binary_input_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data: bytes, message: str
) -> None:
    feed_stdin(monkeypatch, data)
    code, out, _ = run(capsys, "-")
    assert code == 1
    assert out.startswith(message)


def test_json_of_an_invalid_document_carries_its_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-o", "json", "configmap-both-keys.yaml")
    assert code == 1
    document = json.loads(out)
    assert (document["valid"], document["config"]) == (False, None)
    assert document["errors"][0]["where"] == "configmap lbctl-system/lbctl-config"
    assert document["errors"][0]["severity"] == "error"


def test_one_invalid_file_among_valid_ones_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "lbctl-configmap.yaml", "not-mapping.yaml", "multi.yaml")
    assert code == 1
    assert out.splitlines()[-1].startswith("invalid: 1 of 4 documents in 3 files; 1 error, ")


# --- exit 2 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["validate"], id="no-path"),
        pytest.param(["validate", "--output", "xml", "multi.yaml"], id="bad-output-format"),
        pytest.param(["validate", "--colour", "multi.yaml"], id="unknown-option"),
        pytest.param(["frobnicate"], id="unknown-command"),
    ],
)
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 2
    assert "usage: lbctl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        pytest.param("missing.yaml", "No such file or directory", id="missing-file"),
        pytest.param(".", "Is a directory", id="directory"),
    ],
)
def test_unopenable_path_exits_2_after_checking_the_others(
    capsys: pytest.CaptureFixture[str], path: str, reason: str
) -> None:
    code, out, err = run(capsys, path, "not-mapping.yaml")
    assert code == 2
    assert err == f"lbctl validate: cannot open {path}: {reason}\n"
    assert out.startswith("not-mapping.yaml: the document is a list")


@pytest.mark.parametrize("argv", [["--help"], ["validate", "--help"]], ids=["lbctl", "validate"])
def test_help_exits_0_and_documents_exit_codes(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "exit codes" in out
    assert "validate" in out


# --- the installed command -----------------------------------------------------------------------


def test_installed_lbctl_command_reads_files_and_stdin() -> None:
    assert LBCTL_BIN.exists(), f"{LBCTL_BIN}: the project is not installed in this venv"
    stdin = (MANIFESTS / "bad-metallb.yaml").read_bytes()
    done = subprocess.run(
        [str(LBCTL_BIN), "validate", "-", "lbctl-configmap.yaml"],
        input=stdin,
        capture_output=True,
        cwd=MANIFESTS,
        timeout=60,
        check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 1, done.stderr
    assert out.startswith("<stdin>: configmap metallb-system/config: ")
    assert PASSWORD not in out + done.stderr.decode()
    assert out.splitlines()[-1].startswith("invalid: 1 of 2 documents in 2 files; ")
    good = subprocess.run(
        [str(LBCTL_BIN), "validate", "lbctl-configmap.yaml"],
        capture_output=True,
        cwd=MANIFESTS,
        timeout=60,
        check=False,
    )
    assert good.returncode == 0, good.stdout
    missing = subprocess.run(
        [str(LBCTL_BIN), "validate", "missing.yaml"],
        capture_output=True,
        cwd=MANIFESTS,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            "apiVersion: lbctl.io/v1alpha1\nkind: Config\nbgpPeers:\n- name: a\n  myASN: 1\n"
            f"  peerASN: 2\n  address: 192.0.2.1\n  password: {PASSWORD}\n",
            id="inline-password-in-lbctl-format",
        ),
        pytest.param(
            "peers:\n- peer-address: 192.0.2.1\n  peer-asn: 1\n  my-asn: 2\n"
            f"  pasword: {PASSWORD}\n  password: [{PASSWORD}]\n",
            id="misspelt-and-mistyped-password",
        ),
        pytest.param(f"peers:\n- password: !!int {PASSWORD}\n", id="yaml-conversion-error"),
        pytest.param(f"peers:\n- password: {PASSWORD}\n  : [\n", id="yaml-syntax-error"),
    ],
)
@pytest.mark.parametrize("output", ["text", "json"])
def test_passwords_in_broken_input_are_never_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, text: str, output: str
) -> None:
    feed_stdin(monkeypatch, text.encode())
    code, out, err = run(capsys, "--output", output, "-")
    assert code == 1
    assert PASSWORD not in out + err


def test_pool_holding_a_node_ip_or_the_gateway_is_a_warning_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "pools.yaml"
    doc.write_text("address-pools:\n- name: lan\n  protocol: layer2\n  addresses: [192.0.2.0/28]\n")
    code = main(["validate", "--node-ip", "192.0.2.11", "--gateway", "192.0.2.1", str(doc)])
    out = capsys.readouterr().out
    assert code == 0
    assert f'{doc}: warning: pool "lan": addresses[0]: "192.0.2.0/28" contains 192.0.2.1,' in out
    assert "contains 192.0.2.11, a node's InternalIP" in out
    assert "2 warnings" in out
