"""The development .env that `make run` writes: complete on a new checkout, completed (never
rewritten) on an old one."""

from config.devenv import HEADER, dev_settings, dotenv_complete


def _values(path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))


def test_a_new_checkout_gets_every_development_key_and_debug_stays_off(tmp_path):
    dotenv = tmp_path / ".env"

    written = dotenv_complete(dotenv)

    assert set(written) == set(dev_settings())
    assert dotenv.read_text().startswith(HEADER)
    assert "DJANGO_DEBUG" not in _values(dotenv)
    assert all(_values(dotenv)[name] for name in ("DJANGO_SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "AUDIT_CHAIN_KEY"))


def test_an_older_env_gets_only_the_keys_it_lacks_and_keeps_the_ones_in_use(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("FIELD_ENCRYPTION_KEYS=kept-key\nDJANGO_SECRET_KEY=kept-secret")  # no trailing newline

    written = dotenv_complete(dotenv)

    values = _values(dotenv)
    assert "AUDIT_CHAIN_KEY" in written and "FIELD_ENCRYPTION_KEYS" not in written
    assert values["FIELD_ENCRYPTION_KEYS"] == "kept-key" and values["DJANGO_SECRET_KEY"] == "kept-secret"
    assert set(values) == set(dev_settings())
    assert dotenv_complete(dotenv) == [] and _values(dotenv) == values
