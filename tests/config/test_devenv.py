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


def test_the_console_mail_backend_an_older_make_run_wrote_is_replaced_and_a_chosen_one_kept(tmp_path):
    old = tmp_path / "old.env"
    old.write_text("DJANGO_SECRET_KEY=kept\nEMAIL_BACKEND=django.core.mail.backends.console.EmailBackend\n")
    chosen = tmp_path / "chosen.env"
    chosen.write_text("EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend\n")

    assert "EMAIL_BACKEND" in dotenv_complete(old)
    dotenv_complete(chosen)

    assert _values(old)["EMAIL_BACKEND"] == "config.mail.FileEmailBackend"
    assert _values(old)["DJANGO_SECRET_KEY"] == "kept"
    assert old.read_text().count("EMAIL_BACKEND=") == 1
    assert _values(chosen)["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
