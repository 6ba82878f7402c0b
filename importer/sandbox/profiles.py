"""The sandbox's profiles, kept as MoEngage keeps them: updates merged, arrays added to and
removed from, `unset_attributes` applied, deletes honoured; read back by the Get User API.

Tests judge the end state here (what a workspace would hold after a night), not only the
requests that arrived.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from importer.moengage.profile import merge_attributes, unset_names


@dataclass(slots=True)
class ProfileStore:
    """customer_id -> attributes; deleted customers remembered with when they went."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_at: dict[str, float] = field(default_factory=dict)
    # MoEngage hard-deletes a day after the request; updates in that window are lost.
    delete_window_seconds: float = 0.0
    unsets_applied: int = 0
    updates_lost_to_delete: int = 0

    def apply(self, element: dict[str, Any], now: float) -> None:
        """One accepted customer element, as MoEngage merges it into the profile."""
        customer_id = element.get("customer_id")
        if not isinstance(customer_id, str):
            return  # Identity Resolution elements are not kept by customer_id
        if self._in_delete_window(customer_id, now):
            self.updates_lost_to_delete += 1
            return
        existing = self.profiles.get(customer_id)
        if existing is None and element.get("update_existing_only"):
            return
        profile = existing if existing is not None else {}
        merge_attributes(profile, element.get("attributes") or {})
        for name in unset_names(element):
            if profile.pop(name, None) is not None:
                self.unsets_applied += 1
        self.profiles[customer_id] = profile

    def delete(self, customer_id: str, now: float) -> bool:
        """True when the customer existed (MoEngage answers 'not found' otherwise)."""
        found = self.profiles.pop(customer_id, None) is not None
        if found:
            self.deleted_at[customer_id] = now
        return found

    def export(self, customer_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """The Get User API's view: (profiles found, ids not found)."""
        found, missing = [], []
        for customer_id in customer_ids:
            profile = self.profiles.get(customer_id)
            if profile is None:
                missing.append(customer_id)
            else:
                found.append({"customer_id": customer_id, "attributes": copy.deepcopy(profile)})
        return found, missing

    def snapshot(self) -> dict[str, Any]:
        return {
            "profiles": self.profiles,
            "deleted": sorted(self.deleted_at),
            "unsets_applied": self.unsets_applied,
            "updates_lost_to_delete": self.updates_lost_to_delete,
        }

    def _in_delete_window(self, customer_id: str, now: float) -> bool:
        deleted = self.deleted_at.get(customer_id)
        return deleted is not None and now - deleted < self.delete_window_seconds
