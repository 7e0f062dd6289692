"""The Dagster UI in a real browser: what a user sees and clicks, not only what its GraphQL API answers.

tests/test_dagster_dev_ui.py drives these stages against the `dagster dev` it serves for its API tests (one
server for both: starting a second webserver and daemon for the browser cost half a minute of CI), through
Debian's `chromium` under Playwright for Python (headless, background networking off, a fresh profile; no
Playwright browser download):

1. the global asset lineage shows the groups raw -> staged -> dbt_staging, and filtered to what
   `stg_shop__orders` is built from, the expanded groups show its raw and staged `orders` nodes;
2. the asset page of `raw/shop_db/payments` (an asset the API tests do not materialize): its Materialize
   button launches a run, and the run page (reached from the "Launched run" toast) ends in Success;
3. a delivery with a duplicated order id is materialized (over GraphQL, as arrangement), and the Checks
   tab of `staged/shop/orders` shows `schema_contract` Failed with its metadata: the offending rows from
   the bad file and `violations_by_rule` naming the broken rule.

A failed stage is recorded (`BrowserWalk.failure`: the stage, the page's address and a screenshot of it as
it was), not raised, so that the API tests on the same server still report on their own; the stages are
separate calls so that the caller can run them while its own runs are in progress. Screenshots of every
stage (and of the page at a failure, `failure-<stage>.png`) are written to tests/artifacts/browser/
(git-ignored; CI keeps the working tree), emptied at the start of each run.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagster_processes import REPO_ROOT, DagsterServer
from playwright.sync_api import Error, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium, installed by .ci/run: Playwright drives it without downloading a browser of its own."""
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI and this machine run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "browser"

UI_TIMEOUT_MS = 60_000
"""Any page element: generous, the UI shares 2 CPUs with code servers, run workers and other tests."""
RUN_TIMEOUT_MS = 300_000
"""A one-step run from the button to Success: queued, dequeued by the daemon, step in a subprocess."""
MODAL_TIMEOUT_MS = 15_000
"""The "Join the Dagster community" modal covers the page about a second after the first load."""

BUTTON_ASSET = "raw/shop_db/payments"
"""Materialized by the browser's button only: its page still says "Never materialized"."""
RAW_ORDERS = "raw/shop/orders"
STAGED_ORDERS = "staged/shop/orders"
STG_ORDERS = "stg_shop__orders"
BAD_FILE = "orders_99999.csv"
"""Sorts after the demo world's own order files; holds one order id twice."""
DUPLICATED_ORDER_ID = "900001"


@dataclass
class BrowserWalk:
    """The stages, in order, on one page; after the first failure the later stages are skipped (each
    builds on the one before) and `failure` says what went wrong."""

    server: DagsterServer
    page: Page | None = None
    failure: str | None = None

    def lineage(self) -> None:
        """Stage 1: the global lineage and what `stg_shop__orders` is built from."""
        self._run("lineage", _check_lineage)

    def materialize_from_asset_page(self) -> None:
        """Stage 2: an asset page's Materialize button launches a run, which ends in Success."""
        self._run("materialize", _materialize_from_asset_page)

    def failed_check(self, orders_dir: Path) -> None:
        """Stage 3: a duplicated order id is delivered and staged (the run fails: its blocking check does),
        then the check's page shows the failure, the offending rows and the broken rule."""
        if self.failure is None:
            _deliver_duplicated_order(orders_dir)
            self.server.materialize([RAW_ORDERS, STAGED_ORDERS])
        self._run("failed-check", _open_failed_check)

    def _run(self, name: str, stage: Callable[[Page, DagsterServer], None]) -> None:
        """On a timeout or a failed expectation, keep a screenshot of the page as it was and record the
        stage's name, so that a CI failure says what the UI showed instead."""
        if self.failure is not None or self.page is None:
            return
        try:
            stage(self.page, self.server)
        except (PlaywrightTimeoutError, AssertionError, Error) as error:
            shot = ARTIFACTS / f"failure-{name}.png"
            try:
                self.page.screenshot(path=str(shot), full_page=True)
            except Error:
                shot = Path("<screenshot failed>")
            self.failure = f"browser stage {name!r} failed at {self.page.url}: {error}\nscreenshot: {shot}"


@contextmanager
def browser_walk(profile_dir: Path, server: DagsterServer) -> Iterator[BrowserWalk]:
    """A walk on a page of a fresh headless Chromium profile. A missing Chromium is the walk's failure, not
    the caller's (.ci/run installs it: never a skip), so that the caller's other work still runs."""
    walk = BrowserWalk(server)
    if not CHROMIUM.exists():
        walk.failure = f"{CHROMIUM} missing: `apt-get install chromium` (.ci/run does)"
        yield walk
        return
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            context.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            walk.page = context.new_page()
            yield walk
        finally:
            context.close()


def _screenshot(page: Page, name: str) -> None:
    """Finite CSS transitions (a dialog fading in) are fast-forwarded so the picture shows the end state."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, animations="disabled")


def _dismiss_community_modal(page: Page) -> None:
    """Skip the first-visit "Join the Dagster community" modal if it shows; it stays away for the rest of
    the browser profile's life. Not showing at all is fine (a Dagster release may drop it)."""
    try:
        page.get_by_role("button", name="Skip", exact=True).click(timeout=MODAL_TIMEOUT_MS)
    except PlaywrightTimeoutError:
        return
    expect(page.get_by_text("Join the Dagster community")).to_be_hidden()


def _deliver_duplicated_order(orders_dir: Path) -> None:
    """A new orders file whose two rows share one order id: a primary-key violation, which staging keeps
    (which copy is wrong is unknowable) and the blocking `schema_contract` check reports."""
    header, first_row = sorted(orders_dir.glob("*.csv"))[0].read_text().splitlines()[:2]
    row = f"{DUPLICATED_ORDER_ID},{first_row.split(',', 1)[1]}"
    (orders_dir / BAD_FILE).write_text(f"{header}\n{row}\n{row}\n")


def _check_lineage(page: Page, server: DagsterServer) -> None:
    page.goto(f"{server.base_url}/asset-groups")
    _dismiss_community_modal(page)
    for group in ("raw_shop", "staged_shop", "dbt_staging", "dbt_marts"):
        expect(page.get_by_role("button", name=group, exact=False).first).to_be_visible()
    _screenshot(page, "01-global-lineage")

    # Everything stg_shop__orders is built from: raw and staged appear only as its upstream.
    query = page.get_by_label("Search and filter assets")
    query.focus()
    page.keyboard.type(f'+key:"{STG_ORDERS}"')
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="dbt_marts")).to_have_count(0)
    collapsed = page.get_by_role("img", name="unfold_more")
    expect(collapsed).to_have_count(3)  # raw_shop, staged_shop, dbt_staging
    while collapsed.count():
        collapsed.first.click()
    expect(page.get_by_text(STG_ORDERS, exact=True).first).to_be_visible()
    # Nodes are labelled by the last part of their key: raw/shop/orders and staged/shop/orders.
    expect(page.get_by_text("orders", exact=True).filter(visible=True)).to_have_count(2)
    _screenshot(page, "02-orders-lineage")


def _materialize_from_asset_page(page: Page, server: DagsterServer) -> None:
    page.goto(f"{server.base_url}/assets/{BUTTON_ASSET}")
    expect(page.get_by_text("Never materialized").first).to_be_visible()
    page.get_by_role("button", name=re.compile(r"Materialize$")).click()
    expect(page.get_by_text("Launched run")).to_be_visible()
    _screenshot(page, "03-run-launched")

    page.get_by_role("link", name="View", exact=True).click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    finished = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(finished).to_be_visible(timeout=RUN_TIMEOUT_MS)
    _screenshot(page, "04-run-finished")
    expect(finished).to_have_text("Success")
    run_id = page.url.rstrip("/").split("/runs/")[1].split("?")[0]
    assert server.wait_for_run(run_id, timeout_s=30) == "SUCCESS", "the UI and the instance disagree"


def _open_failed_check(page: Page, server: DagsterServer) -> None:
    page.goto(f"{server.base_url}/assets/{STAGED_ORDERS}?view=checks")
    page.get_by_text("schema_contract", exact=True).first.click()
    expect(page).to_have_url(re.compile(r"checkDetail=schema_contract"))
    expect(page.get_by_text("Latest execution")).to_be_visible()
    expect(page.get_by_text("Failed", exact=True).first).to_be_visible()
    for label in ("offending_rows", "violations", "violations_by_rule"):
        expect(page.get_by_role("cell", name=label, exact=True)).to_be_visible()
    # Both copies of the duplicated order, each with the file it came from.
    expect(page.get_by_text(f"orders/{BAD_FILE}", exact=True).filter(visible=True)).to_have_count(2)
    _screenshot(page, "05-failed-check")

    page.get_by_text("[Show JSON]").click()
    expect(page.get_by_role("dialog")).to_contain_text('"order_id: unique": 2')
    _screenshot(page, "06-violations-by-rule")
