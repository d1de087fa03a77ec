//! Publishing the site to a branch of a git remote (a GitHub Pages branch, a bare repository on
//! disk, any URL git can push to) without losing anyone's results.
//!
//! Each publish fetches the branch's tip (shallow, without the blobs it does not check out) into
//! a fresh work directory with a sparse checkout of the shared pages, writes this run's
//! directory, regenerates the index and histories from every run present, commits and pushes.
//! When the push is rejected because someone else pushed first, it fetches the new tip, writes
//! its run again on top of it, regenerates the index there and pushes again: the index is
//! derived data, so regenerating it is a merge that cannot conflict. It never force-pushes.
//!
//! Credentials come only from git itself (credential helpers, ssh keys and agents); a remote URL
//! carrying a password is refused, and every URL's user information is scrubbed from messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use async_trait::async_trait;
use qa_core::redact::Redactor;
use qa_core::report::Report;
use qa_core::{PublishError, PublishReceipt, ResultPublisher};

/// What a publish checks out of the branch, as a cone-mode sparse checkout: the files at the top,
/// `assets/`, `history/`, `reports/` (what the index is made from) and this run's directory.
/// Every other run stays a single collapsed entry in a sparse index, so a branch holding a
/// thousand runs' logs costs about a thousand index entries, not hundreds of thousands.
fn sparse_patterns(run_name: &str) -> String {
    format!(
        "/*\n!/*/\n/assets/\n/history/\n/{reports}/\n/runs/\n!/runs/*/\n/runs/{run_name}/\n",
        reports = crate::site::REPORTS_DIR
    )
}

/// Pushes attempted before giving up on a busy branch.
pub const DEFAULT_ATTEMPTS: u32 = 12;

/// Publishes the site to a git branch.
#[derive(Debug, Clone)]
pub struct GitPublisher {
    remote: String,
    branch: String,
    redactor: Redactor,
    attempts: u32,
}

impl GitPublisher {
    /// A publisher pushing to `branch` of `remote` (a URL or a path).
    pub fn new(remote: impl Into<String>, branch: impl Into<String>) -> Self {
        GitPublisher {
            remote: remote.into(),
            branch: branch.into(),
            redactor: Redactor::default(),
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// Masks these secrets too.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// How many pushes to attempt when others keep pushing first.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    fn fail(&self, message: impl AsRef<str>) -> PublishError {
        PublishError::new("git", scrub(&self.redactor.redact(message.as_ref())))
    }

    fn publish_blocking(
        &self,
        report: &Report,
        run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError> {
        if has_password(&self.remote) {
            return Err(self.fail(format!(
                "the remote {} carries a password; give git the credentials through a credential helper or an ssh key instead",
                scrub(&self.remote)
            )));
        }
        if self.branch.is_empty()
            || self.branch.starts_with('-')
            || self.branch.contains("..")
            || self.branch.contains(char::is_whitespace)
        {
            return Err(self.fail(format!("`{}` is not a usable branch name", self.branch)));
        }
        let work = tempfile::Builder::new()
            .prefix("qa-publish-git-")
            .tempdir()
            .map_err(|e| self.fail(format!("cannot make a work directory: {e}")))?;
        let dir = work.path().join("site");
        std::fs::create_dir_all(&dir)
            .map_err(|e| self.fail(format!("cannot make a work directory: {e}")))?;
        self.git(&dir, &["init", "-q"])?;
        self.git(&dir, &["remote", "add", "origin", &self.remote])?;
        // A partial, shallow, sparse checkout: only the tip, only the blobs that are checked out
        // (see `sparse_patterns`), and a sparse index.
        for (key, value) in [
            ("core.repositoryformatversion", "1"),
            ("extensions.partialClone", "origin"),
            ("remote.origin.promisor", "true"),
            ("remote.origin.partialclonefilter", "blob:none"),
            ("core.sparseCheckout", "true"),
            ("core.sparseCheckoutCone", "true"),
            ("index.sparse", "true"),
        ] {
            self.git(&dir, &["config", key, value])?;
        }
        let exclude = dir.join(".git/info/exclude");
        std::fs::create_dir_all(dir.join(".git/info"))
            .and_then(|_| std::fs::write(&exclude, format!("/{}\n", crate::site::LOCK_FILE)))
            .map_err(|e| self.fail(format!("cannot write {}: {e}", exclude.display())))?;
        let branch_ref = format!("refs/heads/{}", self.branch);
        let tracking = format!("refs/remotes/origin/{}", self.branch);
        let run_name = crate::site::run_dir_name(&report.run_id);
        let sparse = dir.join(".git/info/sparse-checkout");
        std::fs::write(&sparse, sparse_patterns(&run_name))
            .map_err(|e| self.fail(format!("cannot write {}: {e}", sparse.display())))?;
        let run_path = format!("runs/{run_name}");
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            let heads = self.git(&dir, &["ls-remote", "--heads", "origin", &branch_ref])?;
            let exists = !String::from_utf8_lossy(&heads.stdout).trim().is_empty();
            if exists {
                self.git(
                    &dir,
                    &[
                        "fetch",
                        "-q",
                        "--depth",
                        "1",
                        "--filter=blob:none",
                        "origin",
                        &format!("+{branch_ref}:{tracking}"),
                    ],
                )?;
                self.git(
                    &dir,
                    &["checkout", "-q", "-f", "-B", &self.branch, &tracking],
                )?;
                self.git(&dir, &["clean", "-q", "-f", "-d", "-x"])?;
                // Drop this run's earlier copy from the index, so files it no longer has go.
                self.git(
                    &dir,
                    &[
                        "rm",
                        "-r",
                        "-q",
                        "--cached",
                        "--ignore-unmatch",
                        "--",
                        &run_path,
                    ],
                )?;
            } else {
                // A new branch: start from nothing, whatever an earlier attempt left.
                self.git(&dir, &["symbolic-ref", "HEAD", &branch_ref])?;
                let _ = self.run(
                    &dir,
                    &[
                        "rm",
                        "-r",
                        "-q",
                        "-f",
                        "--cached",
                        "--sparse",
                        "--ignore-unmatch",
                        ".",
                    ],
                );
                clear_dir(&dir)
                    .map_err(|e| self.fail(format!("cannot clear the work directory: {e}")))?;
            }
            // Which runs the branch holds: their directories are not on disk in this checkout.
            let mut present = std::collections::BTreeSet::new();
            if exists {
                let listed = self.git(&dir, &["ls-tree", "-d", "--name-only", "HEAD", "runs/"])?;
                for line in String::from_utf8_lossy(&listed.stdout).lines() {
                    if let Some(name) = line.strip_prefix("runs/") {
                        present.insert(name.to_string());
                    }
                }
            }
            present.insert(run_name.clone());
            crate::site::write_run(&dir, report, run_dir, &self.redactor)?;
            crate::site::regenerate_present(&dir, &present)?;
            // Only paths inside the sparse cone: a pathspec reaching outside it would make git
            // expand the sparse index to every file of every run.
            let reports = format!("{}/", crate::site::REPORTS_DIR);
            self.git(
                &dir,
                &[
                    "add",
                    "-A",
                    "--",
                    &run_path,
                    &reports,
                    "history/",
                    "assets/",
                    ":(glob)index*.html",
                    ".nojekyll",
                ],
            )?;
            let staged = self.run(&dir, &["diff", "--cached", "--quiet"])?;
            if exists && staged.status.success() {
                // Already there, byte for byte: publishing is idempotent.
                return Ok(self.receipt(&run_name));
            }
            let message = format!(
                "Publish run {} of {} ({})",
                report.run_id, report.plan_name, report.outcome
            );
            let mut commit: Vec<&str> = Vec::new();
            let has_identity = self
                .run(&dir, &["config", "user.email"])
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !has_identity {
                commit.extend([
                    "-c",
                    "user.name=qa-run",
                    "-c",
                    "user.email=qa-run@localhost",
                ]);
            }
            commit.extend(["commit", "-q", "--no-verify", "-m", &message]);
            self.git(&dir, &commit)?;
            let push = self.run(
                &dir,
                &[
                    "push",
                    "-q",
                    "--porcelain",
                    "origin",
                    &format!("HEAD:{branch_ref}"),
                ],
            )?;
            if push.status.success() {
                tracing::info!(remote = %scrub(&self.remote), branch = %self.branch, run = %report.run_id, attempt, "published to git");
                return Ok(self.receipt(&run_name));
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&push.stdout),
                String::from_utf8_lossy(&push.stderr)
            );
            if !is_rejection(&last) {
                return Err(self.fail(format!(
                    "git push to {} failed: {}",
                    scrub(&self.remote),
                    last.trim()
                )));
            }
            tracing::debug!(
                attempt,
                "push rejected, someone else pushed first; retrying on top of their commit"
            );
            std::thread::sleep(backoff(attempt));
        }
        Err(self.fail(format!(
            "the branch {} of {} kept moving; gave up after {} attempts: {}",
            self.branch,
            scrub(&self.remote),
            self.attempts,
            last.trim()
        )))
    }

    fn receipt(&self, run_name: &str) -> PublishReceipt {
        PublishReceipt::new(
            "git",
            format!(
                "{} {} runs/{run_name}/index.html",
                scrub(&self.remote),
                self.branch
            ),
        )
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Result<Output, PublishError> {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| self.fail(format!("cannot run git: {e}")))
    }

    /// Runs git and turns a non-zero exit into an error carrying its (scrubbed) output.
    fn git(&self, dir: &Path, args: &[&str]) -> Result<Output, PublishError> {
        let out = self.run(dir, args)?;
        if out.status.success() {
            return Ok(out);
        }
        let shown: Vec<String> = args.iter().map(|a| scrub(a)).collect();
        Err(self.fail(format!(
            "git {} failed: {}",
            shown.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name() == ".git" {
            continue;
        }
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Whether a failed push was refused because the branch moved (and a retry can succeed).
fn is_rejection(output: &str) -> bool {
    [
        "[rejected]",
        "non-fast-forward",
        "fetch first",
        "failed to update ref",
        "cannot lock ref",
        "stale info",
        "[remote rejected]",
    ]
    .iter()
    .any(|m| output.contains(m))
}

/// Grows with each attempt and is spread by the process id, so two racing publishers fall out
/// of step.
fn backoff(attempt: u32) -> Duration {
    let spread = u64::from(std::process::id() % 97)
        + u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
                % 150,
        );
    Duration::from_millis(50 * u64::from(attempt.min(8)) + spread)
}

/// Whether a URL carries a password (`scheme://user:password@host`).
fn has_password(url: &str) -> bool {
    userinfo(url).is_some_and(|u| u.contains(':'))
}

fn userinfo(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority.rfind('@').map(|at| &authority[..at])
}

/// Text with the user information of every URL in it (tokens are often the user name) replaced
/// by `[REDACTED]`.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        out.push_str(&rest[..pos + 3]);
        let tail = &rest[pos + 3..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '\'' | '>' | '<'))
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str(qa_core::redact::MASK);
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Resolves a remote given in a plan: relative paths are taken from `base_dir`; URLs and
/// `host:path` forms are kept.
pub fn resolve_remote(remote: &str, base_dir: &Path) -> String {
    let scp_like = remote
        .find(':')
        .is_some_and(|c| !remote[..c].contains('/') && c > 1);
    if remote.contains("://") || scp_like || Path::new(remote).is_absolute() {
        remote.to_string()
    } else {
        base_dir.join(remote).display().to_string()
    }
}

#[async_trait]
impl ResultPublisher for GitPublisher {
    fn name(&self) -> &str {
        "git"
    }

    async fn publish(
        &self,
        report: &Report,
        run_dir: &Path,
    ) -> Result<PublishReceipt, PublishError> {
        let (me, report, run_dir): (GitPublisher, Report, PathBuf) =
            (self.clone(), report.clone(), run_dir.to_path_buf());
        tokio::task::spawn_blocking(move || me.publish_blocking(&report, &run_dir))
            .await
            .map_err(|e| PublishError::new("git", format!("the git publisher stopped: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_user_information_from_urls() {
        assert_eq!(
            scrub("fatal: https://ghp_abc123@github.com/o/r.git: denied"),
            "fatal: https://[REDACTED]@github.com/o/r.git: denied"
        );
        assert_eq!(
            scrub("https://u:p@h/x and ssh://git@h/y"),
            "https://[REDACTED]@h/x and ssh://[REDACTED]@h/y"
        );
        assert_eq!(scrub("no urls here"), "no urls here");
    }

    #[test]
    fn passwords_in_remotes_are_refused() {
        assert!(has_password("https://u:p@github.com/o/r.git"));
        assert!(!has_password("https://github.com/o/r.git"));
        assert!(!has_password("ssh://git@github.com/o/r.git"));
        assert!(!has_password("git@github.com:o/r.git"));
    }

    #[test]
    fn rejections_are_told_from_other_failures() {
        assert!(is_rejection(
            " ! [rejected]        HEAD -> gh-pages (fetch first)"
        ));
        assert!(!is_rejection(
            "fatal: could not read Username for 'https://github.com'"
        ));
    }

    #[test]
    fn relative_remotes_resolve_from_the_base() {
        let base = Path::new("/plans");
        assert_eq!(resolve_remote("pages.git", base), "/plans/pages.git");
        assert_eq!(
            resolve_remote("git@github.com:o/r.git", base),
            "git@github.com:o/r.git"
        );
        assert_eq!(resolve_remote("https://h/r.git", base), "https://h/r.git");
        assert_eq!(resolve_remote("/srv/r.git", base), "/srv/r.git");
    }
}
