#!/bin/sh
# The real peers the tests talk to, from Debian's packages: Orthanc, DCMTK, dicom3tools,
# GDCM's tools, PostgreSQL's server (the tests start their own throw-away clusters),
# Prometheus (the metrics test starts its own, which scrapes the node), and Chromium with
# its WebDriver (they drive the dashboard in tests/test_browser.py).
# Runs apt-get as root (CI) or through sudo.
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PACKAGES="orthanc dcmtk dicom3tools libgdcm-tools postgresql prometheus chromium chromium-driver"
missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi
# The packages may start a system-wide Orthanc, PostgreSQL and Prometheus; the tests
# start their own on free ports.
if command -v service >/dev/null 2>&1; then
    $SUDO service orthanc stop >/dev/null 2>&1 || true
    $SUDO service postgresql stop >/dev/null 2>&1 || true
    $SUDO service prometheus stop >/dev/null 2>&1 || true
fi
