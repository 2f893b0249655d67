"""List-and-watch of one collection, relisting on 410 Gone or any broken watch."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from devcluster.kubeapi import ApiError, Client

log = logging.getLogger("devcluster.nodeagent")


class Informer(threading.Thread):
    """List and watch one collection, calling ``handler(event_type, obj)`` for each change."""

    def __init__(self, client: Client, path: str, handler: Callable[[str, dict[str, Any]], None],
                 **params: str) -> None:
        super().__init__(name=f"informer-{path}", daemon=True)
        self.client, self.path, self.handler, self.params = client, path, handler, params
        self.known: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()

    def run(self) -> None:
        """Loop forever: list, watch, relist."""
        while True:
            try:
                lst = self.client.get(self.path, **self.params)
                rv = lst["metadata"]["resourceVersion"]
                seen = {}
                for obj in lst.get("items", []):
                    seen[obj["metadata"]["uid"]] = obj
                    self.handler("ADDED" if obj["metadata"]["uid"] not in self.known
                                 else "MODIFIED", obj)
                for uid, obj in list(self.known.items()):
                    if uid not in seen:
                        self.handler("DELETED", obj)
                self.known = seen
                self.synced.set()
                while True:
                    for ev in self.client.watch(self.path, rv, timeout_s=120, **self.params):
                        obj = ev["object"]
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if ev["type"] == "BOOKMARK":
                            continue
                        uid = obj["metadata"]["uid"]
                        if ev["type"] == "DELETED":
                            self.known.pop(uid, None)
                        else:
                            self.known[uid] = obj
                        self.handler(ev["type"], obj)
            except ApiError as err:
                if err.status != 410:
                    log.warning("Watch of %s failed: %s", self.path, err)
                    time.sleep(1.0)
            except Exception as err:
                log.warning("Watch of %s broke: %s", self.path, err)
                time.sleep(1.0)
