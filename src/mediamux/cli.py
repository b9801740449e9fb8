"""``mediamux`` command line: serve | demo | doctor | tools | jobs | login.

The CLI is the only place that prints to stdout, and ``serve`` over stdio never does: stdout
belongs to the protocol there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from mediamux import __version__

DEFAULT_HTTP_PORT = 8765


def _settings(sandbox: bool = False) -> Any:
    from pydantic import ValidationError

    from mediamux.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SystemExit(f"mediamux: configuration error: {first.get('msg')}") from None
    if sandbox:
        settings = settings.model_copy(update={"sandbox": True})
    return settings


# -- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from mediamux.server.app import build_server
    from mediamux.server.logs import configure_logging

    settings = _settings(args.sandbox)
    configure_logging(settings.secrets())
    if not settings.sandbox and not settings.configured_providers():
        print(
            "mediamux: no provider key is set (MUSEAI_API_KEY, MUZAIC_API_KEY, MIXPEEK_API_KEY, MUAPI_API_KEY); "
            "serving only the jobs tools. Add --sandbox to try every provider offline.",
            file=sys.stderr,
        )
    problem = _state_problem(settings)
    if problem:
        print(f"mediamux: {problem}", file=sys.stderr)
        return 2
    # Over stdio a host spawns the server and waits for its tool list: answer it first, open the rest
    # after (mediamux.server.startup says why HTTP does not).
    server = build_server(settings, lazy=args.transport == "stdio")
    if args.transport == "stdio":
        anyio.run(server.run_stdio_async)
        return 0

    from mediamux.principals import AuthConfigError
    from mediamux.server.auth import sign_in
    from mediamux.server.drain import serve_http
    from mediamux.server.http import build_http_app, is_loopback, uvicorn_limits

    try:
        signin = sign_in(settings)
    except AuthConfigError as exc:
        print(f"mediamux: {exc.message}", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and signin is None:
        print(
            f"mediamux: refusing to serve on {args.host} without sign-in: anyone who can reach that address "
            "could spend your provider credits. Set MEDIAMUX_HTTP_TOKEN (or MEDIAMUX_PRINCIPALS_FILE, or "
            "MEDIAMUX_AUTH_ISSUER and MEDIAMUX_AUTH_AUDIENCE), or bind 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    if args.host in ("0.0.0.0", "::") and not settings.http_allowed_hosts:
        print(
            "mediamux: listening on every interface, but only loopback Host headers are accepted until "
            "MEDIAMUX_HTTP_ALLOWED_HOSTS lists the names clients use (e.g. myhost:8765)",
            file=sys.stderr,
        )
    if signin is None:
        print(
            "mediamux: no MEDIAMUX_HTTP_TOKEN: any program on this machine can call the server and spend "
            "provider credits. Set a token for anything but a quick local trial.",
            file=sys.stderr,
        )
    app = build_http_app(server, settings, host=args.host, port=args.port, signin=signin)
    how = "no token: loopback only"
    if signin is not None:
        how = f"OAuth sign-in via {signin.issuer}" if signin.issuer else "bearer token required"
    print(
        f"mediamux {__version__}: Streamable HTTP on http://{args.host}:{args.port}/mcp "
        f"({how}); health at /healthz",
        file=sys.stderr,
    )
    serve_http(app, server, host=args.host, port=args.port, drain_s=settings.drain_s, **uvicorn_limits())
    return 0


def _state_problem(settings: Any) -> str | None:
    """Why the state cannot be used (journal, folders), said before serving rather than as a traceback
    mid-handshake."""
    from mediamux.files import FileAccessError, parse_allowed_dirs, prepare_output_dir
    from mediamux.jobs.backend import open_journal
    from mediamux.jobs.journal import JournalError

    try:
        output_dir = prepare_output_dir(settings.output_dir)
        parse_allowed_dirs(settings.allowed_dirs, output_dir=output_dir)
        open_journal(settings).close()
    except (JournalError, FileAccessError) as exc:
        return str(exc)
    return _store_problem(settings, output_dir)


def _store_problem(settings: Any, output_dir: Path) -> str | None:
    """Why the S3-compatible output store cannot be used (missing bucket, refused credentials, no answer)."""
    if settings.output_url is None:
        return None
    from mediamux.files import OutputStoreError, open_output_store

    try:
        store = open_output_store(settings, output_dir)
        anyio.run(store.check)
    except OutputStoreError as exc:
        return str(exc)
    return None


# -- demo -------------------------------------------------------------------------------------


async def _demo(home: Path) -> None:
    from mcp import Client, StdioServerParameters

    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    # Media the tour uploads lives beside the state folder, not in it: files in the state
    # folder (journal, keys) are never sent to a provider.
    media = home / "media"
    media.mkdir(parents=True, exist_ok=True)
    env.update({"MEDIAMUX_HOME": str(home / "state"), "MEDIAMUX_ALLOWED_DIRS": str(media)})
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mediamux", "serve", "--sandbox"], env=env
    )

    def say(text: str = "") -> None:
        print(text, flush=True)

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        say(f"    … {message}")

    from mediamux.sandbox.media import wav_sequence_bytes

    clip = media / "moon-speech.wav"
    clip.write_bytes(wav_sequence_bytes([(1.0, 440.0), (0.4, None), (1.2, 250.0), (0.4, None), (1.0, 330.0)]))
    say(f"mediamux {__version__} demo — every provider is a built-in emulator: no keys, no charges.")
    say(f"State folder: {home / 'state'}\n")
    with anyio.fail_after(180):
        async with Client(params) as client:
            tools = (await client.list_tools()).tools
            groups: dict[str, int] = {}
            for tool in tools:
                groups[tool.name.split("_", 1)[0]] = groups.get(tool.name.split("_", 1)[0], 0) + 1
            say(
                f"1. The server offers {len(tools)} tools: "
                + ", ".join(f"{k} ({v})" for k, v in groups.items())
            )

            result = await client.call_tool("muapi_get_balance", {})
            say(f"2. {_first_line(result)}")

            result = await client.call_tool("muapi_get_model", {"name": "flux-schnell-image"})
            data = result.structured_content or {}
            props = sorted(((data.get("input_schema") or {}).get("properties") or {}).keys())
            say(f"3. flux-schnell-image takes: {', '.join(props)}; price {data.get('price')}")

            say("4. Generating an image (submit, poll with progress, save the output):")
            result = await client.call_tool(
                "muapi_generate",
                {"endpoint": "flux-schnell-image", "params": {"prompt": "a lighthouse at dusk, film grain"}},
                progress_callback=progress,
            )
            say(f"   {_first_line(result)}")

            say("5. Starting a video with a 3 s wait budget — it outlives the call and comes back 'running':")
            result = await client.call_tool(
                "muapi_generate",
                {
                    "endpoint": "kling-v2.1-master-t2v",
                    "params": {"prompt": "waves on basalt", "duration": 5},
                    "wait_s": 3,
                },
                progress_callback=progress,
            )
            say(f"   {_first_line(result)}")
            job_id = (result.structured_content or {}).get("job_id")
            if job_id:
                say(f"6. Picking it up with jobs_wait({job_id}) — nothing is charged again:")
                result = await client.call_tool(
                    "jobs_wait", {"job_id": job_id, "wait_s": 60}, progress_callback=progress
                )
                say(f"   {_first_line(result)}")

            say("7. Asking for the same image again returns the earlier job instead of paying twice:")
            result = await client.call_tool(
                "muapi_generate",
                {"endpoint": "flux-schnell-image", "params": {"prompt": "a lighthouse at dusk, film grain"}},
            )
            say(f"   {_first_line(result)}")

            names = {t.name for t in tools}
            if "museai_upload_video" in names:
                say("8. muse.ai: uploading a short clip, then searching inside it by what is said:")
                result = await client.call_tool(
                    "museai_upload_video",
                    {"path": str(clip), "title": "Moon speech", "visibility": "public"},
                    progress_callback=progress,
                )
                svid = (result.structured_content or {}).get("svid", "")
                await client.call_tool(
                    "museai_update_video",
                    {
                        "fid": (result.structured_content or {}).get("fid", ""),
                        "description": "transcript: we choose to go to the moon in this decade",
                    },
                )
                result = await client.call_tool("museai_search", {"query": "s:moon"})
                say(f"   {_first_line(result)}: {json.dumps((result.structured_content or {}).get('hits'))}")
                result = await client.call_tool(
                    "museai_auto_subtitles", {"svid": svid}, progress_callback=progress
                )
                vtt = (result.structured_content or {}).get("vtt") or ""
                say(f"   {_first_line(result)}; first cue: {' / '.join(vtt.splitlines()[3:5])}")
            if "muzaic_generate_music" in names:
                say("9. Muzaic: 12 seconds of dreamy ambient music for it (tags 5 and 10, intensity rising):")
                result = await client.call_tool(
                    "muzaic_generate_music",
                    {"duration": 12, "tags": [5, 10], "intensity": [[0, 2], [100, 7]]},
                    progress_callback=progress,
                )
                say(f"   {_first_line(result)}")
            if "mixpeek_index_url" in names:
                say("10. Mixpeek: indexing a video URL into a collection, then a semantic search:")
                result = await client.call_tool(
                    "mixpeek_index_url",
                    {"url": "https://media.example.com/demo/aussie_agility.mp4", "collection_id": "demo"},
                    progress_callback=progress,
                )
                say(f"   {_first_line(result)}")
                result = await client.call_tool(
                    "mixpeek_search", {"query": "dog jumping over a bar", "collection_ids": ["demo"]}
                )
                say(f"   {_first_line(result)}")

            costs = await client.read_resource("mediamux://costs")
            text = getattr(costs.contents[0], "text", "{}")
            session = json.loads(text).get("session", {})
            say(f"11. mediamux://costs — this session spent ${session.get('usd', 0):.4f} (sandbox money).")
    say("\nNext: add the server to your host (README), or run `mediamux serve --sandbox` and connect to it.")


def _first_line(result: Any) -> str:
    for block in result.content:
        text = getattr(block, "text", None)
        if text:
            return str(text).splitlines()[0]
    return "(no text)"


def cmd_demo(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="mediamux-demo-"))
    anyio.run(_demo, home)
    return 0


# -- doctor -----------------------------------------------------------------------------------


async def _doctor(settings: Any) -> int:
    from mediamux import registry
    from mediamux.server.app import default_sandbox, running_services

    problems = 0
    print(f"mediamux {__version__} — {'SANDBOX (built-in emulators)' if settings.sandbox else 'live'} mode")
    sandbox = default_sandbox(settings)
    async with running_services(settings, sandbox=sandbox) as svc:
        eff = svc.settings
        for spec in registry.PROVIDERS.values():
            client = svc.clients.get(spec.id)
            if client is None:
                print(f"  {spec.title:<8} no key ({spec.key_env} unset)")
                continue
            line = f"  {spec.title:<8} key set"
            try:
                # One cheap authenticated call per provider: a wrong key or URL shows here, not mid-task.
                with anyio.fail_after(20):
                    found = await spec.health(client)
                line += f"; reachable at {eff.base_url(spec.id, spec.hosts[0].name)}; {found}"
            except Exception as exc:  # report, don't crash: this is a diagnosis
                problems += 1
                line += f"; NOT reachable: {exc}"
            print(line)
        if svc.journal.shared:
            print(f"  state folder   {eff.home.expanduser()}; journal in {svc.journal.location}")
        else:
            print(f"  state folder   {eff.home.expanduser()} (journal {eff.state_db.name})")
        print(f"  output folder  {svc.files.output_dir}")
        if svc.files.outputs.kind != "local":
            print(f"  output store   {svc.files.outputs.describe()}  (MEDIAMUX_OUTPUT_URL)")
        print(
            f"  allowed dirs   {os.pathsep.join(str(p) for p in svc.files.allowed_dirs)}  (MEDIAMUX_ALLOWED_DIRS)"
        )
        print(
            f"  toolsets       {', '.join(eff.enabled_toolsets())}{' (read-only)' if eff.read_only else ''}"
        )
        print(
            f"  budget         {f'${eff.budget_usd:.2f}' if eff.budget_usd is not None else 'none'}; "
            f"spent all time ${svc.journal.spent_usd():.4f}"
        )
        print(f"  jobs           {len(svc.journal.list(status='active', limit=1000))} active in the journal")
    if sandbox is not None:
        sandbox.close()
    return 1 if problems else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from mediamux.server.logs import configure_logging

    settings = _settings(args.sandbox)
    configure_logging(settings.secrets(), "ERROR")
    problem = _state_problem(settings)
    if problem:
        print(f"mediamux: {problem}", file=sys.stderr)
        return 1
    return anyio.run(_doctor, settings)


# -- tools ------------------------------------------------------------------------------------


async def _tools(settings: Any, as_json: bool) -> int:
    from mcp import Client

    from mediamux.server.app import build_server
    from mediamux.server.app import toolset as toolset_of

    server = build_server(settings)
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    owner = {spec.name: t for t in settings.enabled_toolsets() for spec in toolset_of(t).specs}
    rows = []
    for tool in tools:
        full = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
        visible = {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
        rows.append(
            {
                "toolset": owner.get(tool.name, "?"),
                "name": tool.name,
                "annotations": (
                    tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
                ),
                "tokens_full": _estimate_tokens(json.dumps(full)),
                "tokens_visible": _estimate_tokens(json.dumps(visible)),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    by_set: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_set.setdefault(str(row["toolset"]), []).append(row)
    total = 0
    for toolset, items in by_set.items():
        subtotal = sum(r["tokens_full"] for r in items)
        total += subtotal
        print(f"{toolset}  ({len(items)} tools, ~{subtotal} tokens)")
        for r in items:
            a = r["annotations"]
            flags = (
                "read-only"
                if a.get("readOnlyHint")
                else ("DESTRUCTIVE" if a.get("destructiveHint") else "writes")
            )
            print(f"  {r['name']:<26} {flags:<12} ~{r['tokens_full']} tokens")
    print(
        f"total: {len(rows)} tools, ~{total} tokens (estimate: 1 token ≈ 4 characters of the tools/list JSON)"
    )
    return 0


def _estimate_tokens(text: str) -> int:
    return max(1, round(len(text) / 4))


def cmd_tools(args: argparse.Namespace) -> int:
    settings = _settings(args.sandbox or args.all)
    return anyio.run(_tools, settings, args.json)


# -- jobs -------------------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace) -> int:
    from mediamux.jobs.backend import open_journal
    from mediamux.jobs.engine import iso
    from mediamux.jobs.journal import JournalError

    settings = _settings()
    if settings.database_url is None and not settings.state_db.exists():
        print(f"no journal yet at {settings.state_db}")
        return 0
    try:
        journal = open_journal(settings)
    except JournalError as exc:
        print(f"mediamux: {exc}", file=sys.stderr)
        return 1
    try:
        principal = args.principal
        records = journal.list(status=args.status, limit=args.limit, principal=principal)
        for r in records:
            usd = f"${r.cost.usd:.4f}" if r.cost.usd is not None else "-"
            who = f"  {r.principal}" if principal is None else ""
            print(
                f"{r.job_id}  {iso(r.submitted_ts)}  {r.provider}/{r.operation:<10} {r.status:<10} {usd}{who}"
            )
        whose = f" by {principal}" if principal is not None else ""
        print(
            f"{len(records)} job(s){whose}; all-time spend{whose} ${journal.spent_usd(principal=principal):.4f}"
        )
        if args.audit:
            print("audit trail (newest first):")
            for e in journal.audit_trail(principal=principal, limit=args.limit):
                est = f"est ${e['estimate_usd']:.4f}" if e["estimate_usd"] is not None else "est -"
                cost = f"cost ${e['cost_usd']:.4f}" if e["cost_usd"] is not None else "cost -"
                print(
                    f"  {iso(e['ts'])}  {e['principal']:<16} {e['action']:<7} {e['tool'] or '-':<28} "
                    f"{e['job_id'] or '-':<22} {est}  {cost}  {e['detail'] or ''}".rstrip()
                )
    finally:
        journal.close()
    return 0


# -- login ------------------------------------------------------------------------------------


async def _login_museai(settings: Any, email: str, password: str) -> Path:
    from mediamux.clock import SystemClock
    from mediamux.providers.museai import MuseaiClient
    from mediamux.server.services import provider_transport
    from mediamux.tools.base import write_key_file

    clock = SystemClock()
    files = provider_transport(settings, "museai", clock=clock)
    jobs = provider_transport(settings, "museai", clock=clock, host="museai_jobs")
    try:
        key = await MuseaiClient(files, jobs).login(email, password)
    finally:
        await files.aclose()
        await jobs.aclose()
    return write_key_file(settings.home, "museai", key)


def cmd_login(args: argparse.Namespace) -> int:
    import getpass

    from mediamux.providers.errors import ProviderError

    settings = _settings()
    # The password is read here, in the terminal, and sent only to muse.ai: it never passes
    # through a model or an MCP message.
    email = args.email or input("muse.ai email: ").strip()
    password = getpass.getpass("muse.ai password: ")
    try:
        path = anyio.run(_login_museai, settings, email, password)
    except ProviderError as exc:
        print(f"mediamux: {exc.message}", file=sys.stderr)
        return 1
    print(f"A new muse.ai API key is in {path} (readable only by you).")
    print("Put it in your host's MCP config as MUSEAI_API_KEY, then delete the file.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediamux", description="One MCP server for media AI.")
    parser.add_argument("--version", action="version", version=f"mediamux {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_HTTP_PORT)
    serve.add_argument("--sandbox", action="store_true", help="use the built-in provider emulators (no keys)")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="a short guided tour against the built-in emulators")
    demo.add_argument("--home", help="state folder for the demo (default: a new temporary folder)")
    demo.set_defaults(func=cmd_demo)

    doctor = sub.add_parser("doctor", help="check configuration and provider reachability")
    doctor.add_argument("--sandbox", action="store_true")
    doctor.set_defaults(func=cmd_doctor)

    tools = sub.add_parser("tools", help="list the tool catalog with annotations and token estimates")
    tools.add_argument("--all", action="store_true", help="every toolset, as in sandbox mode")
    tools.add_argument("--sandbox", action="store_true")
    tools.add_argument("--json", action="store_true")
    tools.set_defaults(func=cmd_tools)

    login = sub.add_parser("login", help="obtain a provider API key with your password (muse.ai)")
    login.add_argument("provider", choices=["museai"])
    login.add_argument("--email")
    login.set_defaults(func=cmd_login)

    jobs = sub.add_parser("jobs", help="list jobs from the local journal")
    jobs.add_argument(
        "--status", choices=["active", "queued", "running", "completed", "failed", "cancelled", "expired"]
    )
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument(
        "--principal", help="only this principal's jobs, spend and audit entries (default: everybody's)"
    )
    jobs.add_argument(
        "--audit",
        action="store_true",
        help="also print the audit trail: paid submissions, cancels and deletions, with who and what they cost",
    )
    jobs.set_defaults(func=cmd_jobs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
