"""The settings tree: pieces the agent and the webhook share, and every setting defined once."""

from __future__ import annotations

import pytest

from gpunuma.settings import DEFAULT_GPU_RESOURCES, gpu_resource_pattern


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/mig-1g.10gb", True),
        ("amd.com/gpu", True),
        ("nvidia.com/gpu.shared", False),  # globs match the whole name
        ("NVIDIA.COM/GPU", False),  # resource names are case-sensitive
        ("rdma/hca_shared_devices_a", False),
    ],
)
def test_the_default_gpu_resources_match_whole_names(resource: str, expected: bool) -> None:
    assert (gpu_resource_pattern(DEFAULT_GPU_RESOURCES).match(resource) is not None) is expected


def test_no_globs_match_nothing() -> None:
    assert gpu_resource_pattern(()).match("nvidia.com/gpu") is None
    assert gpu_resource_pattern(()).match("") is None


# --- each setting defined once: the flags, variables and help derived from it -------------------

def _classes() -> list[type]:
    from gpunuma import settings

    return [settings.AgentSettings, settings.OperatorSettings, settings.WebhookSettings,
            settings.MutationSettings, settings.DiscoverySettings]


@pytest.mark.parametrize("settings_class", _classes(), ids=lambda c: c.__name__)
def test_unset_flags_and_variables_give_the_defaults_defined_in_the_class(
    settings_class: type, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The round trip a new setting gets for free: class → flags → parsed → settings."""
    import argparse

    from gpunuma import settings
    from gpunuma.cli import add_settings, settings_from_args

    for _, _, option in settings.options(settings_class):
        monkeypatch.delenv(option.env, raising=False)
    required = {"--node-name": "n", "--tls-cert-file": "c.pem", "--tls-key-file": "k.pem"}
    parser = argparse.ArgumentParser()
    add_settings(parser, settings_class)
    argv = [part for flag, value in required.items()
            if any(o.flag == flag for _, _, o in settings.options(settings_class))
            for part in (flag, value)]
    parsed = settings_from_args(settings_class, parser.parse_args(argv))
    given = {"node_name": "n"} if settings_class is settings.AgentSettings else {}
    expected = settings_class(**given)
    if settings_class is settings.WebhookSettings:
        from pathlib import Path

        expected = settings.WebhookSettings(tls_cert_file=Path("c.pem"), tls_key_file=Path("k.pem"))
    assert parsed == expected


@pytest.mark.parametrize("settings_class", _classes(), ids=lambda c: c.__name__)
def test_every_setting_has_one_flag_one_variable_and_help_naming_both(settings_class: type) -> None:
    import argparse

    from gpunuma import settings
    from gpunuma.cli import add_settings

    found = list(settings.options(settings_class))
    flags = [option.flag for _, _, option in found]
    variables = [option.env for _, _, option in found]
    assert len(set(flags)) == len(flags)
    assert len(set(variables)) == len(variables)
    assert all(v == "NODE_NAME" or v.startswith("GPUNUMA_") for v in variables)
    parser = argparse.ArgumentParser()
    add_settings(parser, settings_class)
    text = " ".join(parser.format_help().split())
    for _, _, option in found:
        assert option.flag in text
        assert option.env in text
