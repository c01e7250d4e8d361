"""`silo-oracle dashboard DIR`: optuna-dashboard on a study's Optuna record.

Bound to 127.0.0.1 unless --host says otherwise. Every arm is its own Optuna study
(`<study>/<arm>`, see oracle.store.record), so the dashboard lists them side by side.
"""

from __future__ import annotations

import sys

from oracle.errors import OracleError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def main_dashboard(args) -> int:
    from oracle.store.storage import locate, open_storage, redact

    url, _ = locate(args.dir, getattr(args, "storage", None), None)
    storage = open_storage(url, must_exist=True)
    import optuna_dashboard

    host = args.host
    shown = f"[{host}]" if ":" in host else host
    print(f"optuna-dashboard on {redact(url)}: http://{shown}:{args.port}/  (Ctrl-C to stop)", flush=True)
    if host not in LOCAL_HOSTS:
        print(f"warning: bound to {host}: anyone who can reach this machine can read the record",
              file=sys.stderr, flush=True)
    try:
        optuna_dashboard.run_server(storage, host=host, port=args.port)
    except OSError as exc:
        raise OracleError(f"cannot serve on {host}:{args.port}: {exc.strerror or exc} (try another --port)") from None
    return 0
