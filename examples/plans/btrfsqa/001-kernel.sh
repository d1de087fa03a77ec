#!/bin/bash
# Builds and installs the btrfs development kernel, then reboots into it. qa-run waits for the
# new boot id; the step passes if the script exits 0 before the reboot.
set -euxo pipefail
dnf -y install git gcc make flex bison bc elfutils-libelf-devel openssl-devel perl dwarves
git clone --depth 1 --branch "$KERNEL_BRANCH" "$KERNEL_REPO" /usr/src/btrfs-kernel
cd /usr/src/btrfs-kernel
cp "/boot/config-$(uname -r)" .config
./scripts/kconfig/merge_config.sh -m .config "$OLDPWD/config/kernel.config"
make olddefconfig
make -j"$(nproc)"
make modules_install install
grubby --set-default "/boot/vmlinuz-$(make -s kernelrelease)"
systemctl reboot
