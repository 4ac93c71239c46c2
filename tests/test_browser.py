"""The dashboard in a real headless Chromium: a reviewer signs in, finds a study the PACS
routed to the node, steps through its previews slice by slice, approves it and sees the
synthetic CT arrive in the PACS; a second study rejected with a reason never arrives.

With ``DICOM_NODE_SCREENSHOTS=FOLDER`` the run saves the main pages as PNG there
(docs/screenshots holds the README's)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import sends_to
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from dicom_node.ops.accounts import add_user
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, valid_ds, write_series
from inference.training.simulate import Acquisition, simulate_subject
from peers import Orthanc, free_port, stored_ok, storescu, wait_until
from storage.models import Role

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORD = "a reviewer's long password"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
]


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Debian's Chromium through its own chromedriver (Selenium Manager never runs), in a
    fresh profile."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromium-driver are not installed (tools/install-system-deps.sh)")
    profile = tempfile.mkdtemp(prefix="dicom-node-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _head(study: StudySpec, seed: int) -> list[Any]:
    """A simulated head's T1 (24 slices of 88 × 80) as a classic MR series of ``study``."""
    acquisition = Acquisition(pixel_spacing_mm=3.0, slice_thickness_mm=6.0, rows=88, columns=80)
    t1 = simulate_subject(seed, acquisition).images["T1"]
    stored = np.clip(np.rint(t1.array), 0, 65535).astype(np.uint16)
    g = t1.geometry
    return valid_ds(
        axial_series(study, stored, description="T1 MPRAGE", spacing=g.spacing, origin=g.origin)
    )


def _ct_in(pacs: Orthanc, study_uid: str) -> list[dict[str, Any]]:
    return [
        s for s in pacs.series_of_study(study_uid) if s["MainDicomTags"].get("Modality") == "CT"
    ]


class Screens:
    """Saves the page shown as FOLDER/NAME.png when DICOM_NODE_SCREENSHOTS names a folder."""

    def __init__(self, driver: WebDriver) -> None:
        folder = os.environ.get("DICOM_NODE_SCREENSHOTS")
        self.driver = driver
        self.folder = Path(folder) if folder else None

    def save(self, name: str) -> None:
        if self.folder is not None:
            self.driver.execute_script("window.scrollTo(0, 0)")
            self.folder.mkdir(parents=True, exist_ok=True)
            assert self.driver.save_screenshot(str(self.folder / f"{name}.png"))


def _wait(driver: WebDriver, what: str, check: Callable[[WebDriver], Any], timeout: float = 20):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check, what)


def _loaded(driver: WebDriver, img: WebElement) -> bool:
    return bool(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    )


def _sign_in(driver: WebDriver, base: str, name: str) -> None:
    driver.get(base + "/")
    assert "/login" in driver.current_url
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    _wait(driver, "the studies page", lambda d: d.find_elements(By.ID, "signed-in"))
    assert driver.find_element(By.ID, "signed-in").text == name


def _review_status(driver: WebDriver) -> str:
    shown = driver.find_elements(By.CSS_SELECTOR, ".review-status")
    return shown[0].text if shown else ""


def _rows(driver: WebDriver, table: str, count: int) -> bool:
    return len(driver.find_elements(By.CSS_SELECTOR, f"{table} tbody tr")) == count


def _open_study(driver: WebDriver, base: str, patient: str) -> None:
    driver.get(base + "/")
    _wait(
        driver,
        f"{patient}'s study with its synthetic CT awaiting review",
        lambda d: (
            any(
                patient in row.text and "awaiting review" in row.text
                for row in d.find_elements(By.CSS_SELECTOR, "#studies tbody tr")
            )
            or d.refresh()
        ),
        timeout=90,
    )
    row = next(
        r for r in driver.find_elements(By.CSS_SELECTOR, "#studies tbody tr") if patient in r.text
    )
    row.find_element(By.CSS_SELECTOR, "a.study-link").click()
    _wait(driver, "the study page", lambda d: d.find_elements(By.CSS_SELECTOR, ".preview-img"))


def test_a_reviewer_steps_through_approves_and_rejects_in_the_browser(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    browser: WebDriver,
) -> None:
    node_port = free_port()
    pacs = orthanc_factory(
        modalities={"node": ("DICOMNODE", "127.0.0.1", node_port)}, auto_route=True
    )
    routes = sends_to(pacs.dicom_port)
    routes["routes"][0]["review"] = True
    node = node_factory(
        {
            "node": {"port": node_port},
            "inference": {"models_dir": str(REPO / "models")},
            **routes,
        }
    )
    with node.db.session() as session:
        add_user(session, "dr.reviewer", Role.REVIEWER, PASSWORD, node.clock())
    assert node.api_address is not None
    base = f"http://{node.api_address[0]}:{node.api_address[1]}"

    approved = StudySpec(patient_name="Approve^Alice", patient_id="BR-1")
    rejected = StudySpec(patient_name="Reject^Bob", patient_id="BR-2")
    for spec, seed in [(approved, 1000), (rejected, 1001)]:
        paths = write_series(_head(spec, seed), tmp_path / spec.patient_id)
        result = storescu("127.0.0.1", pacs.dicom_port, "ORTHANC", paths)
        assert stored_ok(result) == len(paths), result.stdout + result.stderr
    screens = Screens(browser)

    _sign_in(browser, base, "dr.reviewer")
    _open_study(browser, base, "Approve^Alice")
    screens_studies = browser.current_url
    box = browser.find_element(By.CSS_SELECTOR, ".preview")
    img = box.find_element(By.CSS_SELECTOR, ".preview-img")
    label = box.find_element(By.CSS_SELECTOR, ".slice-label")
    _wait(browser, "the first preview to load", lambda d: _loaded(d, img))
    first_src, first_label = img.get_attribute("src"), label.text
    assert "slice=" in (first_src or "") and "Approve" not in (first_src or "")

    box.find_element(By.CSS_SELECTOR, ".slice-next").click()
    _wait(browser, "the next slice", lambda d: img.get_attribute("src") != first_src)
    _wait(browser, "the next slice to load", lambda d: _loaded(d, img))
    assert label.text != first_label
    after_click = img.get_attribute("src")
    box.send_keys(Keys.ARROW_RIGHT)
    _wait(
        browser, "the slice after, by keyboard", lambda d: img.get_attribute("src") != after_click
    )
    _wait(browser, "that slice to load", lambda d: _loaded(d, img))
    windows = box.find_elements(By.CSS_SELECTOR, "select.window-select option")
    assert [w.get_attribute("value") for w in windows] == ["brain", "bone"]
    screens.save("study")

    browser.get(base + "/review")
    _wait(
        browser, "both studies in the queue", lambda d: _rows(d, "#review-queue", 2) or d.refresh()
    )
    queue = " ".join(r.text for r in browser.find_elements(By.CSS_SELECTOR, "#review-queue tr"))
    assert "Approve^Alice" in queue and "Reject^Bob" in queue
    screens.save("review")
    browser.get(base + "/models")
    assert browser.find_elements(By.ID, "model-mr-t1-to-ct")
    screens.save("models")
    browser.get(base + "/")
    screens.save("studies")

    browser.get(screens_studies)
    browser.find_element(By.CSS_SELECTOR, "form.decide input[name=comment]").send_keys("bone ok")
    started = time.monotonic()
    browser.find_element(By.CSS_SELECTOR, "button.approve").click()
    _wait(browser, "the approval", lambda d: "approved by dr.reviewer" in _review_status(d))
    wait_until(
        lambda: (
            _ct_in(pacs, approved.study_uid)
            and len(_ct_in(pacs, approved.study_uid)[0]["Instances"]) == 24
        ),
        60,
        what="the approved synthetic CT in the PACS",
    )
    delivery_s = time.monotonic() - started

    _open_study(browser, base, "Reject^Bob")
    reject_form = browser.find_elements(By.CSS_SELECTOR, "form.decide")[1]
    reject_form.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("bone in the orbit")
    rejected_at = time.monotonic()
    reject_form.find_element(By.CSS_SELECTOR, "button.reject").click()
    _wait(browser, "the rejection", lambda d: "reason: bone in the orbit" in _review_status(d))
    time.sleep(max(0.0, 2 * delivery_s - (time.monotonic() - rejected_at)) + 1)
    assert _ct_in(pacs, rejected.study_uid) == []
    assert browser.find_elements(By.CSS_SELECTOR, "button.approve") == []
