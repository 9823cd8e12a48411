from pushplat.cli import build_parser, config_from_args


def test_flags_and_environment_fill_one_config(monkeypatch):
    monkeypatch.setenv("PUSHPLAT_EDGE_PORT", "6000")
    monkeypatch.setenv("PUSHPLAT_API_KEY", "k1,k2")
    args = build_parser().parse_args(["dev", "--api-port", "6001", "--auth-secret", "s"])
    config = config_from_args(args)
    assert (config.edge_port, config.api_port, config.auth_secret) == (6000, 6001, "s")
    assert config.api_keys == ["k1", "k2"]
    assert config.roles == ("api", "router", "edge")


def test_repeated_api_key_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("PUSHPLAT_API_KEY", "env-key")
    args = build_parser().parse_args(["api", "--api-key", "a", "--api-key", "b", "--queue", "kafka://h:1"])
    config = config_from_args(args)
    assert config.api_keys == ["a", "b"] and config.roles == ("api",) and config.queue == "kafka://h:1"


def test_defaults():
    config = config_from_args(build_parser().parse_args(["dev"]))
    assert (config.edge_port, config.api_port, config.max_payload_bytes) == (50051, 50052, 65536)
    assert config.api_keys == [] and not config.auth_enabled


def test_an_edge_id_is_made_up_unless_given():
    made_up = config_from_args(build_parser().parse_args(["dev"])).edge_id
    assert made_up and made_up != config_from_args(build_parser().parse_args(["dev"])).edge_id
    assert config_from_args(build_parser().parse_args(["edge", "--edge-id", "e7"])).edge_id == "e7"


def _roles_with(flag: str) -> list[str]:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return [
        name
        for name in ("dev", "api", "router", "edge")
        if any(flag in action.option_strings for action in subparsers.choices[name]._actions)
    ]


def test_every_tunable_flag_and_its_variable_reach_the_config(monkeypatch):
    """Each Config field's flag, and its PUSHPLAT_ variable, set that field (no flag is decoration)."""
    import dataclasses

    from pushplat.config import Config

    checked = 0
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(Config(), f.name)
        if f.name in ("roles", "api_keys") or not isinstance(default, int | float | str) or isinstance(default, bool):
            continue
        value = "e7" if isinstance(default, str) else str(type(default)(default + 3 if default else 7))
        if f.name in ("registry", "queue"):
            value = "redis://h:1/0" if f.name == "registry" else "kafka://h:1"
        for role in _roles_with(flag):
            want = type(default)(value)
            config = config_from_args(build_parser().parse_args([role, flag, value]))
            assert getattr(config, f.name) == want, (role, flag)
            monkeypatch.setenv(f"PUSHPLAT_{f.name.upper()}", value)
            config = config_from_args(build_parser().parse_args([role]))
            monkeypatch.delenv(f"PUSHPLAT_{f.name.upper()}")
            assert getattr(config, f.name) == want, (role, f"PUSHPLAT_{f.name.upper()}")
            checked += 1
    assert checked > 40


def test_help_never_prints_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("PUSHPLAT_AUTH_SECRET", "env-auth-secret-value")
    monkeypatch.setenv("PUSHPLAT_API_KEY", "env-api-key-value")
    monkeypatch.setenv("PUSHPLAT_INTERNAL_SECRET", "env-internal-secret-value")
    monkeypatch.setenv("PUSHPLAT_EDGE_PORT", "6001")
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("dev", "edge", "router", "api", "send", "status", "presence", "token"):
        text = subparsers.choices[command].format_help()
        assert "env-" not in text, command
    assert "default 6001" in " ".join(subparsers.choices["edge"].format_help().split())


def test_security_options_from_flags_and_environment(monkeypatch):
    monkeypatch.setenv("PUSHPLAT_SEND_RATE", "50")
    monkeypatch.setenv("PUSHPLAT_METRIC_LABEL_KEYS", "variant,campaign")
    args = build_parser().parse_args(
        [
            "dev",
            "--send-burst",
            "100",
            "--api-key",
            "billing:k1,billing:k2",
            "--api-key",
            "k3",
            "--max-pending-hellos",
            "7",
            "--device-memory-seconds",
            "60",
            "--handshake-timeout-seconds",
            "2",
            "--idle-connection-seconds",
            "9",
            "--metric-label-values-max",
            "5",
            "--max-connects-per-second",
            "3",
        ]
    )
    config = config_from_args(args)
    assert (config.send_rate, config.send_burst) == (50.0, 100.0)
    assert config.api_keys == ["billing:k1", "billing:k2", "k3"], "flags are comma-separated too"
    assert config.metric_label_keys == ["variant", "campaign"] and config.metric_label_values_max == 5
    assert (config.max_pending_hellos, config.device_memory_seconds) == (7, 60.0)
    assert (config.handshake_timeout_seconds, config.idle_connection_seconds) == (2.0, 9.0)
    assert config.max_connects_per_second == 3.0
    monkeypatch.delenv("PUSHPLAT_SEND_RATE")
    monkeypatch.delenv("PUSHPLAT_METRIC_LABEL_KEYS")
    defaults = config_from_args(build_parser().parse_args(["dev"]))
    assert (defaults.send_rate, defaults.metric_label_keys, defaults.max_pending_hellos) == (0.0, [], 1000)


def test_help_names_the_limits():
    text = build_parser()._subparsers._group_actions[0].choices["dev"].format_help()
    for words in ("PUSHPLAT_SEND_RATE", "PUSHPLAT_MAX_PENDING_HELLOS", "128 bytes", "500 requests", "1000 ids"):
        assert words in " ".join(text.split()), words
