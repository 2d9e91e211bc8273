from dataclasses import dataclass

import pytest

from unbroken.httpkit.auth import token_matches
from unbroken.httpkit.config import load_settings


@dataclass
class Settings:
    name: str = "x"
    rate: float = 1.0


def test_settings_from_toml_and_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[svc]\nname = "y"\nrate = 2\n')
    assert load_settings(Settings, "svc", str(path), rate=3.5) == Settings("y", 3.5)


def test_unknown_keys_and_wrong_types_are_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[svc]\nnope = 1\n')
    with pytest.raises(ValueError, match="unknown svc settings: nope"):
        load_settings(Settings, "svc", str(path))
    with pytest.raises(ValueError, match="rate must be of type float"):
        load_settings(Settings, "svc", None, rate=True)


def test_token_matches():
    assert token_matches(None, "")
    assert token_matches("s", "s")
    assert not token_matches(None, "s") and not token_matches("t", "s")
