"""config.yaml: defaults, validation of every section, errors naming file and key, paths."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_config

from dicom_node.cli.main import build_parser
from dicom_node.cli.main import main as cli
from dicom_node.config import ENV_CONFIG, Config, ConfigError, load_config
from dicom_node.roles.defaults import DEFAULT_EXCLUSIONS, DEFAULT_ROLES

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
PACS = {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}


def _write(folder: Path, data: Any, name: str = "config.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def _error(tmp_path: Path, data: Any) -> tuple[Path, str]:
    path = _write(tmp_path / "etc", data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return path, str(err.value)


def test_built_in_defaults_are_complete_and_valid() -> None:
    config = Config()
    assert config.node.ae_title == "DICOMNODE"
    assert config.node.port == 11112
    assert config.node.stable_seconds == 10.0
    assert config.storage.database_url == "sqlite:///var/dicom-node.db"
    assert config.inference.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert config.series_roles == DEFAULT_ROLES
    assert config.destinations == [] and config.routes == []
    assert config.calling_ae_title == "DICOMNODE"
    assert config.synthetic.series_description_prefix == "SYNTHETIC"


@pytest.mark.parametrize("text", ["", "\n  \n", "# every key commented out\n# node:\n"])
def test_an_empty_file_is_refused_naming_it(tmp_path: Path, text: str) -> None:
    """An empty file is a mistake (a failed copy, a template never filled), not a wish for
    the defaults: the node would run on the wrong port, spool and routes without a word."""
    path, message = _error(tmp_path, text)
    assert message.startswith(f"{path}: the file is empty")


def test_an_empty_mapping_gives_the_defaults_with_paths_beside_it(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path / "site", "{}\n"))
    assert config.node == Config().node
    assert config.spool_dir == tmp_path / "site" / "var" / "spool"


def test_a_file_that_is_not_text_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\x00\xff\xfe binary \x89PNG")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: not UTF-8 text")


def test_a_folder_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration") as err:
        load_config(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_shipped_config_yaml_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(REPO_CONFIG)
    assert config.base_dir == REPO_CONFIG.parent
    assert [d.name for d in config.destinations] == ["pacs"]
    assert [r.model for r in config.routes] == ["mr-t1-to-ct", "mr-t1t2-to-flair"]
    assert config.series_roles == DEFAULT_ROLES
    assert config.series_exclusions == DEFAULT_EXCLUSIONS


def test_a_bad_condition_is_refused_naming_role_and_keyword(tmp_path: Path) -> None:
    _, message = _error(
        tmp_path, {"series_roles": {"T1": [{"Modality": "MR"}, {"EchoTime": [1, 2, 3]}]}}
    )
    assert "role T1: EchoTime" in message


def test_env_var_names_the_config_file_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "from-env", {"node": {"ae_title": "FROMENV"}})
    monkeypatch.setenv(ENV_CONFIG, str(path))
    config = load_config()
    assert config.node.ae_title == "FROMENV"
    assert config.base_dir == path.parent
    # An explicit path wins over the variable.
    other = _write(tmp_path / "explicit", {"node": {"ae_title": "EXPLICIT"}})
    assert load_config(other).node.ae_title == "EXPLICIT"


def test_without_file_or_env_var_the_defaults_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.node.ae_title == "DICOMNODE"
    assert config.spool_dir == tmp_path / "var" / "spool"


def test_env_var_pointing_nowhere_is_an_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "absent.yaml"
    monkeypatch.setenv(ENV_CONFIG, str(missing))
    with pytest.raises(ConfigError, match="cannot read configuration") as err:
        load_config()
    assert str(missing) in str(err.value)


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    path = _write(
        site,
        {
            "storage": {"database_url": "sqlite:///db/node.db", "spool_dir": "data/spool"},
            "inference": {"models_dir": "../models"},
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "site" / "config.yaml")
    assert config.spool_dir == site / "data" / "spool"
    assert config.models_dir == site / ".." / "models"
    assert config.database_url == f"sqlite:///{site}/db/node.db"
    assert config.path(Path("keys/node.pem")) == site / "keys" / "node.pem"
    assert path.exists()


def test_absolute_paths_and_non_file_databases_are_left_alone(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            {
                "storage": {
                    "database_url": "sqlite:////var/lib/node/node.db",
                    "spool_dir": "/srv/spool",
                }
            },
        )
    )
    assert config.database_url == "sqlite:////var/lib/node/node.db"
    assert config.spool_dir == Path("/srv/spool")
    for url in ("sqlite:///:memory:", "postgresql+psycopg://node@db/node"):
        config = load_config(_write(tmp_path / "x", {"storage": {"database_url": url}}))
        assert config.database_url == url


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"node": {"port": 0}}, "node.port"),
        ({"node": {"port": 70000}}, "node.port"),
        ({"node": {"stable_seconds": -1}}, "node.stable_seconds"),
        ({"node": {"allowed_calling_aets": ["A" * 17]}}, "node.allowed_calling_aets.0"),
        ({"node": {"maximum_associations": 0}}, "node.maximum_associations"),
        ({"storage": {"min_free_bytes": -1}}, "storage.min_free_bytes"),
        ({"inference": {"providers": []}}, "inference.providers"),
        ({"inference": {"batch_size": 0}}, "inference.batch_size"),
        ({"inference": {"workers": 17}}, "inference.workers"),
        ({"series_roles": {"T1": {}}}, "series_roles"),
        ({"series_roles": {"T1": {"EchoTime": [1, 2, 3]}}}, "series_roles"),
        ({"series_exclusions": {"dwi": [{"DiffusionBValue": "x"}, {}]}}, "series_exclusions"),
        ({"synthetic": {"series_description_prefix": ""}}, "synthetic.series_description_prefix"),
        ({"synthetic": {"series_number_offset": -1}}, "synthetic.series_number_offset"),
        ({"destinations": [{**PACS, "port": 0}]}, "destinations.0.port"),
        ({"destinations": [{**PACS, "name": "sender"}]}, "destinations.0.name"),
        ({"destinations": [{"name": "pacs"}]}, "destinations.0.ae_title"),
        ({"destinations": [PACS], "routes": [{"model": "m", "send_to": []}]}, "routes.0.send_to"),
        ({"routes": [{"model": "", "send_to": ["sender"]}]}, "routes.0.model"),
        ({"dispatch": {"max_attempts": 0}}, "dispatch.max_attempts"),
        ({"dispatch": {"backoff_initial_s": 0}}, "dispatch.backoff_initial_s"),
        ({"dispatch": {"calling_ae_title": "A\\B"}}, "dispatch.calling_ae_title"),
        ({"scheduler": {"poll_seconds": 0}}, "scheduler.poll_seconds"),
        ({"scheduler": {"job_max_attempts": 0}}, "scheduler.job_max_attempts"),
        ({"logging": {"level": "TRACE"}}, "logging.level"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_every_section_validates_and_the_error_names_file_and_key(
    tmp_path: Path, data: dict[str, Any], key: str
) -> None:
    path, message = _error(tmp_path, data)
    assert message.startswith(f"{path}: ")
    # A union names the variant tried after the key: "series_roles.T1.EchoTime.str: …".
    assert re.search(rf"(^|; |: ){re.escape(key)}(\.[\w\[\], ]+)?: ", message), message


def test_bad_regular_expression_in_a_role_is_refused_naming_role_and_attribute(
    tmp_path: Path,
) -> None:
    path, message = _error(tmp_path, {"series_roles": {"T1": {"SeriesDescription": "(t1"}}})
    assert message.startswith(f"{path}: series_roles: ")
    assert "role T1: SeriesDescription: bad regular expression" in message


def test_empty_numeric_range_is_refused(tmp_path: Path) -> None:
    path, message = _error(tmp_path, {"series_roles": {"T2": {"EchoTime": [120, 80]}}})
    assert message.startswith(f"{path}: series_roles: ")
    assert "role T2: EchoTime: range (120.0, 80.0) is empty" in message


def test_single_point_range_and_regex_rules_are_accepted(tmp_path: Path) -> None:
    roles = {"T2": {"Modality": "^MR$", "EchoTime": [90, 90]}, "CT": {"Modality": "^CT$"}}
    config = load_config(_write(tmp_path, {"series_roles": roles}))
    assert config.series_roles == {
        "T2": {"Modality": "^MR$", "EchoTime": (90.0, 90.0)},
        "CT": {"Modality": "^CT$"},
    }


def test_route_to_an_unknown_destination_is_refused(tmp_path: Path) -> None:
    path, message = _error(
        tmp_path,
        {"destinations": [PACS], "routes": [{"model": "mr-t1-to-ct", "send_to": ["archive"]}]},
    )
    assert message.startswith(f"{path}: ")
    assert "route mr-t1-to-ct: send_to names 'archive', which is not a destination" in message


def test_route_to_the_sender_needs_no_destination(tmp_path: Path) -> None:
    config = load_config(
        _write(tmp_path, {"routes": [{"model": "mr-t1-to-ct", "send_to": ["sender"]}]})
    )
    assert config.routes[0].send_to == ["sender"]


def test_route_guard_and_uncertainty_default_to_refuse_and_figures_without_a_map(
    tmp_path: Path,
) -> None:
    config = load_config(
        _write(tmp_path, {"destinations": [PACS], "routes": [{"model": "m", "send_to": ["pacs"]}]})
    )
    route = config.routes[0]
    assert (route.input_guard, route.uncertainty, route.uncertainty_map) == ("refuse", True, False)


def test_uncertainty_map_without_uncertainty_is_refused(tmp_path: Path) -> None:
    route = {"model": "m", "send_to": ["pacs"], "uncertainty": False, "uncertainty_map": True}
    _, message = _error(tmp_path, {"destinations": [PACS], "routes": [route]})
    assert "uncertainty_map: true needs uncertainty: true" in message


def test_unknown_input_guard_mode_is_refused(tmp_path: Path) -> None:
    route = {"model": "m", "send_to": ["pacs"], "input_guard": "maybe"}
    _, message = _error(tmp_path, {"destinations": [PACS], "routes": [route]})
    assert "input_guard" in message and "'refuse', 'warn' or 'off'" in message


def test_route_output_format_defaults_to_classic_and_refuses_other_values(
    tmp_path: Path,
) -> None:
    config = load_config(
        _write(tmp_path, {"destinations": [PACS], "routes": [{"model": "m", "send_to": ["pacs"]}]})
    )
    assert config.routes[0].output_format == "classic"
    route = {"model": "m", "send_to": ["pacs"], "output_format": "multiframe"}
    _, message = _error(tmp_path, {"destinations": [PACS], "routes": [route]})
    assert "output_format" in message and "'classic' or 'enhanced'" in message


def test_duplicate_destination_names_are_refused(tmp_path: Path) -> None:
    other = {**PACS, "ae_title": "OTHER", "port": 104}
    path, message = _error(tmp_path, {"destinations": [PACS, other]})
    assert message.startswith(f"{path}: ")
    assert "destination names repeat: ['pacs', 'pacs']" in message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"node": {"ae_title": "A" * 17}}, "node.ae_title"),
        ({"node": {"ae_title": ""}}, "node.ae_title"),
        ({"node": {"ae_title": "BACK\\SLASH"}}, "node.ae_title"),
        (
            {"destinations": [{**PACS, "ae_title": "ORTHANC-IS-TOO-LONG"}]},
            "destinations.0.ae_title",
        ),
    ],
    ids=["too-long", "empty", "backslash", "destination-too-long"],
)
def test_invalid_ae_titles_are_refused(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    path, message = _error(tmp_path, data)
    assert message.startswith(f"{path}: ")
    assert f"{key}: " in message


def test_ae_title_padding_is_stripped_before_the_length_check(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, {"node": {"ae_title": "  SIXTEENCHARSAE  "}}))
    assert config.node.ae_title == "SIXTEENCHARSAE"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"node": {"colour": "blue"}}, "node.colour"),
        ({"nodes": {"port": 104}}, "nodes"),
        ({"destinations": [{**PACS, "compression": True}]}, "destinations.0.compression"),
        ({"routes": [{"model": "m", "send_to": ["sender"], "when": "x"}]}, "routes.0.when"),
    ],
)
def test_unknown_keys_are_refused_not_ignored(
    tmp_path: Path, data: dict[str, Any], key: str
) -> None:
    path, message = _error(tmp_path, data)
    assert message.startswith(f"{path}: ")
    assert f"{key}: Extra inputs are not permitted" in message


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path) -> None:
    _, message = _error(tmp_path, {"node": {"port": 0, "stable_seconds": -5}})
    assert "node.port: " in message and "node.stable_seconds: " in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("node: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("just a string", "the top level must be a mapping"),
    ],
)
def test_unparseable_files_are_refused_naming_the_file(
    tmp_path: Path, text: str, words: str
) -> None:
    path, message = _error(tmp_path, text)
    assert message.startswith(f"{path}: {words}")


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration") as err:
        load_config(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(err.value)


def test_destination_lookup_by_name_and_by_calling_ae(tmp_path: Path) -> None:
    ris = {"name": "ris", "ae_title": "RIS", "host": "10.0.0.2", "port": 104}
    config = load_config(_write(tmp_path, {"destinations": [PACS, ris]}))
    assert config.destination("ris").host == "10.0.0.2"
    with pytest.raises(KeyError):
        config.destination("archive")
    found = config.destination_for_ae("ORTHANC ")
    assert found is not None and found.name == "pacs"
    assert config.destination_for_ae("UNKNOWN") is None


def test_loaded_config_does_not_share_state_with_the_default_roles(tmp_path: Path) -> None:
    before = copy.deepcopy((DEFAULT_ROLES, DEFAULT_EXCLUSIONS))
    config = load_config(_write(tmp_path, "{}"))
    t1 = config.series_roles["T1"]
    assert isinstance(t1, list)
    t1[0]["SeriesDescription"] = "changed"
    config.series_roles["NEW"] = {"Modality": "^PT$"}
    config.series_exclusions.clear()
    assert before == (DEFAULT_ROLES, DEFAULT_EXCLUSIONS)


def _models_config(folder: Path) -> Path:
    """A configuration whose models folder is named after ``folder``, and empty."""
    (folder / "models").mkdir(parents=True)
    return write_config(folder, {})


def _models_list(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli(argv) == 0
    return capsys.readouterr().out


def test_config_after_the_sub_command_wins_over_the_environment_which_wins_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    given, from_env = _models_config(tmp_path / "given"), _models_config(tmp_path / "env")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    default = _models_list(["models", "list"], capsys)
    assert f"no usable model in {tmp_path / 'models'}" in default
    monkeypatch.setenv(ENV_CONFIG, str(from_env))
    assert str(tmp_path / "env" / "models") in _models_list(["models", "list"], capsys)
    for argv in (
        ["models", "list", "--config", str(given)],
        ["--config", str(given), "models", "list"],
    ):
        assert str(tmp_path / "given" / "models") in _models_list(argv, capsys)


def test_every_sub_command_takes_config_after_it() -> None:
    """``dicom-node serve --config FILE`` is the documented form."""
    leaves = [
        ["serve"],
        ["echo"],
        ["send", "x.dcm"],
        ["models", "list"],
        ["models", "validate", "m.onnx"],
        ["outbox", "list"],
        ["outbox", "retry", "7"],
        ["outbox", "resend", "1.2.3"],
        ["verify", "x.dcm"],
        ["keys", "init"],
        ["roles", "explain", "1.2.3"],
        ["jobs", "list"],
        ["studies", "list"],
    ]
    parser = build_parser()
    for argv in leaves:
        assert parser.parse_args([*argv, "--config", "node.yaml"]).config == Path("node.yaml")
        assert parser.parse_args(["--config", "node.yaml", *argv]).config == Path("node.yaml")
        assert parser.parse_args(argv).config is None
