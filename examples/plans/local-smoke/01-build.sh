#!/bin/sh
# Builds a small data set and reports what it built.
set -eu
. ./config/fstests.config
mkdir -p out src
size=${QA_SMOKE_SIZE:-64}
printf '\033[1;34m==>\033[0m building %s blocks on %s (run %s)\n' "$size" "$QA_RUN_MACHINE" "$QA_RUN_ID"
i=0
while [ "$i" -lt "$size" ]; do
    printf 'block %04d %s\n' "$i" "$TEST_DEV" >> src/data.txt
    i=$((i + 1))
done
sum=$(cksum < src/data.txt | cut -d' ' -f1)
printf 'blocks=%s checksum=%s\n' "$size" "$sum" | tee out/build-report.txt
printf '\033[32mbuild ok\033[0m\n'
