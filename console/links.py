"""Where the console's links to the rest of the stack point: the Prefect UI and the gateway."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from core.network import client_host
from core.settings import Settings

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


@dataclass(frozen=True)
class Links:
    prefect_ui: str
    gateway: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Links:
        """The Prefect UI of ``PREFECT_UI_URL``, else of ``PREFECT_API_URL`` (a server of the user's own), else
        the one ``esteira up`` starts; the gateway of the settings."""
        ui = os.environ.get("PREFECT_UI_URL") or ""
        api = os.environ.get("PREFECT_API_URL") or ""
        if not ui and api:
            ui = re.sub(r"/api/?$", "", api)
        if not ui:
            ui = f"http://{client_host(settings.prefect_host)}:{settings.prefect_port}"
        gateway = f"http://{client_host(settings.gateway_host)}:{settings.gateway_port}"
        return cls(prefect_ui=ui.rstrip("/"), gateway=gateway)

    def flow_run(self, flow_run_id: str | None) -> str | None:
        """The Prefect UI page of a flow run, when ``flow_run_id`` is one (not a note such as 'pending')."""
        if not flow_run_id or not _UUID.match(flow_run_id):
            return None
        return f"{self.prefect_ui}/runs/flow-run/{flow_run_id}"

    @property
    def deployments(self) -> str:
        return f"{self.prefect_ui}/deployments"

    @property
    def gateway_docs(self) -> str:
        return f"{self.gateway}/docs"
