"""The `dicom-node` command line (also `python -m dicom_node`)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.database import Database

from dicom_node import __version__
from dicom_node.cli import accounts
from dicom_node.cli.common import command_config as _config
from dicom_node.config import Config, Destination


def _serve(args: argparse.Namespace) -> int:
    from dicom_node.runtime.node import Node
    from dicom_node.runtime.stages import STAGES

    config = _config(args)
    stages = STAGES if args.stages is None else [s.strip() for s in args.stages.split(",")]
    try:
        node = Node(config, stages=stages)
    except ValueError as exc:
        print(f"dicom-node: --stages: {exc}", file=sys.stderr)
        return 2
    node.serve_forever()
    return 0


def _peer(args: argparse.Namespace, config: Config) -> Destination:
    """A destination by name, or the node itself (its own AE on loopback)."""
    if args.to:
        try:
            return config.destination(args.to)
        except KeyError:
            print(f"dicom-node: no destination named {args.to!r}", file=sys.stderr)
            raise SystemExit(2) from None
    host = "127.0.0.1" if config.node.host in ("0.0.0.0", "") else config.node.host
    return Destination(name="node", ae_title=config.node.ae_title, host=host, port=config.node.port)


def _echo(args: argparse.Namespace) -> int:
    from dicom_node.dicom.status import VerificationStatus
    from dicom_node.net.ae import UNCOMPRESSED, VERIFICATION, AssociationError, associate
    from dicom_node.net.tls import tls_args

    config = _config(args)
    peer = _peer(args, config)
    try:
        assoc = associate(
            peer,
            config.calling_ae_title,
            [(VERIFICATION, UNCOMPRESSED)],
            timeout_s=30.0,
            tls=tls_args(peer, config.path),
        )
    except AssociationError as exc:
        print(f"{peer.name}: no association with {peer.ae_title}@{peer.host}:{peer.port} ({exc})")
        return 1
    status = assoc.send_c_echo()
    assoc.release()
    code = int(getattr(status, "Status", -1))
    print(f"{peer.name}: C-ECHO status 0x{code:04X}")
    return 0 if code == VerificationStatus.SUCCESS else 1


def _files(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return out


def _send(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dicom_node.cli.send import SendError, scan, send
    from dicom_node.net.ae import AssociationError
    from dicom_node.net.tls import tls_args

    config = _config(args)
    peer = _peer(args, config)
    files, unreadable = scan(_files(args.paths))
    for problem in unreadable:
        print(problem, file=sys.stderr)
    shown = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        with tqdm(
            total=len(files), desc=peer.name, unit="file", file=sys.stderr, disable=not shown
        ) as bar:
            report = send(
                peer,
                config.calling_ae_title,
                files,
                tls=tls_args(peer, config.path),
                step=bar.update,
            )
    except (SendError, AssociationError) as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        return 1
    print(f"{peer.name}: stored {report.stored} of {len(files)} instance(s)")
    for problem in report.problems:
        print(problem, file=sys.stderr)
    return 1 if unreadable or report.problems else 0


def _models_list(args: argparse.Namespace) -> int:
    from dicom_node.ops.models import guard_summary
    from inference.registry import load_registry

    config = _config(args)
    registry = load_registry(
        config.models_dir, config.inference.providers, config.inference.intra_op_threads
    )
    rows = [
        {
            "id": m.card.id,
            "version": m.card.version,
            "inputs": list(m.card.input_roles),
            "output": f"{m.card.output.role} ({m.card.output.modality}, {m.card.output.units})",
            "spatial": m.card.spatial.mode,
            "providers": list(m.providers),
            "file": m.path.name,
            "guard": guard_summary(m.card),
        }
        for m in registry
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        for r in rows:
            print(
                f"{r['id']} {r['version']}: {' + '.join(r['inputs'])} -> {r['output']}; "
                f"{r['spatial']}; providers {', '.join(r['providers'])}; {r['guard']}; "
                f"{r['file']}"
            )
        if not rows:
            print(f"no usable model in {config.models_dir}")
    for problem in registry.refused:
        print(f"refused: {problem}", file=sys.stderr)
    return 0


def _models_validate(args: argparse.Namespace) -> int:
    from dicom_node.ops.models import guard_summary
    from inference.registry import ModelError, load_model

    config = _config(args)
    status = 0
    for path in map(Path, args.paths):
        try:
            model = load_model(path, config.inference.providers)
        except ModelError as exc:
            print(f"INVALID {exc}")
            status = 1
            continue
        print(
            f"OK {path.name}: {model.card.key}, providers {', '.join(model.providers)}; "
            f"{guard_summary(model.card)}"
        )
    return status


def _read_only_database(config: Config) -> Database:
    """The database as it is, for commands that only look: never created or migrated."""
    from storage.database import Database, DatabaseUnavailable

    try:
        return Database(config.database_url, read_only=True)
    except DatabaseUnavailable as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _outbox_list(args: argparse.Namespace) -> int:
    from dicom_node.ops.outbox import list_deliveries

    config = _config(args)
    db = _read_only_database(config)
    with db.session() as session:
        rows = list_deliveries(session)
    for row in rows:
        print(
            json.dumps(row)
            if args.json
            else f"{row['id']}\t{row['state']}\t{row['destination']}\t{row['attempts']}"
            f"\t{row['series_uid']}\t{row['last_error'] or ''}"
        )
    return 0


def _outbox_retry(args: argparse.Namespace) -> int:
    from dicom_node.ops.outbox import retry
    from storage.database import Database

    config = _config(args)
    db = Database(config.database_url)
    with db.session() as session:
        ok = retry(session, args.id, datetime.now(UTC))
    print(f"delivery {args.id}: {'queued for sending' if ok else 'not found or in flight'}")
    return 0 if ok else 1


def _outbox_resend(args: argparse.Namespace) -> int:
    from dicom_node.ops.outbox import ResendRefused, resend
    from storage.database import Database

    config = _config(args)
    names = {d.name for d in config.destinations}
    db = Database(config.database_url)
    try:
        with db.session() as session:
            queued = resend(
                session,
                args.series_uid,
                datetime.now(UTC),
                names,
                args.to,
                by=f"cli ({getpass.getuser()})",
            )
    except ResendRefused as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        return 1
    print(f"output series {args.series_uid}: queued for {', '.join(queued)}")
    return 0


def _studies_list(args: argparse.Namespace) -> int:
    from dicom_node.ops.studies import list_studies
    from storage.spool import Spool

    config = _config(args)
    db = _read_only_database(config)
    with db.session() as session:
        rows = list_studies(
            session, Spool(config.spool_dir), config.series_roles, config.series_exclusions
        )
    for row in rows:
        print(
            json.dumps(row)
            if args.json
            else f"{row['study_uid']}\t{row['state']}\t" + _series_summary(row["series"])
        )
    return 0


def _series_summary(series: list[dict[str, Any]]) -> str:
    """One study's series for people: number, modality, and role, output state or why none."""
    parts = []
    for s in series:
        if s["output"] is not None:
            what = f"output of {s['output']['model']}, {s['output']['state']}"
            review = s["output"]["review"]
            if review is not None and "reviewer" in review:
                what += f" ({review['status']} by {review['reviewer']} at {review['at']})"
        else:
            what = ",".join(s["roles"]) or f"no role: {s['ignored']}"
        number = "-" if s["series_number"] is None else s["series_number"]
        parts.append(f"#{number} {s['modality']} {what}")
    return "; ".join(parts)


def _review_list(args: argparse.Namespace) -> int:
    from dicom_node.ops.review import review_queue

    config = _config(args)
    db = _read_only_database(config)
    with db.session() as session:
        rows = review_queue(session, datetime.now(UTC))
    for row in rows:
        print(
            json.dumps(row)
            if args.json
            else f"{row['series_uid']}\tversion {row['version']}\t{row['model']}"
            f"\t{row['instances']} instance(s)"
            f"\twaiting {row['waited_s']} s\tstudy {row['study_uid']}"
        )
    return 0


def _review_decide(args: argparse.Namespace) -> int:
    from dicom_node.ops.review import ReviewRefused, approve, reject
    from storage.database import Database

    config = _config(args)
    db = Database(config.database_url)
    now = datetime.now(UTC)
    try:
        with db.session() as session:
            if args.review_command == "approve":
                queued = approve(
                    session, args.series_uid, args.reviewer, now, args.comment, args.version
                )
                outcome = f"approved by {args.reviewer}, queued for {', '.join(queued)}"
            else:
                reject(session, args.series_uid, args.reviewer, args.reason, now, args.version)
                outcome = f"rejected by {args.reviewer}: never sent"
    except ReviewRefused as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        return 1
    print(f"output series {args.series_uid}: {outcome}")
    return 0


def _jobs_list(args: argparse.Namespace) -> int:
    from dicom_node.ops.jobs import list_jobs

    config = _config(args)
    db = _read_only_database(config)
    with db.session() as session:
        rows = list_jobs(session)
    for row in rows:
        print(json.dumps(row))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from dicom_node.evidence.verify import (
        UnreadableFile,
        dicom_files,
        load_certificates,
        verify_file,
    )

    config = _config(args)
    own = config.path(config.signing.certificate_file)
    trust_paths = [*map(config.path, config.signing.trusted_certificates), *args.trust]
    if own.exists():
        trust_paths.append(own)
    try:
        trusted = load_certificates(trust_paths)
    except ValueError as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        return 2
    status = 0
    for path in dicom_files(args.paths):
        try:
            verdict = verify_file(path, trusted)
        except UnreadableFile as exc:
            print(f"dicom-node: {exc}", file=sys.stderr)
            status = 2
            continue
        if args.json:
            print(json.dumps(verdict.to_json()), flush=True)
            continue
        kind = "SYNTHETIC" if verdict.synthetic else "not marked synthetic"
        trust = {True: ", trusted", False: ", untrusted signer", None: ""}[
            verdict.certificate_trusted if verdict.signature == "valid" else None
        ]
        mark = f"found ({verdict.watermark_identifier})" if verdict.watermark else "absent"
        print(f"{path}: {kind}{' - TAMPERED' if verdict.tampered else ''}")
        print(
            f"  Synthetic Data tag: {'YES' if verdict.synthetic_data_tag else 'no'}; "
            f"synthesizing equipment: {'yes' if verdict.synthesizing_equipment else 'no'}"
        )
        if verdict.provenance:
            p = verdict.provenance
            print(
                f"  provenance: model {p['model_id']} {p['model_version']} "
                f"(sha256 {p['model_sha256'][:12]}…), created {p['created_at']}, "
                f"record {verdict.provenance_identifier}"
            )
            for line in _assessment_lines(p):
                print(f"  {line}")
        else:
            print("  provenance: absent")
        print(f"  signature: {verdict.signature}{trust} ({verdict.signature_reason})")
        print(
            f"  watermark: {mark}"
            + (
                ""
                if verdict.watermark_matches_provenance is None
                else f", {'matches' if verdict.watermark_matches_provenance else 'DIFFERS FROM'}"
                " the provenance record"
            )
        )
        for reason in verdict.reasons:
            print(f"  ! {reason}")
    return status


def _assessment_lines(provenance: dict[str, Any]) -> list[str]:
    """The input guard's and the uncertainty's lines of a provenance record, for people."""
    lines = []
    guard = provenance.get("input_guard")
    if guard and not guard["available"]:
        lines.append(f"input guard ({guard['mode']}): the model has none; inputs not judged")
    elif guard:
        for a in guard["inputs"]:
            verdict = "accepted" if a["accepted"] else "OUT OF DISTRIBUTION"
            lines.append(
                f"input guard ({guard['mode']}): {a['role']} series {a['series_uid']} "
                f"{verdict}, score {a['score']:.2f} (threshold {a['threshold']:.2f})"
            )
    else:
        lines.append("input guard: off")
    spread = provenance.get("uncertainty")
    if spread:
        lines.append(
            f"uncertainty: spread inside the head mean {spread['mean']:.3g} {spread['units']}, "
            f"95th percentile {spread['p95']:.3g} {spread['units']} "
            f"({' + '.join(spread['passes'])})"
        )
    else:
        lines.append("uncertainty: not estimated")
    return lines


def _keys_init(args: argparse.Namespace) -> int:
    from dicom_node.evidence.keys import create_self_signed

    config = _config(args)
    key = config.path(config.signing.key_file)
    cert = config.path(config.signing.certificate_file)
    try:
        create_self_signed(
            key,
            cert,
            common_name=f"{config.node.ae_title} dicom-node signing",
            overwrite=args.force,
        )
    except FileExistsError as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        return 1
    print(f"key: {key}\ncertificate: {cert} (self-signed)")
    return 0


def _roles_explain(args: argparse.Namespace) -> int:
    from dicom_node.route.explain import (
        ExplainError,
        explain,
        series_from_database,
        series_from_files,
    )
    from inference.registry import load_registry

    config = _config(args)
    target = Path(args.target)
    try:
        if target.exists():
            series, sender = series_from_files(_files([args.target])), None
        else:
            series, sender = series_from_database(config, args.target)
    except ExplainError as exc:
        print(f"dicom-node: {args.target}: {exc}", file=sys.stderr)
        return 1
    registry = load_registry(
        config.models_dir, config.inference.providers, config.inference.intra_op_threads
    )
    for line in explain(series, config, {m.card.id: m.card for m in registry}, sender):
        print(line)
    return 0


CONFIG_HELP = "configuration file (default: $DICOM_NODE_CONFIG, else built-ins)"


def _config_option() -> argparse.ArgumentParser:
    """``--config`` for every command, after it too (``dicom-node serve --config FILE``).
    SUPPRESS as its default there: a command without it keeps what stood before it."""
    option = argparse.ArgumentParser(add_help=False)
    option.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP)
    return option


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-node", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dicom-node {__version__}")
    parser.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    config = [_config_option()]
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the node", parents=config)
    serve.add_argument(
        "--stages",
        help="comma-separated subset of receive,route,synthesize,dispatch,api to run in "
        "this process (default: all)",
    )
    serve.set_defaults(func=_serve)

    echo = sub.add_parser(
        "echo", help="C-ECHO the node, or a destination with --to", parents=config
    )
    echo.add_argument("--to", help="destination name from the configuration")
    echo.set_defaults(func=_echo)

    send = sub.add_parser(
        "send", help="C-STORE files or folders to the node or --to", parents=config
    )
    send.add_argument("paths", nargs="+")
    send.add_argument("--to", help="destination name from the configuration")
    send.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )
    send.set_defaults(func=_send)

    models = sub.add_parser("models", help="list or validate models").add_subparsers(
        dest="models_command", required=True
    )
    listing = models.add_parser("list", help="models in models_dir", parents=config)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_models_list)
    validate = models.add_parser(
        "validate", help="check model files and name every problem", parents=config
    )
    validate.add_argument("paths", nargs="+")
    validate.set_defaults(func=_models_validate)

    outbox = sub.add_parser("outbox", help="deliveries waiting, sent or parked").add_subparsers(
        dest="outbox_command", required=True
    )
    olist = outbox.add_parser("list", parents=config)
    olist.add_argument("--json", action="store_true")
    olist.set_defaults(func=_outbox_list)
    retry = outbox.add_parser("retry", help="send a delivery again", parents=config)
    retry.add_argument("id", type=int)
    retry.set_defaults(func=_outbox_retry)
    resend = outbox.add_parser(
        "resend",
        help="send an output series again to its route's destinations, or --to one",
        parents=config,
    )
    resend.add_argument("series_uid", help="the output's Series Instance UID")
    resend.add_argument("--to", help="destination name from the configuration")
    resend.set_defaults(func=_outbox_resend)

    verify = sub.add_parser(
        "verify", help="is a file synthetic, and is its evidence intact?", parents=config
    )
    verify.add_argument("paths", nargs="+", type=Path, help="files or folders")
    verify.add_argument("--json", action="store_true", help="one JSON object per file")
    verify.add_argument(
        "--trust",
        type=Path,
        action="append",
        default=[],
        help="a certificate (PEM) to trust; repeatable",
    )
    verify.set_defaults(func=_verify)

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    init = keys.add_parser("init", help="make a self-signed key and certificate", parents=config)
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(func=_keys_init)

    roles = sub.add_parser("roles", help="series roles").add_subparsers(
        dest="roles_command", required=True
    )
    explain = roles.add_parser(
        "explain",
        help="dry run: which rule each series matches, and what routing decides",
        parents=config,
    )
    explain.add_argument("target", help="a file or folder, or the Study Instance UID of a study")
    explain.set_defaults(func=_roles_explain)

    jobs = sub.add_parser("jobs", help="synthesis jobs").add_subparsers(
        dest="jobs_command", required=True
    )
    jobs.add_parser("list", parents=config).set_defaults(func=_jobs_list)

    studies = sub.add_parser("studies", help="received studies").add_subparsers(
        dest="studies_command", required=True
    )
    slist = studies.add_parser(
        "list", help="every study with its state and its series' roles", parents=config
    )
    slist.add_argument("--json", action="store_true")
    slist.set_defaults(func=_studies_list)

    review = sub.add_parser(
        "review", help="output series held for review by their route"
    ).add_subparsers(dest="review_command", required=True)
    rlist = review.add_parser("list", help="the review queue, oldest first", parents=config)
    rlist.add_argument("--json", action="store_true")
    rlist.set_defaults(func=_review_list)
    approve = review.add_parser(
        "approve", help="release a series awaiting review to its destinations", parents=config
    )
    approve.add_argument("series_uid", help="the output's Series Instance UID")
    approve.add_argument("--reviewer", required=True, help="who decides")
    approve.add_argument("--comment", help="optional, recorded with the decision")
    approve.add_argument(
        "--version",
        type=int,
        help="only this version (review list shows it); refused once the series is rewritten",
    )
    approve.set_defaults(func=_review_decide)
    reject = review.add_parser(
        "reject", help="refuse a series awaiting review: never sent", parents=config
    )
    reject.add_argument("series_uid", help="the output's Series Instance UID")
    reject.add_argument("--reviewer", required=True, help="who decides")
    reject.add_argument("--reason", required=True, help="why; recorded with the decision")
    reject.add_argument(
        "--version",
        type=int,
        help="only this version (review list shows it); refused once the series is rewritten",
    )
    reject.set_defaults(func=_review_decide)
    accounts.add_commands(sub, config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
