"""Command line: ``python -m gateway run|dev|policy|audit|masking|failover|hash-password``
and ``check-config``.

A running gateway stops on SIGINT or SIGTERM and reloads its policy on SIGHUP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from importlib import resources
from pathlib import Path

from gateway import audit_cli, dev, failover_cli, masking_cli, policy_cli
from gateway.audit import keys
from gateway.config import Config, config_reference, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.identity import passwords, scram
from gateway.masking import keyfile as masking_keyfile
from gateway.pipeline.policies import PolicyStore, reload_on_signal
from gateway.server.app import Gateway

log = logging.getLogger("gateway")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every upstream login at INFO; one line per client connection.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


async def _serve(config: Config, banner: str | None = None) -> None:
    gateway = Gateway(config)
    await gateway.start()
    if banner:
        print(banner, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[object]] = set()
    loop.add_signal_handler(signal.SIGHUP, _on_sighup, gateway.services.policies, reloads)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await gateway.stop()


def _on_sighup(store: PolicyStore, running: set[asyncio.Task[object]]) -> None:
    """Reload the policy without blocking the loop; the task is kept referenced until
    done, so it is not collected half way."""
    task: asyncio.Task[object] = asyncio.get_running_loop().create_task(reload_on_signal(store))
    running.add(task)
    task.add_done_callback(running.discard)


def _run_loop(config: Config, banner: str | None = None) -> None:
    try:
        import uvloop

        uvloop.run(_serve(config, banner))
    except ImportError:
        asyncio.run(_serve(config, banner))


_BANNER_AUTH = {
    "PLAINTEXT": "no auth",
    "SASL_PLAINTEXT": "SASL PLAIN or SCRAM, dev-client",
    "SASL_SSL": "TLS + SASL PLAIN or SCRAM, dev-client",
    "SSL": "TLS",
}


def _dev_banner(config: Config) -> str:
    lines = ["", "Gateway is up in front of the local primary cluster.", ""]
    for listener in config.listeners:
        host, port = listener.advertised_address
        auth = _BANNER_AUTH[listener.security_protocol]
        if listener.tls is not None and listener.tls.client_auth == "required":
            auth = "mutual TLS: the client certificate is the identity"
        lines.append(f"  {listener.name:10} {host}:{port}  ({auth})")
    plain = next(lis for lis in config.listeners if lis.security_protocol == "PLAINTEXT")
    host, port = plain.advertised_address
    lines += [
        "",
        "Try it:",
        f"  kcat -b {host}:{port} -L",
        f"  echo hello | kcat -b {host}:{port} -t demo -P && kcat -b {host}:{port} -t demo -C -e",
        '  python -c "from confluent_kafka import Producer; '
        f"p=Producer({{'bootstrap.servers':'{host}:{port}'}}); "
        "p.produce('demo', b'hi'); p.flush()\"",
    ]
    lines += [f"  {line}" for line in _kcat_lines(config)]
    admin = f"http{'s' if config.admin.tls else ''}://{config.admin.bind}"
    lines += [
        f"  curl {admin}/metrics",
        f"  curl -H 'Authorization: Bearer dev-admin-token' {admin}/whoami {admin}/sessions",
    ]
    if config.audit is not None:
        public = config.audit.key_file.with_suffix(".pub")
        lines.append(
            f"  python -m gateway audit verify {config.audit.dir} --allow-unsealed "
            f"--public-key {public}"
        )
    if config.masking is not None and config.masking.serve_registry is not None:
        lines += [
            "",
            f"Schema registry (read-only, schemas/): http://{config.masking.serve_registry}",
            "  analysts (dev-analyst / dev-analyst-secret) read customers and demo* masked",
        ]
    lines += ["", "Ctrl-C stops everything this started."]
    return "\n".join(lines)


def _kcat_lines(config: Config) -> list[str]:
    """kcat command lines for the SASL and TLS listeners of ``config``."""
    sasl = "-X sasl.mechanisms=PLAIN -X sasl.username=dev-client -X sasl.password=dev-client-secret"
    tls_dir = dev.tls_dir(dev.default_run_dir())
    found: list[str] = []
    for listener in config.listeners:
        host, port = listener.advertised_address
        protocol = listener.security_protocol
        if protocol == "PLAINTEXT":
            continue
        options = [f"-X security.protocol={protocol}"]
        if listener.tls is not None:
            # The dev CA signed the gateway's certificate (and the client's).
            options.append(f"-X ssl.ca.location={tls_dir / 'ca.pem'}")
            if listener.tls.client_auth != "none":
                options.append(f"-X ssl.certificate.location={tls_dir / 'client.pem'}")
                options.append(f"-X ssl.key.location={tls_dir / 'client.key'}")
        if listener.uses_sasl:
            options.append(sasl)
        found.append(f"kcat -b {host}:{port} {' '.join(options)} -L")
        if protocol == "SASL_PLAINTEXT":
            # Not kcat: librdkafka before 2.6.1 (Debian 12's kcat) sends a SCRAM nonce
            # that Kafka 4 brokers refuse, and so does the gateway.
            found.append(
                '.venv/bin/python -c "from confluent_kafka.admin import AdminClient; '
                f"print(AdminClient({{'bootstrap.servers':'{host}:{port}',"
                "'security.protocol':'SASL_PLAINTEXT','sasl.mechanisms':'SCRAM-SHA-512',"
                "'sasl.username':'dev-client','sasl.password':'dev-client-secret'})"
                '.list_topics(timeout=10).brokers)"'
            )
    return found


def _cmd_dev(argv: list[str]) -> int:
    if argv[:1] != ["run"]:
        return dev.main(argv)
    # `dev run`: clusters + gateway in the foreground; stop what we started on exit.
    already = {info.name for info in dev.status() if info.pid is not None}
    try:
        dev.up()
    except dev.DevError as exc:
        print(f"gateway dev run: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, dev.ToolMissingError) else 1
    config_path = argv[1] if len(argv) > 1 else None
    try:
        if config_path:
            config = load_config(Path(config_path))
        else:
            example = resources.files("gateway.examples").joinpath("dev.yaml")
            with resources.as_file(example) as path:
                config = load_config(path)
        _dev_audit_key(config)
        _dev_masking_key(config)
        _run_loop(config, _dev_banner(config))
    except GatewayError as exc:
        print(f"gateway dev run: {exc}", file=sys.stderr)
        return 1
    finally:
        if not already:
            print("stopping the dev clusters", file=sys.stderr)
            dev.down()
    return 0


def _dev_audit_key(config: Config) -> None:
    """For `dev run` only: the audit signing key the config names, made once if missing,
    with its public key beside it (``.pub``) for `audit verify --public-key`."""
    if config.audit is None or config.audit.key_file.exists():
        return
    key_file = config.audit.key_file
    key_file.parent.mkdir(parents=True, exist_ok=True)
    public = keys.generate(key_file).public_key()
    key_file.with_suffix(".pub").write_text(keys.public_pem(public), encoding="utf-8")
    print(
        f"audit: new signing key {key_file} (key id {keys.key_id(public)}), public key "
        f"{key_file.with_suffix('.pub')}",
        file=sys.stderr,
    )


def _dev_masking_key(config: Config) -> None:
    """For `dev run` only: the masking key the config names, made once if missing."""
    if config.masking is None or config.masking.key_file.exists():
        return
    config.masking.key_file.parent.mkdir(parents=True, exist_ok=True)
    key = masking_keyfile.generate(config.masking.key_file)
    print(
        f"masking: new key {config.masking.key_file} (fingerprint {key.fingerprint})",
        file=sys.stderr,
    )


def _read_secret(what: str) -> str | None:
    """A secret from the terminal (asked twice) or the first line of stdin; None when
    the two typed versions differ."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"{what}: ")
    if getpass.getpass(f"{what} again: ") != first:
        return None
    return first


def _cmd_hash_password(ns: argparse.Namespace) -> int:
    if ns.admin_mode == "new":
        token = passwords.new_admin_token()
        print(f"# the token to give its holder; shown once, not stored:\n# {token}")
        print(f"token_sha256: {passwords.admin_token_sha256(token)}")
        return 0
    what = "token" if ns.admin_mode == "read" else "password"
    secret = _read_secret(what)
    if secret is None:
        print(f"hash-password: the two {what}s differ", file=sys.stderr)
        return 1
    if ns.admin_mode == "read":
        print(f"token_sha256: {passwords.admin_token_sha256(secret)}")
    elif ns.scram:
        iterations = ns.iterations or scram.DEFAULT_ITERATIONS
        kinds: tuple[tuple[str, scram.ScramName], ...] = (
            ("scram_sha_256", "SCRAM-SHA-256"),
            ("scram_sha_512", "SCRAM-SHA-512"),
        )
        try:
            for field, mechanism in kinds:
                credential = scram.make_credential(mechanism, secret, iterations)
                print(f"{field}: '{scram.format_credential(credential)}'")
        except ValueError as exc:
            print(f"hash-password: {exc}", file=sys.stderr)
            return 2
    else:
        print(passwords.hash_password(secret, ns.iterations or passwords.DEFAULT_ITERATIONS))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["dev"]:
        _setup_logging("info")
        return _cmd_dev(args[1:])
    tools = {
        "policy": policy_cli.main,
        "audit": audit_cli.main,
        "masking": masking_cli.main,
        "failover": failover_cli.main,
    }
    if args[:1] and args[0] in tools:
        return tools[args[0]](args[1:])
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--log-level", default="info")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve clients with the given config")
    run.add_argument("--config", "-c", type=Path, required=True)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)
    hasher = sub.add_parser(
        "hash-password",
        help="read a password from stdin/tty and print what the config stores for it",
    )
    hasher.add_argument(
        "--scram",
        action="store_true",
        help="print scram_sha_256: and scram_sha_512: lines instead of a password_hash",
    )
    hasher.add_argument(
        "--iterations",
        type=int,
        help=f"hash iterations (SCRAM: default {scram.DEFAULT_ITERATIONS}, at least "
        f"{scram.MIN_ITERATIONS}; PLAIN: default {passwords.DEFAULT_ITERATIONS})",
    )
    hasher.add_argument(
        "--admin-token",
        nargs="?",
        const="new",
        dest="admin_mode",
        choices=["new", "read"],
        help="an admin API token: 'new' (default) prints a fresh token and its "
        "token_sha256; 'read' hashes a token read from stdin/tty",
    )
    sub.add_parser("config-reference", help="print the config reference (Markdown)")
    sub.add_parser("dev", help="local Kafka clusters: dev up|down|status [--json]|run [config]")
    sub.add_parser("policy", help="policy files: policy check [DIR] | policy explain ...")
    sub.add_parser("audit", help="audit log: audit keygen --out FILE | audit verify [PATH]")
    sub.add_parser("masking", help="field masking: masking keygen --out FILE")
    ns = parser.parse_args(args)
    _setup_logging(ns.log_level)
    try:
        if ns.command == "hash-password":
            return _cmd_hash_password(ns)
        if ns.command == "config-reference":
            print(config_reference())
            return 0
        config = load_config(ns.config)
        if ns.command == "check-config":
            print(f"{ns.config}: ok")
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            _run_loop(config)
        return 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
