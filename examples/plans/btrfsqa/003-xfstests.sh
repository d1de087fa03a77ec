#!/bin/bash
# xfstests on the six extra volumes (see config/local.config).
set -euxo pipefail
dnf -y install git xfsprogs-devel libuuid-devel libattr-devel libacl-devel libaio-devel \
    liburing-devel fio psmisc bc dbench
git clone --depth 1 https://git.kernel.org/pub/scm/fs/xfs/xfstests-dev.git xfstests
cp config/local.config xfstests/local.config
mkdir -p /mnt/test /mnt/scratch results
mkfs.btrfs -f /dev/nvme1n1
cd xfstests && make -j"$(nproc)"
./check -g auto -x dangerous 2>&1 | tee ../results/xfstests.log
