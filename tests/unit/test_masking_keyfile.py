"""The masking key file: made once with mode 0600, never replaced, refused when others
may read it or it is not a key; messages never quote the key."""

from __future__ import annotations

import contextlib
import io
import stat
from pathlib import Path

import pytest

from gateway import masking_cli
from gateway.errors import ConfigError
from gateway.masking import keyfile


def test_a_generated_key_is_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "masking.key"
    made = keyfile.generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keyfile.load(path) == made
    assert made.secret.hex() not in repr(made)


def test_an_existing_key_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "masking.key"
    keyfile.generate(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        keyfile.generate(path)
    assert path.read_bytes() == before


def test_a_key_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "masking.key"
    keyfile.generate(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644 lets group or others read it"):
        keyfile.load(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"not hex at all\n", "not hex digits"), (b"abcd\n", "2 bytes; the key needs 32")],
)
def test_a_file_that_is_not_a_key_is_refused_without_quoting_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "masking.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as refused:
        keyfile.load(path)
    assert problem in str(refused.value)
    assert content.decode().strip() not in str(refused.value)


def test_keygen_prints_the_fingerprint_and_never_the_key(tmp_path: Path) -> None:
    path = tmp_path / "masking.key"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert masking_cli.main(["keygen", "--out", str(path)]) == 0
    key = keyfile.load(path)
    assert key.fingerprint in out.getvalue()
    assert key.secret.hex() not in out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert masking_cli.main(["keygen", "--out", str(path)]) == 1
    assert "exists; not replacing" in err.getvalue()
