#!/bin/bash
# RAID5 across five volumes: write, damage one device, scrub, verify.
set -euxo pipefail
devs="/dev/nvme2n1 /dev/nvme3n1 /dev/nvme4n1 /dev/nvme5n1 /dev/nvme6n1"
mkfs.btrfs -f -d raid5 -m raid1 $devs
mkdir -p /mnt/raid5 results
mount /dev/nvme2n1 /mnt/raid5
dd if=/dev/urandom of=/mnt/raid5/data bs=1M count=2048
sha256sum /mnt/raid5/data > results/raid5.sha256
umount /mnt/raid5
dd if=/dev/zero of=/dev/nvme3n1 bs=1M count=512 seek=64 conv=notrunc
mount -o degraded /dev/nvme2n1 /mnt/raid5
btrfs scrub start -B /mnt/raid5 | tee results/raid5-scrub.log
(cd /mnt/raid5 && sha256sum -c "$OLDPWD/results/raid5.sha256")
umount /mnt/raid5
