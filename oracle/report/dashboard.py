"""`silo-oracle dashboard DIR`: optuna-dashboard on a study's Optuna record.

Bound to 127.0.0.1 unless --host says otherwise. Every arm is its own Optuna study
(`<study>/<arm>`, see oracle.store.record), so the dashboard lists them side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oracle.errors import OracleError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Dashboard:
    """A record opened for optuna-dashboard, not served yet: `serve()` blocks until Ctrl-C."""

    storage: Any  # the opened Optuna storage
    shown: str  # its URL with any password redacted
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def local(self) -> bool:
        """Bound to this machine only: nobody else can read the record."""
        return self.host in LOCAL_HOSTS

    def serve(self) -> None:
        import optuna_dashboard

        try:
            optuna_dashboard.run_server(self.storage, host=self.host, port=self.port)
        except OSError as exc:
            raise OracleError(f"cannot serve on {self.host}:{self.port}: {exc.strerror or exc} "
                              "(try another --port)") from None


def open_dashboard(url: str, *, host: str, port: int) -> Dashboard:
    """The record at `url` (it must exist), ready to serve on host:port."""
    from oracle.store.storage import open_storage, redact

    return Dashboard(open_storage(url, must_exist=True), redact(url), host, port)
