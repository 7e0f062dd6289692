"""Chaos soak (issue 23): the deployed platform under continuous deliveries and overlapping seeded faults,
then one quiet period, then scored: rows lost, duplicated or stale, incidents healed or escalated, time to
recover, runs stuck, the metrics at the end, and what the daemon and the instance database cost.

    .venv/bin/python bench/soak.py --minutes 3 --seed 23        # or: ./dev soak --minutes 3

1. Start-up: a throwaway PostgreSQL cluster holds the instance database and the shop's source database;
   `deploy/` is installed into a temporary root and its four units started by their exact `ExecStart`
   (`tests/deployment.py`, shared with `tests/test_deployment_smoke.py`), with the soak's catalog
   (`bench/soak_sources.py`), the embedded DuckDB warehouse and the products API served by this process
   with a fault switch. A first load, then the shop's delivery sensor and the `shop_db` and `shop_api`
   schedules are switched on over GraphQL, as the UI does (they start STOPPED with `PLATFORM_ENV=local`).
   The healing sensor runs by default. From then on only the daemon launches runs.
2. Soak: every `--interval` seconds the driver delivers into the three sources (`bench/soak_delivery.py`);
   the injector fires the seeded faults (`bench/soak_faults.py`).
3. Quiet period: no delivery, no fault; at least `--quiet` seconds (two scheduled runs of each source),
   then until the runs created by then have finished and no incident is still being healed (at most
   `QUIET_MAX_S`).
4. Score (`bench/soak_measure.py`) and write `bench/results/soak_<minutes>m.md` (`bench/soak_report.py`).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench"), str(REPO_ROOT / "tests")]

from deployment import FIRST_LOAD, Deployment, first_load, installed_deployment  # noqa: E402
from fixtures.postgres_server import PostgresCluster  # noqa: E402
from soak_delivery import DeliveryDriver  # noqa: E402
from soak_faults import MEAN_GAP_S, Injector, kinds_for, schedule  # noqa: E402
from soak_measure import (  # noqa: E402
    GroupSampler,
    KeyDiff,
    compare,
    duckdb_rows,
    incidents,
    instance_cost,
    match,
    metrics_text,
    postgres_rows,
    postmortem,
    runs_by_status,
    stuck_runs,
    unfinished_runs,
)
from soak_operator import Operator  # noqa: E402
from soak_report import scores, write_report  # noqa: E402
from soak_sources import (  # noqa: E402
    AlertInbox,
    ApiSwitch,
    load_shop_database,
    own_filesystem,
    serve_alert_inbox,
    serve_faulty_api,
    write_catalog,
)
from soak_timeline import healed_incidents, timeline_lines  # noqa: E402

from demo_shop.commands import DEMO_API_KEY  # noqa: E402
from demo_shop.world import PRODUCTS_API, SHOP_DB  # noqa: E402

FIRST_LOAD_EXTRA = ["raw/shop_api/products", "staged/shop_api/products", "stg_shop_api__products"]
SCHEDULES = ("shop_db_schedule", "shop_api_schedule")
START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""
HEALING_STATUSES = {"open", "healing", "running", "proposed", "approved", "escalated"}
"""Incidents the quiet period waits for: still being healed, waiting for the operator's approval, or
escalated (its cause repaired by the operator when the quiet period began: the run that lands the repair
resolves it). Without the escalated ones the quiet period ended while a corrected delivery was still
on its way in."""
QUIET_MAX_S = 600.0
SHOP_ROLE, SHOP_PASSWORD = "shop_etl", "soak-etl-password"
LANDING_FS_BYTES = 256 * 2**20
"""The landing zone's own filesystem (a tmpfs): room for the soak's deliveries, small enough to fill."""


def start_schedules(deployment: Deployment) -> None:
    for name in SCHEDULES:
        selector = {"repositoryLocationName": "self_healing_platform", "repositoryName": "__repository__",
                    "scheduleName": name}  # fmt: skip
        started = deployment.server.graphql(START_SCHEDULE, {"selector": selector})["startSchedule"]
        if started["__typename"] != "ScheduleStateResult":
            raise RuntimeError(f"starting schedule {name} failed: {started}")


def quiet(deployment: Deployment, minimum_s: float, maximum_s: float = QUIET_MAX_S) -> float:
    """Seconds of quiet: at least `minimum_s`, then until the runs created by then have finished and no
    incident is being healed (at most `maximum_s`). The runs of the minimum period land what was delivered
    before it; later ones are the schedules' further passes over no new data, and waiting for the platform
    to be idle never ended on a busy machine, where a source's run lasts longer than its every-minute cron
    (the CI soak: always the cap)."""
    began = time.time()
    time.sleep(minimum_s)
    landing_runs_before = time.time()
    while time.time() - began < maximum_s:
        busy = unfinished_runs(deployment, created_before=landing_runs_before)
        healing = [i for i in incidents(deployment) if i["status"] in HEALING_STATUSES]
        if not busy and not healing:
            break
        time.sleep(5)
    return time.time() - began


def postgres_warehouse(server: PostgresCluster) -> dict[str, str]:
    """The deployment's variables for a PostgreSQL warehouse on `server` (trust authentication on loopback:
    the password is required by the environment file, unused by the server)."""
    return {
        "PLATFORM_ENV": "postgres",
        "PLATFORM_PG_HOST": "127.0.0.1",
        "PLATFORM_PG_PORT": str(server.port),
        "PLATFORM_PG_USER": "postgres",
        "PLATFORM_PG_DATABASE": server.create_database("warehouse"),
        "PLATFORM_PG_PASSWORD": "unused-with-trust-auth",
    }


def compare_warehouse(
    deployment: Deployment, warehouse: PostgresCluster | None, driver: DeliveryDriver, shop_dsn: str
) -> list[KeyDiff]:
    reader = postgres_rows(warehouse.dsn("warehouse")) if warehouse else duckdb_rows(deployment.warehouse)
    with reader as rows:
        return compare(rows, driver, shop_dsn)


def _plain(value: object) -> object:
    """JSON for a fault (a dataclass with a repair callable) and anything else not JSON already."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: v for k, v in vars(value).items() if not callable(v)}
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between delivery rounds")
    parser.add_argument("--quiet", type=float, default=130.0, help="minimum quiet period, seconds")
    parser.add_argument(
        "--quiet-max", type=float, default=QUIET_MAX_S,
        help="longest quiet period, seconds (what is still healing then is scored as it stands)",
    )  # fmt: skip
    parser.add_argument(
        "--gap", type=float, default=MEAN_GAP_S, help="mean seconds between fault starts (default 12)"
    )
    parser.add_argument(
        "--warehouse", choices=("duckdb", "postgres"), default="duckdb",
        help="the embedded DuckDB (default), or a PostgreSQL server of its own, which a fault restarts",
    )  # fmt: skip
    parser.add_argument(
        "--report", type=Path, help="where to write the report (and its scores as .json beside it); "
        "default bench/results/soak_<minutes>m.md",
    )  # fmt: skip
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: every unit, server and mount too

    phases: dict[str, float] = {}
    began = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    rng = random.Random(args.seed)
    switch = ApiSwitch()
    landing: list[Path] = []
    inbox = AlertInbox()
    with ExitStack() as stack:
        postgres = stack.enter_context(PostgresCluster())
        source = stack.enter_context(PostgresCluster())
        shop_db = source.create_database("shop")
        shop_dsn = source.dsn(shop_db)
        source.create_login_role(SHOP_ROLE, SHOP_PASSWORD)
        warehouse = stack.enter_context(PostgresCluster()) if args.warehouse == "postgres" else None

        def sources(data_dir: Path):  # the demo world exists now: its shop database into PostgreSQL
            load_shop_database(data_dir / "sources" / SHOP_DB, shop_dsn)
            source.execute(shop_db, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {SHOP_ROLE}")
            landing.extend(stack.enter_context(own_filesystem(data_dir / "landing", LANDING_FS_BYTES)))
            return serve_faulty_api(data_dir / "sources" / PRODUCTS_API, DEMO_API_KEY, switch)

        extra = {
            "PLATFORM_CATALOG_DIR": str(write_catalog(tmp / "catalog")),
            "SHOP_DB_URL": f"postgresql+psycopg2://{SHOP_ROLE}:${{SHOP_DB_PASSWORD}}@127.0.0.1:{source.port}/{shop_db}",
            "SHOP_DB_PASSWORD": SHOP_PASSWORD,
            "PLATFORM_ALERT_WEBHOOK_URL": stack.enter_context(serve_alert_inbox(inbox)),
            **(postgres_warehouse(warehouse) if warehouse else {}),
        }
        deployment = stack.enter_context(installed_deployment(tmp, postgres, sources, extra))
        first_load(deployment, [*FIRST_LOAD, *FIRST_LOAD_EXTRA])
        if warehouse is None:  # PLATFORM_ENV=local starts them STOPPED; elsewhere they run from the start
            start_schedules(deployment)
        phases["start-up"] = time.time() - began

        driver = DeliveryDriver(
            deployment.data_dir / "sources" / "files" / "shop" / "orders",
            deployment.data_dir / "sources" / PRODUCTS_API,
            shop_dsn,
            random.Random(rng.random()),
        )
        sampler = GroupSampler(deployment)
        sampler.start()
        injector = Injector(
            deployment, driver, switch, source, shop_db, SHOP_ROLE, (landing or [None])[0], warehouse,
            random.Random(rng.random()),
        )  # fmt: skip
        faults = schedule(args.minutes, args.seed, kinds_for(args.warehouse), args.gap)
        operator = Operator(deployment, faults)
        operator.start()
        soak_start = time.time()
        pending = list(faults)
        next_delivery = soak_start
        while time.time() - soak_start < args.minutes * 60:
            elapsed = time.time() - soak_start
            while pending and pending[0].at_s <= elapsed:
                injector.fire(pending.pop(0))
            if time.time() >= next_delivery:
                driver.tick()
                next_delivery += args.interval
            time.sleep(0.2)
        injector.join()
        phases["soak"] = time.time() - soak_start

        operator.repair_the_rest()
        phases["quiet period"] = quiet(deployment, args.quiet, args.quiet_max)
        measure_start = time.time()
        operator.stop.set()
        sampler.stop.set()
        sampler.sample()
        found = incidents(deployment)
        matches, unmatched = match(faults, found)
        evidence = postmortem(deployment)
        result = {
            "args": vars(args),
            "diffs": compare_warehouse(deployment, warehouse, driver, shop_dsn),
            "matches": matches,
            "unmatched": unmatched,
            "runs": runs_by_status(deployment),
            "stuck": stuck_runs(deployment, time.time()),
            "metrics": metrics_text(deployment),
            "daemon_cpu_s": sampler.cpu_seconds,
            "daemon_peak_rss": sampler.peak_rss,
            "instance": instance_cost(deployment),
            "deliveries": driver.counts,
            "delivery_errors": driver.errors,
            "approved": operator.approved,
            "alerts": list(inbox.received),
            "operator_errors": operator.errors,
            "soak_start": soak_start,
            "timeline": timeline_lines(healed_incidents(evidence["runs"], evidence["incidents"])),
        }
        phases["comparison"] = time.time() - measure_start
        phases["end to end"] = time.time() - began
        result["phases"] = phases
        out = args.report or REPO_ROOT / "bench" / "results" / f"soak_{args.minutes:g}m.md"
        write_report(out, result)
        score = scores(result)
        summary = {"phases": phases, "runs": result["runs"], "scores": asdict(score), "met": score.met}
        (out.with_suffix(".json")).write_text(json.dumps(summary, indent=1))
        kept = tmp / "postmortem.json"
        kept.write_text(json.dumps({**evidence, "faults": faults}, indent=1, default=_plain))
        print(f"report: {out}; unit logs and the runs, step failures and ledger ({kept.name}) kept in {tmp}")


if __name__ == "__main__":
    main()
