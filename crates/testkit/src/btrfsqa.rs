//! Stand-ins for BTRFSQA's scripts and configuration (`examples/plans/btrfsqa/`), for end-to-end
//! tests that run the example plans against emulated clouds: the first script still asks for a
//! reboot (the command in `$REBOOT`) and the others check that they run after it, but nothing
//! builds a kernel. Each writes what it did under `results/` in its work directory, and the
//! third leaves an xfstests-shaped `xfstests/results/generic/001.full`.

use std::path::Path;

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("a file in a directory")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// Writes the stand-ins into `plan_dir/btrfsqa/`, where the example plans look for them.
pub fn write_stand_ins(plan_dir: &Path) {
    write(
        &plan_dir.join("btrfsqa/config/kernel.config"),
        "CONFIG_BTRFS_FS=y\n",
    );
    write(
        &plan_dir.join("btrfsqa/config/local.config"),
        "export TEST_DEV=/dev/nvme1n1\nexport SCRATCH_DEV_POOL=\"/dev/nvme2n1 /dev/nvme3n1\"\n",
    );
    write(
        &plan_dir.join("btrfsqa/001-kernel.sh"),
        "#!/bin/sh\nset -e\necho \"building $KERNEL_BRANCH of $KERNEL_REPO with $(cat config/kernel.config)\"\nmkdir -p results\ncat /proc/sys/kernel/random/boot_id >/dev/null\necho installed > results/001-kernel.txt\nsleep 1\necho rebooting into the new kernel\nsh -c \"$REBOOT\"\n",
    );
    write(
        &plan_dir.join("btrfsqa/002-btrfs-progs.sh"),
        "#!/bin/sh\nset -e\ntest -f results/001-kernel.txt\necho progs built > results/002-btrfs-progs.txt\n",
    );
    write(
        &plan_dir.join("btrfsqa/003-xfstests.sh"),
        "#!/bin/sh\nset -e\n. config/local.config\necho \"xfstests on $TEST_DEV with $SCRATCH_DEV_POOL\" > results/003-xfstests.txt\nmkdir -p xfstests/results/generic\necho 'generic/001 full log' > xfstests/results/generic/001.full\necho 'Passed all 3 tests'\n",
    );
    write(
        &plan_dir.join("btrfsqa/004-raid5-scrub.sh"),
        "#!/bin/sh\nset -e\necho scrub ok > results/004-raid5-scrub.txt\n",
    );
}
