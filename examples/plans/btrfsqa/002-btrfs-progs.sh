#!/bin/bash
# btrfs-progs self tests against the new kernel.
set -euxo pipefail
uname -r
dnf -y install git autoconf automake libtool e2fsprogs-devel libuuid-devel libblkid-devel \
    lzo-devel zlib-devel libzstd-devel python3-devel
git clone --depth 1 https://github.com/kdave/btrfs-progs.git btrfs-progs
cd btrfs-progs
./autogen.sh && ./configure --disable-documentation && make -j"$(nproc)"
make test-fsck test-cli test-misc test-fuzz
