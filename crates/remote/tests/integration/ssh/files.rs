//! SFTP transfers: a 256 MiB round trip, trees with modes, collection that stays inside.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use qa_core::conformance::executor;
use qa_core::remote::{CommandSpec, OutputStream, RemoteError, RemoteExecutor};
use qa_testkit::TestSshd;
use sha2::{Digest, Sha256};

use super::{executor, scratch};

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(p).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_of_256_mib_keeps_every_byte() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (wd, exec) = executor(&host);
    let (_s, scratch) = scratch();
    let src = scratch.join("big.bin");
    {
        // Pseudo-random, so that compression or a repeated block could not hide a bug.
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..256 {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
    }
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    let want = sha256_file(&src);
    exec.put_file(&src, "up/big.bin", None).await.unwrap();
    let remote = wd.path().join("up/big.bin");
    assert_eq!(std::fs::metadata(&remote).unwrap().len(), 256 << 20);
    assert_eq!(
        std::fs::metadata(&remote).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let spec = CommandSpec::new("sha256sum up/big.bin").timeout(Duration::from_secs(120));
    let (info, out) = executor::run_recorded(&exec, &spec).await;
    assert!(info.success());
    assert_eq!(
        out.text(OutputStream::Stdout).split_whitespace().next(),
        Some(want.as_str()),
        "checksum on the remote side"
    );
    let back = scratch.join("back/big.bin");
    exec.get_file("up/big.bin", &back).await.unwrap();
    assert_eq!(sha256_file(&back), want, "checksum after the round trip");
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trees_keep_modes_and_uploads_leave_no_temporary_files() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (wd, exec) = executor(&host);
    let (_s, scratch) = scratch();
    let tree = scratch.join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc/deep")).unwrap();
    std::fs::write(tree.join("bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        tree.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::write(tree.join("etc/deep/conf"), "k=v\n").unwrap();
    std::fs::set_permissions(
        tree.join("etc/deep/conf"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
    let n = exec.put_tree(&tree, "t").await.unwrap();
    assert_eq!(n, 2);
    // Twice: the second upload replaces the files in place.
    assert_eq!(exec.put_tree(&tree, "t").await.unwrap(), 2);
    let root = wd.path().join("t");
    assert_eq!(
        std::fs::metadata(root.join("bin/run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    assert_eq!(
        std::fs::metadata(root.join("etc/deep/conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!root.join("link").exists(), "symlinks are not uploaded");
    let leftovers: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| p.contains("qa-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let path = e.path();
        out.push(path.display().to_string());
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn collect_by_glob_never_leaves_the_workdir() {
    let Some(host) = TestSshd::start_or_skip() else {
        return;
    };
    let (wd, exec) = executor(&host);
    let (_s, scratch) = scratch();
    let w = wd.path();
    std::fs::create_dir_all(w.join("logs/a")).unwrap();
    std::fs::write(w.join("logs/a/one.log"), "1").unwrap();
    std::fs::write(w.join("logs/two.log"), "2").unwrap();
    std::fs::write(w.join("logs/skip.txt"), "x").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.log"), "s").unwrap();
    std::os::unix::fs::symlink(outside.path(), w.join("logs/escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.log"), w.join("logs/secret.log"))
        .unwrap();
    let dest = scratch.join("artifacts");
    let mut got = exec
        .collect(&["logs/**/*.log".into()], &dest)
        .await
        .unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![dest.join("logs/a/one.log"), dest.join("logs/two.log")]
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("logs/two.log")).unwrap(),
        "2"
    );
    for bad in ["../*", "/etc/passwd", "logs/../../x"] {
        let err = exec.collect(&[bad.to_string()], &dest).await.unwrap_err();
        assert!(
            matches!(err, RemoteError::PathEscape { .. }),
            "{bad}: {err}"
        );
    }
}
