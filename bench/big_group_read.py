"""The service's own cost of answering ``GET /Groups/{id}`` with a very large member list.

``python -m bench.big_group_read --members 50000``

Azurite cannot hold a 50,000-member group on this machine (its writes slow down linearly as a
table grows; docs/performance.md, "Big tiers"), so this measures what the service itself does
for that request, on :class:`scim.store.memory.MemoryStore`: the store hands over the member
list, and the SCIM service projects and renders it, and the Functions adapter encodes the JSON.
It reports the wall time and CPU time of the request (median of ``--repeats``) and the peak of
memory allocated while answering it (``tracemalloc``), next to the size of the response. On
Table Storage the request adds one range query per 1,000 members (50 for 50,000) to this.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tracemalloc
from typing import Any

from scim.core.resource import index_terms, parse_resource
from scim.core.schema import GROUP, USER
from scim.core.service import ScimRequest, ScimService
from scim.store.base import Member
from scim.store.memory import MemoryStore

TENANT = "bench"
BASE = "https://scim.example/scim/bench"


async def _seed(store: MemoryStore, members: int) -> str:
    ids: list[str] = []
    for i in range(members):
        parsed = parse_resource(
            USER, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"u{i:06d}@contoso.com"}
        )
        stored = await store.create(TENANT, "User", parsed.doc, index_terms(USER, parsed.doc))
        ids.append(stored.id)
    group = parse_resource(GROUP, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "All"})
    created = await store.create(TENANT, "Group", group.doc, index_terms(GROUP, group.doc))
    for start in range(0, members, 1000):
        await store.add_members(TENANT, created.id, [Member(i) for i in ids[start : start + 1000]])
    return created.id


async def _measure(members: int, repeats: int) -> dict[str, Any]:
    store = MemoryStore()
    service = ScimService(store)
    group_id = await _seed(store, members)
    request = ScimRequest("GET", TENANT, f"/Groups/{group_id}", BASE)
    walls: list[float] = []
    cpus: list[float] = []
    size = 0
    peak = 0
    for attempt in range(repeats + 1):
        if attempt == repeats:
            tracemalloc.start()
        wall, cpu = time.perf_counter(), time.process_time()
        response = await service.handle(request)
        text = json.dumps(response.body, ensure_ascii=False, separators=(",", ":")).encode()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if attempt == repeats:  # the last run only measures memory (tracemalloc slows it down)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            walls.append(wall)
            cpus.append(cpu)
        assert response.status == 200 and len(response.body["members"]) == members
        size = len(text)
    return {
        "members": members,
        "wall_ms_median": round(statistics.median(walls) * 1000, 1),
        "cpu_ms_median": round(statistics.median(cpus) * 1000, 1),
        "peak_allocated_mib": round(peak / 2**20, 1),
        "response_mib": round(size / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for members in args.members:
        result = asyncio.run(_measure(members, args.repeats))
        print(
            f"GET /Groups/{{id}} with {result['members']:,} members: wall {result['wall_ms_median']} ms, "
            f"CPU {result['cpu_ms_median']} ms (median of {args.repeats}); peak allocated while answering "
            f"{result['peak_allocated_mib']} MiB; response {result['response_mib']} MiB"
        )


if __name__ == "__main__":
    main()
