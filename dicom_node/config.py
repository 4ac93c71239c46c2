"""The node's configuration: config.yaml, validated at start; every key has a default.

The keys are the public interface documented in docs/configuration.md. Relative paths
(the SQLite file, the spool, the models folder, key files) resolve against the folder
of the configuration file, so a config can be moved together with its data.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from dicom_node.roles.defaults import DEFAULT_EXCLUSIONS, DEFAULT_ROLES
from dicom_node.roles.rules import RoleRule, RoleRules

ENV_CONFIG = "DICOM_NODE_CONFIG"

AETitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]+$")]


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerTLS(_Section):
    """DICOM TLS for receiving (PS3.15 B.9: BCP 195 profile, TLS 1.2 or newer)."""

    certificate: Path
    key: Path
    ca: Path | None = Field(None, description="CA certificate(s) that client certificates chain to")
    require_client_certificate: bool = True

    @model_validator(mode="after")
    def _ca_for_clients(self) -> ServerTLS:
        if self.require_client_certificate and self.ca is None:
            raise ValueError("require_client_certificate needs a ca to verify clients against")
        return self


class ClientTLS(_Section):
    """DICOM TLS for sending to one destination."""

    ca: Path = Field(description="CA certificate(s) the destination's certificate chains to")
    certificate: Path | None = Field(None, description="client certificate, if it asks for one")
    key: Path | None = None
    server_name: str | None = Field(
        None, description="name to check the destination's certificate against; default: host"
    )

    @model_validator(mode="after")
    def _pair(self) -> ClientTLS:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("certificate and key go together")
        return self


class NodeSettings(_Section):
    ae_title: AETitle = "DICOMNODE"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    allowed_calling_aets: list[AETitle] = Field(default_factory=list)
    calling_ae_hosts: dict[str, list[str]] = Field(
        default_factory=dict, description="AE title → addresses or networks it may call from"
    )
    tls: ServerTLS | None = None
    stable_seconds: float = Field(10.0, ge=0)
    max_pdu_size: int = Field(0, ge=0, description="0: unlimited")
    network_timeout_s: float = Field(60.0, gt=0)
    acse_timeout_s: float = Field(30.0, gt=0)
    dimse_timeout_s: float = Field(60.0, gt=0)
    maximum_associations: int = Field(32, ge=1)

    @field_validator("ae_title", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v

    @field_validator("calling_ae_hosts")
    @classmethod
    def _networks(cls, hosts: dict[str, list[str]]) -> dict[str, list[str]]:
        return _checked_networks(hosts)


def _checked_networks(hosts: dict[str, list[str]]) -> dict[str, list[str]]:
    for ae, entries in hosts.items():
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{ae}: {entry!r} is not an address or network") from exc
    return hosts


class QueryRetrieveSettings(_Section):
    """Who may query and retrieve (C-FIND, C-GET, C-MOVE): nobody unless listed, since
    the answers carry patient data."""

    allowed_calling_aets: list[AETitle] = Field(
        default_factory=list, description="calling AE titles allowed to query and retrieve"
    )
    calling_ae_hosts: dict[str, list[str]] = Field(
        default_factory=dict, description="AE title → addresses or networks it may query from"
    )
    serve_unreleased_outputs: bool = Field(
        False,
        description="also answer with the node's outputs not cleared for sending (written, "
        "awaiting review, rejected); off, a workstation never finds an unreviewed or "
        "rejected synthetic series",
    )

    @field_validator("calling_ae_hosts")
    @classmethod
    def _networks(cls, hosts: dict[str, list[str]]) -> dict[str, list[str]]:
        return _checked_networks(hosts)


class StorageSettings(_Section):
    database_url: str = "sqlite:///var/dicom-node.db"
    spool_dir: Path = Path("var/spool")
    fsync_directory: bool = Field(
        False, description="also fsync the folder after each file (POSIX strict; slower)"
    )
    min_free_bytes: int = Field(
        1 << 30, ge=0, description="below this free space C-STORE answers out of resources"
    )


class InferenceSettings(_Section):
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"], min_length=1
    )
    models_dir: Path = Path("models")
    batch_size: int = Field(8, ge=1, le=1024)
    intra_op_threads: int = Field(0, ge=0, description="0: onnxruntime's default")
    workers: int = Field(1, ge=1, le=16)


_RULE = TypeAdapter(RoleRule)


def _checked_rules(kind: str, table: Any) -> Any:
    """Each rule of a role (or exclusion) table, validated with a message naming the role
    and the keyword; the table keeps its shape (one rule, or a list of rules)."""
    if not isinstance(table, dict):
        return table  # the field's own validation names the problem
    for name, rules in table.items():
        for rule in rules if isinstance(rules, list) else [rules]:
            try:
                parsed = _RULE.validate_python(rule)
            except ValidationError as exc:
                raise ValueError(f"{kind} {name}: {_format_errors(exc)}") from exc
            if not parsed:
                raise ValueError(f"{kind} {name}: a rule needs at least one attribute")
            for keyword, expected in parsed.items():
                if isinstance(expected, str):
                    try:
                        re.compile(expected)
                    except re.error as exc:
                        raise ValueError(
                            f"{kind} {name}: {keyword}: bad regular expression ({exc})"
                        ) from exc
                elif expected[0] > expected[1]:
                    raise ValueError(f"{kind} {name}: {keyword}: range {expected} is empty")
    return table


class SyntheticSettings(_Section):
    series_description_prefix: str = Field("SYNTHETIC", min_length=1, max_length=32)
    invisible_watermark: bool = Field(
        True, description="embed the provenance identifier in every output's pixels"
    )
    series_number_offset: int = Field(9000, ge=0)
    manufacturer: str = "dicom-node"
    institution_name: str | None = None
    station_name: str | None = None


class Destination(_Section):
    name: str = Field(min_length=1)
    type: Literal["dimse"] = Field("dimse", description="how deliveries reach it: C-STORE")
    ae_title: AETitle
    host: str
    port: int = Field(ge=1, le=65535)
    tls: ClientTLS | None = None

    @field_validator("name")
    @classmethod
    def _not_sender(cls, v: str) -> str:
        if v == "sender":
            raise ValueError("'sender' is reserved for the calling AE of a study")
        return v


class Route(_Section):
    model: str = Field(min_length=1, description="model id from its card")
    send_to: list[str] = Field(min_length=1)
    review: bool = Field(
        False,
        description="hold every output series in awaiting_review until a person approves "
        "(sent) or rejects (never sent) it",
    )
    visible_mark: Literal["overlay", "burn_in", "none"] | None = Field(
        None, description="default: overlay for CT outputs, burn_in for MR outputs"
    )
    input_guard: Literal["refuse", "warn", "off"] = Field(
        "refuse",
        description="inputs unlike the model's training inputs: refuse the job, "
        "synthesize and mark the output, or do not judge",
    )
    uncertainty: bool = Field(
        True, description="run test-time augmentation and record the output's spread"
    )
    uncertainty_map: bool = Field(
        False, description="also send the per-voxel spread as a series of its own"
    )
    output_format: Literal["classic", "enhanced"] = Field(
        "classic",
        description="classic: one CT/MR Image Storage instance per slice; enhanced: each "
        "output series as one Legacy Converted Enhanced CT/MR instance",
    )

    @model_validator(mode="after")
    def _map_needs_uncertainty(self) -> Route:
        if self.uncertainty_map and not self.uncertainty:
            raise ValueError("uncertainty_map: true needs uncertainty: true")
        return self


class SigningSettings(_Section):
    key_file: Path = Path("var/keys/signing.key")
    certificate_file: Path = Path("var/keys/signing.crt")
    key_password_env: str | None = Field(
        None, description="environment variable holding the key's password, if it has one"
    )
    trusted_certificates: list[Path] = Field(
        default_factory=list, description="certificates `verify` trusts besides the node's own"
    )


class DispatchSettings(_Section):
    calling_ae_title: AETitle | None = Field(None, description="default: node.ae_title")
    max_attempts: int = Field(10, ge=1)
    backoff_initial_s: float = Field(5.0, gt=0)
    backoff_max_s: float = Field(600.0, gt=0)
    workers: int = Field(1, ge=1, le=16)


class SchedulerSettings(_Section):
    poll_seconds: float = Field(1.0, gt=0)
    job_lease_seconds: float = Field(900.0, gt=0)
    dispatch_lease_seconds: float = Field(1800.0, gt=0)
    job_max_attempts: int = Field(3, ge=1)


class ApiTLS(_Section):
    """HTTPS for the API and the dashboard."""

    certificate: Path
    key: Path


class ApiSettings(_Section):
    """The REST API, the dashboard and /metrics: the `api` stage of `serve`."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0: any free port (tests)")
    tls: ApiTLS | None = None
    metrics_auth: bool = Field(False, description="true: /metrics needs a viewer's token")
    session_hours: float = Field(12.0, gt=0, description="a dashboard sign-in lasts this long")


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Section):
    node: NodeSettings = Field(default_factory=NodeSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    query_retrieve: QueryRetrieveSettings = Field(default_factory=QueryRetrieveSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    series_roles: dict[str, RoleRules] = Field(default_factory=lambda: copy.deepcopy(DEFAULT_ROLES))
    series_exclusions: dict[str, RoleRules] = Field(
        default_factory=lambda: copy.deepcopy(DEFAULT_EXCLUSIONS),
        description="series that play no role, whatever their description; checked first",
    )
    destinations: list[Destination] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("series_roles", mode="before")
    @classmethod
    def _roles(cls, roles: Any) -> Any:
        return _checked_rules("role", roles)

    @field_validator("series_exclusions", mode="before")
    @classmethod
    def _exclusions(cls, exclusions: Any) -> Any:
        return _checked_rules("exclusion", exclusions)

    @model_validator(mode="after")
    def _references(self) -> Config:
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names repeat: {names}")
        models = [r.model for r in self.routes]
        if len(set(models)) != len(models):
            raise ValueError(f"routes name a model twice ({models}): give one route per model")
        for route in self.routes:
            for target in route.send_to:
                if target != "sender" and target not in names:
                    raise ValueError(
                        f"route {route.model}: send_to names {target!r}, "
                        f"which is not a destination ({names or 'none defined'})"
                    )
        return self

    def path(self, p: Path) -> Path:
        """A configured path, resolved against the configuration file's folder."""
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path made absolute."""
        url = self.storage.database_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.path(Path(url[len(prefix) :])))
        return url

    @property
    def spool_dir(self) -> Path:
        return self.path(self.storage.spool_dir)

    @property
    def models_dir(self) -> Path:
        return self.path(self.inference.models_dir)

    @property
    def calling_ae_title(self) -> str:
        return self.dispatch.calling_ae_title or self.node.ae_title

    def route(self, model_id: str) -> Route | None:
        return next((r for r in self.routes if r.model == model_id), None)

    def destination(self, name: str) -> Destination:
        for d in self.destinations:
            if d.name == name:
                return d
        raise KeyError(name)

    def destination_for_ae(self, ae_title: str) -> Destination | None:
        """The destination a calling AE title designates, for routes sending to "sender"."""
        for d in self.destinations:
            if d.ae_title == ae_title.strip():
                return d
        return None


def _format_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
    )


def load_config(path: Path | str | None = None) -> Config:
    """Reads and validates a configuration file (or ``$DICOM_NODE_CONFIG``).

    With neither, the built-in defaults apply with paths relative to the working
    directory. A file that is empty (or only comments) is refused rather than read as
    "all defaults": it is far likelier a failed copy than a wish; ``{}`` asks for the
    defaults explicitly.
    """
    if path is None:
        env = os.environ.get(ENV_CONFIG)
        path = Path(env) if env else None
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if raw is None:
        raise ConfigError(
            f"{path}: the file is empty (no setting in it); write {{}} to run on the "
            "built-in defaults"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return Config.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_format_errors(exc)}") from exc
