#!/bin/sh
# Compares the build's checksum with the one the config expects. They differ, so this FAILS.
set -eu
. ./config/fstests.config
actual=$(cut -d= -f3 out/build-report.txt)
echo "expected checksum: $EXPECTED_CHECKSUM"
echo "actual checksum:   $actual"
if [ "$actual" != "$EXPECTED_CHECKSUM" ]; then
    printf '\033[31mchecksum mismatch\033[0m\n' >&2
    echo "check: FAIL" > out/check.txt
    exit 1
fi
echo "check: PASS" > out/check.txt
